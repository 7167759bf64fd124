#!/usr/bin/env bash
# `edgefl server`, `edgefl client` and `edgefl keygen` over a real mosquitto
# broker: usage errors; an authenticated job (signed messages, allow-list)
# where a client not on the list is refused and logged, replayed, corrupted,
# unsigned and tampered copies of a signed message are refused with their
# reasons, and a client killed mid-round is reported by its signed last will
# (LEAVE) so the round closes without waiting for the deadline; a server killed after round 2 resumes
# from its state directory; stragglers' updates are counted as rejected;
# clients leave cleanly on SIGTERM; over TLS with the shipped broker
# configuration (client certificates, ACLs), a job runs and a client that
# does not trust the broker's CA never connects.
# usage: test_mqtt_cli.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
source "$(dirname "$0")/mqtt_common.sh"
[ -d /usr/share/datasets/fashion-mnist ] || { echo "no Fashion-MNIST: skipped"; exit 77; }

# ---- usage errors (nothing needs a broker) --------------------------------
expect 2 "$EF" server --rounds 2
err_has "broker"
expect 2 "$EF" server --broker http://127.0.0.1:1 --rounds 1
err_has "mqtt://"
expect 2 "$EF" server --broker mqtt://127.0.0.1:1 --profile mobile
err_has "unknown option '--profile'"
expect 2 "$EF" client --broker mqtt://127.0.0.1:1
err_has "client-index"
expect 2 "$EF" client --broker mqtt://127.0.0.1:1 --client-index 10/10
err_has "0 <= I < N"
expect 2 "$EF" client --broker mqtt://127.0.0.1:1 --client-index 3/5 --clients 10
err_has "the job has 10 clients"
expect 2 "$EF" client --broker mqtt://127.0.0.1:1 --client-index 1/5 --tls-ca "$tmp/none.pem"
err_has "cannot read"
expect 2 "$EF" client --broker mqtt://127.0.0.1:1 --client-index 1/5 --strategy fedavg
err_has "unknown option '--strategy'"
expect 2 "$EF" keygen
err_has "out"
expect 0 "$EF" keygen --out "$tmp/server.key"
[ "$(stat -c %a "$tmp/server.key")" = 600 ] || fail "secret key file not 0600"
grep -q "$(cat "$tmp/out")" "$tmp/server.key.pub" || fail "printed key is not FILE.pub's"
expect 2 "$EF" keygen --out "$tmp/server.key"
err_has "not overwriting"

start_broker

# ---- authenticated job: allow-list, a stranger, a client that dies ---------
: > "$tmp/allow.txt"
for i in 0 1 2; do
    "$EF" keygen --out "$tmp/c$i.key" > "$tmp/pk" || fail "keygen"
    echo "$i $(cat "$tmp/pk")" >> "$tmp/allow.txt"
done
# the simulator's keys (profile) may sit in the job file: the server ignores them
cat > "$tmp/job.json" <<JOB
{"clients": 3, "rounds": 20, "clients-per-round": 3, "model": "logreg", "seed": 5,
 "deadline": 120, "eval-limit": 500, "profile": "mobile", "limit": 3000}
JOB
# a listener on the server inbox keeps the first messages as hex: a signed
# check-in from it is replayed, corrupted, stripped of its signature and
# tampered with below, and the server must refuse each with its reason
command -v mosquitto_sub >/dev/null || { echo "no mosquitto_sub: skipped"; exit 77; }
mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 -q 1 -t edgefl/5/server -F %x -C 4 -W 60 \
    >"$tmp/captured.hex" 2>/dev/null &
capture=$!
sleep 0.3 # subscribed before the clients check in
for i in 0 1 2; do
    bg "$EF" client --broker "$url" --config "$tmp/job.json" --client-index "$i" \
        --key "$tmp/c$i.key" --server-key "$tmp/server.key.pub" --session-expiry 2 \
        2>"$tmp/auth$i.err"
done
victim=${bg_pids[2]}
bg "$EF" client --broker "$url" --config "$tmp/job.json" --client-index 1 --id 5 \
    2>"$tmp/stranger.err"
