# shellcheck shell=bash
# shellcheck disable=SC2154  # $tmp comes from tests/cli/common.sh
# Shared by the MQTT shell tests (sourced after tests/cli/common.sh): starts
# a real mosquitto broker on a free loopback port in $tmp (anonymous,
# loopback only) and stops it, and every process started with `bg`, on exit.
#   start_broker        sets $port and $url; skips the test (77) without mosquitto
#   broker_conf PORT LOG, wait_port PORT   for tests that start more brokers
#   bg CMD...           runs CMD in the background, remembered for cleanup
#   stop_all            kills what bg started
#   wait_for FILE RE [S]  waits until FILE has a line matching RE (fails after S s, default 60)
#   wait_pid PID S      waits for a background process, killed (and failed) after S s
#   metric FILE EXPR    a Python expression over the rows r of a metrics JSONL file
MOSQUITTO=$(command -v mosquitto || true)
[ -n "$MOSQUITTO" ] || for p in /usr/sbin/mosquitto /usr/local/sbin/mosquitto; do
    [ -x "$p" ] && MOSQUITTO=$p
done
bg_pids=()
broker_pid=
bg() { "$@" & bg_pids+=($!); }
stop_all() {
    for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null; done
    bg_pids=()
}
stop_broker() {
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    broker_pid=
}
cleanup_mqtt() { stop_all; stop_broker; rm -rf "$tmp"; }
trap cleanup_mqtt EXIT
trap 'exit 143' TERM INT
free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# broker_conf PORT LOG: the settings of a test broker (anonymous, loopback
# only, no persistence); `user`: a broker started as root would switch to
# the mosquitto user
broker_conf() {
    cat <<CONF
listener $1 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
log_dest file $2
CONF
}
# wait_port PORT: returns once something listens on PORT; 1 after 5 s
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
start_broker() {
    if [ -z "$MOSQUITTO" ]; then echo "mosquitto not installed: skipped"; exit 77; fi
    port=$(free_port)
    # shellcheck disable=SC2034  # used by the tests that source this file
    url=mqtt://127.0.0.1:$port
    broker_conf "$port" "$tmp/broker.log" > "$tmp/mosquitto.conf"
    "$MOSQUITTO" -c "$tmp/mosquitto.conf" 2>>"$tmp/broker.log" &
    broker_pid=$!
    wait_port "$port" && return 0
    echo "the broker did not start: $(cat "$tmp/broker.log")" >&2
    exit 1
}
# wait_for FILE REGEX [SECONDS]: until FILE has a line matching REGEX (0), or time out (1)
wait_for() {
    local i
    for ((i = 0; i < ${3:-60} * 10; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "timed out waiting for '$2' in $1: $(tail -c 300 "$1" 2>/dev/null)"
    return 1
}
# wait_pid PID SECONDS: waits for a background process to end, killing it
# after SECONDS; returns its exit code
wait_pid() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$1" 2>/dev/null && { fail "process $1 still running after $2 s"; kill "$1"; }
    wait "$1"
}
# metric FILE EXPR: a Python expression over the rows r of a metrics JSONL file
metric() {
    /usr/bin/python3 -c "import json, sys; r = [json.loads(l) for l in open(sys.argv[1])]; print($2)" "$1"
}
