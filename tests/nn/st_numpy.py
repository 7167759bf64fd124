"""numpy safetensors reader and writer (F32/F64) shared by the PyTorch
reference scripts of tests/nn (make_cnn_ref.py, lm_torch_ref.py)."""
import json
import struct

import numpy as np

ST_DTYPE = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64"}


def read_safetensors(path):
    """Returns ({name: numpy array}, metadata) of a file with F32/F64 tensors."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    np_dtype = {"F32": "<f4", "F64": "<f8"}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=np_dtype[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out, meta


def write_safetensors(path, tensors, metadata):
    """Writes {name: numpy array (f4 or f8)} in dict order, data 8-byte aligned."""
    header, chunks, pos = {"__metadata__": metadata}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": ST_DTYPE[arr.dtype.newbyteorder("<")],
                        "shape": list(arr.shape), "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
