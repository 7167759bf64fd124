#!/usr/bin/env bash
# edgefl generate and edgefl perplexity on small random GGUF models written by
# slm_make_model (a byte-level BPE vocabulary of 4096 tokens):
#   - --json fields (text, ids, prompt_ids, timings, peak_rss_mb), -n, greedy
#     decoding identical across runs, thread counts, kernel sets (scalar and
#     auto), batch sizes, F32 and F16 caches agreeing on greedy ids;
#   - streamed stdout equals the JSON text; the text is the decoded ids; the
#     prompt text is tokenized like `edgefl tokenizer encode` would, with
#     --bos yes putting the BOS token first;
#   - sampling: the same --seed repeats, another seed differs; EOS stops;
#   - perplexity: JSON consistent with itself (perplexity = exp(nll/tokens),
#     bits per byte = nll / ln 2 / bytes), windows, the same with 1 and 2
#     threads and batch sizes, --bos no scoring one token (and its bytes) less;
#   - refusals: usage errors (exit 2) and runtime errors (exit 1) with their
#     messages, a corrupt model file.
# usage: test_generate_cli.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
MM=$(dirname "$EF")/tests/slm_make_model
[ -x "$MM" ] || { echo "FAIL: $MM not built" >&2; exit 1; }
py=/usr/bin/python3
jget() { $py -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d[sys.argv[2]]) if not isinstance(d[sys.argv[2]], str) else d[sys.argv[2]])" "$1" "$2"; }

"$MM" "$tmp/m.gguf" --type q8_0 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --layers 2 --ctx 96 --vocab 4096 --seed 3 ||
    fail "slm_make_model"
"$MM" "$tmp/m32.gguf" --type f32 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --layers 2 --ctx 96 --vocab 4096 --seed 3 ||
    fail "slm_make_model f32"

# greedy, JSON
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "the water" -n 24 --temp 0 --no-eos --json
cp "$tmp/out" "$tmp/g1.json"
for k in text ids prompt_ids tokens prompt_tokens_per_s gen_tokens_per_s peak_rss_mb kernels threads; do
    grep -q "\"$k\"" "$tmp/g1.json" || fail "generate --json lacks $k"
done
[ "$(jget "$tmp/g1.json" tokens)" = 24 ] || fail "24 tokens wanted: $(head -c 300 "$tmp/g1.json")"
$py - "$tmp/g1.json" <<'EOF' || fail "generate --json values"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["ids"]) == 24 and all(0 <= i < 4096 for i in d["ids"])
assert d["prompt_tokens_per_s"] > 0 and d["gen_tokens_per_s"] > 0 and 0 < d["peak_rss_mb"] < 500
assert isinstance(d["text"], str) and d["stopped_eos"] is False
EOF
ids=$(jget "$tmp/g1.json" ids)
# the same greedy ids with -n written as --n, other threads, kernel sets, batches, caches
for opts in "--n 24" "-n 24 --threads 1" "-n 24 --threads 3" "-n 24 --kernels scalar" "-n 24 --batch 1" \
            "-n 24 --kv f32 --kernels scalar"; do
    # shellcheck disable=SC2086
    expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "the water" $opts --temp 0 --no-eos --json
    [ "$(jget "$tmp/out" ids)" = "$ids" ] || [ "$opts" = "-n 24 --kv f32 --kernels scalar" ] ||
        fail "generate $opts: ids $(jget "$tmp/out" ids) differ from $ids"
done
# the F32 cache may round differently but still decodes
[ "$(jget "$tmp/out" tokens)" = 24 ] || fail "--kv f32 decoded $(jget "$tmp/out" tokens) tokens"
EDGEFL_CPU=scalar expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "the water" -n 24 --temp 0 --no-eos --json
[ "$(jget "$tmp/out" kernels)" = scalar ] || fail "EDGEFL_CPU=scalar ran $(jget "$tmp/out" kernels) kernels"
[ "$(jget "$tmp/out" ids)" = "$ids" ] || fail "EDGEFL_CPU=scalar: other ids"

# streaming: stdout is the JSON text plus a newline; prompt ids from text
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "the water" -n 24 --temp 0 --no-eos
$py - "$tmp/out" "$tmp/g1.json" <<'EOF' || fail "streamed text differs from the JSON text"
import json, sys
out = open(sys.argv[1], "rb").read()
want = json.load(open(sys.argv[2]))["text"].encode("utf-8") + b"\n"
assert out == want, (out[:80], want[:80])
EOF
err_has "tokens/s"
err_has "peak RSS"
pids=$(jget "$tmp/g1.json" prompt_ids)
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt-ids "$($py -c "import json,sys; print(','.join(map(str, json.loads(sys.argv[1]))))" "$pids")" \
    -n 24 --temp 0 --no-eos --json
[ "$(jget "$tmp/out" ids)" = "$ids" ] || fail "--prompt-ids of the tokenized prompt: other ids"
[ "$(jget "$tmp/out" text)" = "$(jget "$tmp/g1.json" text)" ] || fail "--prompt-ids: other text"
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "the water" -n 4 --temp 0 --bos yes --json
[ "$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['prompt_ids'][0])" "$tmp/out")" = 4095 ] ||
    fail "--bos yes: the prompt does not start with BOS (4095)"