"$EF" server --broker "$url" --config "$tmp/job.json" --json --key "$tmp/server.key" \
    --allow "$tmp/allow.txt" >"$tmp/auth.json" 2>"$tmp/auth.err" &
server=$!
bg_pids+=("$server")
for _ in $(seq 600); do grep -q "task received: round 1" "$tmp/auth2.err" && break; sleep 0.1; done
wait "$capture" 2>/dev/null
# the four forgeries, made from the first signed check-in of an allow-listed client
sender=$(/usr/bin/python3 - "$tmp" <<'PY'
import struct, sys, zlib
tmp = sys.argv[1]
for line in open(tmp + "/captured.hex"):
    b = bytearray.fromhex(line.strip())
    if len(b) < 48 or b[:4] != b"EFL1" or b[5] != 1 or not b[6] & 1:
        continue                                     # not a signed CHECKIN
    sender = struct.unpack_from("<I", b, 20)[0]
    if sender > 2:
        continue
    n = struct.unpack_from("<I", b, 40)[0]
    def crc(m, n):
        return zlib.crc32(bytes(m[:44]) + bytes(m[48:48 + n])) & 0xFFFFFFFF
    def put(name, m):
        open(tmp + "/" + name, "wb").write(bytes(m))
    put("replay.bin", b)                             # the same bytes again
    c = bytearray(b); c[48] ^= 0x01; put("corrupt.bin", c)   # a flipped bit, CRC stale
    u = bytearray(b[:48 + n]); u[6] &= 0xFE          # no signature, flag cleared
    struct.pack_into("<I", u, 44, crc(u, n)); put("unsigned.bin", u)
    t = bytearray(b); t[48] ^= 0x01                  # tampered, CRC recomputed
    struct.pack_into("<I", t, 44, crc(t, n)); put("badsig.bin", t)
    print(sender, len(b))
    break
PY
)
[ -n "$sender" ] || fail "no signed check-in captured: $(cat "$tmp/captured.hex")"
read -r sender msglen <<<"$sender"
for f in replay corrupt unsigned badsig; do
    timeout 20 mosquitto_pub -h 127.0.0.1 -p "$port" -V mqttv5 -q 1 -t edgefl/5/server \
        -f "$tmp/$f.bin" || fail "publishing the $f message failed"
done
kill -9 "$victim"
t0=$(date +%s)
wait "$server" || fail "authenticated server failed: $(tail -5 "$tmp/auth.err")"
[ $(( $(date +%s) - t0 )) -lt 60 ] || fail "the round waited for the deadline: the will did not arrive"
grep -q "rejected checkin from 5: .*not on the allow-list" "$tmp/auth.err" ||
    fail "the stranger's check-in was not logged: $(cat "$tmp/auth.err")"
for why in "rejected checkin from $sender: checkin from client $sender: replayed" \
           "rejected a message of $msglen bytes: message: CRC mismatch" \
           "rejected checkin from $sender: checkin from $sender: unsigned" \
           "rejected checkin from $sender: checkin from $sender: bad signature"; do
    grep -q "$why" "$tmp/auth.err" || fail "not refused with its reason: '$why': $(grep rejected "$tmp/auth.err")"
done
grep -q "^round [0-9]*/20 .*drop 1" "$tmp/auth.err" || fail "no round counts the dead client: $(cat "$tmp/auth.err")"
[ "$(field "$tmp/auth.json" rounds)" = 20 ] || fail "authenticated rounds: $(cat "$tmp/auth.json")"
[ "$(field "$tmp/auth.json" messages_refused)" -ge 1 ] || fail "refused messages not counted"
grep -q "signing" "$tmp/auth0.err" || fail "client 0 does not sign"
# clients leave cleanly on SIGTERM
for p in "${bg_pids[0]}" "${bg_pids[1]}"; do kill -TERM "$p"; done
for p in "${bg_pids[0]}" "${bg_pids[1]}"; do wait "$p" || fail "a client exited $? on SIGTERM"; done
grep -q "client 0: leaving" "$tmp/auth0.err" || fail "client 0 did not send LEAVE"
stop_all

