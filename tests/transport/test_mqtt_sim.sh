#!/usr/bin/env bash
# Acceptance: a federated job over a real mosquitto broker -- `edgefl server`
# and 10 `edgefl client` processes, 3 rounds of 5 clients out of 10 on a
# Dirichlet partition -- ends with the same global model, byte for byte, as
# `edgefl simulate` with the same job file and seed. The clients connect in
# whatever order the operating system runs them (the server selects among
# the checked-in clients in id order), compute the simulator's partition and
# train with the task seeds the server sends, as the simulator's clients do.
# usage: test_mqtt_sim.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/../cli/common.sh" "$@"
source "$(dirname "$0")/mqtt_common.sh"
[ -d /usr/share/datasets/fashion-mnist ] || { echo "no Fashion-MNIST: skipped"; exit 77; }
start_broker
cat > "$tmp/job.json" <<JOB
{"clients": 10, "rounds": 3, "clients-per-round": 5, "model": "mlp",
 "partition": "dirichlet:0.5", "local-epochs": 1, "batch": 32, "lr": 0.05,
 "seed": 11, "eval-limit": 2000, "threads": 1}
JOB
# clients first, in reverse order: they wait for the server's tasks
for i in $(seq 9 -1 0); do
    bg "$EF" client --broker "$url" --config "$tmp/job.json" --client-index "$i/10" --quiet \
        2>"$tmp/client$i.err"
done
expect 0 timeout 600 "$EF" server --broker "$url" --config "$tmp/job.json" --json \
    --out "$tmp/server.safetensors" --state-dir "$tmp/state" --metrics "$tmp/server.jsonl"
cp "$tmp/out" "$tmp/server.json"
cp "$tmp/err" "$tmp/server.err"
stop_all
expect 0 "$EF" simulate --config "$tmp/job.json" --json --quiet --out "$tmp/sim.safetensors"
cp "$tmp/out" "$tmp/sim.json"
cmp -s "$tmp/server.safetensors" "$tmp/sim.safetensors" ||
    fail "the deployment's final model differs from the simulator's"
[ "$(field "$tmp/server.json" rounds)" = 3 ] || fail "rounds: $(cat "$tmp/server.json")"
[ "$(field "$tmp/server.json" updates_received)" = 15 ] || fail "updates received"
[ "$(field "$tmp/server.json" updates_rejected)" = 0 ] || fail "updates rejected"
[ "$(field "$tmp/server.json" models_broadcast)" = 3 ] || fail "one broadcast per model version"
[ "$(field "$tmp/server.json" final_accuracy)" = "$(field "$tmp/sim.json" final_accuracy)" ] ||
    fail "final accuracy differs: $(field "$tmp/server.json" final_accuracy) vs $(field "$tmp/sim.json" final_accuracy)"
[ "$(wc -l < "$tmp/server.jsonl")" = 3 ] || fail "one metrics line per round"
[ -f "$tmp/state/state.json" ] || fail "no checkpoint in the state directory"
# one progress line per round on stderr
[ "$(grep -c '^round [0-9]/3' "$tmp/server.err")" = 3 ] || fail "progress lines: $(cat "$tmp/server.err")"
finish test_mqtt_sim
