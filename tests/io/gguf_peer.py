#!/usr/bin/env python3
"""An independent GGUF implementation for edgefl's tests (Python standard
library only: Debian has no gguf package). Written from the format
description (ggml's docs/gguf.md), not from edgefl's code, so that a bug in
edgefl's reader or writer cannot hide behind the same bug here.

  gguf_peer.py dump FILE              print the file as JSON (metadata, tensor
                                      infos, sha256 of each tensor's bytes)
  gguf_peer.py write SPEC.json OUT    write a GGUF from a JSON spec
  gguf_peer.py llama OUT [options]    write a small random llama-style F32/F16
                                      model (see --help)
  gguf_peer.py check-quant IN OUT     re-quantize IN's float tensors with an
                                      independent Q8_0 / Q4_0 and compare with
                                      OUT's bytes; print a JSON summary

Quantization here emulates IEEE single precision with struct round trips:
each +, *, / of two floats is computed exactly in double and rounded once
to float, which is what float arithmetic does.
"""
import hashlib
import json
import math
import random
import struct
import sys

VT = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7,
      "string": 8, "array": 9, "u64": 10, "i64": 11, "f64": 12}
VT_NAME = {v: k for k, v in VT.items()}
VT_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
          10: "<Q", 11: "<q", 12: "<d"}
# ggml type: (name, block size, bytes per block)
GT = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
      6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 36),
      10: ("q2_K", 256, 84), 11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144),
      13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210), 15: ("q8_K", 256, 292),
      24: ("i8", 1, 1), 25: ("i16", 1, 2), 26: ("i32", 1, 4), 27: ("i64", 1, 8),
      28: ("f64", 1, 8), 30: ("bf16", 1, 2)}
GT_BY_NAME = {v[0]: k for k, v in GT.items()}


