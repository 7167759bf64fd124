#!/usr/bin/python3
"""An independent llama forward pass in numpy (float64) over an F32 GGUF:
greedy-decodes N tokens after a prompt of token ids and prints them as a
JSON list.

  ref_forward.py MODEL.gguf IDS N        (IDS: comma-separated token ids)

Conventions (those of llama.cpp for architecture "llama"): RMSNorm with
llama.attention.layer_norm_rms_epsilon; RoPE on ADJACENT pairs
(x[2i], x[2i+1]) of each head by pos * freq_base^(-2i/head_dim); grouped-query
attention (query head h reads key/value head h / (heads / kv_heads)); SwiGLU
MLP; output.weight, or token_embd.weight when absent (tied). A 2-D tensor
with GGUF dims [in, out] is the row-major matrix W[out][in], y = W x.
"""
import json
import struct, sys, numpy as np

def read_gguf(path):
    b = open(path, "rb").read(); o = 0
    def u(fmt):
        nonlocal o; v = struct.unpack_from(fmt, b, o); o += struct.calcsize(fmt); return v[0]
    def st():
        n = u("<Q"); nonlocal o; v = b[o:o+n].decode(); o += n; return v
    assert b[:4] == b"GGUF"; o = 4
    ver, nt, nkv = u("<I"), u("<Q"), u("<Q")
    meta = {}
    def val(t):
        if t == 4: return u("<I")
        if t == 5: return u("<i")
        if t == 6: return u("<f")
        if t == 8: return st()
        if t == 9:
            et, n = u("<I"), u("<Q"); return [val(et) for _ in range(n)]
        raise ValueError(t)
    for _ in range(nkv):
        k = st(); t = u("<I"); meta[k] = val(t)
    infos = []
    for _ in range(nt):
        name = st(); nd = u("<I"); dims = [u("<Q") for _ in range(nd)]; t = u("<I"); off = u("<Q")
        infos.append((name, dims, t, off))
    o = (o + 31) // 32 * 32
    W = {}
    for name, dims, t, off in infos:
        n = int(np.prod(dims)); a = np.frombuffer(b, np.float32, n, o + off)
        W[name] = a.reshape(list(reversed(dims))).astype(np.float64)
    return meta, W

def rope(x, pos, theta):  # x: (heads, hd); adjacent pairs
    hd = x.shape[1]; i = np.arange(hd // 2)
    ang = pos * theta ** (-2.0 * i / hd)
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[:, 0::2], x[:, 1::2]
    y = np.empty_like(x); y[:, 0::2] = x0 * c - x1 * s; y[:, 1::2] = x0 * s + x1 * c
    return y

def main(path, ids, n):
    meta, W = read_gguf(path)
    L = meta["llama.block_count"]; H = meta["llama.attention.head_count"]; KV = meta["llama.attention.head_count_kv"]
    eps = meta["llama.attention.layer_norm_rms_epsilon"]; theta = meta["llama.rope.freq_base"]
    dim = meta["llama.embedding_length"]; hd = dim // H
    def norm(x, w): return x / np.sqrt(np.mean(x * x) + eps) * w
    K = [[] for _ in range(L)]; Vc = [[] for _ in range(L)]
    toks = list(ids); out = []
    def step(tok, pos):
        x = W["token_embd.weight"][tok].copy()
        for l in range(L):
            p = f"blk.{l}."
            h = norm(x, W[p + "attn_norm.weight"])
            q = (W[p + "attn_q.weight"] @ h).reshape(H, hd); k = (W[p + "attn_k.weight"] @ h).reshape(KV, hd)
            v = (W[p + "attn_v.weight"] @ h).reshape(KV, hd)
            q = rope(q, pos, theta); k = rope(k, pos, theta)
            K[l].append(k); Vc[l].append(v)
            Ks = np.stack(K[l]); Vs = np.stack(Vc[l])  # (t, KV, hd)
            att = np.empty((H, hd))
            for hh in range(H):
                g = hh // (H // KV)
                sc = Ks[:, g, :] @ q[hh] / np.sqrt(hd); sc = np.exp(sc - sc.max()); sc /= sc.sum()
                att[hh] = sc @ Vs[:, g, :]
            x = x + W[p + "attn_output.weight"] @ att.reshape(-1)
            h = norm(x, W[p + "ffn_norm.weight"])
            g = W[p + "ffn_gate.weight"] @ h; u_ = W[p + "ffn_up.weight"] @ h
            x = x + W[p + "ffn_down.weight"] @ (g / (1 + np.exp(-g)) * u_)
        x = norm(x, W["output_norm.weight"])
        return W.get("output.weight", W["token_embd.weight"]) @ x
    pos = 0
    for t in toks[:-1]: step(t, pos); pos += 1
    cur = toks[-1]
    for _ in range(n):
        logits = step(cur, pos); pos += 1
        cur = int(np.argmax(logits)); out.append(cur)
    print(json.dumps(out))

main(sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3]))
