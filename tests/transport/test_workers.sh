#!/usr/bin/env bash
# Scale-out aggregator workers over a real mosquitto broker: `edgefl server
# --workers`, two `edgefl worker` processes in one shared-subscription group
# and seven `edgefl client` processes, all signing (keys, allow-lists), run
# three FedAvg rounds of all seven clients. Checks:
# - the run completes; each worker batched some updates (both got a share of
#   the inbox) and the batched updates add up to the updates the server
#   aggregated (none lost, none counted twice); the server got every update
#   inside a partial (the worker's partials are the partials it received);
# - the final model equals the one `edgefl simulate` computes for the same
#   job and seed without workers (an MQTT run without workers is byte-equal to
#   the simulator: tests/transport/test_mqtt_sim.sh), within a tolerance for
#   the workers' re-associated float sums (see the comparison below);
# - a stranger (a key on no allow-list) gets nothing aggregated: its
#   check-in is refused, and two signed updates forged with its key for a
#   real task -- one claiming to be client 3, whose task it answers, one in
#   its own name -- reach the workers while client 3 is stopped (SIGSTOP), so
#   that a worker that did not check signatures would batch the forgery and
#   drop client 3's real update as a duplicate; the workers pass both on and
#   the server refuses them;
# - usage errors of `edgefl worker` and `edgefl server --workers`.
# Every process gets --max-packet above the update size: mosquitto hands the
# chunks of one message to different members of a shared subscription.
# usage: test_workers.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
source "$(dirname "$0")/mqtt_common.sh"
[ -d /usr/share/datasets/fashion-mnist ] || { echo "no Fashion-MNIST: skipped"; exit 77; }
command -v mosquitto_sub >/dev/null && command -v mosquitto_pub >/dev/null ||
    { echo "mosquitto-clients not installed: skipped"; exit 77; }
/usr/bin/python3 -c "import cryptography.hazmat.primitives.asymmetric.ed25519" 2>/dev/null ||
    { echo "python3-cryptography not installed: skipped"; exit 77; }
# a stopped process cannot act on SIGTERM: continue it before cleaning up
c3=
trap '[ -n "$c3" ] && kill -CONT "$c3" 2>/dev/null; cleanup_mqtt' EXIT

cat > "$tmp/job.json" <<JOB
{"clients": 7, "rounds": 3, "clients-per-round": 7, "model": "mlp", "partition": "iid",
 "local-epochs": 1, "batch": 32, "lr": 0.05, "seed": 13, "limit": 14000, "eval-limit": 1000,
 "threads": 1}
JOB
JOBID=13
MP=(--max-packet 4096) # KiB: an update of this MLP (199210 weights) is about 800 KB

