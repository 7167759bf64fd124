#!/usr/bin/python3
"""Independent safetensors peer for tests/io/test_safetensors.c.

Debian 12 has no `safetensors` Python package, so this script implements the
file format from its specification (https://github.com/huggingface/safetensors:
8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data
section) with only json/struct/numpy/torch, and uses it both ways:

  check FILE EXPECTED.json   read a file written by edgefl with numpy
                             (np.frombuffer) and torch (torch.frombuffer) and
                             compare names, order, shapes, bit patterns and
                             metadata with what the C test says it wrote
  write FILE EXPECTED.json   write a file from torch tensors (F32, F16, BF16,
                             F64, I64, BOOL, a 0-d and an empty tensor, with
                             metadata) and describe the float32 values the C
                             reader must produce, as bit patterns

Exit status 0 on success, 1 with messages on stderr on any mismatch.
"""
import json
import struct
import sys

import numpy as np
import torch

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
              "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
TORCH_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
               torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}

errors = []


def fail(msg):
    errors.append(msg)
    print("safetensors_peer: " + msg, file=sys.stderr)


def parse(path):
    """Reads and validates a safetensors file; returns (header dict, data bytes)."""
    blob = open(path, "rb").read()
    if len(blob) < 8:
        raise ValueError("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError("header length past end of file")
    raw = blob[8:8 + n]
    # json.loads would silently keep the last of duplicate keys.
    def no_dups(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate keys in header")
        return dict(pairs)
    header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_dups)
    data = blob[8 + n:]
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        numel = int(np.prod(info["shape"], dtype=np.int64)) if info["shape"] else 1
        b, e = info["data_offsets"]
        if e - b != numel * DTYPE_SIZE[info["dtype"]]:
            raise ValueError(f"{name}: offsets do not match dtype and shape")
        spans.append((b, e, name))
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise ValueError(f"{name}: overlap or hole at byte {pos}")
        pos = e
    if pos != len(data):
        raise ValueError("tensors do not cover the data section")
    return header, data, 8 + n


def check(path, expected_path):
    expected = json.load(open(expected_path))
    header, data, data_start = parse(path)
    if data_start % 8 != 0:
        fail(f"data section starts at byte {data_start}, not 8-byte aligned")
    if header.get("__metadata__", {}) != expected["metadata"]:
        fail(f"metadata {header.get('__metadata__')} != {expected['metadata']}")
    names = [k for k in header if k != "__metadata__"]
    want_names = [t["name"] for t in expected["tensors"]]
    if names != want_names:
        fail(f"tensor names/order {names} != {want_names}")
    blob = bytearray(open(path, "rb").read())  # torch.frombuffer wants a writable buffer
    for t in expected["tensors"]:
        name = t["name"]
        info = header.get(name)
        if info is None:
            fail(f"{name}: missing")
            continue
        if info["dtype"] != "F32" or info["shape"] != t["shape"]:
            fail(f"{name}: dtype {info['dtype']} shape {info['shape']}, want F32 {t['shape']}")
            continue
        want_bits = np.array(t["bits"], dtype=np.uint32)
        b, e = info["data_offsets"]
        count = (e - b) // 4
        shape = tuple(t["shape"])
        arr = np.frombuffer(data, dtype="<f4", count=count, offset=b).reshape(shape)
        if arr.shape != shape or not np.array_equal(arr.reshape(-1).view(np.uint32), want_bits):
            fail(f"{name}: numpy values differ")
        ten = torch.frombuffer(blob, dtype=torch.float32, count=count,
                               offset=data_start + b).reshape(shape)
        if tuple(ten.shape) != shape:
            fail(f"{name}: torch shape {tuple(ten.shape)} != {shape}")
        got = ten.reshape(-1).view(torch.int32).numpy().view(np.uint32)
        if not np.array_equal(got, want_bits):
            fail(f"{name}: torch values differ")
        # Ordinary float use, not just bits: the values behave as numbers.
        if not torch.equal(torch.nan_to_num(ten.double()),
                           torch.nan_to_num(torch.from_numpy(arr.astype(np.float64)))):
            fail(f"{name}: torch and numpy disagree")
    if not errors:
        print(f"safetensors_peer: checked {len(want_names)} tensors with numpy and torch "
              f"{torch.__version__}")


def tensor_bytes(t):
    # view(uint8) needs at least one dimension; reshape(-1) gives it.
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write(path, expected_path):
    if sys.byteorder != "little":
        raise SystemExit("this peer assumes a little-endian host")
    g = torch.Generator().manual_seed(1234)
    f16 = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6.103515625e-05, 5.960464477539063e-08,
                        -3.0e-06, 1.0e-05, float("inf"), float("-inf"), float("nan")],
                       dtype=torch.float16)
    bf16 = torch.cat([torch.randn(5, generator=g),
                      torch.tensor([1.0e38, -3.0e38, 1.0e-39, float("inf")])]).to(torch.bfloat16)
    f64 = torch.tensor([[1.0 / 3.0, -1.0e300, 1.0e-50, 2.5],
                        [3.4028235677973366e38, 1.0e-45, -7.0e-46, 123456789.123]],
                       dtype=torch.float64)
    tensors = {  # data section order
        "w_f32": torch.randn(3, 4, generator=g),
        "h_f16": f16.reshape(3, 4),
        "b_bf16": bf16.reshape(3, 3),
        "d_f64": f64,
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "ids_i64": torch.arange(5, dtype=torch.int64) - 2,
        "mask_bool": torch.tensor([True, False, True]),
    }
    metadata = {"format": "pt", "producer": "safetensors_peer.py",
                "note": "unicode \u2713 \"quoted\" \\ back"}
    entries, chunks, pos = {}, [], 0
    for name, t in tensors.items():
        raw = tensor_bytes(t)
        entries[name] = {"dtype": TORCH_DTYPE[t.dtype], "shape": list(t.shape),
                         "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    # Header entries in name order, unlike the data: readers must not assume
    # the two orders agree.
    header = {"__metadata__": metadata}
    header.update({k: entries[k] for k in sorted(entries)})
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)

    desc = {"metadata": metadata, "data_order": list(tensors), "tensors": []}
    for name, t in tensors.items():
        d = {"name": name, "dtype": TORCH_DTYPE[t.dtype], "shape": list(t.shape)}
        if t.is_floating_point():
            d["f32_bits"] = t.float().reshape(-1).view(torch.int32).numpy() \
                .view(np.uint32).tolist()
        else:
            d["raw"] = tensor_bytes(t).hex()
        desc["tensors"].append(d)
    json.dump(desc, open(expected_path, "w"))
    # Reading our own file back validates the writer against the parser above.
    parse(path)
    print(f"safetensors_peer: wrote {len(tensors)} tensors")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("check", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        (check if sys.argv[1] == "check" else write)(sys.argv[2], sys.argv[3])
    except (ValueError, KeyError, OSError) as e:
        fail(f"{sys.argv[2]}: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
