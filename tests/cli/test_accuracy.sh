#!/usr/bin/env bash
# The acceptance runs of the training core: `edgefl train --model M --epochs 3
# --threads 2 --json` with default hyperparameters must reach test accuracy
# >= 0.90 (cnn), 0.87 (mlp) and 0.83 (logreg) on the 10,000 Fashion-MNIST
# test images. With EDGEFL_TEST_QUICK set (sanitizer builds, where training
# is ~20x slower) only a short smoke run of each model is made.
# usage: test_accuracy.sh EDGEFL_BINARY SOURCE_DIR
set -u
EF=$1
DATA=/usr/share/datasets/fashion-mnist
if [ ! -d "$DATA" ]; then
    echo "dataset missing at $DATA (Debian package dataset-fashion-mnist): skipped" >&2
    exit 77
fi
fails=0
for spec in logreg:0.83 mlp:0.87 cnn:0.90; do
    model=${spec%%:*} want=${spec##*:}
    if [ -n "${EDGEFL_TEST_QUICK:-}" ]; then
        args=(--limit 1000 --eval-limit 500 --epochs 1) want=0.3
    else
        args=(--epochs 3)
    fi
    out=$("$EF" train --model "$model" "${args[@]}" --threads 2 --json --quiet) || {
        echo "FAIL: $model training exited with an error" >&2
        fails=$((fails + 1))
        continue
    }
    acc=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["test_accuracy"])' "$out")
    sps=$(/usr/bin/python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["train_samples_per_s"]))' "$out")
    if /usr/bin/python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$acc" "$want"; then
        echo "$model: test_accuracy $acc >= $want ($sps samples/s)"
    else
        echo "FAIL: $model: test_accuracy $acc < $want" >&2
        fails=$((fails + 1))
    fi
done
[ $fails = 0 ] && exit 0 || exit 1
