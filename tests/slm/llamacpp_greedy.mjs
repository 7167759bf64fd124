// The llama.cpp peer (node-llama-cpp's prebuilt llama.cpp) decoding greedily:
//   node llamacpp_greedy.mjs MODEL.gguf IDS N [THREADS]
// IDS: the prompt as comma-separated token ids (so both sides start from the
// same tokens, whatever each tokenizer would make of the text). Prints one
// JSON object: ids (the N generated tokens), prompt_tokens_per_s (prompt
// tokens / time to the first generated token), gen_tokens_per_s (the other
// N-1 tokens), peak_rss_mb (of this node process, llama.cpp included).
// Run with NODE_PATH unset from the directory scripts/install-llamacpp-peer.sh
// installed into (module resolution starts at this file's copy there).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [model, idsCsv, nText, threadsText] = process.argv.slice(2);
if (!model || !idsCsv || !nText) {
    console.error("usage: node llamacpp_greedy.mjs MODEL.gguf IDS N [THREADS]");
    process.exit(2);
}
const n = Number(nText), threads = Number(threadsText || 1);
const prompt = idsCsv.split(",").map(Number);
const llama = await getLlama({gpu: false, logLevel: LlamaLogLevel.error, build: "never"});
const m = await llama.loadModel({modelPath: model});
const ctx = await m.createContext({contextSize: Math.max(prompt.length + n + 1, 64), threads,
                                   batchSize: Math.max(prompt.length, 1)});
const seq = ctx.getSequence();
const ids = [];
const t0 = performance.now();
let tFirst = t0;
for await (const tok of seq.evaluate(prompt, {temperature: 0})) {
    if (ids.length === 0) tFirst = performance.now();
    ids.push(tok);
    if (ids.length >= n) break;
}
const t1 = performance.now();
console.log(JSON.stringify({
    ids,
    prompt_tokens_per_s: prompt.length / ((tFirst - t0) / 1000),
    gen_tokens_per_s: ids.length > 1 ? (ids.length - 1) / ((t1 - tFirst) / 1000) : 0,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
}));
await ctx.dispose();
await m.dispose();
await llama.dispose();
