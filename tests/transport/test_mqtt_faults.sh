#!/usr/bin/env bash
# Failures in the middle of a round, over a real mosquitto broker with real
# `edgefl server` and `edgefl client` processes:
#  1. SecAgg+ (with distributed DP) and 10 clients, every one selected: 2 of
#     them (20%) are killed with SIGKILL after they sent their key shares and
#     computed their masked input, before they sent it. Their pairwise masks
#     are then inside every surviving neighbour's masked update, so the
#     server can only unmask the sum by reconstructing the dead clients' mask
#     keys from the survivors' shares (the SecAgg+ recovery path). The round
#     must complete, and the --audit-dir files must show that the unmasked
#     sum is exactly the sum mod 2^bits of the 8 survivors' pre-mask inputs,
#     word for word; the same check with a dead client's input added fails.
#  2. The server is killed with SIGKILL in the middle of round 2 (two updates
#     received, two still on their way) and restarted on its --state-dir: it
#     resumes after round 1, refuses the old round's answers as stale (with
#     the reason logged), runs round 2 again and ends with exactly the
#     configured rounds; no round counts more updates than clients per round.
# usage: test_mqtt_faults.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
source "$(dirname "$0")/mqtt_common.sh"
[ -d /usr/share/datasets/fashion-mnist ] || { echo "no Fashion-MNIST: skipped"; exit 77; }
CHECK="/usr/bin/python3 $(dirname "$0")/sa_audit_check.py"

# ---- usage errors ---------------------------------------------------------
expect 2 "$EF" server --broker mqtt://127.0.0.1:1 --audit-dir "$tmp/a"
err_has "needs --secagg"
[ -e "$tmp/a" ] && fail "a refused --audit-dir was created"
: > "$tmp/file"
expect 2 "$EF" client --broker mqtt://127.0.0.1:1 --client-index 0/2 --audit-dir "$tmp/file"
err_has "not a writable directory"
expect 2 "$EF" client --broker mqtt://127.0.0.1:1 --client-index 0/2 --delay -1
err_has "delay"

start_broker

# ---- 1. SecAgg+ with 2 of 10 clients killed mid-round ----------------------
cat > "$tmp/sa.json" <<JOB
{"clients": 10, "rounds": 2, "clients-per-round": 10, "model": "logreg", "seed": 3,
 "secagg": "on", "secagg-bits": 24, "dp-mode": "distributed", "dp-noise": 0.5,
 "dp-clip": 1.0, "dp-min-survivors": 0.7, "eval-limit": 200, "limit": 2000, "threads": 1}
JOB
A=$tmp/audit
victims="3 7"
declare -A pid
for i in $(seq 0 9); do
    d=0
    case " $victims " in *" $i "*) d=60 ;; esac # the victims hold their masked input
    bg "$EF" client --broker "$url" --config "$tmp/sa.json" --client-index "$i" \
        --session-expiry 2 --delay "$d" --audit-dir "$A" 2>"$tmp/sa$i.err"
    pid[$i]=${bg_pids[-1]}
done
"$EF" server --broker "$url" --config "$tmp/sa.json" --audit-dir "$A" --json \
    --metrics "$tmp/sa.jsonl" >"$tmp/sa.json.out" 2>"$tmp/sa.err" &
server=$!
bg_pids+=("$server")
for v in $victims; do wait_for "$tmp/sa$v.err" "holding the update of round 1"; done
# the victims' inputs are on file: they computed them, then were killed
for v in $victims; do
    [ -f "$A/sa-round1-client$v.bin" ] || fail "no audit input of client $v before the kill"
    { kill -9 "${pid[$v]}"; wait "${pid[$v]}"; } 2>/dev/null
done
wait_pid "$server" 120 || fail "the SecAgg+ server failed: $(tail -5 "$tmp/sa.err")"
out=$tmp/sa.json.out
[ "$(field "$out" rounds)" = 2 ] || fail "SecAgg+ rounds: $(cat "$out")"
[ "$(field "$out" dropped)" = 2 ] || fail "SecAgg+: the dead clients are not counted as dropped"
[ "$(metric "$tmp/sa.jsonl" '[(x["selected"], x["completed"], x["dropped"], int(x["aggregated"])) for x in r]')" = \
  "[(10, 8, 2, 1), (8, 8, 0, 1)]" ] || fail "SecAgg+ rounds: $(cat "$tmp/sa.jsonl")"