# ---- stragglers, a server crash and its resumption ---------------------------
# 3 clients selected per round, the round closes at the first update: the
# other two answer a closed round and are rejected
cat > "$tmp/job2.json" <<JOB
{"clients": 3, "rounds": 4, "clients-per-round": 1, "overselect": 3, "model": "logreg",
 "seed": 9, "eval-limit": 500, "limit": 3000}
JOB
for i in 0 1 2; do
    bg "$EF" client --broker "$url" --config "$tmp/job2.json" --client-index "$i" \
        2>"$tmp/strag$i.err"
done
"$EF" server --broker "$url" --config "$tmp/job2.json" --state-dir "$tmp/state" \
    2>"$tmp/crash.err" >/dev/null &
server=$!
bg_pids+=("$server")
for _ in $(seq 600); do grep -q "^round 2/4" "$tmp/crash.err" && break; sleep 0.1; done
kill -9 "$server"
wait "$server" 2>/dev/null || true
[ -f "$tmp/state/state.json" ] || fail "no checkpoint after round 2"
expect 0 timeout 300 "$EF" server --broker "$url" --config "$tmp/job2.json" --state-dir "$tmp/state" --json
err_has "resumed from"
out_has '"rounds":4'
cat "$tmp/crash.err" "$tmp/err" > "$tmp/both.err"
grep -q "rejected update from [0-9]*: update from client [0-9]* for closed round" "$tmp/both.err" ||
    fail "no straggler logged: $(cat "$tmp/both.err")"
[ "$(field "$tmp/out" updates_rejected)" -ge 1 ] || fail "rejected updates not counted: $(cat "$tmp/out")"
# ---- TLS, client certificates and ACLs: deploy/mosquitto as shipped ------------
SRC=$2
stop_broker
if command -v openssl >/dev/null; then
    bash "$SRC/deploy/mosquitto/make-certs.sh" "$tmp/certs" 0 1 >/dev/null 2>&1 || fail "make-certs"
    bash "$SRC/deploy/mosquitto/make-certs.sh" "$tmp/other" 0 >/dev/null 2>&1 || fail "make-certs (other CA)"
    trap 'bash "$SRC/deploy/mosquitto/run-broker.sh" --stop "$tmp/tls" 2>/dev/null; cleanup_mqtt' EXIT
    tport=$(bash "$SRC/deploy/mosquitto/run-broker.sh" --certs "$tmp/certs" "$tmp/tls" 2>/dev/null) ||
        fail "the shipped broker did not start"
    turl=mqtts://localhost:$tport
    c=$tmp/certs
    cat > "$tmp/job3.json" <<JOB
{"clients": 2, "rounds": 2, "clients-per-round": 2, "model": "mlp", "seed": 4,
 "eval-limit": 500, "limit": 4000}
JOB
    for i in 0 1; do
        bg "$EF" client --broker "$turl" --config "$tmp/job3.json" --client-index "$i" \
            --tls-ca "$c/ca.crt" --tls-cert "$c/client-$i.crt" --tls-key "$c/client-$i.key" \
            2>"$tmp/tls$i.err"
    done
    # the model (800 KB) travels in chunks on edgefl/<job>/broadcast/<i>: the ACL lets clients read them
    expect 0 timeout 120 "$EF" server --broker "$turl" --config "$tmp/job3.json" --json \
        --tls-ca "$c/ca.crt" --tls-cert "$c/server.crt" --tls-key "$c/server.key"
    out_has '"rounds":2'
    err_has "over TLS"
    stop_all
    expect 124 timeout 4 "$EF" client --broker "$turl" --config "$tmp/job3.json" --client-index 0 \
        --tls-ca "$tmp/other/ca.crt" --tls-cert "$tmp/other/client-0.crt" --tls-key "$tmp/other/client-0.key"
    # the handshake fails in the connect call or, under load, in the network loop
    err_has "cannot connect to localhost:$tport\|network loop: A TLS error occurred"
    grep -q "checked in" "$tmp/err" && fail "a client that distrusts the broker checked in"
    bash "$SRC/deploy/mosquitto/run-broker.sh" --stop "$tmp/tls" 2>/dev/null
else
    echo "openssl missing: TLS part skipped"
fi
finish test_mqtt_cli
