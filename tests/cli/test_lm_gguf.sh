#!/usr/bin/env bash
# GGUF output of edgefl lm train / lm export, end to end:
# - lm train --out m.gguf writes a llama GGUF (gguf-info shows the keys and
#   tensors); lm eval scores it exactly like the safetensors model it was
#   converted from, and lm export converts it back;
# - edgefl quantize q8_0 / q4_0 of the exported file: bits per byte within
#   1% / 5% of F32;
# - llama.cpp (node-llama-cpp, scripts/install-llamacpp-peer.sh) loads the
#   exported file and its greedy decoding of a prompt gives the same 32 tokens
#   as edgefl lm sample (F32); the Q8_0 file loads and decodes too. This part
#   is skipped with a message when node/npm are missing.
source "$(dirname "$0")/common.sh" "$@"
SRC=$2
PY=/usr/bin/python3
if [ -x /usr/bin/bible ]; then
    expect 0 "$EF" corpus kjv --out "$tmp/kjv" --quiet
    head -c 200000 "$tmp/kjv/train.txt" >"$tmp/corpus.txt"
else
    cat "$SRC"/docs/*.md >"$tmp/corpus.txt"
fi
STEPS=400 MIN_DISTINCT=8
if [ -n "${EDGEFL_TEST_QUICK:-}" ]; then STEPS=200 MIN_DISTINCT=4; fi
close() { $PY -c 'import sys; a, b, r = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= r * abs(b) else 1)' "$@"; }

expect 0 "$EF" lm train --corpus "$tmp/corpus.txt" --vocab 400 --tok-out "$tmp/tok.json" \
    --out "$tmp/m.gguf" --dim 64 --layers 2 --heads 4 --kv-heads 2 --seq 64 --batch 8 \
    --steps $STEPS --lr 3e-3 --eval-every 0 --quiet --json
VB=$(field "$tmp/out" valid_bpb)
expect 0 "$EF" gguf-info "$tmp/m.gguf"
for k in general.architecture llama.attention.head_count_kv llama.rope.dimension_count \
         tokenizer.ggml.merges tokenizer.ggml.bos_token_id blk.1.ffn_down.weight; do
    out_has "$k"
done
# the checkpoint holds the same weights: export it to safetensors and back
expect 0 "$EF" lm export --model "$tmp/m.gguf.ckpt" --out "$tmp/m.safetensors"
expect 0 "$EF" lm export --model "$tmp/m.safetensors" --out "$tmp/m2.gguf" --name edgefl-lm
cmp -s "$tmp/m.gguf" "$tmp/m2.gguf" || fail "checkpoint -> safetensors -> gguf differs from the trained gguf"
expect 0 "$EF" corpus split --in "$tmp/corpus.txt" --out "$tmp/split" --by text --quiet
expect 0 "$EF" lm eval --model "$tmp/m.gguf" --text "$tmp/split/valid.txt" --batch 8 --json
G=$(field "$tmp/out" bpb)
close "$G" "$VB" 1e-12 || fail "lm eval of the gguf: $G bits/byte, training said $VB"
for t in q8_0:0.01 q4_0:0.05; do
    q=${t%%:*} tol=${t##*:}
    expect 0 "$EF" quantize "$tmp/m.gguf" "$tmp/m-$q.gguf" "$q" --quiet
    expect 0 "$EF" lm eval --model "$tmp/m-$q.gguf" --text "$tmp/split/valid.txt" --batch 8 --json
    Q=$(field "$tmp/out" bpb)
    echo "bits/byte: f32 $G, $q $Q"
    close "$Q" "$G" "$tol" || fail "$q: $Q bits/byte is not within $tol of f32's $G"
done
expect 1 "$EF" lm eval --model "$tmp/tok.json" --text "$tmp/corpus.txt"

# llama.cpp
peer=$("$SRC/scripts/install-llamacpp-peer.sh" 2>"$tmp/peer.err")
rc=$?
if [ "$rc" = 77 ]; then
    echo "llama.cpp part skipped: node/npm not installed"
elif [ "$rc" != 0 ]; then
    fail "installing the llama.cpp peer failed: $(tail -3 "$tmp/peer.err")"
else
    cp "$SRC/tests/slm/llamacpp_greedy.mjs" "$peer/"
    # <|endoftext|> then the prompt's tokens, as edgefl streams text
    eot=$("$EF" tokenizer encode --tok "$tmp/tok.json" --special --ids <<<'<|endoftext|>' | cut -d' ' -f1)
    ids="$eot,$("$EF" tokenizer encode --tok "$tmp/tok.json" --ids <<<'And God said' | tr ' ' ',' | sed 's/,[0-9]*$//')"
    expect 0 "$EF" lm sample --model "$tmp/m.gguf" --prompt-ids "$ids" -n 32 --ids
    ours=$(cat "$tmp/out")
    theirs=$(cd "$peer" && timeout 120 node llamacpp_greedy.mjs "$tmp/m.gguf" "$ids" 32 2 2>"$tmp/node.err" |
             $PY -c 'import json,sys; print(",".join(map(str, json.load(sys.stdin)["ids"])))')
    echo "prompt $ids"
    echo "edgefl    $ours"
    echo "llama.cpp $theirs"
    [ -n "$ours" ] && [ "$ours" = "$theirs" ] ||
        fail "greedy decoding differs from llama.cpp's: ${theirs:-$(tail -3 "$tmp/node.err")}"
    distinct=$(tr ',' '\n' <<<"$ours" | sort -u | wc -l)
    [ "$distinct" -ge "$MIN_DISTINCT" ] || fail "only $distinct distinct tokens: the comparison says little"
    n=$(cd "$peer" && timeout 120 node llamacpp_greedy.mjs "$tmp/m-q8_0.gguf" "$ids" 32 2 2>"$tmp/node.err" |
        $PY -c 'import json,sys; print(len(json.load(sys.stdin)["ids"]))')
    [ "$n" = 32 ] || fail "llama.cpp did not decode the Q8_0 file: $(tail -3 "$tmp/node.err")"
fi
finish cli/test_lm_gguf