survivors=0,1,2,4,5,6,8,9
for r in 1 2; do
    $CHECK "$A" "$r" --expect "$survivors" || fail "round $r: the unmasked sum is not the survivors'"
done
# the checker catches a sum that would hold a dead client's input
for v in $victims; do
    $CHECK "$A" 1 --expect "$survivors" --also "$v" 2>/dev/null &&
        fail "the check passes with client $v's input added"
done
$CHECK "$A" 1 --expect "0,1,2,3,4,5,6,7,8,9" 2>/dev/null &&
    fail "the check passes with the killed clients expected in the sum"
[ -e "$A/sa-round2-client3.bin" ] && fail "a killed client wrote an input for round 2"
[ "$(stat -c %a "$A/sa-round1-client0.bin")" = 600 ] || fail "a client's audit file is not 0600"
stop_all

# ---- 2. the server killed in the middle of round 2, then restarted -----------
cat > "$tmp/crash.json" <<JOB
{"clients": 4, "rounds": 3, "clients-per-round": 4, "model": "logreg", "seed": 11,
 "eval-limit": 200, "limit": 2000, "threads": 1}
JOB
for i in 0 1 2 3; do
    d=0
    [ "$i" -ge 2 ] && d=2.5 # clients 2 and 3 are slow: their updates are in flight
    bg "$EF" client --broker "$url" --config "$tmp/crash.json" --client-index "$i" \
        --delay "$d" 2>"$tmp/cr$i.err"
done
# --verbose: the server logs every update it accepts
"$EF" server --broker "$url" --config "$tmp/crash.json" --state-dir "$tmp/state" \
    --metrics "$tmp/cr1.jsonl" --verbose 2>"$tmp/cr-s1.err" >/dev/null &
server=$!
bg_pids+=("$server")
wait_for "$tmp/cr-s1.err" "^round 1/3"
for i in 0 1; do wait_for "$tmp/cr-s1.err" "accepted update from $i for round 2"; done
for i in 2 3; do wait_for "$tmp/cr$i.err" "holding the update of round 2"; done
# round 2 is open: two updates counted, two held by the slow clients
grep -q "^round 2/3" "$tmp/cr-s1.err" && fail "round 2 closed before the kill (the slow clients were not slow)"
{ kill -9 "$server"; wait "$server"; } 2>/dev/null
# the slow clients' round-2 updates go to the dead server's queued session
for i in 2 3; do wait_for "$tmp/cr$i.err" "update sent: round 2"; done
[ "$(metric "$tmp/cr1.jsonl" '[x["round"] for x in r]')" = "[1]" ] ||
    fail "the first server's metrics: $(cat "$tmp/cr1.jsonl")"
expect 0 timeout 120 "$EF" server --broker "$url" --config "$tmp/crash.json" \
    --state-dir "$tmp/state" --metrics "$tmp/cr2.jsonl" --json
err_has "resumed from $tmp/state after round 1 "
[ "$(field "$tmp/out" rounds)" = 3 ] || fail "restart: rounds $(cat "$tmp/out")"
[ "$(field "$tmp/out" model_version)" = 3 ] || fail "restart: model version $(cat "$tmp/out")"
# 4 per round, the resumed round 2 counted once
[ "$(field "$tmp/out" updates)" = 12 ] || fail "restart: updates $(cat "$tmp/out")"
[ "$(metric "$tmp/cr2.jsonl" '[(x["round"], x["selected"], x["completed"], int(x["aggregated"])) for x in r]')" = \
  "[(2, 4, 4, 1), (3, 4, 4, 1)]" ] || fail "restart: rounds run $(cat "$tmp/cr2.jsonl")"
# the slow clients' answers to the dead server's round-2 tasks, queued in its
# session: refused as stale (whether they come before round 2 starts again
# or after), and nothing else is refused
stale="for round 2.*(stale"
for i in 2 3; do
    grep -q "rejected update from $i: update from client $i $stale" "$tmp/err" ||
        fail "client $i's answer to the dead server's task was not refused as stale: $(grep rejected "$tmp/err")"
done
[ "$(field "$tmp/out" updates_rejected)" = 2 ] || fail "restart: rejected $(cat "$tmp/out")"
[ "$(grep -c "rejected update" "$tmp/err")" = 2 ] || fail "restart: $(grep rejected "$tmp/err")"
[ "$(field "$tmp/out" updates_received)" = 10 ] ||
    fail "restart: 8 updates accepted and 2 refused, but $(cat "$tmp/out")"
stop_all
finish test_mqtt_faults
