#!/usr/bin/env bash
# The King James Bible corpus and tokenizers trained on it: `edgefl corpus
# kjv` writes all 31,102 verses once, ~1.5 % held out by a hash of the verse
# label (recomputed here in Python), the same on every run; labels dropped on
# request; then 4096- and 8192-token tokenizers trained on the training
# verses in seconds, with the bytes per token they reach on the held-out
# verses and exact round trips. Skipped (77) without Debian's bible-kjv.
# usage: test_tokenizer_kjv.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"
PY=/usr/bin/python3
if [ ! -x /usr/bin/bible ]; then
    echo "test_tokenizer_kjv: SKIPPED: /usr/bin/bible missing (apt-get install bible-kjv)"
    exit 77
fi

expect 0 "$EF" corpus kjv --out "$tmp/kjv" --json
cp "$tmp/out" "$tmp/corpus.json"
nt=$(field "$tmp/corpus.json" train_lines)
nv=$(field "$tmp/corpus.json" valid_lines)
[ $((nt + nv)) = 31102 ] || fail "$nt + $nv verses, not 31102"
[ "$(wc -l <"$tmp/kjv/train.txt")" = "$nt" ] && [ "$(wc -l <"$tmp/kjv/valid.txt")" = "$nv" ] ||
    fail "line counts do not match the summary"
[ "$nv" -gt 311 ] && [ "$nv" -lt 622 ] || fail "$nv verses held out: not 1-2 %"
[ "$(head -1 "$tmp/kjv/train.txt")" = "Ge1:1 In the beginning God created the heaven and the earth." ] ||
    fail "first verse: $(head -1 "$tmp/kjv/train.txt")"
[ "$(tail -1 "$tmp/kjv/train.txt")" = "Rev22:21 The grace of our Lord Jesus Christ be with you all. Amen." ] ||
    fail "last verse: $(tail -1 "$tmp/kjv/train.txt")"
# the held-out verses are exactly those whose label hashes below 0.015
$PY - "$tmp/kjv/train.txt" "$tmp/kjv/valid.txt" <<'EOF' || fail "held-out set differs from the documented hash"
import sys
M = (1 << 64) - 1
def h(b):
    x = 0xcbf29ce484222325
    for c in b:
        x = ((x ^ c) * 0x100000001b3) & M
    x ^= x >> 30; x = (x * 0xbf58476d1ce4e5b9) & M
    x ^= x >> 27; x = (x * 0x94d049bb133111eb) & M
    return x ^ (x >> 31)
train = [l.split(" ", 1)[0] for l in open(sys.argv[1], encoding="ascii")]
valid = [l.split(" ", 1)[0] for l in open(sys.argv[2], encoding="ascii")]
assert len(set(train) | set(valid)) == 31102 and not set(train) & set(valid)
held = {k for k in train + valid if (h(k.encode()) >> 11) / 2**53 < 0.015}
assert held == set(valid), (len(held), len(valid))
EOF
# the same split again; without labels the text is the same verses
cp "$tmp/kjv/valid.txt" "$tmp/valid1.txt"
expect 0 "$EF" corpus kjv --out "$tmp/kjv" --quiet
cmp -s "$tmp/kjv/valid.txt" "$tmp/valid1.txt" || fail "corpus kjv is not deterministic"
expect 0 "$EF" corpus kjv --out "$tmp/nolabel" --drop-labels --quiet
cut -d' ' -f2- "$tmp/kjv/valid.txt" | cmp -s - "$tmp/nolabel/valid.txt" || fail "--drop-labels text differs"

# tokenizers: seconds, not minutes; bytes per token on the held-out verses
prev=0
for v in 4096 8192; do
    expect 0 "$EF" tokenizer train --vocab $v --corpus "$tmp/kjv/train.txt" --out "$tmp/tok$v.json" --json
    cp "$tmp/out" "$tmp/train$v.json"
    secs=$(field "$tmp/train$v.json" seconds)
    [ "$(field "$tmp/train$v.json" vocab)" = $v ] || fail "vocab $v: $(cat "$tmp/train$v.json")"
    $PY -c "import sys; sys.exit(0 if $secs < 20 else 1)" || fail "training $v tokens took $secs s"
    expect 0 "$EF" tokenizer stats --tok "$tmp/tok$v.json" --text "$tmp/kjv/valid.txt" --json
    bpt=$(field "$tmp/out" bytes_per_token)
    [ "$(field "$tmp/out" round_trip_exact)" = True ] || fail "vocab $v: round trip"
    echo "KJV vocab $v: trained in $secs s ($(field "$tmp/train$v.json" merges_per_s) merges/s," \
        "$(field "$tmp/train$v.json" bytes_per_token) bytes/token on train); held-out verses: $bpt bytes/token"
    $PY -c "import sys; sys.exit(0 if 3.4 < $bpt < 4.6 and $bpt > $prev else 1)" ||
        fail "vocab $v: $bpt bytes/token on held-out verses (expected 3.4..4.6, above $prev)"
    prev=$bpt
done
# the whole training text round-trips exactly, special-token recognition on
expect 0 "$EF" tokenizer stats --tok "$tmp/tok4096.json" --text "$tmp/kjv/train.txt" --json
[ "$(field "$tmp/out" round_trip_exact)" = True ] || fail "train.txt round trip"
[ "$(field "$tmp/out" tokens)" = "$(field "$tmp/train4096.json" corpus_tokens)" ] ||
    fail "encode and training disagree on the corpus length"

finish test_tokenizer_kjv
