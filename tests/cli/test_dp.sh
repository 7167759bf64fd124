#!/usr/bin/env bash
# Differential privacy in `edgefl simulate`: the epsilon a run reports each
# round and at the end equals `edgefl privacy` for the same sampling rate,
# noise multiplier and number of noised rounds; a run whose planned rounds
# cannot fit --dp-target-epsilon is refused before it starts (exit 2, with
# how many rounds fit); central noise works with and without SecAgg+, distributed noise
# (Skellam, discrete Gaussian) with it, and distributed noise without secure
# aggregation is refused; adaptive clipping brings C to the median update
# norm. Same seed, same metrics.
# usage: test_dp.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"

expect 2 "$EF" simulate --dp-mode sometimes; err_has "dp-mode"
expect 2 "$EF" simulate --dp-noise -1; err_has "dp-noise"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "dataset missing: skipping the runs" >&2
    [ $fails -eq 0 ] || exit 1
    exit 77
fi
COMMON=(--dataset fashion-mnist --model logreg --clients 200 --partition dirichlet:0.5
        --clients-per-round 20 --local-epochs 1 --batch 32 --eval-every 0 --threads 2 --quiet)

expect 1 "$EF" simulate "${COMMON[@]}" --rounds 1 --dp-mode distributed; err_has "secure aggregation"
# 20 of 200: q = 0.1; z = 1, 60 rounds is about epsilon 3.2 at 1e-5: a target of 2 cannot fit
expect 2 "$EF" simulate "${COMMON[@]}" --rounds 60 --dp-mode central --dp-noise 1 \
    --dp-target-epsilon 2; err_has "rounds fit"

# central DP: the run's epsilon is the accountant's for q = 20/200, z = 1.1, 5 steps
expect 0 "$EF" simulate "${COMMON[@]}" --rounds 5 --dp-mode central --dp-noise 1.1 \
    --dp-clip 0.5 --metrics "$tmp/c1.jsonl" --json
cp "$tmp/out" "$tmp/central.json"
eps=$(field "$tmp/central.json" epsilon)
expect 0 "$EF" privacy --q 0.1 --sigma 1.1 --steps 5 --delta 1e-5 --json
ref=$(field "$tmp/out" epsilon)
[ "$eps" = "$ref" ] || fail "simulate reports epsilon $eps, edgefl privacy $ref"
/usr/bin/python3 - "$tmp/c1.jsonl" <<'PY' || fail "per-round epsilon does not grow"
import json, sys
e = [json.loads(l)["epsilon"] for l in open(sys.argv[1])]
sys.exit(0 if len(e) == 5 and all(b > a for a, b in zip(e, e[1:])) else 1)
PY
expect 0 "$EF" simulate "${COMMON[@]}" --rounds 5 --dp-mode central --dp-noise 1.1 \
    --dp-clip 0.5 --metrics "$tmp/c2.jsonl"
cmp -s "$tmp/c1.jsonl" "$tmp/c2.jsonl" || fail "same seed, different DP metrics"

# a target just above round 3's epsilon: 5 rounds do not fit, 3 do
t3=$(/usr/bin/python3 -c "import json; print([json.loads(l)['epsilon'] for l in open('$tmp/c1.jsonl')][2])")
expect 2 "$EF" simulate "${COMMON[@]}" --rounds 5 --dp-mode central --dp-noise 1.1 \
    --dp-clip 0.5 --dp-target-epsilon "$t3"; err_has "only 3 rounds fit"

# adaptive clipping: from C = 1, far above the updates' norms, C comes down to
# their median (Andrew et al.'s quantile 0.5) within 20 rounds
expect 0 "$EF" simulate "${COMMON[@]}" --rounds 20 --dp-mode central --dp-noise 1 \
    --dp-clip 1 --dp-adaptive-clip --metrics "$tmp/ad.jsonl"
/usr/bin/python3 - "$tmp/ad.jsonl" <<'PY' || fail "adaptive clipping did not follow the median norm"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
c, m = r[-1]["dp_clip"], r[-1]["update_norm_median"]
print("adaptive clip: C %.4f -> %.4f, median norm %.4f" % (r[0]["dp_clip"], c, m), file=sys.stderr)
sys.exit(0 if r[0]["dp_clip"] == 1 and 0.5 * m < c < 2 * m else 1)
PY
expect 1 "$EF" simulate "${COMMON[@]}" --rounds 1 --secagg on --dp-mode central \
    --dp-adaptive-clip; err_has "adaptive clipping"

# with SecAgg+: central and distributed noise
for mode in central distributed; do
    for mech in skellam dgauss; do
        [ $mode = central ] && [ $mech = dgauss ] && continue
        expect 0 "$EF" simulate "${COMMON[@]}" --rounds 3 --secagg on --dp-mode $mode \
            --dp-mechanism $mech --dp-noise 1 --dp-clip 0.5 --json
        e=$(field "$tmp/out" epsilon)
        a=$(field "$tmp/out" final_accuracy)
        /usr/bin/python3 -c "import sys; sys.exit(0 if 0 < $e < 100 and $a > 0.3 else 1)" ||
            fail "secagg + $mode DP ($mech): epsilon $e, accuracy $a"
    done
done

# distributed noise sized for every client: a round with a dropout is not
# released, spends no privacy, and says why
expect 0 "$EF" simulate "${COMMON[@]}" --rounds 3 --secagg on --dp-mode distributed \
    --dp-noise 1 --dp-clip 0.5 --dropout 0.3 --dp-min-survivors 1 --metrics "$tmp/ms.jsonl"
/usr/bin/python3 - "$tmp/ms.jsonl" <<'PY' || fail "an under-noised round was released or not explained"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
held = [x for x in r if "not released" in x.get("note", "")]
ok = held and all(not x["aggregated"] for x in held)
eps = [x.get("epsilon", 0) for x in r]
# epsilon grows only in released rounds
for a, b, x in zip([0] + eps, eps, r):
    ok = ok and ((b > a) == x["aggregated"])
sys.exit(0 if ok else 1)
PY

finish cli/test_dp