def f32(x):
    """Rounds a double to the nearest float (ties to even)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f16_bits(x):
    try:
        return struct.unpack("<H", struct.pack("<e", x))[0]
    except OverflowError:
        return 0xFC00 if x < 0 else 0x7C00


def f16_value(bits):
    return struct.unpack("<e", struct.pack("<H", bits))[0]


# ---- reading ---------------------------------------------------------------

class Reader:
    def __init__(self, data):
        self.d = data
        self.p = 0

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("truncated at byte %d" % self.p)
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self):
        return self.take(self.u64())

    def value(self, t):
        if t == 8:
            return self.string()
        fmt = VT_FMT[t]
        v = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return bool(v) if t == 7 else v


def jsonable(v, t):
    if t == 8:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": v.hex()}
    if t in (6, 12):
        if math.isnan(v) or math.isinf(v):
            return repr(v)
        return v
    return v


def parse(path):
    data = open(path, "rb").read()
    r = Reader(data)
    if r.take(4) != b"GGUF":
        raise ValueError("bad magic")
    version = r.u32()
    n_t = r.u64()
    n_kv = r.u64()
    kvs = []
    for _ in range(n_kv):
        key = r.string().decode("utf-8")
        t = r.u32()
        if t == 9:
            et = r.u32()
            n = r.u64()
            vals = [r.value(et) for _ in range(n)]
            kvs.append({"key": key, "type": "array", "elem": VT_NAME[et], "raw": vals,
                        "value": [jsonable(v, et) for v in vals]})
        else:
            v = r.value(t)
            kvs.append({"key": key, "type": VT_NAME[t], "raw": v, "value": jsonable(v, t)})
    align = 32
    for kv in kvs:
        if kv["key"] == "general.alignment":
            align = kv["raw"]
    tensors = []
    for _ in range(n_t):
        name = r.string().decode("utf-8")
        nd = r.u32()
        ne = [r.u64() for _ in range(nd)]
        t = r.u32()
        off = r.u64()
        tensors.append({"name": name, "ne": ne, "type": GT[t][0], "type_id": t, "offset": off})
    data_off = (r.p + align - 1) // align * align
    for ti in tensors:
        name, blk, size = GT[ti["type_id"]]
        n = 1
        for x in ti["ne"]:
            n *= x
        nbytes = n // blk * size
        start = data_off + ti["offset"]
        if start + nbytes > len(data):
            raise ValueError("tensor %s past the end" % ti["name"])
        ti["nbytes"] = nbytes
        ti["bytes"] = data[start:start + nbytes]
        ti["sha256"] = hashlib.sha256(ti["bytes"]).hexdigest()
    return {"version": version, "alignment": align, "data_offset": data_off,
            "file_size": len(data), "kv": kvs, "tensors": tensors}


def cmd_dump(path):
    g = parse(path)
    for kv in g["kv"]:
        del kv["raw"]
    for t in g["tensors"]:
        del t["bytes"]
    print(json.dumps(g, sort_keys=True))


# ---- writing ---------------------------------------------------------------

def enc_string(s):
    b = s if isinstance(s, bytes) else s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def enc_value(t, v):
    if t == 8:
        if isinstance(v, dict):
            return enc_string(bytes.fromhex(v["hex"]))
        return enc_string(v)
    if t == 7:
        return struct.pack("<B", 1 if v else 0)
    return struct.pack(VT_FMT[t], v)


def write_gguf(path, kvs, tensors, version=3):
    """kvs: [(key, type name or 'array:<elem>', value)]; tensors: [(name, type id, ne, bytes)]."""
    align = 32
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for key, tn, v in kvs:
        out += enc_string(key)
        if tn.startswith("array:"):
            et = VT[tn[6:]]
            out += struct.pack("<IIQ", 9, et, len(v))
            for x in v:
                out += enc_value(et, x)
        else:
            out += struct.pack("<I", VT[tn]) + enc_value(VT[tn], v)
            if key == "general.alignment":
                align = v
    off = 0
    offsets = []
    for name, t, ne, data in tensors:
        out += enc_string(name) + struct.pack("<I", len(ne))
        for x in ne:
            out += struct.pack("<Q", x)
        out += struct.pack("<IQ", t, off)
        offsets.append(off)
        off += (len(data) + align - 1) // align * align
    out += b"\0" * (-len(out) % align)
    for (name, t, ne, data), o in zip(tensors, offsets):
        out += data + b"\0" * (-len(data) % align)
    with open(path, "wb") as f:
        f.write(out)


def tensor_bytes(t, values):
    if t == 0:
        return struct.pack("<%df" % len(values), *values)
    if t == 1:
        return b"".join(struct.pack("<H", f16_bits(v)) for v in values)
    raise ValueError("values only for f32/f16")


def cmd_write(spec_path, out):
    spec = json.load(open(spec_path))
    kvs = [tuple(kv) for kv in spec.get("kv", [])]
    tensors = []
    for t in spec.get("tensors", []):
        tid = GT_BY_NAME[t["type"]]
        data = bytes.fromhex(t["hex"]) if "hex" in t else tensor_bytes(tid, t["values"])
        tensors.append((t["name"], tid, t["ne"], data))
    write_gguf(out, kvs, tensors, spec.get("version", 3))


def cmd_llama(out, args):
    opts = {"dim": 64, "layers": 2, "heads": 4, "kv-heads": 2, "ffn": 96, "vocab": 300,
            "ctx": 128, "seed": 1, "type": "f32", "tied": 0, "bad": ""}
    i = 0
    while i < len(args):
        k = args[i].lstrip("-")
        if k not in opts:
            raise SystemExit("unknown option " + args[i])
        opts[k] = args[i + 1] if k in ("type", "bad") else int(args[i + 1])
        i += 2
    rng = random.Random(opts["seed"])
    dim, ffn, vocab, L = opts["dim"], opts["ffn"], opts["vocab"], opts["layers"]
    head_dim = dim // opts["heads"]
    kv_dim = head_dim * opts["kv-heads"]
    tid = GT_BY_NAME[opts["type"]]

    def mat(rows, cols, scale):
        return [f32(rng.gauss(0.0, scale)) for _ in range(rows * cols)]

    tensors = []

    def add(name, ne, values, t=None):
        t = tid if t is None else t
        tensors.append((name, t, ne, tensor_bytes(t, values)))

    add("token_embd.weight", [dim, vocab], mat(vocab, dim, 0.5))
    for b in range(L):
        p = "blk.%d." % b
        add(p + "attn_norm.weight", [dim], [f32(1.0 + rng.uniform(-0.1, 0.1)) for _ in range(dim)], 0)
        add(p + "attn_q.weight", [dim, dim], mat(dim, dim, 0.1))
        add(p + "attn_k.weight", [dim, kv_dim], mat(kv_dim, dim, 0.1))
        add(p + "attn_v.weight", [dim, kv_dim], mat(kv_dim, dim, 0.1))
        add(p + "attn_output.weight", [dim, dim], mat(dim, dim, 0.1))
        add(p + "ffn_norm.weight", [dim], [f32(1.0 + rng.uniform(-0.1, 0.1)) for _ in range(dim)], 0)
        add(p + "ffn_gate.weight", [dim, ffn], mat(ffn, dim, 0.1))
        add(p + "ffn_up.weight", [dim, ffn], mat(ffn, dim, 0.1))
        add(p + "ffn_down.weight", [ffn, dim], mat(dim, ffn, 0.1))
    add("output_norm.weight", [dim], [1.0] * dim, 0)
    if not opts["tied"]:
        add("output.weight", [dim, vocab], mat(vocab, dim, 0.2))
    if opts["bad"] in ("nan", "huge"):  # a NaN, or a finite value beyond f16's range
        name, t, ne, data = tensors[2]
        vals = list(struct.unpack("<%df" % (len(data) // 4), data))
        vals[5] = float("nan") if opts["bad"] == "nan" else 1e5
        tensors[2] = (name, t, ne, struct.pack("<%df" % len(vals), *vals))
    elif opts["bad"] == "oddrow":
        add("blk.0.odd.weight", [50, 4], mat(4, 50, 0.1), 0)

    toks = ["<%d>" % i for i in range(vocab - 1)] + ["<|endoftext|>"]
    kvs = [
        ("general.architecture", "string", "llama"),
        ("general.name", "string", "peer-test"),
        ("general.file_type", "u32", 0 if opts["type"] == "f32" else 1),
        ("llama.context_length", "u32", opts["ctx"]),
        ("llama.embedding_length", "u32", dim),
        ("llama.block_count", "u32", L),
        ("llama.feed_forward_length", "u32", ffn),
        ("llama.attention.head_count", "u32", opts["heads"]),
        ("llama.attention.head_count_kv", "u32", opts["kv-heads"]),
        ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5),
        ("llama.rope.freq_base", "f32", 10000.0),
        ("llama.rope.dimension_count", "u32", head_dim),
        ("llama.vocab_size", "u32", vocab),
        ("tokenizer.ggml.model", "string", "gpt2"),
        ("tokenizer.ggml.tokens", "array:string", toks),
        ("tokenizer.ggml.token_type", "array:i32", [1] * (vocab - 1) + [3]),
        ("tokenizer.ggml.merges", "array:string", ["< 1", "<1 >"]),
        ("tokenizer.ggml.bos_token_id", "u32", vocab - 1),
        ("tokenizer.ggml.eos_token_id", "u32", vocab - 1),
    ]
    write_gguf(out, kvs, tensors)


# ---- independent quantization ------------------------------------------------

def q8_0_block(x):
    amax = 0.0
    for v in x:
        amax = max(amax, abs(v))
    d = f32(amax / 127.0)
    idv = f32(1.0 / d) if d != 0.0 else 0.0
    out = struct.pack("<H", f16_bits(d))
    for v in x:
        p = f32(v * idv)
        q = math.floor(abs(p) + 0.5)  # roundf: halves away from zero
        out += struct.pack("<b", int(q if p >= 0 else -q))
    return out


def q4_0_block(x):
    amax, mx = 0.0, 0.0
    for v in x:
        if amax < abs(v):
            amax, mx = abs(v), v
    d = f32(mx / -8.0)
    idv = f32(1.0 / d) if d != 0.0 else 0.0
    codes = []
    for v in x:
        s = f32(f32(v * idv) + 8.5)
        codes.append(min(15, int(s)))  # int() truncates toward zero
    out = struct.pack("<H", f16_bits(d))
    for j in range(16):
        out += struct.pack("<B", codes[j] | codes[16 + j] << 4)
    return out


def to_floats(t):
    b = t["bytes"]
    if t["type_id"] == 0:
        return list(struct.unpack("<%df" % (len(b) // 4), b))
    if t["type_id"] == 1:
        return [f16_value(h) for h in struct.unpack("<%dH" % (len(b) // 2), b)]
    if t["type_id"] == 30:
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0]
                for h in struct.unpack("<%dH" % (len(b) // 2), b)]
    return None


def cmd_check_quant(src, dst):
    a, b = parse(src), parse(dst)
    ta = {t["name"]: t for t in a["tensors"]}
    summary = {"tensors": len(b["tensors"]), "q8_0": 0, "q4_0": 0, "f16": 0, "copied": 0,
               "mismatch": []}
    if [t["name"] for t in a["tensors"]] != [t["name"] for t in b["tensors"]]:
        summary["mismatch"].append("tensor order or names differ")
    for t in b["tensors"]:
        s = ta.get(t["name"])
        if s is None:
            continue
        if s["ne"] != t["ne"]:
            summary["mismatch"].append(t["name"] + ": shape")
            continue
        if t["type_id"] == s["type_id"]:
            summary["copied"] += 1
            if t["bytes"] != s["bytes"]:
                summary["mismatch"].append(t["name"] + ": copied bytes differ")
            continue
        x = to_floats(s)
        fn = {8: q8_0_block, 2: q4_0_block}.get(t["type_id"])
        if x is None or (fn is None and t["type_id"] != 1):
            summary["mismatch"].append(t["name"] + ": unexpected type " + t["type"])
            continue
        if t["type_id"] == 1:  # f16: IEEE half, rounded to nearest even
            want = b"".join(struct.pack("<H", f16_bits(v)) for v in x)
        else:
            want = b"".join(fn(x[i:i + 32]) for i in range(0, len(x), 32))
        summary[t["type"]] += 1
        if want != t["bytes"]:
            summary["mismatch"].append(t["name"] + ": quantized bytes differ")
    print(json.dumps(summary, sort_keys=True))


def main(argv):
    if len(argv) >= 3 and argv[1] == "dump":
        cmd_dump(argv[2])
    elif len(argv) >= 4 and argv[1] == "write":
        cmd_write(argv[2], argv[3])
    elif len(argv) >= 3 and argv[1] == "llama":
        cmd_llama(argv[2], argv[3:])
    elif len(argv) >= 4 and argv[1] == "check-quant":
        cmd_check_quant(argv[2], argv[3])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
