#!/usr/bin/env bash
# `edgefl privacy`: published epsilons (TensorFlow Privacy's DP-SGD example,
# Opacus's accountant test), one JSON object on stdout with --json,
# --target-epsilon consistent with --steps, help, and refusal of missing,
# conflicting and bad flags (exit code 2 with a message).
# usage: test_privacy.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"

PY=
if command -v python3 >/dev/null 2>&1; then PY=python3; fi
# json_check EXPR: the last stdout is one line holding one JSON object d with EXPR true
json_check() {
    [ "$(wc -l <"$tmp/out")" = 1 ] || fail "--json printed $(wc -l <"$tmp/out") lines"
    if [ -n "$PY" ]; then
        $PY -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if ($1) else 1)" \
            <"$tmp/out" || fail "JSON check '$1' on: $(cat "$tmp/out")"
    fi
}

# help
expect 0 "$EF" privacy --help
out_has "--target-epsilon"
out_has "--delta"
expect 0 "$EF" help privacy
expect 0 "$EF" --help
out_has "privacy"

# TensorFlow Privacy compute_dp_sgd_privacy_test.py Test0: n 60000, batch 150,
# noise 1.3, 15 epochs (6000 steps), delta 1e-5 -> 0.7242234026109595 at order 19
expect 0 "$EF" privacy --q 0.0025 --sigma 1.3 --steps 6000 --delta 1e-5
out_has "epsilon = 0.724223 at delta = 1e-05 (best RDP order 19)"
expect 0 "$EF" privacy --q 0.0025 --sigma 1.3 --steps 6000 --delta 1e-5 --json
json_check 'abs(d["epsilon"] - 0.7242234026109595) < 1e-9 and d["order"] == 19 and d["q"] == 0.0025 and d["sigma"] == 1.3 and d["steps"] == 6000 and d["delta"] == 1e-5 and d["orders"] == "default"'
grep -q '"epsilon":0.72422340' "$tmp/out" || fail "epsilon in JSON: $(cat "$tmp/out")"
# Opacus opacus/tests/accountants_test.py test_rdp_accountant: -> 7.32911117143
expect 0 "$EF" privacy --q=0.04 --sigma=1.5 --steps=2250 --delta=1e-5 --json
json_check 'abs(d["epsilon"] - 7.32911117143) < 1e-7'

# --target-epsilon: the largest T within the budget, consistent with --steps
expect 0 "$EF" privacy --q 0.0025 --sigma 1.3 --target-epsilon 1 --delta 1e-5 --json
json_check 'd["max_steps"] == d["steps"] and d["epsilon"] <= 1 and d["target_epsilon"] == 1 and d["unbounded"] is False'
T=$(sed -n 's/.*"max_steps":\([0-9]*\).*/\1/p' "$tmp/out")
[ -n "$T" ] && [ "$T" -gt 0 ] || fail "no max_steps in $(cat "$tmp/out")"
expect 0 "$EF" privacy --q 0.0025 --sigma 1.3 --target-epsilon 1 --delta 1e-5
out_has "max steps = $T: epsilon = "
expect 0 "$EF" privacy --q 0.0025 --sigma 1.3 --steps "$T" --delta 1e-5 --json
json_check 'd["epsilon"] <= 1'
expect 0 "$EF" privacy --q 0.0025 --sigma 1.3 --steps $((T + 1)) --delta 1e-5 --json
json_check 'd["epsilon"] > 1'
# nobody sampled: no limit; no noise: not one step
expect 0 "$EF" privacy --q 0 --sigma 1 --target-epsilon 1 --delta 1e-5 --json
json_check 'd["unbounded"] is True and d["epsilon"] == 0'
expect 0 "$EF" privacy --q 0.5 --sigma 0 --target-epsilon 5 --delta 1e-5
out_has "max steps = 0"
expect 0 "$EF" privacy --q 0.5 --sigma 0 --steps 3 --delta 1e-5 --json
json_check 'd["epsilon"] is None and d["order"] is None'
expect 0 "$EF" privacy --q 0.5 --sigma 0 --steps 3 --delta 1e-5
out_has "epsilon = inf"

# custom orders; the best one at an end of the list gets a note on stderr
expect 0 "$EF" privacy --q 0.01 --sigma 1 --steps 1000 --delta 1e-5 --orders 2,4,8 --json
json_check 'd["orders"] == [2, 4, 8] and d["order"] in (2, 4, 8)'
err_has "largest one given"
expect 0 "$EF" privacy --q 0.01 --sigma 1 --steps 1000 --delta 1e-5 --orders 1.5,3,6,12,24,48
[ -s "$tmp/err" ] && fail "unexpected stderr: $(cat "$tmp/err")"

# usage errors: exit 2 with a message
expect 2 "$EF" privacy --sigma 1 --steps 10 --delta 1e-5; err_has "--q is required"
expect 2 "$EF" privacy --q 0.1 --steps 10 --delta 1e-5; err_has "--sigma is required"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10; err_has "--delta is required"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --delta 1e-5; err_has "exactly one of --steps and --target-epsilon"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --delta 1e-5 --steps 5 --target-epsilon 1; err_has "exactly one"
expect 2 "$EF" privacy --q 1.5 --sigma 1 --steps 10 --delta 1e-5; err_has "--q"
expect 2 "$EF" privacy --q abc --sigma 1 --steps 10 --delta 1e-5; err_has "--q"
expect 2 "$EF" privacy --q nan --sigma 1 --steps 10 --delta 1e-5; err_has "--q"
expect 2 "$EF" privacy --q 0.1 --sigma -1 --steps 10 --delta 1e-5; err_has "--sigma"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 0; err_has "--delta"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1; err_has "--delta"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps -5 --delta 1e-5; err_has "--steps"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --target-epsilon -1 --delta 1e-5; err_has "--target-epsilon"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --orders 2,x; err_has "--orders"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --orders 2,,3; err_has "--orders"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --orders 0.5,2; err_has "order 0.5"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --orders ""; err_has "--orders"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --bogus; err_has "unknown option '--bogus'"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1e-5 --json=1; err_has "takes no value"
expect 2 "$EF" privacy --q 0.1 --sigma 1 --steps 10 --delta 1e-5 stray; err_has "unexpected argument"
expect 2 "$EF" privacy --q 0.1 --q 0.2 --sigma 1 --steps 10 --delta 1e-5; err_has "given twice"
[ -s "$tmp/out" ] && fail "a usage error printed on stdout: $(cat "$tmp/out")"

if [ -z "$PY" ]; then echo "python3 not found: JSON contents checked by grep only" >&2; fi
if [ $fails != 0 ]; then
    echo "test_privacy: $fails failures" >&2
    exit 1
fi
echo "test_privacy: all checks passed"