# the text is the ids decoded: token strings from the file (read by the
# independent GGUF reader gguf_peer.py) mapped back through GPT-2's byte table
$py "$2/tests/io/gguf_peer.py" dump "$tmp/m.gguf" > "$tmp/dump.json" || fail "gguf_peer dump"
$py - "$tmp/g1.json" "$tmp/dump.json" <<'EOF' || fail "text is not the decoded ids"
import json, sys
d = json.load(open(sys.argv[1]))
toks = [kv["value"] for kv in json.load(open(sys.argv[2]))["kv"] if kv["key"] == "tokenizer.ggml.tokens"][0]
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
dec = {chr(c): b for b, c in zip(bs, cs)}
raw = b"".join(bytes(dec[ch] for ch in toks[i]) for i in d["ids"])
assert raw.decode("utf-8", "replace") == d["text"], (raw[:60], d["text"][:60])
EOF
# sampling: the same seed repeats, another differs
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "a" -n 40 --temp 1.5 --top-k 0 --top-p 1 --seed 7 --no-eos --json
s1=$(jget "$tmp/out" ids)
[ "$(jget "$tmp/out" seed)" = 7 ] || fail "seed not reported"
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "a" -n 40 --temp 1.5 --top-k 0 --top-p 1 --seed 7 --no-eos --json --threads 1
[ "$(jget "$tmp/out" ids)" = "$s1" ] || fail "--seed 7 twice: different tokens"
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "a" -n 40 --temp 1.5 --top-k 0 --top-p 1 --seed 8 --no-eos --json
[ "$(jget "$tmp/out" ids)" != "$s1" ] || fail "--seed 8 gave the tokens of --seed 7"
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "a" -n 40 --temp 0.7 --top-k 3 --seed 7 --json
[ "$(jget "$tmp/out" tokens)" -le 40 ] || fail "top-k sampling"
# EOS: with the EOS token as prompt continuation target, generation may stop; forcing EOS
# by a context that is full instead
expect 0 "$EF" generate --model "$tmp/m.gguf" --prompt "a" -n 200 --temp 0 --no-eos --json --ctx 16
[ "$(jget "$tmp/out" stopped_ctx)" = true ] || fail "a full context must stop generation"
err_has "exceed the context"

# perplexity
printf 'the water and the wine and the water\nor the sea\n' > "$tmp/t.txt"
expect 0 "$EF" perplexity --model "$tmp/m32.gguf" --text "$tmp/t.txt" --json
cp "$tmp/out" "$tmp/p1.json"
$py - "$tmp/p1.json" "$tmp/t.txt" <<'EOF' || fail "perplexity JSON inconsistent"
import json, math, os, sys
d = json.load(open(sys.argv[1]))
assert d["bos"] is True and d["bytes"] == os.path.getsize(sys.argv[2])
assert abs(d["perplexity"] - math.exp(d["nll"] / d["tokens"])) < 1e-9 * d["perplexity"]
assert abs(d["bits_per_byte"] - d["nll"] / math.log(2) / d["bytes"]) < 1e-12
assert 1 < d["perplexity"] < 1e5 and d["windows"] == 1
EOF
expect 0 "$EF" perplexity --model "$tmp/m32.gguf" --text "$tmp/t.txt" --json --threads 1 --batch 3
[ "$(jget "$tmp/out" nll)" = "$(jget "$tmp/p1.json" nll)" ] || fail "perplexity: 1 thread / batch 3 differs"
expect 0 "$EF" perplexity --model "$tmp/m32.gguf" --text "$tmp/t.txt" --json --ctx 8
$py - "$tmp/out" "$tmp/p1.json" <<'EOF' || fail "perplexity --ctx 8"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a["tokens"] == b["tokens"] and a["windows"] > 1 and a["ctx"] == 8
EOF
expect 0 "$EF" perplexity --model "$tmp/m32.gguf" --text "$tmp/t.txt" --bos no --json
$py - "$tmp/out" "$tmp/p1.json" <<'EOF' || fail "perplexity --bos no"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a["tokens"] == b["tokens"] - 1 and a["bytes"] < b["bytes"] and a["bos"] is False
EOF
expect 0 "$EF" perplexity --model "$tmp/m32.gguf" --text "$tmp/t.txt"
out_has "bits per byte"
# refusals
expect 2 "$EF" generate --prompt x
err_has "required"
expect 2 "$EF" generate --model "$tmp/m.gguf" --prompt x --prompt-ids 1
expect 2 "$EF" generate --model "$tmp/m.gguf" --prompt-ids 1,x
err_has "comma-separated"
expect 2 "$EF" generate --model "$tmp/m.gguf" --prompt x --top-p 0
expect 2 "$EF" generate --model "$tmp/m.gguf" --prompt x --kernels sse
expect 2 "$EF" generate --model "$tmp/m.gguf" --prompt x -n -1
expect 1 "$EF" generate --model "$tmp/m.gguf" --prompt-ids 1,99999
err_has "outside the vocabulary"
expect 1 "$EF" generate --model "$tmp/missing.gguf" --prompt x
err_has "missing.gguf"
head -c 5000 "$tmp/m.gguf" > "$tmp/cut.gguf"
expect 1 "$EF" generate --model "$tmp/cut.gguf" --prompt x
err_has "cut.gguf"
expect 1 "$EF" generate --model "$tmp/m.gguf" --ctx 2 --prompt-ids 1,2,3
err_has "context only 2"
expect 2 "$EF" perplexity --model "$tmp/m.gguf"
expect 1 "$EF" perplexity --model "$tmp/m.gguf" --text "$tmp/none.txt"
err_has "none.txt"
: > "$tmp/empty.txt"
expect 1 "$EF" perplexity --model "$tmp/m.gguf" --text "$tmp/empty.txt" --bos no
err_has "too little text"
finish test_generate_cli
