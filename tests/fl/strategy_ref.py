#!/usr/bin/env python3
"""Reference aggregation results for tests/fl/test_strategy.c.

Implements every strategy of include/edgefl/strategy.h again, in numpy and
float64, straight from the formulas (FedAvg/FedProx, FedAvgM, FedAdam,
FedYogi and FedAdagrad as in Reddi et al. 2021 Algorithm 2 with the state
initialised to 0 and no bias correction; coordinate-wise median and trimmed
mean by sorting; Krum and Multi-Krum by brute force), and runs each case for
three consecutive rounds so that the server-optimizer state carried between
rounds is covered. Inputs come from a seeded numpy RNG.

Usage: strategy_ref.py INPUTS.f32
Writes every input vector, as little-endian float32, to INPUTS.f32 in the
order the C test consumes them (per case: the initial global model, then
each round's deltas), and prints one record per line (x: float.hex):
    case NAME KIND P MAX_UPDATES LR MOMENTUM BETA1 BETA2 TAU TRIM KRUM_F MULTIKRUM_M
    round R N w_0 ... w_{N-1}        weights of round R's N deltas (float64)
    expect R v_0 ... v_{P-1}         global model after round R (float64)
    end
Hyperparameters are rounded to float32 first (edgefl stores them as float)
except that the trimmed mean cuts floor(beta * n) for the decimal beta, in
exact rational arithmetic, which is what edgefl promises for a float beta.
The global model is rounded to float32 after every round, as edgefl keeps it.
Exit code 77 when numpy is missing.
"""
import struct
import sys
from fractions import Fraction

try:
    import numpy as np
except ImportError:
    print("strategy_ref.py: numpy is not importable", file=sys.stderr)
    sys.exit(77)


def f32(x):
    return float(np.float32(x))


def hexs(values):
    return " ".join(float.hex(float(v)) for v in values)


# name, kind, P, rounds (updates per round), hyperparameters, data flavour
CASES = [
    ("fedavg", "fedavg", 300, (5, 8, 6), {}, "plain"),
    ("fedavg_lr", "fedavg", 300, (1, 4, 7), {"server_lr": 0.7}, "plain"),
    ("fedprox", "fedprox", 300, (6, 3, 9), {}, "plain"),
    ("fedavgm", "fedavgm", 300, (5, 8, 6), {}, "plain"),
    ("fedavgm_custom", "fedavgm", 300, (4, 4, 4), {"server_lr": 0.5, "server_momentum": 0.5}, "plain"),
    ("fedadam", "fedadam", 300, (5, 8, 6), {}, "plain"),
    ("fedadam_custom", "fedadam", 300, (3, 5, 2),
     {"server_lr": 0.1, "beta1": 0.5, "beta2": 0.9, "tau": 1e-2}, "plain"),
    ("fedyogi", "fedyogi", 300, (5, 8, 6), {}, "plain"),
    ("fedyogi_custom", "fedyogi", 300, (4, 6, 5),
     {"server_lr": 0.05, "beta1": 0.8, "beta2": 0.95, "tau": 1e-4}, "plain"),
    ("fedadagrad", "fedadagrad", 300, (5, 8, 6), {}, "plain"),
    ("fedadagrad_custom", "fedadagrad", 300, (2, 7, 3), {"server_lr": 0.1, "tau": 0.1}, "plain"),
    ("fedmedian", "fedmedian", 300, (7, 10, 65), {}, "byzantine"),
    ("fedmedian_small", "fedmedian", 300, (1, 2, 33), {"server_lr": 0.5}, "byzantine"),
    ("fedmedian_ties", "fedmedian", 300, (24, 25, 90), {}, "ties"),
    ("fedtrimmed", "fedtrimmedavg", 300, (10, 25, 40), {}, "byzantine"),
    ("fedtrimmed_035", "fedtrimmedavg", 300, (20, 7, 64), {"trim_beta": 0.35}, "byzantine"),
    ("fedtrimmed_029", "fedtrimmedavg", 300, (100, 3, 41), {"trim_beta": 0.29}, "byzantine"),
    ("fedtrimmed_ties", "fedtrimmedavg", 300, (30, 12, 50), {"trim_beta": 0.2}, "ties"),
    ("fedtrimmed_none", "fedtrimmedavg", 300, (6, 1, 30), {"trim_beta": 0.0}, "plain"),
    ("fedmedian_large", "fedmedian", 40, (600, 513, 1000), {}, "byzantine"),
    ("fedtrimmed_large", "fedtrimmedavg", 40, (700, 520, 1000), {}, "byzantine"),
    ("krum", "krum", 2500, (5, 9, 12), {}, "byzantine"),
    ("krum_f2", "krum", 2500, (7, 10, 20), {"krum_f": 2}, "byzantine"),
    ("krum_f0", "krum", 2500, (3, 4, 5), {"krum_f": 0}, "plain"),
    ("multikrum", "multikrum", 2500, (6, 9, 12), {}, "byzantine"),
    ("multikrum_m3", "multikrum", 2500, (7, 10, 15), {"krum_f": 2, "multikrum_m": 3, "server_lr": 0.8},
     "byzantine"),
]

