#!/usr/bin/env bash
# `edgefl quantize` and `edgefl gguf-info` end to end, on small llama-style
# models written by tests/io/gguf_peer.py (an independent GGUF implementation
# in Python, stdlib only), which also re-quantizes every tensor on its own
# and compares the bytes (bit-exact Q8_0 / Q4_0). Checks the choice of types
# (norms kept F32, the output projection as Q8_0 under q4_0 unless --pure,
# tied embeddings, rows not a multiple of 32 kept), metadata (file_type,
# quantization_version), summaries, usage errors (exit 2), and bad inputs:
# exit 1 with a clear message and nothing written.
# usage: test_gguf_cli.sh EDGEFL_BINARY SOURCE_DIR
source "$(dirname "$0")/common.sh" "$@"
SRC=$2
PY=/usr/bin/python3
PEER="$SRC/tests/io/gguf_peer.py"
if [ ! -x "$PY" ]; then
    echo "skipping: $PY not found (needed to write the test models)"
    exit 77
fi
peer() { "$PY" "$PEER" "$@"; }
# jget FILE EXPR: evaluates a Python expression on the JSON object j in FILE
jget() { "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# ---- usage --------------------------------------------------------------------
expect 0 "$EF" quantize --help
out_has "q8_0"
expect 0 "$EF" gguf-info --help
expect 0 "$EF" --help
out_has "quantize"
out_has "gguf-info"
expect 2 "$EF" quantize
err_has "expected IN.gguf OUT.gguf TYPE"
expect 2 "$EF" quantize a.gguf b.gguf
expect 2 "$EF" quantize a.gguf b.gguf q8_0 extra
expect 2 "$EF" quantize a.gguf b.gguf q5_0
err_has "not one of q8_0, q4_0, f16"
expect 2 "$EF" quantize a.gguf b.gguf q8_0 --pure
err_has "--pure applies to q4_0"
expect 2 "$EF" quantize a.gguf b.gguf q8_0 --bogus
err_has "unknown option"
expect 2 "$EF" gguf-info
err_has "FILE is required"
expect 2 "$EF" gguf-info a b
expect 2 "$EF" gguf-info a --max-items -1

# ---- a model, inspected ----------------------------------------------------------
peer llama "$tmp/m.gguf" --seed 3 || fail "the peer could not write a model"
expect 0 "$EF" gguf-info "$tmp/m.gguf"
out_has "general.architecture"
out_has '"llama"'
out_has "tokenizer.ggml.tokens"
out_has "token_embd.weight"
out_has "tensors: 21, 100160 parameters"
expect 0 "$EF" gguf-info "$tmp/m.gguf" --json --max-items 3
cp "$tmp/out" "$tmp/info.json"
[ "$(jget "$tmp/info.json" "len(j['tensors'])")" = 21 ] || fail "gguf-info --json: tensor count"
[ "$(jget "$tmp/info.json" "j['metadata']['general.architecture']")" = llama ] || fail "json architecture"
[ "$(jget "$tmp/info.json" "j['metadata']['tokenizer.ggml.tokens']['n']")" = 300 ] || fail "json tokens n"
[ "$(jget "$tmp/info.json" "len(j['metadata']['tokenizer.ggml.tokens']['values'])")" = 3 ] || fail "json --max-items"
[ "$(jget "$tmp/info.json" "j['tensors'][0]['ne']")" = "[64, 300]" ] || fail "json shape"
# an f32 value comes back as the same float
[ "$(jget "$tmp/info.json" "__import__('struct').pack('<f', j['metadata']['llama.attention.layer_norm_rms_epsilon']) == __import__('struct').pack('<f', 1e-5)")" = True ] \
    || fail "json f32 value"

# ---- q8_0 -------------------------------------------------------------------------
expect 0 "$EF" quantize "$tmp/m.gguf" "$tmp/q8.gguf" q8_0 --json
cp "$tmp/out" "$tmp/q8.json"
[ "$(jget "$tmp/q8.json" "j['quantized']")" = 16 ] || fail "q8_0: quantized count $(cat "$tmp/q8.json")"
[ "$(jget "$tmp/q8.json" "j['kept']")" = 5 ] || fail "q8_0: kept count"
[ "$(jget "$tmp/q8.json" "j['ratio'] > 3.4")" = True ] || fail "q8_0: ratio $(cat "$tmp/q8.json")"
[ "$(jget "$tmp/q8.json" "j['output_bytes'] == $(stat -c %s "$tmp/q8.gguf")")" = True ] || fail "q8_0: output_bytes"
peer check-quant "$tmp/m.gguf" "$tmp/q8.gguf" >"$tmp/chk" || fail "check-quant q8_0 failed to run"
[ "$(jget "$tmp/chk" "j['mismatch']")" = "[]" ] || fail "q8_0 bytes differ from the independent quantizer: $(cat "$tmp/chk")"
[ "$(jget "$tmp/chk" "j['q8_0']")" = 16 ] || fail "q8_0: peer saw $(cat "$tmp/chk")"
expect 0 "$EF" gguf-info "$tmp/q8.gguf" --json
cp "$tmp/out" "$tmp/q8info.json"
[ "$(jget "$tmp/q8info.json" "j['metadata']['general.file_type']")" = 7 ] || fail "q8_0: file_type"
[ "$(jget "$tmp/q8info.json" "j['metadata']['general.quantization_version']")" = 2 ] || fail "q8_0: quantization_version"
[ "$(jget "$tmp/q8info.json" "sorted(set(t['type'] for t in j['tensors'] if 'norm' in t['name']))")" = "['f32']" ] \
    || fail "q8_0: norms not kept f32"
[ "$(jget "$tmp/q8info.json" "[t['type'] for t in j['tensors'] if t['name']=='output.weight']")" = "['q8_0']" ] \
    || fail "q8_0: output.weight"
# every other key copied unchanged, in order
[ "$(jget "$tmp/q8info.json" "[k for k in j['metadata'] if k not in ('general.file_type','general.quantization_version')] == [k for k in json.load(open('$tmp/info.json'))['metadata'] if k != 'general.file_type']")" = True ] \
    || fail "q8_0: metadata keys not copied in order"
# deterministic; quantizing a Q8_0 model to q8_0 again copies every tensor: same bytes
expect 0 "$EF" quantize "$tmp/m.gguf" "$tmp/q8b.gguf" q8_0 --quiet
cmp -s "$tmp/q8.gguf" "$tmp/q8b.gguf" || fail "two q8_0 runs differ"
expect 0 "$EF" quantize "$tmp/q8.gguf" "$tmp/q8c.gguf" q8_0 --json
[ "$(jget "$tmp/out" "j['already_target_type']")" = 16 ] 2>/dev/null || fail "requantize q8_0 -> q8_0: $(cat "$tmp/out")"
cmp -s "$tmp/q8.gguf" "$tmp/q8c.gguf" || fail "q8_0 -> q8_0 is not a byte copy"

# ---- f16: every matrix (the output projection too), IEEE half rounded to nearest even
expect 0 "$EF" quantize "$tmp/m.gguf" "$tmp/h.gguf" f16 --json
[ "$(jget "$tmp/out" "(j['quantized'], j['kept'], j['file_type'])")" = "(16, 5, 1)" ] || fail "f16: $(cat "$tmp/out")"
peer check-quant "$tmp/m.gguf" "$tmp/h.gguf" >"$tmp/chk" || fail "check-quant f16 failed to run"
[ "$(jget "$tmp/chk" "(j['mismatch'], j['f16'], j['copied'])")" = "([], 16, 5)" ] \
    || fail "f16 bytes or types: $(cat "$tmp/chk")"
# a weight beyond the f16 range is refused and nothing is written
peer llama "$tmp/huge.gguf" --bad huge || fail "the peer could not write a model"
expect 1 "$EF" quantize "$tmp/huge.gguf" "$tmp/huge16.gguf" f16
err_has "too large for f16"
[ ! -e "$tmp/huge16.gguf" ] || fail "f16: a refused run wrote its output"
expect 0 "$EF" quantize "$tmp/huge.gguf" "$tmp/huge8.gguf" q8_0 --quiet  # Q8_0's scale holds it

# ---- q4_0 ------------------------------------------------------------------------
expect 0 "$EF" quantize "$tmp/m.gguf" "$tmp/q4.gguf" q4_0
out_has "quantized 16 (1 of them as q8_0: the output projection)"
out_has "llama.cpp file type 2"
peer check-quant "$tmp/m.gguf" "$tmp/q4.gguf" >"$tmp/chk" || fail "check-quant q4_0 failed to run"
[ "$(jget "$tmp/chk" "(j['mismatch'], j['q4_0'], j['q8_0'])")" = "([], 15, 1)" ] \
    || fail "q4_0 bytes or types: $(cat "$tmp/chk")"
expect 0 "$EF" gguf-info "$tmp/q4.gguf" --json
[ "$(jget "$tmp/out" "j['metadata']['general.file_type']")" = 2 ] || fail "q4_0: file_type"
[ "$(jget "$tmp/out" "[t['type'] for t in j['tensors'] if t['name'] in ('output.weight','token_embd.weight')]")" = "['q4_0', 'q8_0']" ] \
    || fail "q4_0: embedding / output types"
expect 0 "$EF" quantize "$tmp/m.gguf" "$tmp/q4p.gguf" q4_0 --pure --quiet
peer check-quant "$tmp/m.gguf" "$tmp/q4p.gguf" >"$tmp/chk"
[ "$(jget "$tmp/chk" "(j['mismatch'], j['q4_0'], j['q8_0'])")" = "([], 16, 0)" ] || fail "--pure: $(cat "$tmp/chk")"

# tied embeddings: token_embd.weight is the output projection
peer llama "$tmp/tied.gguf" --tied 1 --seed 4
expect 0 "$EF" quantize "$tmp/tied.gguf" "$tmp/tied4.gguf" q4_0 --json
[ "$(jget "$tmp/out" "j['output_as_q8_0']")" = 1 ] || fail "tied: $(cat "$tmp/out")"
expect 0 "$EF" gguf-info "$tmp/tied4.gguf" --json
[ "$(jget "$tmp/out" "[t['type'] for t in j['tensors'] if t['name']=='token_embd.weight']")" = "['q8_0']" ] \
    || fail "tied: token_embd.weight should be q8_0"
peer check-quant "$tmp/tied.gguf" "$tmp/tied4.gguf" >"$tmp/chk"
[ "$(jget "$tmp/chk" "j['mismatch']")" = "[]" ] || fail "tied: $(cat "$tmp/chk")"

# F16 source
peer llama "$tmp/f16.gguf" --type f16 --seed 5
expect 0 "$EF" quantize "$tmp/f16.gguf" "$tmp/f16q4.gguf" q4_0 --quiet
peer check-quant "$tmp/f16.gguf" "$tmp/f16q4.gguf" >"$tmp/chk"
[ "$(jget "$tmp/chk" "(j['mismatch'], j['q4_0'], j['q8_0'])")" = "([], 15, 1)" ] || fail "f16 source: $(cat "$tmp/chk")"

# a matrix whose rows are not a multiple of 32 stays as it is
peer llama "$tmp/odd.gguf" --bad oddrow
expect 0 "$EF" quantize "$tmp/odd.gguf" "$tmp/oddq.gguf" q8_0
out_has "kept blk.0.odd.weight (f32): row length not a multiple of 32"
peer check-quant "$tmp/odd.gguf" "$tmp/oddq.gguf" >"$tmp/chk"
[ "$(jget "$tmp/chk" "(j['mismatch'], j['copied'])")" = "([], 6)" ] || fail "odd rows: $(cat "$tmp/chk")"

# ---- bad input: exit 1, a clear message, nothing written ----------------------------
expect 1 "$EF" quantize "$tmp/none.gguf" "$tmp/x.gguf" q8_0
err_has "$tmp/none.gguf: cannot open"
[ ! -e "$tmp/x.gguf" ] || fail "output written for a missing input"
expect 1 "$EF" gguf-info "$tmp/none.gguf"
err_has "cannot open"
head -c 5000 "$tmp/m.gguf" >"$tmp/trunc.gguf"
expect 1 "$EF" quantize "$tmp/trunc.gguf" "$tmp/x.gguf" q8_0
err_has "run past the end of the 5000-byte file"
[ ! -e "$tmp/x.gguf" ] || fail "output written for a truncated input"
expect 1 "$EF" gguf-info "$tmp/trunc.gguf"
err_has "trunc.gguf"
head -c 400000 "$tmp/m.gguf" >"$tmp/short-data.gguf"
expect 1 "$EF" quantize "$tmp/short-data.gguf" "$tmp/x.gguf" q4_0
err_has "data section"
printf 'not a model at all, just some text padding it out....' >"$tmp/text.gguf"
expect 1 "$EF" quantize "$tmp/text.gguf" "$tmp/x.gguf" q8_0
err_has "not a GGUF file"
[ ! -e "$tmp/x.gguf" ] || fail "output written for a text file"
# NaN weights: refused while writing; an existing output file is left as it was
peer llama "$tmp/nan.gguf" --bad nan
echo "previous content" >"$tmp/keep.gguf"
expect 1 "$EF" quantize "$tmp/nan.gguf" "$tmp/keep.gguf" q8_0
err_has "tensor 'blk.0.attn_q.weight': value at row 0, column 5 is NaN"
err_has "nothing written"
[ "$(cat "$tmp/keep.gguf")" = "previous content" ] || fail "existing output changed by a failed run"
ls "$tmp" | grep -q 'tmp\.' && fail "temporary file left behind: $(ls "$tmp")"
# requantizing from another quantized type is refused
expect 1 "$EF" quantize "$tmp/q8.gguf" "$tmp/x.gguf" q4_0
err_has "requantizing"
[ ! -e "$tmp/x.gguf" ] || fail "output written for a requantization"
expect 1 "$EF" quantize "$tmp/m.gguf" "$tmp/no-such-dir/x.gguf" q8_0
err_has "no-such-dir"

finish test_gguf_cli
