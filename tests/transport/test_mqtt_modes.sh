#!/usr/bin/env bash
# The server's round modes over a real mosquitto broker with real
# `edgefl server` and `edgefl client` processes (clients made slow with
# --delay):
#  1. asynchronous buffered aggregation (FedBuff): every aggregation takes
#     exactly buffer-k updates, some of them trained on an older model
#     version (staleness within the bound), the run makes the configured
#     number of model versions and broadcasts each version a task used once;
#  2. over-selection: 3 clients selected for 2 updates, one of them slow: every
#     round closes at the 2 fast updates without waiting for it (late 1);
#  3. a deadline: 3 updates wanted, one client slow: every round closes at the
#     deadline with the 2 updates that came (min-updates 2), and the slow
#     client's update arriving afterwards is refused as a straggler of a
#     closed round (logged and counted);
#  4. central differential privacy: the epsilon of every round and of the
#     summary is what `edgefl privacy` computes for the same sampling rate,
#     noise multiplier, rounds and delta.
# usage: test_mqtt_modes.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
source "$(dirname "$0")/mqtt_common.sh"
[ -d /usr/share/datasets/fashion-mnist ] || { echo "no Fashion-MNIST: skipped"; exit 77; }

start_broker

# run_job NAME ROUNDS 'JOB KEYS' DELAYS...: a logistic-regression job of ROUNDS
# rounds with these keys in $tmp/NAME.json; clients with these --delay values
# (client i gets the i-th), then the server with --json and --metrics
# $tmp/NAME.jsonl (its stdout and stderr in $tmp/out and $tmp/err), which
# must run all rounds
run_job() {
    local name=$1 rounds=$2 i=0 d
    echo "{$3, \"rounds\": $rounds, \"model\": \"logreg\", \"eval-limit\": 200, \"limit\": 2000, \"threads\": 1}" \
        > "$tmp/$name.json"
    shift 3
    for d in "$@"; do
        bg "$EF" client --broker "$url" --config "$tmp/$name.json" --client-index "$i" \
            --delay "$d" 2>"$tmp/$name-c$i.err"
        i=$((i + 1))
    done
    expect 0 timeout 120 "$EF" server --broker "$url" --config "$tmp/$name.json" --json \
        --metrics "$tmp/$name.jsonl"
    stop_all
    [ "$(field "$tmp/out" rounds)" = "$rounds" ] || fail "$name: rounds $(cat "$tmp/out")"
}

# ---- 1. asynchronous buffered aggregation --------------------------------------
run_job async 6 '"clients": 4, "clients-per-round": 3, "async": true, "buffer-k": 2,
    "max-staleness": 5, "seed": 21' 0 0 0 0.3
[ "$(field "$tmp/out" model_version)" = 6 ] || fail "async model version: $(cat "$tmp/out")"
[ "$(field "$tmp/out" updates)" = 12 ] || fail "async: 6 aggregations of 2 updates: $(cat "$tmp/out")"
# versions 0..5 were each sent with tasks once; version 6 is the final model
[ "$(field "$tmp/out" models_broadcast)" = 6 ] || fail "async broadcasts: $(cat "$tmp/out")"
[ "$(metric "$tmp/async.jsonl" '[(x["round"], x["completed"], int(x["aggregated"]), x["staleness_max"] <= 5) for x in r]')" = \
  "$(/usr/bin/python3 -c 'print([(i, 2, 1, True) for i in range(1, 7)])')" ] ||
    fail "async aggregations: $(cat "$tmp/async.jsonl")"
[ "$(field "$tmp/out" updates_received)" = $((12 + $(field "$tmp/out" updates_rejected))) ] ||
    fail "async: received != accepted + rejected: $(cat "$tmp/out")"