DEFAULTS = {"server_momentum": 0.9, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3, "trim_beta": 0.1,
            "krum_f": 1, "multikrum_m": 0}
ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")


def make_round(rng, P, n, flavour):
    """n deltas (float32) and their weights."""
    scale = 10.0 ** rng.uniform(-3, 0, P)  # coordinates of very different sizes
    base = rng.normal(0, 1, P)
    d = 0.1 * scale * (base + 0.5 * rng.normal(0, 1, (n, P)))
    if flavour == "byzantine" and n >= 5:
        bad = rng.choice(n, size=max(1, n // 5), replace=False)
        d[bad] *= -10.0  # sign-flipped, ten times larger
    if flavour == "ties":
        d = np.round(d * 8.0 / scale) / 8.0  # few distinct values per coordinate
    weights = rng.integers(1, 200, n).astype(np.float64) + rng.choice([0.0, 0.5], n)
    return d.astype(np.float32), weights


def krum_order(D, f):
    n = D.shape[0]
    dist = np.array([[np.sum((D[i] - D[j]) ** 2) for j in range(n)] for i in range(n)])
    scores = []
    for i in range(n):
        others = np.sort(np.delete(dist[i], i))
        scores.append(np.sum(others[: n - f - 2]))
    scores = np.array(scores)
    order = np.argsort(scores, kind="stable")
    return scores, order


def check_gap(scores, order, k, what):
    """The k best are separated from the rest by more than rounding, or tied
    exactly: with one neighbour scored, two mutual nearest neighbours share
    one distance, which edgefl also computes once for both (lowest index wins)."""
    if k >= len(order):
        return
    a, b = scores[order[k - 1]], scores[order[k]]
    assert a == b or b - a > 1e-9 * max(abs(a), abs(b)), f"{what}: near-tie of Krum scores {a} {b}"


def aggregate(kind, hp, D, w, trim_decimal, what):
    n = D.shape[0]
    if kind in ("fedavg", "fedprox", "fedavgm") + ADAPTIVE:
        return (w[:, None] * D).sum(axis=0) / w.sum()
    if kind == "fedmedian":
        return np.median(D, axis=0)
    if kind == "fedtrimmedavg":
        cut = int(Fraction(str(trim_decimal)) * n)  # floor of the exact product
        assert 2 * cut < n
        return np.sort(D, axis=0)[cut : n - cut].mean(axis=0)
    f = hp["krum_f"]
    assert n > 2 * f + 2
    scores, order = krum_order(D, f)
    if kind == "krum":
        check_gap(scores, order, 1, what)
        return D[order[0]]
    m = hp["multikrum_m"] or n - f
    check_gap(scores, order, m, what)
    return D[order[:m]].mean(axis=0)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    rng = np.random.default_rng(20240611)
    out = open(sys.argv[1], "wb")
    lines = []  # printed once the input file is complete: the C test reads it as it goes

    def emit(*fields):
        lines.append(" ".join(str(x) for x in fields))

    for name, kind, P, rounds, over, flavour in CASES:
        hp = dict(DEFAULTS)
        hp["server_lr"] = 0.01 if kind in ADAPTIVE else 1.0
        hp.update(over)
        trim_decimal = hp["trim_beta"]
        for k in ("server_lr", "server_momentum", "beta1", "beta2", "tau", "trim_beta"):
            hp[k] = f32(hp[k])
        max_updates = max(rounds) + 2
        emit("case", name, kind, P, max_updates,
              hexs([hp[k] for k in ("server_lr", "server_momentum", "beta1", "beta2", "tau",
                                    "trim_beta")]), hp["krum_f"], hp["multikrum_m"])
        g = rng.normal(0, 1, P).astype(np.float32)
        out.write(g.astype("<f4").tobytes())
        g = g.astype(np.float64)
        m = np.zeros(P)
        v = np.zeros(P)
        lr, b1, b2, tau = hp["server_lr"], hp["beta1"], hp["beta2"], hp["tau"]
        for r, n in enumerate(rounds, start=1):
            D32, w = make_round(rng, P, n, flavour)
            out.write(D32.astype("<f4").tobytes())
            emit("round", r, n, hexs(w))
            a = aggregate(kind, hp, D32.astype(np.float64), w, trim_decimal, f"{name} round {r}")
            if kind == "fedavgm":
                m = hp["server_momentum"] * m + a
                g = g + lr * m
            elif kind in ADAPTIVE:
                a2 = a * a
                if kind == "fedadagrad":
                    m = a
                    v = v + a2
                else:
                    m = b1 * m + (1 - b1) * a
                    if kind == "fedadam":
                        v = b2 * v + (1 - b2) * a2
                    else:
                        gap = np.abs(v - a2)
                        assert np.all((gap == 0) | (gap > 1e-5 * np.maximum(v, a2))), \
                            f"{name}: Yogi sign near a tie"
                        v = v - (1 - b2) * a2 * np.sign(v - a2)
                g = g + lr * m / (np.sqrt(v) + tau)
            else:
                g = g + lr * a
            g = g.astype(np.float32).astype(np.float64)
            emit("expect", r, hexs(g))
        emit("end")
    out.close()
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
