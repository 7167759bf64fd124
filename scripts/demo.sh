#!/usr/bin/env bash
# `make demo`: a federated run on Fashion-MNIST with 100 virtual phones:
# FedAvg on the CNN of McMahan et al. 2017, label-skewed data (Dirichlet
# 0.5), 10 clients per round with 130% over-selection and a 20 s deadline
# over the "mobile" device profile, 60 rounds (examples/demo.json). Writes
# the HTML report, the per-round metrics and the final model to build/demo/.
# DEMO_ROUNDS and DEMO_THREADS change the run.
# usage: scripts/demo.sh [EDGEFL_BINARY]
set -euo pipefail
EF=${1:-build/edgefl}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${DEMO_OUT:-build/demo}
mkdir -p "$OUT"
args=(--config "$ROOT/examples/demo.json" --threads "${DEMO_THREADS:-$(nproc)}"
      --report "$OUT/report.html" --metrics "$OUT/metrics.jsonl" --out "$OUT/model.safetensors"
      --json)
[ -n "${DEMO_ROUNDS:-}" ] && args+=(--rounds "$DEMO_ROUNDS")
echo "== edgefl demo: federated learning with 100 simulated phones (examples/demo.json)"
"$EF" simulate "${args[@]}" >"$OUT/result.json"
echo "== evaluating the final global model $OUT/model.safetensors"
"$EF" eval --model-file "$OUT/model.safetensors"
echo "== summary (also in $OUT/result.json):"
/usr/bin/python3 - "$OUT/result.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  final test accuracy  {d['final_accuracy']:.4f}")
print(f"  rounds               {d['rounds']}   ({d['updates']} updates, {d['dropped']} dropouts, {d['late']} late)")
print(f"  simulated time       {d['sim_time_s'] / 60:.1f} min ({d['mean_round_s']:.1f} s per round)")
print(f"  wall time            {d['wall_s']:.0f} s, peak memory {d['peak_rss_mb']:.0f} MB")
print(f"  traffic              {d['bytes_up'] / 1e9:.2f} GB up, {d['bytes_down'] / 1e9:.2f} GB down")
PY
echo "== report: $OUT/report.html (open it in a browser; it needs no network)"
