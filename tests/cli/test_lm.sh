#!/usr/bin/env bash
# edgefl lm train / lm eval end to end on real text: the first ~300 KB of the
# King James Bible (Debian's bible-kjv, through `edgefl corpus kjv`), or,
# without it, edgefl's own documentation (docs/*.md) as the corpus.
# - A short real run (tiny model, a tokenizer trained on the way, 400
#   steps; 160 with EDGEFL_TEST_QUICK): the held-out loss must end well
#   below (1 nat; 0.5 with EDGEFL_TEST_QUICK) the unigram entropy of the
#   training tokens (what a model that ignores context achieves), and
#   `lm eval` on the held-out lines must report the same bits per byte.
# - Exact resume: a run stopped by --stop-after and continued with --resume
#   (on another thread count) writes a model file identical byte for byte to
#   the uninterrupted run's; a SIGTERM checkpoints, exits 130 and resumes.
# - Refusals: missing or conflicting options, a model file given to
#   --resume, a checkpoint resumed on another text, a missing corpus.
source "$(dirname "$0")/common.sh" "$@"
SRC=$2
PY=/usr/bin/python3
bgpid=""
trap '[ -n "$bgpid" ] && kill "$bgpid" 2>/dev/null; rm -rf "$tmp"' EXIT

# corpus
if [ -x /usr/bin/bible ]; then
    expect 0 "$EF" corpus kjv --out "$tmp/kjv" --quiet
    head -c 300000 "$tmp/kjv/train.txt" >"$tmp/corpus.txt"
    what="KJV slice"
