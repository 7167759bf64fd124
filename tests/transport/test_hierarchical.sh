#!/usr/bin/env bash
# Hierarchical aggregation over two real, bridged mosquitto brokers.
#
#   central broker:  edgefl server, flat clients 0 1 2
#   edge broker:     edgefl aggregator (gateway 100), local clients 3 4 5
#   bridge (edge -> central, MQTT 3.1.1, topic remapping):
#     up/edgefl/J/server  -> edgefl/J/server         (the gateway's uploads)
#     edgefl/J/client/100 -> up/edgefl/J/client/100  (its tasks)
#     edgefl/J/broadcast/# -> up/edgefl/J/broadcast/# (model, chunks, announcement)
#
# Mode (b) of the gateway: ONE connection, to the edge broker, with the
# upstream prefix up/. Every party signs: the server allow-lists the flat
# clients and the gateway (under its id 100); the local clients trust the
# gateway's key and the gateway allow-lists them. The six clients are the
# six slices of the job's partition (--client-index I/6), so the run is a
# flat FedAvg run over the same six clients seen through a gateway: its
# final model must equal `edgefl simulate` of the job (every client in
# every round) within the float tolerance derived below. Then mode (a) (a
# second connection straight to the central broker) for one round, and
# usage errors.
# usage: test_hierarchical.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
source "$(dirname "$0")/mqtt_common.sh"
src=$2
[ -d /usr/share/datasets/fashion-mnist ] || { echo "no Fashion-MNIST: skipped"; exit 77; }
command -v mosquitto_sub >/dev/null || { echo "no mosquitto_sub: skipped"; exit 77; }
t_start=$(date +%s)

# ---- usage errors (no broker needed) --------------------------------------------
cat > "$tmp/job.json" <<JOB
{"clients": 6, "rounds": 3, "clients-per-round": 6, "model": "mlp", "partition": "iid",
 "limit": 240, "local-epochs": 1, "batch": 64, "lr": 0.05, "seed": 5, "job": 71,
 "eval-limit": 500, "threads": 1}
JOB
agg() { expect 2 "$EF" aggregator --config "$tmp/job.json" "$@"; }
agg --broker mqtt://127.0.0.1:1 --upstream-prefix up/
err_has "--id G is required"
agg --broker mqtt://127.0.0.1:1 --id 100
err_has "upstream side is missing"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream-prefix up/ --upstream-tls-ca /etc/hostname
err_has "need --upstream"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream mqtt://127.0.0.1:2 \
    --upstream-tls-ca "$tmp/no-such-ca.crt"
err_has "cannot read"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream 'ftp://127.0.0.1:2'
err_has "ftp"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream-prefix 'up/#'
err_has "wildcards"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream mqtt://127.0.0.1:1
err_has "upstream-prefix too"
agg --broker mqtt://127.0.0.1:1 --id 4294967295 --upstream-prefix up/
err_has "below"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream-prefix up/ --deadline-fraction 0
err_has "deadline-fraction"
agg --id 100 --upstream-prefix up/
err_has "--broker"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream-prefix up/ --rounds 3
err_has "unknown option"
printf '3 not-a-key\n' > "$tmp/bad_allow.txt"
agg --broker mqtt://127.0.0.1:1 --id 100 --upstream-prefix up/ --allow "$tmp/bad_allow.txt"
err_has "bad_allow.txt:1"
expect 0 "$EF" aggregator --help
out_has "upstream-prefix"
expect 0 "$EF" --help
out_has "aggregator"

# ---- keys ---------------------------------------------------------------------------
for who in server gateway c0 c1 c2 c3 c4 c5; do
    expect 0 "$EF" keygen --out "$tmp/$who.key"
    cp "$tmp/out" "$tmp/$who.hex" # the public key
done
pub() { cat "$tmp/$1.hex"; }
{ for i in 0 1 2; do echo "$i $(pub c$i)"; done; echo "100 $(pub gateway)"; } > "$tmp/server_allow.txt"
{ for i in 3 4 5; do echo "$i $(pub c$i)"; done; } > "$tmp/gateway_allow.txt"

