#!/usr/bin/env bash
# Secure aggregation in `edgefl simulate`: on Fashion-MNIST with 100 clients
# (Dirichlet 0.5), 10 per round and 10% of the selected clients dropping out
# at a random SecAgg+ stage, FedAvg with SecAgg+ (--secagg on) ends with a
# model bit-identical to FedAvg with the same clipping and quantization but
# no masks (--secagg plain), for several seeds, with dropouts at every stage
# happening; classic SecAgg (k = n - 1) too. A threshold the survivors cannot
# meet aborts rounds cleanly (model unchanged, reason in the metrics). Bad
# settings are refused with a message.
# usage: test_secagg.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"

expect 2 "$EF" simulate --secagg maybe; err_has "secagg"
expect 2 "$EF" simulate --secagg-bits 33; err_has "secagg-bits"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "dataset missing: skipping the runs" >&2
    [ $fails -eq 0 ] || exit 1
    exit 77
fi
COMMON=(--dataset fashion-mnist --model mlp --clients 100 --partition dirichlet:0.5
        --clients-per-round 10 --local-epochs 1 --batch 32 --eval-every 0 --threads 2 --quiet)
expect 1 "$EF" simulate "${COMMON[@]}" --rounds 1 --secagg on --async; err_has "synchronous"
expect 1 "$EF" simulate "${COMMON[@]}" --rounds 1 --secagg on --strategy fedmedian; err_has "sum"
expect 1 "$EF" simulate "${COMMON[@]}" --rounds 1 --secagg on --secagg-neighbors 3
err_has "even"

total_dropped=0
for seed in 1 3; do
    for mode in on plain; do
        expect 0 "$EF" simulate "${COMMON[@]}" --rounds 4 --dropout 0.1 --seed $seed \
            --secagg $mode --out "$tmp/$mode.safetensors" --metrics "$tmp/$mode.jsonl" --json
        cp "$tmp/out" "$tmp/$mode.json"
    done
    cmp -s "$tmp/on.safetensors" "$tmp/plain.safetensors" ||
        fail "seed $seed: SecAgg+ and the unmasked baseline end with different models"
    cmp -s "$tmp/on.jsonl" "$tmp/plain.jsonl" ||
        fail "seed $seed: SecAgg+ and the unmasked baseline wrote different metrics"
    d=$(field "$tmp/on.json" dropped)
    total_dropped=$((total_dropped + d))
done
[ "$total_dropped" -gt 0 ] || fail "no client dropped out: the dropout path was not exercised"

# classic SecAgg: every client a neighbour of every other
for mode in on plain; do
    expect 0 "$EF" simulate "${COMMON[@]}" --rounds 2 --dropout 0.1 --seed 5 --secagg $mode \
        --secagg-neighbors 9 --out "$tmp/c$mode.safetensors" --json
done
cmp -s "$tmp/con.safetensors" "$tmp/cplain.safetensors" || fail "classic SecAgg differs from the baseline"

# a threshold of every holder with 30% dropouts: rounds abort, the model stays
expect 0 "$EF" simulate "${COMMON[@]}" --rounds 3 --dropout 0.3 --seed 2 --secagg on \
    --secagg-threshold 10 --metrics "$tmp/abort.jsonl" --json
grep -q '"aggregated":false.*"note":"secure aggregation aborted' "$tmp/abort.jsonl" ||
    fail "no aborted round with its reason in the metrics: $(head -c 600 "$tmp/abort.jsonl")"

finish cli/test_secagg
