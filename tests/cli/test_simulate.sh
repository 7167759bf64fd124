#!/usr/bin/env bash
# `edgefl simulate` from the command line: two runs with the same seed write
# byte-identical metrics files (and a different seed does not), --json has
# the documented fields, --report writes a self-contained HTML file, a
# config file sets options and flags override it, and bad input (unknown
# options or config keys, bad specs, impossible settings) is refused with
# exit code 2 and a message.
# usage: test_simulate.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"

expect 0 "$EF" simulate --help
grep -q -- '--clients-per-round' "$tmp/out" || fail "simulate --help lacks --clients-per-round"
expect 2 "$EF" simulate --bogus
expect 2 "$EF" simulate --partition dirichlet:-1; err_has "dirichlet"
expect 2 "$EF" simulate --strategy fedfoo; err_has "fedfoo"
expect 2 "$EF" simulate --profile martian; err_has "martian"
expect 2 "$EF" simulate --flops lognormal:abc; err_has "lognormal:abc"
expect 2 "$EF" simulate --rounds 0
echo '{"rounds": 2, "bogus-key": 1}' >"$tmp/bad.json"
expect 2 "$EF" simulate --config "$tmp/bad.json"; err_has "bogus-key"
echo '{"rounds": "many"}' >"$tmp/bad2.json"
expect 2 "$EF" simulate --config "$tmp/bad2.json"; err_has "rounds"
echo 'not json' >"$tmp/bad3.json"
expect 2 "$EF" simulate --config "$tmp/bad3.json"; err_has "not a JSON object"
expect 2 "$EF" simulate --config "$tmp/missing.json"; err_has "missing.json"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "dataset missing: skipping the runs" >&2
    [ $fails = 0 ] && exit 77 || exit 1
fi
expect 1 "$EF" simulate --fed-eval-every 1 --rounds 1 --quiet; err_has "holdout"

common=(--model logreg --clients 30 --partition dirichlet:0.5 --clients-per-round 6
        --rounds 3 --profile heavy-tail --overselect 1.3 --deadline 2 --eval-limit 500
        --threads 2 --quiet)
expect 0 "$EF" simulate "${common[@]}" --seed 3 --metrics "$tmp/a.jsonl" --json \
    --report "$tmp/r.html" --trace "$tmp/t.jsonl"
cp "$tmp/out" "$tmp/run.json"
expect 0 "$EF" simulate "${common[@]}" --seed 3 --metrics "$tmp/b.jsonl"
expect 0 "$EF" simulate "${common[@]}" --seed 4 --metrics "$tmp/c.jsonl"
cmp -s "$tmp/a.jsonl" "$tmp/b.jsonl" || fail "same seed, different metrics files"
cmp -s "$tmp/a.jsonl" "$tmp/c.jsonl" && fail "different seeds, identical metrics files"
[ "$(wc -l <"$tmp/a.jsonl")" = 3 ] || fail "metrics file does not have 3 lines"
[ "$(wc -l <"$tmp/t.jsonl")" = 3 ] || fail "trace file does not have 3 lines"
/usr/bin/python3 - "$tmp/run.json" "$tmp/a.jsonl" "$tmp/t.jsonl" <<'PY' || fail "JSON checks"
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("final_accuracy", "rounds", "wall_s", "sim_time_s", "bytes_up", "bytes_down", "peak_rss_mb"):
    assert k in d, k
assert d["rounds"] == 3 and 0 < d["final_accuracy"] <= 1 and d["sim_time_s"] > 0
rows = [json.loads(l) for l in open(sys.argv[2])]
assert [r["round"] for r in rows] == [1, 2, 3]
assert all("wall_s" not in r for r in rows)
assert sum(r["bytes_up"] for r in rows) == d["bytes_up"]
trace = [json.loads(l) for l in open(sys.argv[3])]
assert all(len(t["clients"]) == r["completed"] for t, r in zip(trace, rows))
PY
grep -q '<svg' "$tmp/r.html" || fail "report has no SVG chart"
grep -qi '<script' "$tmp/r.html" && fail "report contains a script"

# config file values are used; a flag overrides the file
cat >"$tmp/cfg.json" <<'JSON'
{"model": "logreg", "clients": 20, "clients-per-round": 5, "rounds": 2, "eval-limit": 300,
 "threads": 2, "quiet": true, "seed": 5}
JSON
expect 0 "$EF" simulate --config "$tmp/cfg.json" --json
grep -q '"rounds":2' "$tmp/out" || fail "config rounds not used"
expect 0 "$EF" simulate --config "$tmp/cfg.json" --rounds 1 --json
grep -q '"rounds":1' "$tmp/out" || fail "flag did not override the config"

if [ $fails = 0 ]; then echo "cli/test_simulate: all checks passed"; exit 0; fi
echo "cli/test_simulate: $fails checks FAILED" >&2
exit 1