# really asynchronous: some aggregation took an update trained on an older
# model version (the slow client's; measured: staleness up to 4)
[ "$(metric "$tmp/async.jsonl" 'max(x["staleness_max"] for x in r) >= 1')" = True ] ||
    fail "async: no aggregation took a stale update: $(cat "$tmp/async.jsonl")"

# ---- 2. over-selection: the round does not wait for the slow client ----------
run_job over 3 '"clients": 3, "clients-per-round": 2, "overselect": 1.5, "deadline": 60,
    "seed": 22' 0 0 1.5
[ "$(metric "$tmp/over.jsonl" '[(x["selected"], x["completed"], x["late"], x["sim_end"] - x["sim_start"] < 1.2) for x in r]')" = \
  "[(3, 2, 1, True), (3, 2, 1, True), (3, 2, 1, True)]" ] ||
    fail "over-selection: $(cat "$tmp/over.jsonl")"
grep -q "holding the update of round 1 for 1.5 s" "$tmp/over-c2.err" || fail "client 2 was not slow"

# ---- 3. a deadline: the round closes without the straggler, whose update is refused
run_job dead 3 '"clients": 3, "clients-per-round": 3, "deadline": 1.0, "min-updates": 2,
    "seed": 23' 0 0 1.5
[ "$(metric "$tmp/dead.jsonl" '[(x["selected"], x["completed"], x["late"], int(x["aggregated"]), 0.95 <= x["sim_end"] - x["sim_start"] < 1.45) for x in r]')" = \
  "[(3, 2, 1, 1, True), (3, 2, 1, 1, True), (3, 2, 1, 1, True)]" ] ||
    fail "deadline: $(cat "$tmp/dead.jsonl")"
# round 1's update from the slow client comes during round 2 (the later
# ones may come after the end)
err_has "rejected update from 2: update from client 2 for closed round 1"
rej=$(field "$tmp/out" updates_rejected)
[ "$rej" -ge 1 ] || fail "deadline: the late update was not counted: $(cat "$tmp/out")"
[ "$(grep -c "rejected update from 2: update from client 2 for closed round" "$tmp/err")" = "$rej" ] ||
    fail "deadline: refusals other than the straggler's: $(grep rejected "$tmp/err")"
[ "$(field "$tmp/out" updates_received)" = $((6 + rej)) ] ||
    fail "deadline: received != accepted + rejected: $(cat "$tmp/out")"

# ---- 4. central DP: the server's epsilon is the accountant's -------------------
run_job dp 3 '"clients": 4, "clients-per-round": 2, "dp-mode": "central", "dp-noise": 1.1,
    "dp-clip": 0.5, "dp-delta": 1e-5, "seed": 24' 0 0 0 0
cp "$tmp/out" "$tmp/dp.out"
[ "$(metric "$tmp/dp.jsonl" '[(x["selected"], int(x["aggregated"]), x["dp_clip"]) for x in r]')" = \
  "[(2, 1, 0.5), (2, 1, 0.5), (2, 1, 0.5)]" ] || fail "DP rounds: $(cat "$tmp/dp.jsonl")"
# close A B: A equals B to a relative 1e-9
close() { /usr/bin/python3 -c "import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(a - b) > 1e-9 * b)" "$1" "$2"; }
# 2 of the 4 clients checked in are sampled per round: q = 0.5
for r in 1 2 3; do
    expect 0 "$EF" privacy --q 0.5 --sigma 1.1 --steps "$r" --delta 1e-5 --json
    want=$(field "$tmp/out" epsilon)
    got=$(metric "$tmp/dp.jsonl" "r[$r - 1]['epsilon']")
    close "$got" "$want" || fail "round $r: the server's epsilon $got, edgefl privacy's $want"
done
got=$(field "$tmp/dp.out" epsilon)
close "$got" "$want" || fail "summary epsilon $got, edgefl privacy's $want"
[ "$(field "$tmp/dp.out" delta)" = 1e-05 ] || fail "DP delta: $(cat "$tmp/dp.out")"
finish test_mqtt_modes