# ---- usage errors (nothing needs a broker) --------------------------------
B=(--broker mqtt://127.0.0.1:1 --config "$tmp/job.json")
expect 2 "$EF" worker "${B[@]}"
err_has "\-\-id W is required"
expect 2 "$EF" worker "${B[@]}" --id 4294967295
err_has "below"
expect 2 "$EF" worker "${B[@]}" --id 900 --group a/b
err_has "group 'a/b'"
expect 2 "$EF" worker "${B[@]}" --id 900 --allow "$tmp/none.txt"
err_has "\-\-allow needs \-\-key"
expect 2 "$EF" worker "${B[@]}" --id 900 --rounds 4
err_has "unknown option '--rounds'"
echo '{"async": true}' > "$tmp/async.json"
expect 2 "$EF" worker --broker mqtt://127.0.0.1:1 --config "$tmp/async.json" --id 900
err_has "synchronous rounds"
expect 2 "$EF" worker --config "$tmp/job.json" --id 900
err_has "broker"
: > "$tmp/empty.txt"
echo "900 not-a-key" > "$tmp/bad.txt"
expect 2 "$EF" server "${B[@]}" --workers "$tmp/bad.txt" --quiet
err_has "bad.txt:1"
expect 2 "$EF" server "${B[@]}" --workers "$tmp/empty.txt" --quiet
err_has "lists no worker"
expect 2 "$EF" server --broker mqtt://127.0.0.1:1 --config "$tmp/async.json" \
    --workers "$tmp/empty.txt" --quiet
err_has "\-\-workers needs synchronous rounds"

# ---- keys: server, two workers, seven clients, a stranger -----------------
keygen() { "$EF" keygen --out "$tmp/$1.key" || fail "keygen $1"; }
keygen server >/dev/null
: > "$tmp/allow.txt"
for i in 0 1 2 3 4 5 6; do echo "$i $(keygen c$i)" >> "$tmp/allow.txt"; done
: > "$tmp/workers.txt"
for w in 900 901; do echo "$w $(keygen w$w)" >> "$tmp/workers.txt"; done
keygen stranger >/dev/null

start_broker
# workers first: a message for a shared subscription nobody holds is dropped
declare -A wpid=()
for w in 900 901; do
    bg "$EF" worker --broker "$url" --config "$tmp/job.json" --id $w --group fl \
        --key "$tmp/w$w.key" --allow "$tmp/allow.txt" --server-key "$tmp/server.key.pub" \
        --max-batch 3 --flush 0.3 "${MP[@]}" --json >"$tmp/w$w.json" 2>"$tmp/w$w.err"
    wpid[$w]=${bg_pids[-1]}
done
wait_log() { # FILE TEXT SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
for w in 900 901; do
    wait_log "$tmp/w$w.err" "worker: subscribed" 20 || fail "worker $w did not subscribe: $(cat "$tmp/w$w.err")"
done
# what the server sends client 3, in hex (the stranger learns its task here)
stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 -q 1 -t "edgefl/$JOBID/client/3" \
    -F %x >"$tmp/c3.hex" 2>/dev/null &
bg_pids+=($!)
bg "$EF" server --broker "$url" --config "$tmp/job.json" --workers "$tmp/workers.txt" \
    --key "$tmp/server.key" --allow "$tmp/allow.txt" "${MP[@]}" --json \
    --out "$tmp/server.safetensors" >"$tmp/server.json" 2>"$tmp/server.err"
server=${bg_pids[-1]}
wait_log "$tmp/server.err" "server: online" 20 || fail "server not online: $(cat "$tmp/server.err")"
client() { # NAME INDEX [options]
    local name=$1 i=$2; shift 2
    bg "$EF" client --broker "$url" --config "$tmp/job.json" --client-index "$i/7" \
        --server-key "$tmp/server.key.pub" "${MP[@]}" "$@" 2>"$tmp/$name.err"
}
# client 3 checks in first and is stopped: its first task waits for the forgery
client client3 3 --key "$tmp/c3.key"
c3=${bg_pids[-1]}
wait_log "$tmp/server.err" "client 3 checked in" 30 || fail "client 3 did not check in: $(cat "$tmp/client3.err")"
kill -STOP "$c3"
for i in 0 1 2 4 5 6; do client client$i $i --key "$tmp/c$i.key"; done
client stranger 0 --id 7 --key "$tmp/stranger.key" # slice 0's data, id 7: on no allow-list
for _ in $(seq 600); do [ -s "$tmp/c3.hex" ] && break; sleep 0.1; done
[ -s "$tmp/c3.hex" ] || fail "no task for client 3 within 60 s"
n_params=$(grep -o '[0-9]* parameters' "$tmp/client0.err" | head -1 | cut -d' ' -f1)
# two updates for client 3's task, signed with the stranger's key
/usr/bin/python3 - "$tmp" "$JOBID" "$n_params" <<'PY' || fail "forging the updates failed"
import hashlib, struct, sys, zlib
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
tmp, job, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
task_msg = bytes.fromhex(open(tmp + "/c3.hex").readline().strip())
assert task_msg[:4] == b"EFL1" and task_msg[5] == 3, "not a TASK"  # type 3: TASK
rnd, = struct.unpack_from("<I", task_msg, 16)
task, = struct.unpack_from("<Q", task_msg, 32)
version, = struct.unpack_from("<I", task_msg, 48)
seed = None
for line in open(tmp + "/stranger.key"):
    if line.startswith("edgefl-ed25519-secret-v1"):
        seed = bytes.fromhex(line.split()[1])
key = Ed25519PrivateKey.from_private_bytes(seed)
UPDATE, SIGNED = 4, 1
def update(sender, out):
    # version, n_examples, train_loss, steps, codec, pad, n, then n floats
    payload = struct.pack("<IIfIIIQ", version, 500, 0.25, 16, 0, 0, n)
    payload += struct.pack("<f", 0.5) * n  # far from any real update
    head = b"EFL1" + struct.pack("<BBHQIIQQI", 2, UPDATE, SIGNED, job, rnd, sender,
                                 1 << 62, task, len(payload))
    head += struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))
    digest = b"edgefl-msg-sig1\0" + hashlib.blake2b(head + payload, digest_size=32).digest()
    open(out, "wb").write(head + payload + key.sign(digest))
update(3, tmp + "/forged3.bin")  # client 3's task, in client 3's name
update(7, tmp + "/forged7.bin")  # in the stranger's own name
PY
for f in forged3 forged7; do
    timeout 20 mosquitto_pub -h 127.0.0.1 -p "$port" -V mqttv5 -q 1 -t "edgefl/$JOBID/server" \
        -f "$tmp/$f.bin" || fail "publishing $f failed"
done
wait_log "$tmp/server.err" "rejected update from 3: .*bad signature" 30 ||
    fail "the update forged for client 3 was not refused: $(grep -i reject "$tmp/server.err")"
wait_log "$tmp/server.err" "rejected update from 7" 30 ||
    fail "the stranger's own update was not refused: $(grep -i reject "$tmp/server.err")"
kill -CONT "$c3"
c3=
# the run
for _ in $(seq 600); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server" 2>/dev/null; then
    fail "the server did not finish within 60 s: $(tail -5 "$tmp/server.err")"
    kill "$server"
