#!/usr/bin/python3
"""The PyTorch side of bench/lm_train_vs_torch: edgefl's llama-style language
model trained the way `edgefl lm train` trains it, as a minimal, well-written
PyTorch loop.

Model (same as include/edgefl/lm.h): token embedding; per layer
x += Wo attn(rope(q), rope(k), v) with q, k, v from ONE fused linear layer
(no biases) on rmsnorm(x), grouped-query heads, RoPE on adjacent pairs,
causal softmax attention (F.scaled_dot_product_attention with is_causal when
this torch has it, else q k^T + a precomputed causal mask, softmax, @ v);
x += Wdown(silu(gate) * up) with gate and up from one fused linear layer;
final RMSNorm; output tied to the embedding (or untied); mean cross-entropy.
Initialization as edgefl's (normal 0.02, residual projections
0.02/sqrt(2 layers), norm gains 1).

Training as edgefl: windows of seq+1 tokens of the token stream (--ids, the
ids `edgefl tokenizer encode --ids` prints for the training text, with
<|endoftext|> first as edgefl does) in a random order per epoch; AdamW
(betas 0.9/0.95, eps 1e-8, decoupled weight decay on the matrices only);
linear warm-up then cosine to --min-lr; clip_grad_norm_ to --clip; the loss
read every step (edgefl reads it for its progress line).

Timing: train_tokens_per_s is batch*seq*steps divided by the wall time of the
whole step loop (batch gathering, forward, backward, clipping, optimizer),
which is what `edgefl lm train` reports; building the model and loading the
ids are outside it. Prints one JSON object on stdout. Threads:
torch.set_num_threads(T); the caller also sets OMP_NUM_THREADS etc.
"""
import argparse
import json
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq, hs, theta):
    i = torch.arange(hs // 2, dtype=torch.float64)
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * theta ** (-2.0 * i / hs)[None, :]
    return ang.cos().float(), ang.sin().float()  # (T, HS/2)


def rope(x, cos, sin):
    """x (B, H, T, HS): adjacent pairs rotated (llama.cpp's layout)."""
    B, H, T, HS = x.shape
    xp = x.view(B, H, T, HS // 2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    c, s = cos[:T], sin[:T]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).view(B, H, T, HS)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.nh, self.nkv, self.hs = a.heads, a.kv_heads, a.dim // a.heads
        self.kvd = self.nkv * self.hs
        self.attn_norm = RMSNorm(a.dim, 1e-5)
        self.qkv = nn.Linear(a.dim, a.dim + 2 * self.kvd, bias=False)
        self.wo = nn.Linear(a.dim, a.dim, bias=False)
        self.ffn_norm = RMSNorm(a.dim, 1e-5)
        self.gate_up = nn.Linear(a.dim, 2 * a.ffn, bias=False)
        self.down = nn.Linear(a.ffn, a.dim, bias=False)
        self.ffn = a.ffn

    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split([D, self.kvd, self.kvd], dim=-1)
        q = rope(q.view(B, T, self.nh, self.hs).transpose(1, 2), cos, sin)
        k = rope(k.view(B, T, self.nkv, self.hs).transpose(1, 2), cos, sin)
        v = v.view(B, T, self.nkv, self.hs).transpose(1, 2)
        if self.nkv != self.nh:
            g = self.nh // self.nkv
            k = k[:, :, None].expand(B, self.nkv, g, T, self.hs).reshape(B, self.nh, T, self.hs)
            v = v[:, :, None].expand(B, self.nkv, g, T, self.hs).reshape(B, self.nh, T, self.hs)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hs)) + mask[:T, :T]
            o = s.softmax(-1) @ v
        x = x + self.wo(o.transpose(1, 2).reshape(B, T, D))
        gate, up = self.gate_up(self.ffn_norm(x)).split([self.ffn, self.ffn], dim=-1)
        return x + self.down(F.silu(gate) * up)


class LM(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.dim, 1e-5)
        self.out = None if a.tied else nn.Linear(a.dim, a.vocab, bias=False)
        cos, sin = rope_tables(a.seq, a.dim // a.heads, a.rope_theta)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)
        mask = torch.full((a.seq, a.seq), float("-inf")).triu(1)
        self.register_buffer("mask", mask)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                sd = 0.02 / math.sqrt(2 * a.layers) if n.endswith(("wo.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, sd)

    def forward(self, ids, targets):
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x, self.cos, self.sin, self.mask)
        h = self.norm(x)
        logits = F.linear(h, self.embed.weight if self.out is None else self.out.weight)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ids", required=True, help="token ids of the training text")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--ffn", type=int, default=0)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=-1)
    ap.add_argument("--warmup", type=int, default=-1)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    a.kv_heads = a.kv_heads or a.heads
    a.ffn = a.ffn or ((8 * a.dim + 2) // 3 + 31) // 32 * 32
    a.tied = not a.untied
    min_lr = a.min_lr if a.min_lr >= 0 else a.lr / 10
    warmup = a.warmup if a.warmup >= 0 else min(a.steps // 20, 200)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    ids = torch.tensor([int(t) for t in open(a.ids).read().split()], dtype=torch.int64)
    model = LM(a)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    T, B = a.seq, a.batch
    gen = torch.Generator().manual_seed(a.seed)

    def lr_at(s):
        if s < warmup:
            return a.lr * (s + 1) / warmup
        f = min(1.0, (s - warmup) / max(1, a.steps - warmup))
        return min_lr + (a.lr - min_lr) * 0.5 * (1 + math.cos(math.pi * f))

    n_win = (len(ids) - 1) // T
    starts = torch.arange(n_win) * T
    order, cursor = torch.randperm(n_win, generator=gen), 0
    offs = torch.arange(T + 1)
    model.train()
    loss_v = float("nan")
    t0 = time.perf_counter()
    for step in range(a.steps):
        if cursor + B > n_win:
            order, cursor = torch.randperm(n_win, generator=gen), 0
        w = ids[starts[order[cursor:cursor + B]][:, None] + offs]  # (B, T+1)
        cursor += B
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss = model(w[:, :-1].contiguous(), w[:, 1:].contiguous())
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        loss_v = loss.item()
    train_s = time.perf_counter() - t0
    print(json.dumps({
        "side": "torch",
        "torch_version": torch.__version__,
        "sdpa": hasattr(F, "scaled_dot_product_attention"),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "steps": a.steps,
        "train_tokens_per_s": a.steps * B * T / train_s,
        "train_s": train_s,
        "final_train_loss": loss_v,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
