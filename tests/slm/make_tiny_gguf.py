#!/usr/bin/python3
"""Writes a small random llama-architecture GGUF (F32 tensors) straight from the
GGUF specification (ggml's docs/gguf.md), standard library only: a file made
without any edgefl code, for checking edgefl's reader and inference and the
numpy reference (ref_forward.py) against llama.cpp.

  make_tiny_gguf.py OUT.gguf [--dim 64] [--layers 2] [--heads 4] [--kv-heads 2]
                    [--ffn 128] [--ctx 128] [--seed 1] [--tied]

Tokenizer: GPT-2 byte-level BPE ("gpt2"): the 256 byte tokens in GPT-2's
byte-to-unicode spelling, three merges and <|endoftext|> (BOS and EOS).
"""
import argparse, random, struct

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}

def s(x):
    b = x.encode("utf-8"); return struct.pack("<Q", len(b)) + b

T_U32, T_I32, T_F32, T_STR, T_ARR = 4, 5, 6, 8, 9
def kv(key, typ, val):
    out = s(key) + struct.pack("<I", typ)
    if typ == T_U32: out += struct.pack("<I", val)
    elif typ == T_I32: out += struct.pack("<i", val)
    elif typ == T_F32: out += struct.pack("<f", val)
    elif typ == T_STR: out += s(val)
    elif typ == T_ARR:
        et, items = val
        out += struct.pack("<IQ", et, len(items))
        for it in items:
            out += s(it) if et == T_STR else struct.pack("<i", it)
    return out

def main(path, dim, layers, heads, kv_heads, ffn, ctx, seed, tied):
    rnd = random.Random(seed)
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt h"]  # Ġ is the space byte in GPT-2's spelling
    tokens += ["Ġt", "he", "Ġth", "<|endoftext|>"]
    types = [1] * (len(tokens) - 1) + [3]
    V = len(tokens)
    hd = dim // heads
    meta = [
        kv("general.architecture", T_STR, "llama"), kv("general.name", T_STR, "tiny"),
        kv("llama.context_length", T_U32, ctx), kv("llama.embedding_length", T_U32, dim),
        kv("llama.block_count", T_U32, layers), kv("llama.feed_forward_length", T_U32, ffn),
        kv("llama.attention.head_count", T_U32, heads), kv("llama.attention.head_count_kv", T_U32, kv_heads),
        kv("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5), kv("llama.rope.freq_base", T_F32, 10000.0),
        kv("llama.rope.dimension_count", T_U32, hd), kv("llama.vocab_size", T_U32, V),
        kv("general.file_type", T_U32, 0),
        kv("tokenizer.ggml.model", T_STR, "gpt2"), kv("tokenizer.ggml.pre", T_STR, "default"),
        kv("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens)),
        kv("tokenizer.ggml.token_type", T_ARR, (T_I32, types)),
        kv("tokenizer.ggml.merges", T_ARR, (T_STR, merges)),
        kv("tokenizer.ggml.bos_token_id", T_U32, V - 1), kv("tokenizer.ggml.eos_token_id", T_U32, V - 1),
    ]
    tensors = []  # (name, dims innermost first, floats)
    def mat(name, out_, in_, scale=0.2):
        tensors.append((name, [in_, out_], [rnd.gauss(0, scale) for _ in range(out_ * in_)]))
    def vec(name, n):
        tensors.append((name, [n], [1.0 + rnd.gauss(0, 0.1) for _ in range(n)]))
    mat("token_embd.weight", V, dim, 1.0)
    for l in range(layers):
        vec(f"blk.{l}.attn_norm.weight", dim)
        mat(f"blk.{l}.attn_q.weight", dim, dim); mat(f"blk.{l}.attn_k.weight", kv_heads * hd, dim)
        mat(f"blk.{l}.attn_v.weight", kv_heads * hd, dim); mat(f"blk.{l}.attn_output.weight", dim, dim)
        vec(f"blk.{l}.ffn_norm.weight", dim)
        mat(f"blk.{l}.ffn_gate.weight", ffn, dim); mat(f"blk.{l}.ffn_up.weight", ffn, dim)
        mat(f"blk.{l}.ffn_down.weight", dim, ffn)
    vec("output_norm.weight", dim)
    if not tied:  # tied: llama.cpp takes the output projection from token_embd.weight
        mat("output.weight", V, dim)
    A = 32
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta)
    infos, off = b"", 0
    for name, dims, data in tensors:
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 0, off)
        off += 4 * len(data); off = (off + A - 1) // A * A
    out = head + infos
    out += b"\0" * ((-len(out)) % A)
    for name, dims, data in tensors:
        blob = struct.pack(f"<{len(data)}f", *data)
        out += blob + b"\0" * ((-len(blob)) % A)
    open(path, "wb").write(out)

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("out")
ap.add_argument("--dim", type=int, default=64)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--kv-heads", type=int, default=2)
ap.add_argument("--ffn", type=int, default=128)
ap.add_argument("--ctx", type=int, default=128)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--tied", action="store_true")
a = ap.parse_args()
main(a.out, a.dim, a.layers, a.heads, a.kv_heads, a.ffn, a.ctx, a.seed, a.tied)
