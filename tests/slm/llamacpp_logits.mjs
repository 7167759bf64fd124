// The llama.cpp peer's raw logits for the last token of a prompt:
//   node llamacpp_logits.mjs MODEL.gguf IDS OUT.bin [BATCH]
// writes vocab little-endian float32 values to OUT.bin (the prompt is
// evaluated in passes of BATCH tokens, default 32, with one thread).
// Run from the directory scripts/install-llamacpp-peer.sh installed into.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import fs from "node:fs";

const [model, idsCsv, out, batchText] = process.argv.slice(2);
if (!model || !idsCsv || !out) {
    console.error("usage: node llamacpp_logits.mjs MODEL.gguf IDS OUT.bin [BATCH]");
    process.exit(2);
}
const ids = idsCsv.split(",").map(Number);
const llama = await getLlama({gpu: false, logLevel: LlamaLogLevel.error, build: "never"});
const m = await llama.loadModel({modelPath: model});
const ctx = await m.createContext({contextSize: Math.max(ids.length + 1, 64), threads: 1,
                                   batchSize: Number(batchText || 32)});
const seq = ctx.getSequence();
const res = await seq.controlledEvaluate(ids.map((t, i) => i === ids.length - 1 ? [t, {generateNext: {logits: true}}] : t));
const logits = res[res.length - 1].next.logits;
const arr = new Float32Array(logits.size);
for (const [t, v] of logits) arr[t] = v;
fs.writeFileSync(out, Buffer.from(arr.buffer));
await ctx.dispose();
await m.dispose();
await llama.dispose();
