#!/usr/bin/env bash
# The llama.cpp peer and the test fixtures edgefl's SLM tests rely on:
# tests/slm/make_tiny_gguf.py writes GGUF files from the specification alone
# (no edgefl code), tests/slm/ref_forward.py decodes them greedily in numpy,
# and llama.cpp (node-llama-cpp, installed by scripts/install-llamacpp-peer.sh)
# must load each file and produce the same 32 tokens. This pins the
# conventions edgefl's training, GGUF export and inference follow (RoPE on
# adjacent pairs, grouped-query heads, tied output, tensor layouts) to what
# llama.cpp actually does. Also: llama.cpp loads and decodes the files
# `edgefl quantize` makes of them (Q8_0, Q4_0). Skipped (77) without
# node/npm or numpy.
# usage: test_llamacpp_reference.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
src=$2
/usr/bin/python3 -c 'import numpy' 2>/dev/null || { echo "no numpy: skipped"; exit 77; }
peer=$("$src/scripts/install-llamacpp-peer.sh")
rc=$?
[ "$rc" = 77 ] && { echo "no node/npm: skipped"; exit 77; }
[ "$rc" = 0 ] || { echo "FAIL: installing the llama.cpp peer failed" >&2; exit 1; }
cp "$src/tests/slm/llamacpp_greedy.mjs" "$peer/"
check() { # NAME PROMPT-IDS make_tiny_gguf options...
    local name=$1 ids=$2
    shift 2
    /usr/bin/python3 "$src/tests/slm/make_tiny_gguf.py" "$tmp/$name.gguf" "$@" ||
        { fail "$name: make_tiny_gguf failed"; return; }
    local ref got
    ref=$(/usr/bin/python3 "$src/tests/slm/ref_forward.py" "$tmp/$name.gguf" "$ids" 32)
    got=$(cd "$peer" && timeout 120 node llamacpp_greedy.mjs "$tmp/$name.gguf" "$ids" 32 2 \
        2>"$tmp/$name.err" | /usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["ids"]))')
    [ -n "$ref" ] && [ "$ref" = "$got" ] ||
        fail "$name: numpy reference $ref, llama.cpp ${got:-nothing: $(tail -3 "$tmp/$name.err")}"
}
check mha 72,101,108,108,111 --kv-heads 4
check gqa 1,2,3,4,5,6,7,8 --kv-heads 2 --seed 2
check mqa-tied 259,32,104 --kv-heads 1 --tied --seed 3
check deeper 10,20 --dim 96 --heads 6 --kv-heads 3 --layers 4 --ffn 256 --seed 4
# edgefl's GGUF reader takes the spec-written files, and llama.cpp loads what
# `edgefl quantize` makes of them (Q8_0, Q4_0) and decodes from it
for t in q8_0 q4_0; do
    expect 0 "$EF" quantize "$tmp/gqa.gguf" "$tmp/gqa-$t.gguf" "$t" --quiet
    expect 0 "$EF" gguf-info "$tmp/gqa-$t.gguf" --json
    out_has "blk.0.attn_q.weight"
    got=$(cd "$peer" && timeout 120 node llamacpp_greedy.mjs "$tmp/gqa-$t.gguf" 1,2,3 32 2 \
        2>"$tmp/$t.err" | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["ids"]))')
    [ "$got" = 32 ] || fail "llama.cpp did not decode edgefl's $t file: $(tail -3 "$tmp/$t.err")"
done
finish test_llamacpp_reference
