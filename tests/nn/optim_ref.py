#!/usr/bin/env python3
"""Reference optimizer trajectories from PyTorch for tests/nn/test_optim.c.

Runs torch.optim.SGD and torch.optim.AdamW for a few steps on a fixed
parameter vector with gradients generated from a formula, and prints every
input and every expected parameter vector as exact hexadecimal floats, so
the C test feeds edgefl the very same float32 values and compares its
ef_optim_step results step by step. Hyperparameters are rounded to float32
first (edgefl stores them as float), so both sides use identical values.

Output, one record per line (values are float.hex() of float32 numbers):
    case NAME KIND N STEPS LR WD MOMENTUM NESTEROV BETA1 BETA2 EPS LR2 LR2_STEP
    init v_0 ... v_{N-1}
    grad T v_0 ...          gradient of step T (1-based)
    param T v_0 ...         parameters after step T
    end
LR2_STEP > 0 means the learning rate becomes LR2 before that step (a
schedule, as ef_optim_set_lr does). Exit code 77 when torch is missing.
"""
import math
import struct
import sys

try:
    import torch
except ImportError:
    print("optim_ref.py: torch is not importable", file=sys.stderr)
    sys.exit(77)


def f32(x):
    """x rounded to the nearest float32, as a Python float."""
    return struct.unpack("f", struct.pack("f", x))[0]


def hexs(values):
    return " ".join(float.hex(float(v)) for v in values)


N = 16
STEPS = 6


def init_params():
    return [f32(2.0 * math.cos(0.37 * i) + 0.1 * i) for i in range(N)]


def grad(t):
    # Magnitudes from 1e-3 to 10, signs that flip between steps, and element 3
    # always zero (Adam's second moment stays 0 there: only eps in the denominator).
    scales = (1.0, 1e-3, 10.0, 0.0, 0.5, 3.0, 0.02, 1.0)
    return [f32(scales[i % 8] * math.sin(1.3 * i + 0.7 * t + 0.2)) for i in range(N)]


CASES = [
    # name, kind, lr, wd, momentum, nesterov, beta1, beta2, eps, lr2, lr2_step
    ("sgd_plain", "sgd", 0.1, 0.0, 0.0, 0, 0.9, 0.999, 1e-8, 0.0, 0),
    ("sgd_wd", "sgd", 0.05, 0.01, 0.0, 0, 0.9, 0.999, 1e-8, 0.0, 0),
    ("sgd_momentum", "sgd", 0.1, 0.0, 0.9, 0, 0.9, 0.999, 1e-8, 0.0, 0),
    ("sgd_nesterov_wd", "sgd", 0.05, 1e-3, 0.9, 1, 0.9, 0.999, 1e-8, 0.0, 0),
    ("sgd_momentum_wd_sched", "sgd", 0.2, 0.1, 0.5, 0, 0.9, 0.999, 1e-8, 0.03, 4),
    ("adamw_default", "adamw", 1e-3, 0.01, 0.0, 0, 0.9, 0.999, 1e-8, 0.0, 0),
    ("adamw_wd", "adamw", 0.05, 0.1, 0.0, 0, 0.8, 0.99, 1e-6, 0.0, 0),
    ("adamw_nowd_sched", "adamw", 0.01, 0.0, 0.0, 0, 0.9, 0.999, 1e-8, 0.002, 3),
]


def make_opt(kind, p, lr, wd, mom, nest, b1, b2, eps):
    if kind == "sgd":
        kw = dict(lr=lr, momentum=mom, weight_decay=wd, nesterov=bool(nest))
        cls = torch.optim.SGD
    else:
        kw = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=False)
        cls = torch.optim.AdamW
    try:  # the plain per-tensor loop (the foreach path computes the same)
        return cls([p], foreach=False, **kw)
    except TypeError:
        return cls([p], **kw)


def main():
    torch.set_num_threads(1)
    for name, kind, lr, wd, mom, nest, b1, b2, eps, lr2, lr2_step in CASES:
        lr, wd, mom, b1, b2, eps, lr2 = (f32(v) for v in (lr, wd, mom, b1, b2, eps, lr2))
        p0 = init_params()
        print("case", name, kind, N, STEPS, hexs([lr, wd, mom]), nest, hexs([b1, b2, eps, lr2]),
              lr2_step)
        print("init", hexs(p0))
        p = torch.tensor(p0, dtype=torch.float32, requires_grad=True)
        opt = make_opt(kind, p, lr, wd, mom, nest, b1, b2, eps)
        for t in range(1, STEPS + 1):
            if lr2_step and t == lr2_step:
                for group in opt.param_groups:
                    group["lr"] = lr2
            g = grad(t)
            p.grad = torch.tensor(g, dtype=torch.float32)
            opt.step()
            print("grad", t, hexs(g))
            print("param", t, hexs(p.detach().tolist()))
        print("end")


if __name__ == "__main__":
    main()
