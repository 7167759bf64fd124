#!/usr/bin/env bash
# `edgefl loadgen` against a real mosquitto broker and `edgefl server`:
# usage errors; --make-keys; 50 light clients x 2 rounds of the MLP with
# signed messages and an allow-list, started with more than 1024 descriptors
# open (every connection's sockets land above FD_SETSIZE, which
# libmosquitto's own select() loop refuses) -- no update lost or rejected,
# every client checked in once and left, and the updates have the
# synthetic noise's norm (stddev 1e-3 x sqrt(parameters)); full fan-out
# with emulated device time and drawn example counts (the model taken in
# once per version, every other copy dropped as a duplicate); a clean exit
# with LEAVEs on SIGTERM.
# usage: test_loadgen.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"
source "$(dirname "$0")/../transport/mqtt_common.sh"
[ -d /usr/share/datasets/fashion-mnist ] || { echo "no Fashion-MNIST: skipped"; exit 77; }
jq_py() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# ---- usage errors (no broker needed) --------------------------------------
expect 2 "$EF" loadgen --clients 3
err_has "broker"
expect 2 "$EF" loadgen --broker mqtt://127.0.0.1:1 --examples 0
err_has "LO <= HI"
expect 2 "$EF" loadgen --broker mqtt://127.0.0.1:1 --examples 9:3
err_has "LO <= HI"
expect 2 "$EF" loadgen --broker mqtt://127.0.0.1:1 --partition iid
err_has "unknown option '--partition'"
expect 2 "$EF" loadgen --broker mqtt://127.0.0.1:1 --clients 10 --first-id 4294967290
err_has "reserved ids"
expect 2 "$EF" loadgen --broker mqtt://127.0.0.1:1 --clients 2 --keys "$tmp/nokeys"
err_has "make-keys"
expect 2 "$EF" loadgen --broker mqtt://127.0.0.1:1 --upload-window -1
err_has "upload-window"

# ---- keys -------------------------------------------------------------------
expect 0 "$EF" loadgen --make-keys "$tmp/keys" --clients 50
[ "$(wc -l < "$tmp/keys/allow.txt")" = 50 ] || fail "allow.txt does not list 50 clients"
grep -q "^49 [0-9a-f]\{64\}$" "$tmp/keys/allow.txt" || fail "allow.txt lacks client 49"
[ "$(stat -c %a "$tmp/keys/client-7.key")" = 600 ] || fail "a client key is not 0600"
expect 2 "$EF" loadgen --make-keys "$tmp/keys" --clients 50
err_has "not overwriting"
expect 0 "$EF" keygen --out "$tmp/server.key"

start_broker

# ---- 50 signed clients x 2 rounds, sockets above descriptor 1024 -------------
cat > "$tmp/job.json" <<JOB
{"clients": 50, "rounds": 2, "clients-per-round": 50, "model": "mlp", "seed": 4,
 "deadline": 60, "eval-every": 0, "eval-limit": 200}
JOB
timeout 90 "$EF" server --broker "$url" --config "$tmp/job.json" --json --metrics "$tmp/m.jsonl" \
    --key "$tmp/server.key" --allow "$tmp/keys/allow.txt" >"$tmp/server.json" 2>"$tmp/server.err" &
bg_pids+=($!)
server=$!
high=0
if [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 2048 ] || ulimit -n 2048 2>/dev/null; then
    high=1
