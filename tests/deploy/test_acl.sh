#!/usr/bin/env bash
# The shipped broker configuration (deploy/mosquitto: mosquitto.conf, acl,
# make-certs.sh, run-broker.sh, bridge.conf.example) on a real mosquitto on a
# free loopback port, driven with mosquitto_pub/mosquitto_sub over MQTT 5 and
# TLS client certificates:
# - a client writes the server inbox and reads its own inbox and the
#   broadcast; it reads nothing from another client's inbox or the server
#   inbox, whatever filter it subscribes with ($share included), and cannot
#   write another inbox or the broadcast (the retained model stays);
# - a client cannot take over another client's (or the server's) session by
#   connecting with its client id; a CN that is a wildcard gets nothing;
# - no client certificate, or one from another CA: refused; a client that
#   trusts another CA refuses the broker;
# - aggregator workers share the server inbox with $share/<group>/..., read
#   the client inboxes and write edgefl/<job>/server/workers; they write no
#   client inbox and not the broadcast, and clients cannot write their topic;
# - the retained model and a durable QoS 1 session survive a broker restart;
# - the bridge template links a gateway broker to the central one (inbox and
#   broadcast in, server inbox out, each under the local prefix up/, nothing
#   else: the devices' own uploads stay local), with messages queued
#   centrally while the gateway is down;
# - make-certs.sh and run-broker.sh are idempotent / refuse bad input.
# Every negative check ends with a positive marker that went through the
# same broker after the forbidden message, and the message's rightful
# recipient is checked to have received it, so an ACL that let it through
# would be seen.
# usage: test_acl.sh EDGEFL_BINARY SOURCE_DIR (the binary is not used)
# Skips (exit 77) if mosquitto, mosquitto_pub/_sub or openssl is missing.
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
M=$src/deploy/mosquitto
for t in mosquitto_pub mosquitto_sub openssl stdbuf timeout; do
    command -v $t >/dev/null 2>&1 || { echo "SKIP: $t not found (apt-get install mosquitto-clients openssl)"; exit 77; }
done
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] ||
    { echo "SKIP: mosquitto not found (apt-get install mosquitto)"; exit 77; }

source "$(dirname "$0")/../cli/common.sh" "${1:-unused}"
: "${tmp:?common.sh sets the scratch directory}"