# ---- two brokers, the edge one bridged to the central one -----------------------------
start_broker
central_port=$port
central=$url
edge_port=$(free_port)
edge=mqtt://127.0.0.1:$edge_port
# the bridge carries job 71 (mode b); job 72 (mode a) crosses none: its
# gateway connects to the central broker itself. As the shipped template
# without its TLS: MQTT 3.1.1 (a 2.0.11 MQTT 5 bridge gets no durable
# session), try_private (keeps the retain flags of the broadcast) and its
# topic lines.
{ broker_conf "$edge_port" "$tmp/edge.log"; cat <<CONF; } > "$tmp/edge.conf"
connection central
address 127.0.0.1:$central_port
bridge_protocol_version mqttv311
try_private true
cleansession false
remote_clientid edgefl-bridge-100
local_clientid edgefl-bridge-100-local
restart_timeout 1 5
CONF
# the topic lines of the shipped template (deploy/mosquitto/bridge.conf.example)
sed -n -e 's/@JOB@/71/g' -e 's/@GATEWAY_ID@/100/g' -e '/^topic /p' \
    "$src/deploy/mosquitto/bridge.conf.example" >> "$tmp/edge.conf"
[ "$(grep -c '^topic .* up/ ""$' "$tmp/edge.conf")" = 3 ] ||
    fail "bridge template topics: $(grep '^topic' "$tmp/edge.conf")"
"$MOSQUITTO" -c "$tmp/edge.conf" 2>>"$tmp/edge.log" &
edge_pid=$!
trap 'kill "$edge_pid" 2>/dev/null; wait "$edge_pid" 2>/dev/null; cleanup_mqtt' EXIT
wait_port "$edge_port" || { echo "the edge broker did not start: $(cat "$tmp/edge.log")" >&2; exit 1; }

# ---- mode (b): one connection, upstream through the bridge under up/ --------------------
R=3
# the server sees 4 parties (3 clients + the gateway) and selects all of them
bg "$EF" aggregator --broker "$edge" --upstream-prefix up/ --id 100 --config "$tmp/job.json" \
    --key "$tmp/gateway.key" --allow "$tmp/gateway_allow.txt" \
    --server-key "$tmp/server.key.pub" --min-local 3 --json \
    >"$tmp/agg.json" 2>"$tmp/agg.err"
agg_pid=${bg_pids[-1]}
local_pids=()
for i in 3 4 5; do
    bg "$EF" client --broker "$edge" --config "$tmp/job.json" --client-index "$i/6" \
        --key "$tmp/c$i.key" --server-key "$tmp/gateway.key.pub" --json \
        >"$tmp/local$i.json" 2>"$tmp/local$i.err"
    local_pids+=("${bg_pids[-1]}")
done
for i in 0 1 2; do
    bg "$EF" client --broker "$central" --config "$tmp/job.json" --client-index "$i/6" \
        --key "$tmp/c$i.key" --server-key "$tmp/server.key.pub" --quiet 2>"$tmp/flat$i.err"
done
t0=$(date +%s%N)
expect 0 timeout 120 "$EF" server --broker "$central" --config "$tmp/job.json" --json \
    --min-clients 4 --clients-per-round 4 --key "$tmp/server.key" \
    --allow "$tmp/server_allow.txt" --out "$tmp/server.safetensors"
cp "$tmp/out" "$tmp/server.json"
cp "$tmp/err" "$tmp/server.err"
t_run=$((($(date +%s%N) - t0) / 1000000))
# a new, fresh server for the same job: it knows nobody, so the gateway
# (like the flat clients) must check in again when it announces itself;
# its one round needs all four
expect 0 timeout 60 "$EF" server --broker "$central" --config "$tmp/job.json" --json \
    --min-clients 4 --clients-per-round 4 --rounds 1 --key "$tmp/server.key" \
    --allow "$tmp/server_allow.txt"
cp "$tmp/out" "$tmp/server2.json"
[ "$(field "$tmp/server2.json" rounds)" = 1 ] || fail "second server: rounds"
[ "$(field "$tmp/server2.json" updates_received)" = 4 ] ||
    fail "second server: $(field "$tmp/server2.json" updates_received) updates (want 4)"
# SIGTERM: the gateway and the local clients leave and print their summaries
kill -TERM "$agg_pid" "${local_pids[@]}" 2>/dev/null
for p in "$agg_pid" "${local_pids[@]}"; do wait "$p" || fail "process $p exited with $?"; done
stop_all

