#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, starting from a seed corpus of
# valid files made by the real writers (a Fashion-MNIST label file and a
# safetensors checkpoint) and the wire-format regression corpus
# (tests/fl/wire_corpus/). Crashes are saved in BUILD/fuzz-artifacts/.
# usage: fuzz/run.sh BUILD_DIR SECONDS
set -euo pipefail
B=$1 S=$2
SRC=$(cd "$(dirname "$0")/.." && pwd)
corpus=$B/fuzz-corpus
mkdir -p "$corpus/idx" "$corpus/safetensors" "$corpus/wire" "$corpus/secagg" "$corpus/state" "$corpus/gateway" \
    "$corpus/gguf" "$B/fuzz-artifacts"
DATA=/usr/share/datasets/fashion-mnist
if [ -d "$DATA" ]; then
    cp "$DATA/t10k-labels-idx1-ubyte.gz" "$corpus/idx/labels.gz"
    gzip -dc "$DATA/t10k-labels-idx1-ubyte.gz" | head -c 1000 >"$corpus/idx/labels-truncated"
fi
printf '\x00\x00\x08\x01\x00\x00\x00\x03abc' >"$corpus/idx/tiny"
printf '\x3a\x00\x00\x00\x00\x00\x00\x00{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}    \x00\x00\x80\x3f\x00\x00\x00\x40' \
    >"$corpus/safetensors/tiny.safetensors"
cp "$SRC"/tests/fl/wire_corpus/*.bin "$corpus/wire/"
# GGUF seeds (fuzz/gguf_corpus/README.md says how they were made)
cp "$SRC"/fuzz/gguf_corpus/*.gguf "$corpus/gguf/"
seed=$(mktemp -d)
"$B/fuzz/fuzz_state" --make-seed "$seed" >/dev/null 2>&1 && cp "$seed/state.json" "$corpus/state/seed.json"
rm -rf "$seed"
# a gateway seed: a genuine local update (no patch), then an empty upstream message
printf '\x02\x00\x00\x01\x00\x00' >"$corpus/gateway/seed"
# tokenizer seeds: a valid tokenizer file, and text for the built-in tokenizer (leading 0x01)
mkdir -p "$corpus/tokenizer"
"$B/fuzz/fuzz_tokenizer" --make-seed "$corpus/tokenizer" >/dev/null 2>&1
printf '\x01In the beginning<|endoftext|>\xff\xfe caf\xc3\xa9  \n' >"$corpus/tokenizer/text"
for t in fuzz_idx:idx fuzz_safetensors:safetensors fuzz_wire:wire fuzz_secagg:secagg fuzz_state:state \
    fuzz_gateway:gateway fuzz_gguf:gguf fuzz_tokenizer:tokenizer; do
    bin=${t%%:*} dir=${t##*:}
    echo "== $bin for ${S}s"
    "$B/fuzz/$bin" -max_total_time="$S" -max_len=65536 -rss_limit_mb=2048 \
        -artifact_prefix="$B/fuzz-artifacts/$bin-" "$corpus/$dir"
done