fi
(
    # descriptors 20..1100 taken: loadgen's sockets and socket pairs come after
    if [ "$high" = 1 ]; then for fd in $(seq 20 1100); do eval "exec $fd</dev/null"; done; fi
    exec timeout 90 "$EF" loadgen --broker "$url" --config "$tmp/job.json" --clients 50 \
        --max-tasks 2 --keys "$tmp/keys" --server-key "$tmp/server.key.pub" --json \
        >"$tmp/lg.json" 2>"$tmp/lg.err"
) &
lg=$!
bg_pids+=($lg)
wait "$server" || fail "server failed: $(tail -5 "$tmp/server.err")"
wait "$lg" || fail "loadgen failed: $(tail -5 "$tmp/lg.err")"
[ "$high" = 1 ] || echo "note: ulimit -n below 2048: the descriptor check did not run"
[ "$(field "$tmp/server.json" rounds)" = 2 ] || fail "rounds: $(cat "$tmp/server.json")"
[ "$(field "$tmp/server.json" updates_received)" = 100 ] || fail "updates received: $(cat "$tmp/server.json")"
[ "$(field "$tmp/server.json" updates)" = 100 ] || fail "updates aggregated: $(cat "$tmp/server.json")"
[ "$(field "$tmp/server.json" updates_rejected)" = 0 ] || fail "updates rejected: $(cat "$tmp/server.json")"
[ "$(field "$tmp/server.json" messages_refused)" = 0 ] || fail "messages refused: $(grep rejected "$tmp/server.err" | head -3)"
[ "$(field "$tmp/lg.json" updates)" = 100 ] || fail "loadgen updates: $(cat "$tmp/lg.json")"
[ "$(field "$tmp/lg.json" checkins)" = 50 ] || fail "check-ins: $(cat "$tmp/lg.json")"
[ "$(field "$tmp/lg.json" leaves)" = 50 ] || fail "LEAVEs: $(cat "$tmp/lg.json")"
[ "$(field "$tmp/lg.json" refused)" = 0 ] || fail "loadgen refused server messages: $(grep refused "$tmp/lg.err" | head -3)"
[ "$(field "$tmp/lg.json" signed)" = 1 ] || fail "loadgen did not sign"
[ "$(jq_py "$tmp/lg.json" 'd["mqtt"]["publish_refused"]')" = 0 ] || fail "the broker refused publishes"
# every round: 50 updates, and their median L2 norm that of N(0, 1e-6) noise
# over 199,210 parameters (sqrt(199210) x 1e-3 = 0.4463)
/usr/bin/python3 - "$tmp/m.jsonl" <<'PY' || fail "metrics: $(cat "$tmp/m.jsonl")"
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(recs) == 2, recs
for r in recs:
    assert r["completed"] == 50 and r["late"] == 0 and r["rejected"] == 0, r
    want = math.sqrt(199210) * 1e-3
    assert abs(r["update_norm_median"] - want) < 0.005 * want, (r["update_norm_median"], want)
PY
if [ "$high" = 1 ]; then
    grep -q "all 50 clients connected" "$tmp/lg.err" || fail "not every client connected: $(tail -3 "$tmp/lg.err")"
fi

# ---- full fan-out, device time, drawn example counts --------------------------
cat > "$tmp/job2.json" <<JOB
{"clients": 20, "rounds": 2, "clients-per-round": 20, "model": "logreg", "seed": 6,
 "deadline": 60, "eval-every": 0, "eval-limit": 200}
JOB
timeout 90 "$EF" server --broker "$url" --config "$tmp/job2.json" --json --metrics "$tmp/m2.jsonl" \
    >"$tmp/server2.json" 2>"$tmp/server2.err" &
server=$!
bg_pids+=($server)
expect 0 timeout 60 "$EF" loadgen --broker "$url" --config "$tmp/job2.json" --clients 20 \
    --max-tasks 2 --full-fanout --compute-ms 300 --examples 10:30 --json
cp "$tmp/out" "$tmp/lg2.json"
wait "$server" || fail "server 2 failed: $(tail -5 "$tmp/server2.err")"
[ "$(field "$tmp/server2.json" updates)" = 40 ] || fail "fan-out updates: $(cat "$tmp/server2.json")"
[ "$(field "$tmp/lg2.json" mode)" = full-fanout ] || fail "mode: $(cat "$tmp/lg2.json")"
[ "$(field "$tmp/lg2.json" models)" = 2 ] || fail "models taken in: $(cat "$tmp/lg2.json")"
[ "$(field "$tmp/lg2.json" model_duplicates)" = 38 ] || fail "duplicate models: $(cat "$tmp/lg2.json")"
/usr/bin/python3 - "$tmp/m2.jsonl" <<'PY' || fail "fan-out metrics: $(cat "$tmp/m2.jsonl")"
import json, sys
for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()):
    assert r["completed"] == 20, r
    # every update waited 300 ms of emulated device time
    assert r["sim_end"] - r["sim_start"] >= 0.3, r
PY

# ---- SIGTERM: a clean exit, every client says goodbye ------------------------
"$EF" loadgen --broker "$url" --config "$tmp/job2.json" --clients 10 --first-id 100 --json \
    >"$tmp/lg3.json" 2>"$tmp/lg3.err" &
lg=$!
bg_pids+=($lg)
for _ in $(seq 100); do grep -q "all 10 clients connected" "$tmp/lg3.err" && break; sleep 0.1; done
kill -TERM "$lg"
wait "$lg" || fail "loadgen exited $? on SIGTERM: $(tail -3 "$tmp/lg3.err")"
[ "$(field "$tmp/lg3.json" leaves)" = 10 ] || fail "LEAVEs on SIGTERM: $(cat "$tmp/lg3.json")"
stop_all
finish test_loadgen
