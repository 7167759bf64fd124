#!/usr/bin/python3
"""PyTorch reference for tests/nn/test_lm_torch.c: edgefl's llama-style LM.

Usage: lm_torch_ref.py MODEL.safetensors BATCH.safetensors OUT.safetensors

MODEL is written by ef_lm_save: the parameters under their GGUF-style names
(token_embd.weight, blk.N.attn_q.weight, ...) and the config in the
metadata (edgefl.lm.vocab, dim, n_layers, n_heads, n_kv_heads, ffn_dim,
max_seq, norm_eps, rope_theta, tied). BATCH holds "ids" and "targets"
(B, T) as F32 (small integers, exact) and optionally "dlosses" (B*T), the
weights of the per-token losses (default: the mean).

This script builds the same architecture independently in torch -- token
embedding; per layer x += Wo attn(rope(Wq h), rope(Wk h), Wv h) with
h = rmsnorm(x), grouped-query heads (query head j uses kv head j // group),
causal softmax(q k^T / sqrt(head_dim)); x += Wdown(silu(Wgate h) * Wup h)
with h = rmsnorm(x); final rmsnorm; logits = Wout h (Wout = the embedding
when tied); cross-entropy -- with RoPE in llama.cpp's adjacent-pair layout
(pairs (2i, 2i+1) of each head turned by t * theta^(-2i/head_dim)), loads
the weights, and computes the loss and every gradient in float64 and, as
a yardstick, in float32. It writes OUT (safetensors, written by hand like
tests/nn/make_cnn_ref.py: Debian 12 has no safetensors package) with
  ref64.loss, ref32.loss             (1)
  ref64.losses                       (B*T) per-token losses, float64
  ref64.grad.<param>, ref32.grad.<param>
Exit status 0 on success, 1 with a message on stderr otherwise.
"""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from st_numpy import read_safetensors, write_safetensors  # this directory


def config_of(meta):
    need = ["vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq",
            "norm_eps", "rope_theta", "tied"]
    c = {}
    for k in need:
        v = meta.get("edgefl.lm." + k)
        if v is None:
            raise SystemExit(f"lm_torch_ref: metadata edgefl.lm.{k} missing")
        c[k] = float(v) if k in ("norm_eps", "rope_theta") else int(v)
    return c


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """x (B, H, T, HS): adjacent pairs of each head rotated by t * theta^(-2i/HS)."""
    B, H, T, HS = x.shape
    i = torch.arange(HS // 2, dtype=torch.float64)
    freq = theta ** (-2.0 * i / HS)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]  # (T, HS/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    xp = x.reshape(B, H, T, HS // 2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).reshape(B, H, T, HS)


def forward(p, c, ids, targets):
    """Per-token losses (B*T) of the model with parameters p {name: tensor}."""
    B, T = ids.shape
    D, NH, NKV = c["dim"], c["n_heads"], c["n_kv_heads"]
    HS, eps, group = D // NH, c["norm_eps"], NH // NKV
    x = p["token_embd.weight"][ids]  # (B, T, D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(c["n_layers"]):
        w = lambda s: p[f"blk.{l}.{s}.weight"]
        h = rmsnorm(x, w("attn_norm"), eps)
        q = (h @ w("attn_q").T).view(B, T, NH, HS).transpose(1, 2)
        k = (h @ w("attn_k").T).view(B, T, NKV, HS).transpose(1, 2)
        v = (h @ w("attn_v").T).view(B, T, NKV, HS).transpose(1, 2)
        q, k = rope(q, c["rope_theta"]), rope(k, c["rope_theta"])
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
        s = s.masked_fill(~mask, float("-inf"))
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = x + o @ w("attn_output").T
        h = rmsnorm(x, w("ffn_norm"), eps)
        x = x + (F.silu(h @ w("ffn_gate").T) * (h @ w("ffn_up").T)) @ w("ffn_down").T
    h = rmsnorm(x, p["output_norm.weight"], eps)
    wout = p["token_embd.weight"] if c["tied"] else p["output.weight"]
    logits = h @ wout.T
    return F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1), reduction="none")


def run(weights, c, ids, targets, dl, dtype):
    p = {k: torch.tensor(np.array(v), dtype=dtype, requires_grad=True)
         for k, v in weights.items()}
    losses = forward(p, c, ids, targets)
    dlt = torch.tensor(dl, dtype=dtype)
    (losses * dlt).sum().backward()
    return losses.detach(), {k: t.grad.numpy().copy() for k, t in p.items()}


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    weights, meta = read_safetensors(sys.argv[1])
    c = config_of(meta)
    batch, _ = read_safetensors(sys.argv[2])
    ids = torch.tensor(batch["ids"].astype(np.int64))
    targets = torch.tensor(batch["targets"].astype(np.int64))
    n = ids.numel()
    dl = batch["dlosses"].astype(np.float64) if "dlosses" in batch else np.full(n, 1.0 / n)
    expect = {"token_embd.weight"} | {"output_norm.weight"} | (
        set() if c["tied"] else {"output.weight"})
    for l in range(c["n_layers"]):
        for s in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                  "ffn_gate", "ffn_up", "ffn_down"):
            expect.add(f"blk.{l}.{s}.weight")
    if set(weights) != expect:
        raise SystemExit(f"lm_torch_ref: tensor names differ: {sorted(set(weights) ^ expect)}")
    out = {}
    l64, g64 = run(weights, c, ids, targets, dl, torch.float64)
    l32, g32 = run(weights, c, ids, targets, dl, torch.float32)
    out["ref64.loss"] = np.array([float((l64 * torch.tensor(dl)).sum())], dtype=np.float64)
    out["ref32.loss"] = np.array([float((l32.double() * torch.tensor(dl)).sum())],
                                 dtype=np.float32)
    out["ref64.losses"] = l64.numpy().astype(np.float64)
    for k in weights:
        out["ref64.grad." + k] = g64[k].astype(np.float64)
        out["ref32.grad." + k] = g32[k].astype(np.float32)
    write_safetensors(sys.argv[3], out, {"torch": torch.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
