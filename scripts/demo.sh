#!/usr/bin/env bash
# `make demo`: trains the federated-averaging CNN (McMahan et al. 2017) on
# Fashion-MNIST on this machine, saves it as safetensors and evaluates the
# saved file. DEMO_EPOCHS (default 1) and DEMO_THREADS (default: all CPUs)
# change the run.
# usage: scripts/demo.sh [EDGEFL_BINARY]
set -euo pipefail
EF=${1:-build/edgefl}
OUT=${DEMO_OUT:-build/demo}
EPOCHS=${DEMO_EPOCHS:-1}
THREADS=${DEMO_THREADS:-$(nproc)}
mkdir -p "$OUT"
echo "== edgefl demo: training the CNN (1,663,370 parameters) on Fashion-MNIST, $EPOCHS epoch(s), $THREADS threads"
"$EF" train --model cnn --epochs "$EPOCHS" --threads "$THREADS" --out "$OUT/cnn.safetensors" \
    --json >"$OUT/train.json"
echo "== evaluating the saved model $OUT/cnn.safetensors"
"$EF" eval --model-file "$OUT/cnn.safetensors" --threads "$THREADS"
echo "== results (also in $OUT/train.json):"
cat "$OUT/train.json"