fi
wait "$server"
rc=$?
[ "$rc" = 0 ] || fail "server exit $rc: $(tail -5 "$tmp/server.err")"
for w in 900 901; do
    kill -TERM "${wpid[$w]}"
    wait "${wpid[$w]}" || fail "worker $w exit $?: $(tail -3 "$tmp/w$w.err")"
done
stop_all

# ---- checks -----------------------------------------------------------------
S=$tmp/server.json
[ "$(field "$S" rounds)" = 3 ] || fail "rounds: $(cat "$S")"
[ "$(field "$S" updates)" = 21 ] || fail "updates aggregated: $(field "$S" updates) (want 3 x 7)"
# the only UPDATEs that reached the server unbatched are the two forgeries
[ "$(field "$S" updates_received)" = 2 ] || fail "updates received unbatched: $(field "$S" updates_received)"
[ "$(field "$S" updates_rejected)" = 2 ] || fail "updates rejected: $(field "$S" updates_rejected)"
grep -q "rejected checkin from 7: .*not on the allow-list" "$tmp/server.err" ||
    fail "the stranger's check-in was not refused: $(grep -i reject "$tmp/server.err")"
grep -q "2 aggregator workers, reading edgefl/$JOBID/server/workers" "$tmp/server.err" ||
    fail "server did not announce its workers: $(head -5 "$tmp/server.err")"
b0=$(field "$tmp/w900.json" batched) b1=$(field "$tmp/w901.json" batched)
p0=$(field "$tmp/w900.json" partials) p1=$(field "$tmp/w901.json" partials)
[ "$b0" -gt 0 ] && [ "$b1" -gt 0 ] || fail "each worker should batch some updates: $b0 and $b1"
[ "$((b0 + b1))" = 21 ] || fail "batched $b0 + $b1 updates, the server aggregated 21"
[ "$((p0 + p1))" = "$(field "$S" partials_received)" ] ||
    fail "partials sent $p0 + $p1, received $(field "$S" partials_received)"
f0=$(field "$tmp/w900.json" updates_forwarded) f1=$(field "$tmp/w901.json" updates_forwarded)
[ "$((f0 + f1))" = 2 ] || fail "updates passed on unbatched: $f0 + $f1 (want the 2 forgeries)"
for w in 900 901; do
    [ "$(field "$tmp/w$w.json" refused)" = 0 ] || fail "worker $w refused server messages"
    [ "$(field "$tmp/w$w.json" observed)" -ge 21 ] || fail "worker $w observed $(field "$tmp/w$w.json" observed) tasks"
    grep -q "^worker $w: round [1-3] partial of [1-3] updates" "$tmp/w$w.err" ||
        fail "worker $w: no progress lines: $(head -5 "$tmp/w$w.err")"
done
grep -q "update from 3 for round 1 passed on unbatched" "$tmp/w900.err" "$tmp/w901.err" ||
    fail "no worker passed the forged update on"

# ---- the same job without workers --------------------------------------------
expect 0 "$EF" simulate --config "$tmp/job.json" --json --quiet --out "$tmp/sim.safetensors"
cp "$tmp/out" "$tmp/sim.json"
# Not bit for bit: a worker sends the example-weighted mean of its batch as
# float32 and the server adds the partial means with their weights in double
# precision, where the flat run adds every update. The round's aggregate
# differs by the float32 rounding of the partial means (relative 2^-24 =
# 6e-8 of a coordinate's update), so the model after round 1 differs by an
# ulp in some weights, and the clients of later rounds train from that
# model. Measured: about half of the weights differ, by at most 3e-8 after
# three rounds (weights are of order 0.1, so a few ulps). The bound, 1e-6
# absolute plus 1e-5 relative, is 30 times that and far below what any
# real fault does: losing or doubling one of the seven updates, or
# aggregating the forged one (0.5 in every weight), moves weights by 1e-4
# or more.
/usr/bin/python3 - "$tmp/server.safetensors" "$tmp/sim.safetensors" <<'PY' || fail "the final model differs from the run without workers"
import json, struct, sys
def load(path):
    raw = open(path, "rb").read()
    n, = struct.unpack_from("<Q", raw)
    head = json.loads(raw[8:8 + n])
    base, out = 8 + n, {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = struct.unpack_from("<%df" % ((b - a) // 4), raw, base + a)
    return out
x, y = load(sys.argv[1]), load(sys.argv[2])
assert x.keys() == y.keys(), "different tensors"
worst, diff, total = 0.0, 0, 0
for k in x:
    for a, b in zip(x[k], y[k]):
        d = abs(a - b)
        total += 1
        diff += d > 0
        worst = max(worst, d)
        if d > 1e-6 + 1e-5 * abs(b):
            sys.exit("%s: %g vs %g" % (k, a, b))
print("max |difference| %.3g, %d of %d weights differ" % (worst, diff, total))
PY
acc_s=$(field "$S" final_accuracy) acc_r=$(field "$tmp/sim.json" final_accuracy)
/usr/bin/python3 -c "import sys; sys.exit(abs(float(sys.argv[1]) - float(sys.argv[2])) > 0.002)" \
    "$acc_s" "$acc_r" || fail "final accuracy $acc_s with workers, $acc_r without"
finish test_workers