[ "$(field "$tmp/server.json" rounds)" = $R ] || fail "server rounds: $(cat "$tmp/server.json")"
# per round: 3 flat updates + ONE partial from the gateway
[ "$(field "$tmp/server.json" updates_received)" = $((4 * R)) ] ||
    fail "server updates: $(field "$tmp/server.json" updates_received) (want $((4 * R)))"
[ "$(field "$tmp/server.json" updates_rejected)" = 0 ] || fail "server rejected updates"
[ "$(field "$tmp/server.json" messages_refused)" = 0 ] || fail "server refused messages"
T=$((R + 1)) # upstream tasks in all: R rounds of the first server, 1 of the second
[ -s "$tmp/agg.json" ] || fail "no aggregator summary: $(tail -5 "$tmp/agg.err")"
if [ -s "$tmp/agg.json" ]; then
    a() { field "$tmp/agg.json" "$1"; }
    [ "$(a partials_sent)" = $T ] || fail "gateway partials_sent $(a partials_sent) (want $T)"
    [ "$(a tasks)" = $T ] || fail "gateway upstream tasks $(a tasks)"
    [ "$(a local_tasks)" = $((3 * T)) ] || fail "gateway local tasks $(a local_tasks)"
    [ "$(a updates_received)" = $((3 * T)) ] || fail "gateway local updates $(a updates_received)"
    [ "$(a updates_rejected)" = 0 ] || fail "gateway rejected local updates"
    [ "$(a refused_local)" = 0 ] || fail "gateway refused local messages"
    [ "$(a refused_upstream)" = 0 ] || fail "gateway refused upstream messages"
    [ "$(a upstream)" = bridge ] || fail "gateway mode $(a upstream)"
    # one check-in per server: the first and the fresh second one
    [ "$(a checkins_sent)" = 2 ] || fail "gateway check-ins $(a checkins_sent) (want 2)"
    # one local broadcast per model version, though the model travels in chunks
    [ "$(a models_broadcast)" = $T ] || fail "gateway local broadcasts $(a models_broadcast)"
fi
for i in 3 4 5; do
    [ "$(field "$tmp/local$i.json" tasks)" = $T ] ||
        fail "local client $i answered $(field "$tmp/local$i.json" tasks) tasks (want $T)"
    [ "$(field "$tmp/local$i.json" refused)" = 0 ] || fail "local client $i refused messages"
done
# one progress line per upstream task
[ "$(grep -c '^task round [0-9]*: local asked 3 answered 3 .*partial sent (120 examples)' \
    "$tmp/agg.err")" = $T ] || fail "gateway progress lines: $(grep '^task' "$tmp/agg.err")"

# ---- the model: a flat run over the same six clients -------------------------------------
# Not bit for bit, for two reasons:
# (1) the gateway sends its mean m_g rounded once to float (relative error
#     <= 2^-24), which the server weighs with the flat updates;
# (2) the local clients train with seeds the gateway derives, not the
#     server's. A seed only shuffles, and with 40 examples a client and batch
#     64 every client takes ONE full-batch step: another seed only reorders
#     the sum of 40 per-example gradients (relative error <= 40 x 2^-24 of a
#     delta of ~1e-3).
# Both are far below an ulp of the weights (~1e-8 here), so in a round the
# new model w + mean can differ from the flat one by one rounding, 1 ulp
# <= 2^-23 max|w|. The next round trains from weights that differ: a step
# of gradient descent at rate lr maps a difference e to at most
# (1 + lr x curvature) e, and lr x curvature < 2 or training would diverge,
# so an earlier gap grows at most 3x a round while each round adds its own
# ulp: after R rounds at most (3^R - 1) / 2 ulps. Tolerance:
# (3^R - 1) / 2 x 2^-23 x max|w| (13 ulps for R = 3; we see ~2).
# It must also be tight enough to see a wrong gateway: a flat run that
# leaves one client out (5 of 6 per round) must be far outside it (a
# gateway that scales its mean by 1.001 fails it as well: we tried).
expect 0 "$EF" simulate --config "$tmp/job.json" --json --quiet --out "$tmp/sim.safetensors"
sed 's/"clients-per-round": 6/"clients-per-round": 5/' "$tmp/job.json" > "$tmp/job5.json"
expect 0 "$EF" simulate --config "$tmp/job5.json" --json --quiet --out "$tmp/sim5.safetensors"
/usr/bin/python3 - "$tmp/server.safetensors" "$tmp/sim.safetensors" "$tmp/sim5.safetensors" \
    "$R" > "$tmp/cmp.txt" <<'PY' || fail "model comparison: $(cat "$tmp/cmp.txt")"