else
    cat "$SRC"/docs/*.md >"$tmp/corpus.txt"
    what="docs/*.md (bible-kjv not installed)"
fi
echo "corpus: $what, $(wc -c <"$tmp/corpus.txt") bytes"
# the held-out lines edgefl lm train picks without --valid (same hash split)
expect 0 "$EF" corpus split --in "$tmp/corpus.txt" --out "$tmp/split" --by text --quiet

ARCH=(--dim 64 --layers 2 --heads 4 --kv-heads 2 --seq 64 --batch 16 --lr 3e-3 --threads 2)
# EDGEFL_TEST_QUICK (the sanitizer build, unoptimized): a shorter run, a smaller margin
STEPS=400 HALF=200 MARGIN=1.0
if [ -n "${EDGEFL_TEST_QUICK:-}" ]; then STEPS=160 HALF=80 MARGIN=0.5; fi

# 1. the short real run
start=$SECONDS
expect 0 "$EF" lm train --corpus "$tmp/corpus.txt" --vocab 512 --tok-out "$tmp/tok.json" \
    --out "$tmp/m.safetensors" "${ARCH[@]}" --steps $STEPS --eval-every $HALF --log-every 20 --json
cp "$tmp/out" "$tmp/run.json"
cp "$tmp/err" "$tmp/run.err"
echo "short run: $((SECONDS - start)) s"
grep -q "^step     20/$STEPS  loss" "$tmp/run.err" || fail "no progress line for step 20"
grep -q "tok/s" "$tmp/run.err" && grep -q "ETA" "$tmp/run.err" || fail "progress lacks tok/s or ETA"
grep -q "validation loss .* bits/byte" "$tmp/run.err" || fail "no validation line"
[ -s "$tmp/m.safetensors" ] && [ -s "$tmp/m.safetensors.ckpt" ] || fail "model or checkpoint missing"
[ -s "$tmp/tok.json" ] || fail "--tok-out not written"
# unigram entropy (nats/token) of the training tokens, as edgefl streams them
"$EF" tokenizer encode --tok "$tmp/tok.json" --in "$tmp/split/train.txt" --ids >"$tmp/ids.txt"
H=$($PY -c '
import collections, math, sys
ids = open(sys.argv[1]).read().split()
c = collections.Counter(ids); n = len(ids)
print(-sum(k / n * math.log(k / n) for k in c.values()))' "$tmp/ids.txt")
VL=$(field "$tmp/run.json" valid_loss)
VB=$(field "$tmp/run.json" valid_bpb)
TL=$(field "$tmp/run.json" final_train_loss)
echo "unigram entropy $H nats/token; after $STEPS steps: train loss $TL, held-out loss $VL ($VB bits/byte)"
$PY -c 'import sys; h, v, m = map(float, sys.argv[1:]); sys.exit(0 if v < h - m else 1)' "$H" "$VL" "$MARGIN" ||
    fail "held-out loss $VL is not well below the unigram entropy $H (margin $MARGIN nats)"
[ "$(field "$tmp/run.json" steps_run)" = $STEPS ] || fail "steps_run"
# two validation points, the later one lower
$PY - "$tmp/run.json" $HALF $STEPS <<'EOF' || fail "evals in the JSON output"
import json, sys
e = json.load(open(sys.argv[1]))["evals"]
assert [x["step"] for x in e] == [int(sys.argv[2]), int(sys.argv[3])], e
assert e[1]["valid_loss"] < e[0]["valid_loss"], e
EOF
# lm eval on the held-out lines agrees with the run's last validation
expect 0 "$EF" lm eval --model "$tmp/m.safetensors" --text "$tmp/split/valid.txt" --batch 16 --json
EB=$(field "$tmp/out" bpb)
$PY -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) < 1e-9 else 1)' "$EB" "$VB" ||
    fail "lm eval says $EB bits/byte, training said $VB"
expect 0 "$EF" lm eval --model "$tmp/m.safetensors" --text "$tmp/split/valid.txt"
out_has "bits/byte"

# 2. exact resume: uninterrupted (2 threads) vs stopped at 23 and resumed (1 thread)
R=(--corpus "$tmp/corpus.txt" --tok "$tmp/tok.json" --dim 32 --layers 2 --heads 2 --seq 32
   --batch 8 --eval-every 0)
expect 0 "$EF" lm train "${R[@]}" --steps 60 --quiet --threads 2 --out "$tmp/a.safetensors"
expect 0 "$EF" lm train "${R[@]}" --steps 60 --quiet --threads 2 --out "$tmp/b.safetensors" \
    --stop-after 23 --json
[ "$(field "$tmp/out" steps_done)" = 23 ] || fail "--stop-after 23 did $(field "$tmp/out" steps_done) steps"
[ "$(field "$tmp/out" finished)" = False ] || fail "a stopped run reports finished"
expect 0 "$EF" lm train --corpus "$tmp/corpus.txt" --resume "$tmp/b.safetensors.ckpt" --threads 1 \
    --out "$tmp/b.safetensors" --eval-every 0 --quiet --json
[ "$(field "$tmp/out" steps_run)" = 37 ] || fail "resume ran $(field "$tmp/out" steps_run) steps, want 37"
cmp -s "$tmp/a.safetensors" "$tmp/b.safetensors" ||
    fail "resumed model differs from the uninterrupted run's"

# SIGTERM: checkpoint, exit 130, resumable
"$EF" lm train "${R[@]}" --steps 100000 --log-every 1 --out "$tmp/s.safetensors" 2>"$tmp/sig.err" &
bgpid=$!
for _ in $(seq 1 300); do grep -q "^step" "$tmp/sig.err" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$bgpid"
wait "$bgpid"
code=$?
bgpid=""
[ "$code" = 130 ] || fail "SIGTERM: exit $code, want 130"
grep -q "interrupted at step" "$tmp/sig.err" || fail "SIGTERM: no 'interrupted' message"
[ -s "$tmp/s.safetensors.ckpt" ] || fail "SIGTERM: no checkpoint"
expect 0 "$EF" lm train --corpus "$tmp/corpus.txt" --resume "$tmp/s.safetensors.ckpt" \
    --out "$tmp/s.safetensors" --stop-after 2 --quiet

# 3. refusals
expect 2 "$EF" lm train --corpus "$tmp/corpus.txt" --vocab 300
err_has "required"
expect 2 "$EF" lm train --corpus "$tmp/corpus.txt" --vocab 300 --tok "$tmp/tok.json" --out "$tmp/x.safetensors"
err_has "exactly one of --tok"
expect 2 "$EF" lm train --corpus "$tmp/corpus.txt" --tok "$tmp/tok.json" --out "$tmp/x.bin"
err_has "must end in .safetensors or .gguf"
expect 2 "$EF" lm train --corpus "$tmp/corpus.txt" --resume "$tmp/b.safetensors.ckpt" --dim 48 --out "$tmp/x.safetensors"
err_has "cannot be changed when resuming"
expect 2 "$EF" lm train --corpus "$tmp/corpus.txt" --tok "$tmp/tok.json" --out "$tmp/x.safetensors" --heads 3
expect 2 "$EF" lm train --corpus "$tmp/corpus.txt" --tok "$tmp/tok.json" --out "$tmp/x.safetensors" --bogus 1
expect 2 "$EF" lm frobnicate
expect 1 "$EF" lm train --corpus "$tmp/corpus.txt" --resume "$tmp/a.safetensors" --out "$tmp/x.safetensors"
err_has "not a training checkpoint"
head -c 100000 "$tmp/corpus.txt" >"$tmp/other.txt"
expect 1 "$EF" lm train --corpus "$tmp/other.txt" --resume "$tmp/b.safetensors.ckpt" --out "$tmp/x.safetensors"
err_has "different text"
expect 1 "$EF" lm train --corpus "$tmp/missing.txt" --tok "$tmp/tok.json" --out "$tmp/x.safetensors"
[ ! -e "$tmp/x.safetensors" ] || fail "a refused run wrote its output"
expect 1 "$EF" lm eval --model "$tmp/corpus.txt" --text "$tmp/corpus.txt"

finish cli/test_lm
