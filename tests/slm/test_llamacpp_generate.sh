#!/usr/bin/env bash
# Greedy decoding in edgefl and in llama.cpp (node-llama-cpp's prebuilt CPU
# build, installed by scripts/install-llamacpp-peer.sh) on the same GGUF files
# and prompt token ids must give the same tokens, for F32 and Q8_0 weights:
# random models from slm_make_model with multi-head, grouped-query and
# multi-query attention, tied and untied output, head sizes 16 and 64.
# llama.cpp stops at the end-of-text token (not reported); edgefl runs
# --no-eos, so its tokens must equal llama.cpp's and then show that token.
# Random models have small gaps between their best logits and Q8_0 rounds
# activations to 8 bits, so a one-ulp difference anywhere soon changes a
# token: this passes only with llama.cpp's arithmetic reproduced (see
# docs/slm.md, "Inference"). Skipped (77) without node/npm.
# usage: test_llamacpp_generate.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
src=$2
MM=$(dirname "$EF")/tests/slm_make_model
peer=$("$src/scripts/install-llamacpp-peer.sh")
rc=$?
[ "$rc" = 77 ] && { echo "no node/npm: skipped"; exit 77; }
[ "$rc" = 0 ] || { echo "FAIL: installing the llama.cpp peer failed" >&2; exit 1; }
cp "$src/tests/slm/llamacpp_greedy.mjs" "$peer/"
compared=0
check() { # NAME IDS THREADS make_model options...
    local name=$1 ids=$2 th=$3
    shift 3
    "$MM" "$tmp/$name.gguf" "$@" || { fail "$name: slm_make_model"; return; }
    "$EF" generate --model "$tmp/$name.gguf" --prompt-ids "$ids" -n 64 --temp 0 --no-eos --threads "$th" \
        --json --quiet > "$tmp/$name.ours" 2> "$tmp/$name.ours.err" || { fail "$name: edgefl: $(cat "$tmp/$name.ours.err")"; return; }
    (cd "$peer" && timeout 120 node llamacpp_greedy.mjs "$tmp/$name.gguf" "$ids" 64 "$th") \
        > "$tmp/$name.theirs" 2> "$tmp/$name.err" || { fail "$name: llama.cpp: $(tail -3 "$tmp/$name.err")"; return; }
    local n
    n=$(/usr/bin/python3 - "$tmp/$name.ours" "$tmp/$name.theirs" <<'EOF'
import json, sys
ours = json.load(open(sys.argv[1]))["ids"]
theirs = json.load(open(sys.argv[2]))["ids"]
k = len(theirs)
if ours[:k] != theirs:
    i = next(i for i in range(k) if ours[i] != theirs[i])
    print(f"differ at {i}: edgefl {ours[i:i+5]} llama.cpp {theirs[i:i+5]}")
    sys.exit(1)
print(k)
EOF
)
    if [ $? != 0 ]; then fail "$name: $n"; return; fi
    echo "$name: $n tokens identical"
    compared=$((compared + n))
}
for t in f32 q8_0; do
    check "mha-$t" 72,101,108,108,111 2 --type $t --dim 64 --heads 4 --kv-heads 4 --ffn 128 --layers 2 --ctx 256 --vocab 1024 --seed 2
    check "gqa-$t" 3,1,4,1,5,9,2,6 1 --type $t --dim 256 --heads 4 --kv-heads 2 --ffn 704 --layers 3 --ctx 256 --vocab 2048 --seed 9 --tied 1
    check "mqa-$t" 10,20,30 2 --type $t --dim 384 --heads 6 --kv-heads 1 --ffn 1024 --layers 2 --ctx 256 --vocab 4096 --seed 11
    check "long-$t" "$(seq -s, 7 11 500)" 2 --type $t --dim 128 --heads 2 --kv-heads 2 --ffn 256 --layers 2 --ctx 256 --vocab 1024 --seed 4
done
# enough tokens were compared to mean something (llama.cpp may stop early at end of text)
[ "$compared" -ge 256 ] || fail "only $compared tokens compared"
finish test_llamacpp_generate