declare -A subpid=()
cleanup() {
    local p
    for p in "${subpid[@]}"; do kill "$p" 2>/dev/null; done
    local bpids=()
    for d in "$tmp/state" "$tmp/gw"; do
        [ -f "$d/mosquitto.pid" ] && bpids+=("$(cat "$d/mosquitto.pid")")
    done
    for p in "${bpids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    # The brokers are not our children: poll until they have exited.
    for p in "${bpids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
fatal() { fail "$*"; echo "test_acl: stopping after a fatal failure" >&2; exit 1; }

certs=$tmp/certs
port=
# pub IDENTITY TOPIC MESSAGE [mosquitto_pub options]: QoS 1 with IDENTITY's
# certificate; stderr in $tmp/pub.err, returns mosquitto_pub's status.
pub() {
    local who=$1 topic=$2 msg=$3; shift 3
    timeout 20 mosquitto_pub -h 127.0.0.1 -p "$port" -V mqttv5 --cafile "$certs/ca.crt" \
        --cert "$certs/$who.crt" --key "$certs/$who.key" -q 1 -t "$topic" -m "$msg" "$@" \
        >"$tmp/pub.out" 2>"$tmp/pub.err"
}
# sub_start NAME IDENTITY [options] -- TOPIC...: a background QoS 1
# subscriber writing "topic payload" lines (and debug lines) to $tmp/NAME.out;
# returns when the broker has acknowledged the subscription.
sub_start() {
    local name=$1 who=$2; shift 2
    local opts=() topics=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    for t in "$@"; do topics+=(-t "$t"); done
    stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 --cafile "$certs/ca.crt" \
        --cert "$certs/$who.crt" --key "$certs/$who.key" -q 1 -v -d -W 120 \
        "${opts[@]}" "${topics[@]}" >"$tmp/$name.out" 2>&1 &
    subpid[$name]=$!
    # -d prints "received SUBACK", then (a separate write) "Subscribed (mid: ...): <granted QoS>"
    wait_for "$tmp/$name.out" "Subscribed (mid:" 100 || fatal "subscriber $name ($who) got no SUBACK: $(tail -c 300 "$tmp/$name.out")"
}
sub_stop() {
    kill "${subpid[$1]}" 2>/dev/null
    wait "${subpid[$1]}" 2>/dev/null
    unset "subpid[$1]"
}
# wait_for FILE TEXT TENTHS: TEXT (fixed string) appears in FILE within TENTHS/10 s
wait_for() {
    local i
    for ((i = 0; i < $3; i++)); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# got NAME "TOPIC PAYLOAD" / not_got NAME PAYLOAD: NAME's subscriber received
# / never received it
got() { wait_for "$tmp/$1.out" "$2" 100 || fail "$1 did not receive '$2'"; }
not_got() { ! grep -qF -- "$2" "$tmp/$1.out" || fail "$1 received '$2': $(grep -F -- "$2" "$tmp/$1.out" | head -3)"; }
# published IDENTITY TOPIC MESSAGE [options]: the publish must succeed
published() { pub "$@" || fail "$1 could not publish '$3' to $2: $(cat "$tmp/pub.err")"; }
# refused_publish IDENTITY TOPIC MESSAGE [options]: acknowledged as not authorized
refused_publish() {
    pub "$@"
    grep -q "Not authorized" "$tmp/pub.err" || fail "$1 publishing to $2: no 'Not authorized': $(cat "$tmp/pub.err")"
}
broker_log() { cat "$tmp/state/mosquitto.log"; }
# fails CMD...: CMD must exit non-zero (mosquitto_pub/_sub exit with the
# CONNACK reason code or a libmosquitto error number); output in $tmp/out, err
fails() {
    "$@" >"$tmp/out" 2>"$tmp/err" && fail "succeeded, should have been refused: $*"
    return 0
}

# --- certificates ----------------------------------------------------------------
expect 0 "$M/make-certs.sh" "$certs" 1 2 3
out_has "made CA"
for f in ca broker server bridge client-1 client-2 client-3 aggregator-a aggregator-b; do
    [ -s "$certs/$f.crt" ] && [ -s "$certs/$f.key" ] || fatal "make-certs.sh did not make $f.crt/.key"
    [ "$(stat -c %a "$certs/$f.key")" = 600 ] || fail "$f.key mode $(stat -c %a "$certs/$f.key"), want 600"
done
[ "$(openssl x509 -in "$certs/client-2.crt" -noout -subject)" = "subject=CN = 2" ] || fail "client-2 CN"
openssl x509 -in "$certs/broker.crt" -noout -ext subjectAltName | grep -q "IP Address:127.0.0.1" ||
    fail "broker certificate lacks IP:127.0.0.1"
# idempotent: a second run changes nothing; adding an id adds only its files
sums=$(cd "$certs" && sha256sum ./*)
expect 0 "$M/make-certs.sh" "$certs" 1 2 3
out_has "nothing to do"
[ "$(cd "$certs" && sha256sum ./*)" = "$sums" ] || fail "make-certs.sh rerun changed files"
# bad input: clear error, nothing written
expect 2 "$M/make-certs.sh" "$certs" 1 02
err_has "decimal u32"
expect 2 "$M/make-certs.sh" "$certs" 4294967296
expect 2 "$M/make-certs.sh" --aggregator 'x/y' "$certs"
expect 2 "$M/make-certs.sh"
err_has "usage:"
[ "$(cd "$certs" && sha256sum ./*)" = "$sums" ] || fail "refused make-certs.sh runs changed files"
# A second, unrelated CA with the same names (client-1 etc.).
expect 0 "$M/make-certs.sh" "$tmp/other" 1
# A certificate from another CA in the directory is reported, not reused.
mkdir -p "$tmp/mixed" && cp "$certs"/ca.* "$tmp/mixed/" && cp "$tmp/other"/client-1.* "$tmp/mixed/"
expect 2 "$M/make-certs.sh" "$tmp/mixed" 1
err_has "not signed by"
[ ! -e "$tmp/mixed/broker.crt" ] || fail "make-certs.sh wrote files after refusing"
# A CN that is an MQTT wildcard, signed by the real CA (make-certs.sh refuses
# to make one).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$certs/wild.key" 2>/dev/null &&
openssl req -new -key "$certs/wild.key" -subj "/CN=+" 2>/dev/null |
    openssl x509 -req -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -set_serial 77 -days 2 \
        -out "$certs/wild.crt" 2>/dev/null || fatal "could not make the wildcard-CN certificate"

# --- broker --------------------------------------------------------------------
expect 2 "$M/run-broker.sh" --port 0 "$tmp/state"
expect 2 "$M/run-broker.sh" --bogus "$tmp/state"
[ ! -e "$tmp/state" ] || fail "run-broker.sh with bad options created the state directory"
port=$("$M/run-broker.sh" --certs "$certs" "$tmp/state" 2>"$tmp/rb.err") ||
    fatal "run-broker.sh failed: $(cat "$tmp/rb.err")"
[[ $port =~ ^[0-9]+$ ]] || fatal "run-broker.sh printed '$port', not a port"
grep -q "^listener $port 127.0.0.1$" "$tmp/state/mosquitto.conf" || fail "generated config lacks 'listener $port 127.0.0.1'"
# Not observable while every listener requires a certificate, so checked as
# text: anonymous access stays off (defence in depth for added listeners).
grep -q "^allow_anonymous false$" "$tmp/state/mosquitto.conf" || fail "generated config does not keep allow_anonymous false"
# Exactly one listener is open: options placed before the listener line
# would silently open mosquitto's default listener on port 1883.
[ "$(broker_log | grep -c 'listen socket on port')" = 1 ] && ! broker_log | grep -q "port 1883" ||
    fail "broker opened other listeners: $(broker_log | grep 'listen socket')"
expect 1 "$M/run-broker.sh" --certs "$certs" "$tmp/state"
err_has "already running"

# W plays the server's part of writing client inboxes and the broadcast:
# srv below subscribes with the server's certificate, and a second connection
# with it would replace that one (one identity, one session). The bridge may
# write all of edgefl and is not connected until the bridge section.
W=bridge
# --- a client writes the server inbox, reads its own inbox and the broadcast ------
sub_start srv server -- 'edgefl/#'
published client-1 edgefl/7/server update-from-1
got srv "edgefl/7/server update-from-1"

sub_start c1 client-1 -- edgefl/7/client/1 edgefl/7/broadcast
published "$W" edgefl/7/client/1 task-for-1
published "$W" edgefl/7/broadcast model-v1 -r
got c1 "edgefl/7/client/1 task-for-1"
got c1 "edgefl/7/broadcast model-v1"
sub_stop c1

# --- a client reads nothing of another client's inbox -------------------------
# Client 2 is subscribed to its inbox and the broadcast throughout (the
# positive control). A retained message in client 2's inbox must not reach
# client 1 either.
published "$W" edgefl/7/client/2 retained-secret-for-2 -r
sub_start c2 client-2 -i victim-2 -- edgefl/7/client/2 edgefl/7/broadcast
got c2 "edgefl/7/client/2 retained-secret-for-2"
n=0
for filter in edgefl/7/client/2 'edgefl/7/client/#' 'edgefl/#' '+/+/client/+' '$share/peek/edgefl/7/client/2'; do
    n=$((n + 1))
    # SUBACK grants the filter (mosquitto checks read access on delivery).
    sub_start peek client-1 -- "$filter" edgefl/7/client/1
    grep -q "Subscribed (mid: 1): 1, 1" "$tmp/peek.out" ||
        fail "SUBACK for '$filter' was not 'granted QoS 1' (mosquitto changed?): $(grep Subscribed "$tmp/peek.out")"
    published "$W" edgefl/7/client/2 "secret-$n-for-2"
    published "$W" edgefl/7/client/1 "marker-$n-for-1"
    got peek "marker-$n-for-1"
    got c2 "edgefl/7/client/2 secret-$n-for-2"
    not_got peek "secret-$n-for-2"
    not_got peek "retained-secret-for-2"
    sub_stop peek
done

# --- ... nor the server inbox (other clients' updates) -----------------------------
sub_start peek client-1 -- edgefl/7/server '$share/g/edgefl/7/server' edgefl/7/client/1
published client-3 edgefl/7/server update-from-3
published "$W" edgefl/7/client/1 marker-srv-for-1
got peek "marker-srv-for-1"
got srv "edgefl/7/server update-from-3"
not_got peek "update-from-3"
sub_stop peek

# --- a client cannot write another client's inbox or the broadcast ----------------
refused_publish client-1 edgefl/7/client/2 forged-task-for-2
refused_publish client-1 edgefl/7/broadcast forged-model -r
refused_publish client-1 edgefl/8/client/2 forged-task-job-8
published "$W" edgefl/7/client/2 marker-e-for-2
published "$W" edgefl/7/broadcast marker-e-broadcast
got c2 "edgefl/7/client/2 marker-e-for-2"
got c2 "edgefl/7/broadcast marker-e-broadcast"
got srv "marker-e-broadcast"
for s in c2 srv; do not_got $s forged-task-for-2; not_got $s forged-model; done
not_got srv forged-task-job-8
# The retained model is still the server's, not the forged one.
timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 --cafile "$certs/ca.crt" \
    --cert "$certs/client-3.crt" --key "$certs/client-3.key" -t edgefl/7/broadcast -C 1 -W 10 \
    >"$tmp/retained.out" 2>&1
[ "$(cat "$tmp/retained.out")" = model-v1 ] || fail "retained broadcast is '$(cat "$tmp/retained.out")', want model-v1"

# --- identity = session: no takeover with another client's client id ------------
# Client 2 connected with client id "victim-2"; client 1 connects with that
# id, with "2" and with the server's CN. Without use_username_as_clientid the
# broker would disconnect client 2 ("already connected, closing old
# connection") and hand client 1 its session.
for id in victim-2 2 edgefl-server; do
    published client-1 edgefl/7/server "takeover-$id" -i "$id"
done
published "$W" edgefl/7/client/2 marker-f-for-2
got c2 "marker-f-for-2"
got srv "takeover-edgefl-server"
! broker_log | grep -q "already connected" ||
    fail "a connection was taken over: $(broker_log | grep 'already connected')"
grep -q "New client connected .* as 2 (" "$tmp/state/mosquitto.log" || fail "client 2's client id is not its CN"

# --- a wildcard CN is refused ---------------------------------------------------
# CN "+" would otherwise turn "pattern read edgefl/+/client/%u" into every
# inbox; mosquitto refuses such usernames at CONNECT (CONNACK 0x86).
fails timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 --cafile "$certs/ca.crt" \
    --cert "$certs/wild.crt" --key "$certs/wild.key" -t 'edgefl/7/client/+' -C 1 -W 10
grep -q "Bad User Name or Password" "$tmp/err" "$tmp/out" || fail "wildcard CN not refused as a bad user name: $(cat "$tmp/err" "$tmp/out")"
pub wild edgefl/7/server from-wildcard && fail "wildcard CN could publish"
published client-3 edgefl/7/server marker-w
got srv "marker-w"
not_got srv "from-wildcard"

# --- connections without a valid client certificate are refused -----------------
tls=(-h 127.0.0.1 -p "$port" -V mqttv5 -q 1 -t edgefl/7/server)
fails timeout 20 mosquitto_pub "${tls[@]}" --cafile "$certs/ca.crt" -m no-cert
fails timeout 20 mosquitto_pub "${tls[@]}" --cafile "$certs/ca.crt" -u edgefl-server -P x -m no-cert-user
fails timeout 20 mosquitto_pub "${tls[@]}" --cafile "$certs/ca.crt" \
    --cert "$tmp/other/client-1.crt" --key "$tmp/other/client-1.key" -m other-ca
# A client that trusts another CA does not accept the broker either.
fails timeout 20 mosquitto_pub "${tls[@]}" --cafile "$tmp/other/ca.crt" \
    --cert "$certs/client-1.crt" --key "$certs/client-1.key" -m wrong-broker
published client-3 edgefl/7/server marker-g
got srv "marker-g"
for m in no-cert no-cert-user other-ca wrong-broker; do not_got srv "$m"; done
broker_log | grep -q "peer did not return a certificate" || fail "broker log lacks the refused certificate-less connection"

# --- aggregator workers share the server inbox -------------------------------------
sub_start wa aggregator-a -- '$share/workers/edgefl/7/server' 'edgefl/7/client/+'
sub_start wb aggregator-b -- '$share/workers/edgefl/7/server'
for i in 1 2 3 4 5 6; do published client-1 edgefl/7/server "shared-$i"; done
for i in 1 2 3 4 5 6; do
    wait_for "$tmp/wa.out" " shared-$i" 1 || wait_for "$tmp/wb.out" " shared-$i" 100 ||
        fail "no worker received shared-$i"
done
sleep 0.3
na=$(grep -c " shared-" "$tmp/wa.out") nb=$(grep -c " shared-" "$tmp/wb.out")
[ "$((na + nb))" = 6 ] && [ "$na" -ge 1 ] && [ "$nb" -ge 1 ] ||
    fail "shared subscription delivered $na + $nb messages (want 6 in all, each worker some)"
got srv "shared-6"
# Workers read the client inboxes (the server's tasks tell them which updates
# to batch) ...
published "$W" edgefl/7/client/2 task-seen-by-workers
got wa "edgefl/7/client/2 task-seen-by-workers"
got c2 "edgefl/7/client/2 task-seen-by-workers"
# ... and send the server what they batch and pass on on
# edgefl/<job>/server/workers. A client cannot write there ("pattern write
# edgefl/+/server" matches three levels, not four), and a worker cannot
# write a client inbox or the broadcast.
published aggregator-a edgefl/7/server/workers partial-from-a
got srv "edgefl/7/server/workers partial-from-a"
refused_publish client-1 edgefl/7/server/workers forged-partial
refused_publish client-1 edgefl/8/server/workers forged-partial-job-8
refused_publish aggregator-a edgefl/7/client/2 task-from-worker
refused_publish aggregator-a edgefl/7/broadcast model-from-worker -r
published aggregator-b edgefl/7/server/workers marker-h
published "$W" edgefl/7/client/2 marker-h-for-2
got srv "edgefl/7/server/workers marker-h"
got c2 "edgefl/7/client/2 marker-h-for-2"
for m in forged-partial task-from-worker model-from-worker; do not_got srv $m; not_got c2 $m; done
sub_stop wa; sub_stop wb

# --- persistence: retained model and a durable session survive a restart ------------
sub_stop c2
# Client 2 leaves a durable session (clean start off, session expiry 1 h).
timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 --cafile "$certs/ca.crt" \
    --cert "$certs/client-2.crt" --key "$certs/client-2.key" -q 1 -c -i c2 -x 3600 \
    -t edgefl/7/client/2 -E >/dev/null 2>&1 || fail "durable subscription of client 2 failed"
published "$W" edgefl/7/client/2 queued-for-2 -d
grep -q "PUBACK (Mid: 1, RC:0)" "$tmp/pub.out" || fail "queued-for-2 had no subscriber: $(cat "$tmp/pub.out")"
sub_stop srv
expect 0 "$M/run-broker.sh" --stop "$tmp/state"
[ -s "$tmp/state/mosquitto.db" ] || fail "no mosquitto.db after shutdown"
port2=$("$M/run-broker.sh" --certs "$certs" --port "$port" "$tmp/state" 2>"$tmp/rb.err") ||
    fatal "restart failed: $(cat "$tmp/rb.err")"
[ "$port2" = "$port" ] || fail "restart printed port $port2, want $port"
timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 --cafile "$certs/ca.crt" \
    --cert "$certs/client-3.crt" --key "$certs/client-3.key" -t edgefl/7/broadcast -C 1 -W 10 \
    >"$tmp/retained.out" 2>&1
[ "$(cat "$tmp/retained.out")" = model-v1 ] || fail "retained model after restart: '$(cat "$tmp/retained.out")'"
sub_start c2 client-2 -c -i c2 -x 3600 -- edgefl/7/client/2
got c2 "edgefl/7/client/2 queued-for-2"
sub_stop c2

# --- the bridge template: an edge gateway's broker linked to this one -----------------
sed -e 's/@JOB@/7/g' -e 's/@GATEWAY_ID@/1000/g' -e "s/@CENTRAL@/127.0.0.1:$port/" \
    -e "s|@CERTS@|$certs|g" "$M/bridge.conf.example" >"$tmp/bridge.conf"
! grep -q "@[A-Z_]*@" "$tmp/bridge.conf" || fail "bridge template has placeholders left: $(grep '@[A-Z_]*@' "$tmp/bridge.conf")"
gport=$("$M/run-broker.sh" --plain --include "$tmp/bridge.conf" "$tmp/gw" 2>"$tmp/rb.err") ||
    fatal "gateway broker failed: $(cat "$tmp/rb.err")"
grep -q "NO TLS, NO AUTHENTICATION" "$tmp/gw/mosquitto.conf" || fail "plain config lacks its warning"
! grep -qE "^(acl_file|cafile|require_certificate)" "$tmp/gw/mosquitto.conf" || fail "plain config still has TLS/ACL lines"
wait_for "$tmp/state/mosquitto.log" "as edgefl-bridge" 150 || fatal "the gateway's bridge did not connect: $(tail -5 "$tmp/gw/mosquitto.log")"
# local_* talk to the gateway broker, anonymously (plain mode)
lsub_start() {
    local name=$1; shift
    local opts=() topics=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    for t in "$@"; do topics+=(-t "$t"); done
    stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$gport" -V mqttv5 -q 1 -v -d -W 120 \
        "${opts[@]}" "${topics[@]}" >"$tmp/$name.out" 2>&1 &
    subpid[$name]=$!
    wait_for "$tmp/$name.out" "received SUBACK" 100 || fatal "local subscriber $name got no SUBACK"
}
lpub() { timeout 20 mosquitto_pub -h 127.0.0.1 -p "$gport" -V mqttv5 -q 1 "$@" >/dev/null 2>"$tmp/pub.err" ||
    fail "local publish $* failed: $(cat "$tmp/pub.err")"; }
# The retained central model is already on the gateway broker once the
# bridge is up, under the gateway's upstream prefix up/.
lsub_start gl -- 'edgefl/#' 'up/#'
got gl "up/edgefl/7/broadcast model-v1"
# The bridge is connected now: the server writes, and srv watches the
# central server inboxes with an aggregator's certificate.
W=server
sub_start srv aggregator-b -- 'edgefl/+/server'
published "$W" edgefl/7/client/1000 task-for-gateway
published "$W" edgefl/7/client/1001 task-for-someone-else
published "$W" edgefl/7/broadcast model-v2 -r
got gl "up/edgefl/7/client/1000 task-for-gateway"
got gl "up/edgefl/7/broadcast model-v2"
not_got gl "task-for-someone-else"
# the devices' own uploads to the gateway (same job, no prefix) stay local;
# the gateway's upload under up/ reaches the central server inbox
lpub -t edgefl/7/server -m device-update-for-the-gateway
lpub -t up/edgefl/8/server -m other-job-update
lpub -t up/edgefl/7/server -m partial-sum-from-gateway
got srv "edgefl/7/server partial-sum-from-gateway"
not_got srv "device-update-for-the-gateway"
not_got srv "other-job-update"
sub_stop gl
# Gateway down: the central broker queues the gateway's task in the bridge's
# durable session and delivers it when the gateway is back.
lsub_start dev -c -i dev -x 3600 -- up/edgefl/7/client/1000
sub_stop dev
expect 0 "$M/run-broker.sh" --stop "$tmp/gw"
published "$W" edgefl/7/client/1000 task-while-gateway-down -d
grep -q "RC:0)" "$tmp/pub.out" || fail "central broker kept no session for the bridge: $(grep PUBACK "$tmp/pub.out")"
"$M/run-broker.sh" --plain --port "$gport" --include "$tmp/bridge.conf" "$tmp/gw" >/dev/null 2>"$tmp/rb.err" ||
    fatal "gateway restart failed: $(cat "$tmp/rb.err")"
lsub_start dev -c -i dev -x 3600 -- up/edgefl/7/client/1000
got dev "up/edgefl/7/client/1000 task-while-gateway-down"
sub_stop dev
sub_stop srv
expect 0 "$M/run-broker.sh" --stop "$tmp/gw"
expect 0 "$M/run-broker.sh" --stop "$tmp/state"
expect 1 "$M/run-broker.sh" --stop "$tmp/state"
err_has "no broker running"

finish test_acl
