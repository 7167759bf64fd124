#!/usr/bin/env bash
# Command-line behaviour of `edgefl`: help and version, refusal of unknown
# flags and bad values (exit code 2), clear errors for missing or corrupt
# data (exit code 1, naming the file), one JSON object on stdout with --json,
# atomic --out, eval of a saved model, and bit-identical reruns.
# usage: test_cli.sh EDGEFL_BINARY SOURCE_DIR
set -u
EF=$1
DATA=/usr/share/datasets/fashion-mnist
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# expect CODE CMD...: runs CMD, checks its exit code, keeps stdout/stderr
expect() {
    local want=$1; shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    [ "$got" = "$want" ] || fail "exit $got (want $want): $*  stderr: $(head -c 300 "$tmp/err")"
}
# err_has TEXT: the last stderr contains TEXT
err_has() { grep -q -- "$1" "$tmp/err" || fail "stderr lacks '$1': $(head -c 300 "$tmp/err")"; }

expect 0 "$EF" --version
grep -q '^edgefl [0-9]' "$tmp/out" || fail "--version output: $(cat "$tmp/out")"
expect 0 "$EF" --help
grep -q 'train' "$tmp/out" || fail "--help lists no commands"
expect 2 "$EF"
expect 2 "$EF" frobnicate
err_has "unknown command"
expect 0 "$EF" train --help
grep -q -- '--epochs' "$tmp/out" || fail "train --help lacks --epochs"
expect 0 "$EF" eval --help
expect 0 "$EF" help train

# usage errors: exit 2 with a message, nothing trained
expect 2 "$EF" train --bogus; err_has "unknown option '--bogus'"
expect 2 "$EF" train --epochs 0; err_has "--epochs"
expect 2 "$EF" train --epochs abc; err_has "--epochs"
expect 2 "$EF" train --epochs 3x
expect 2 "$EF" train --lr -1; err_has "--lr"
expect 2 "$EF" train --lr nan
expect 2 "$EF" train --model foo; err_has "not one of"
expect 2 "$EF" train --optimizer rmsprop
expect 2 "$EF" train --threads 0
expect 2 "$EF" train --batch
err_has "needs a value"
expect 2 "$EF" train --json=1; err_has "takes no value"
expect 2 "$EF" train --epochs 1 --epochs 2; err_has "given twice"
expect 2 "$EF" train stray
expect 2 "$EF" train --seed -3
expect 2 "$EF" train --optimizer adamw --nesterov
expect 2 "$EF" eval; err_has "--model-file is required"

# data errors: exit 1 naming the file
expect 1 "$EF" train --data-dir "$tmp/nowhere" --epochs 1 --quiet
err_has "$tmp/nowhere"
mkdir -p "$tmp/bad"
if [ -d "$DATA" ]; then
    cp "$DATA"/* "$tmp/bad/"
    head -c 100000 "$DATA/train-images-idx3-ubyte.gz" >"$tmp/bad/train-images-idx3-ubyte.gz"
    expect 1 "$EF" train --data-dir "$tmp/bad" --epochs 1 --quiet
    err_has "train-images-idx3-ubyte.gz"
fi
head -c 4096 /dev/urandom >"$tmp/garbage.safetensors"
expect 1 "$EF" eval --model-file "$tmp/garbage.safetensors"
err_has "garbage.safetensors"
expect 1 "$EF" eval --model-file "$tmp/missing.safetensors"
err_has "missing.safetensors"

if [ ! -d "$DATA" ]; then
    echo "dataset missing at $DATA: skipping the training checks" >&2
    [ $fails = 0 ] && exit 77 || exit 1
fi

# a short real training run with --json and --out
mkdir -p "$tmp/models"
expect 0 "$EF" train --model mlp --limit 3000 --eval-limit 2000 --epochs 1 --threads 2 \
    --json --out "$tmp/models/mlp.safetensors"
[ "$(wc -l <"$tmp/out")" = 1 ] || fail "--json stdout is not exactly one line"
cp "$tmp/out" "$tmp/train.json"
grep -q "epoch 1/1" "$tmp/err" || fail "no progress line on stderr"
/usr/bin/python3 - "$tmp/train.json" <<'PY' || fail "train JSON checks"
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("test_accuracy", "train_samples_per_s", "peak_rss_mb", "params", "wall_s"):
    assert k in d, k
assert 0.5 < d["test_accuracy"] <= 1.0, d["test_accuracy"]
assert d["train_samples_per_s"] > 0 and d["peak_rss_mb"] > 0 and d["wall_s"] > 0
assert d["params"] == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10, d["params"]
assert d["train_examples"] == 3000 and d["test_examples"] == 2000
PY
ls -a "$tmp/models" | grep -q tmp && fail "temporary file left next to --out"
expect 0 "$EF" eval --model-file "$tmp/models/mlp.safetensors" --limit 2000 --json
/usr/bin/python3 - "$tmp/train.json" "$tmp/out" <<'PY' || fail "eval disagrees with train"
import json, sys
t, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert e["model"] == "mlp" and e["test_examples"] == 2000
assert e["test_accuracy"] == t["test_accuracy"], (e["test_accuracy"], t["test_accuracy"])
PY

# --out into a missing directory: clear error, no file
expect 1 "$EF" train --model logreg --limit 500 --eval-limit 100 --epochs 1 --quiet \
    --out "$tmp/no/such/dir/m.safetensors"
err_has "$tmp/no/such/dir"

# same seed and threads: bit-identical model; another seed: different
for s in a b; do
    expect 0 "$EF" train --model logreg --limit 4000 --eval-limit 100 --epochs 1 --threads 2 \
        --seed 5 --quiet --out "$tmp/models/$s.safetensors"
done
cmp -s "$tmp/models/a.safetensors" "$tmp/models/b.safetensors" || fail "same seed, different model"
expect 0 "$EF" train --model logreg --limit 4000 --eval-limit 100 --epochs 1 --threads 2 \
    --seed 6 --quiet --out "$tmp/models/c.safetensors"
cmp -s "$tmp/models/a.safetensors" "$tmp/models/c.safetensors" && fail "different seeds, same model"

if [ $fails = 0 ]; then echo "cli/test_cli: all checks passed"; exit 0; fi
echo "cli/test_cli: $fails checks FAILED" >&2
exit 1