import json, struct, sys
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    out = []
    for k in sorted(k for k in head if k != "__metadata__"):
        t = head[k]
        assert t["dtype"] == "F32", t
        s, e = t["data_offsets"]
        raw = b[8 + n + s:8 + n + e]
        out.extend(struct.unpack("<%df" % (len(raw) // 4), raw))
    return out
hier, flat, five = (load(p) for p in sys.argv[1:4])
R = int(sys.argv[4])
assert len(hier) == len(flat) == len(five) > 0
wmax = max(abs(x) for x in flat)
tol = (3 ** R - 1) / 2 * 2.0 ** -23 * wmax
diff = max(abs(a - b) for a, b in zip(hier, flat))
wrong = max(abs(a - b) for a, b in zip(five, flat))
print("params %d  max|w| %.4g  hierarchical vs flat %.3g  tolerance %.3g  "
      "flat without one client %.3g" % (len(flat), wmax, diff, tol, wrong))
ok = diff <= tol and wrong > 100 * tol
sys.exit(0 if ok else 1)
PY
cat "$tmp/cmp.txt"

# ---- mode (a): a second connection, straight to the central broker ------------------------
# One round, then the gateway is killed: its last will (a LEAVE signed with
# its key) must reach the central server inbox once its 1 s session ends.
sed -e 's/"job": 71/"job": 72/' -e 's/"rounds": 3/"rounds": 1/' "$tmp/job.json" > "$tmp/job72.json"
bg "$EF" aggregator --broker "$edge" --upstream "$central" --id 100 --config "$tmp/job72.json" \
    --key "$tmp/gateway.key" --min-local 3 --session-expiry 1 2>"$tmp/agg72.err"
agg_pid=${bg_pids[-1]}
for i in 3 4 5; do
    bg "$EF" client --broker "$edge" --config "$tmp/job72.json" --client-index "$i/6" --quiet \
        --server-key "$tmp/gateway.key.pub" 2>"$tmp/local72_$i.err"
done
for i in 0 1 2; do
    bg "$EF" client --broker "$central" --config "$tmp/job72.json" --client-index "$i/6" \
        --quiet 2>"$tmp/flat72_$i.err"
done
expect 0 timeout 60 "$EF" server --broker "$central" --config "$tmp/job72.json" --json \
    --min-clients 4 --clients-per-round 4
cp "$tmp/out" "$tmp/server72.json"
[ "$(field "$tmp/server72.json" rounds)" = 1 ] || fail "mode (a): server rounds"
[ "$(field "$tmp/server72.json" updates_received)" = 4 ] || fail "mode (a): server updates"
grep -q '^task round 1: local asked 3 answered 3 .*partial sent' "$tmp/agg72.err" ||
    fail "mode (a): no partial: $(tail -5 "$tmp/agg72.err")"
mosquitto_sub -h 127.0.0.1 -p "$central_port" -t edgefl/72/server -C 1 -W 20 -F %x -d \
    >"$tmp/will.txt" 2>&1 &
sub_pid=$!
for _ in $(seq 100); do grep -q SUBACK "$tmp/will.txt" && break; sleep 0.05; done
{ kill -9 "$agg_pid"; wait "$agg_pid"; } 2>/dev/null # (no "Killed" notice)
wait "$sub_pid"
will=$(grep -E '^[0-9a-f]{96,}$' "$tmp/will.txt" | head -1)
# header: type at byte 5, flags at 6, job at 8, sender at 20 (little-endian)
[ "${will:10:2}" = 07 ] || fail "mode (a): the will is not a LEAVE: $(cat "$tmp/will.txt")"
[ "${will:12:2}" = 01 ] || fail "mode (a): the will is not signed"
[ "${will:16:16}" = 4800000000000000 ] || fail "mode (a): the will is not job 72's"
[ "${will:40:8}" = 64000000 ] || fail "mode (a): the will is not gateway 100's"
stop_all

echo "timings: mode (b) run ${t_run} ms, whole test $(( $(date +%s) - t_start ))s"
finish test_hierarchical
