#!/usr/bin/env bash
# A federated job over MQTT on this machine: a mosquitto broker on a free
# loopback port (anonymous, loopback only, in a temporary directory), one
# `edgefl server` and CLIENTS `edgefl client` processes, ROUNDS rounds of
# FedAvg on Fashion-MNIST (MLP, Dirichlet(0.5) label skew). Prints the
# server's final JSON summary on stdout; progress goes to stderr. Everything
# it starts is stopped, and the temporary directory removed, on exit.
#
#   examples/mqtt/run-local.sh [CLIENTS] [ROUNDS]      (default 10 clients, 5 rounds)
#
# Environment: EDGEFL (the binary; default build/edgefl), JOB (a job file to
# use instead of the built-in one; CLIENTS then must match its "clients"),
# KEEP=1 (keep the temporary directory with the logs).
set -euo pipefail
CLIENTS=${1:-10}
ROUNDS=${2:-5}
case $CLIENTS$ROUNDS in *[!0-9]*) echo "usage: $0 [CLIENTS] [ROUNDS]" >&2; exit 2;; esac
if [ "$CLIENTS" -lt 1 ] || [ "$ROUNDS" -lt 1 ]; then echo "usage: $0 [CLIENTS] [ROUNDS]" >&2; exit 2; fi
here=$(cd "$(dirname "$0")" && pwd)
EDGEFL=${EDGEFL:-$here/../../build/edgefl}
[ -x "$EDGEFL" ] || { echo "run-local: $EDGEFL not found (build first: make)" >&2; exit 1; }
MOSQUITTO=$(command -v mosquitto || true)
[ -n "$MOSQUITTO" ] || [ ! -x /usr/sbin/mosquitto ] || MOSQUITTO=/usr/sbin/mosquitto
[ -n "$MOSQUITTO" ] || { echo "run-local: mosquitto not installed (scripts/install-deps.sh)" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
broker=
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "run-local: logs in $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
CONF
"$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done
url=mqtt://127.0.0.1:$port

job=${JOB:-$dir/job.json}
if [ -z "${JOB:-}" ]; then
    per_round=$(( CLIENTS < 10 ? CLIENTS : 10 ))
    cat > "$job" <<JOBFILE
{"clients": $CLIENTS, "rounds": $ROUNDS, "clients-per-round": $per_round, "model": "mlp",
 "partition": "dirichlet:0.5", "local-epochs": 1, "batch": 32, "lr": 0.05, "seed": 1,
 "threads": 1}
JOBFILE
fi
echo "run-local: broker $url, $CLIENTS clients, job $job" >&2
for i in $(seq 0 $((CLIENTS - 1))); do
    "$EDGEFL" client --broker "$url" --config "$job" --client-index "$i/$CLIENTS" --quiet \
        2>"$dir/client$i.log" &
    pids+=($!)
done
if ! "$EDGEFL" server --broker "$url" --config "$job" --state-dir "$dir/state" --json \
        >"$dir/server.json"; then
    echo "run-local: the server failed" >&2
    exit 1
fi
cat "$dir/server.json"
