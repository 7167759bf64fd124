#!/usr/bin/env python3
"""Reference RDP values for tests/privacy/test_rdp.c, by another method.

edgefl computes the RDP of the Poisson-subsampled Gaussian mechanism from
series (a binomial sum for integer orders, the two-sided series of Mironov,
Talwar, Zhang 2019 for fractional ones). This script instead integrates the
definition numerically, with the Python standard library only:

    A_a = E_{z ~ N(0, s^2)} [ (1 - q + q L(z))^a ],  L(z) = exp((2z - 1) / (2 s^2)),
    RDP(a) = log(A_a) / (a - 1).

The integrand is analytic on the real line, so the trapezoidal rule with a
step well below both s and s^2 (the width of the Gaussian and of the
crossover of the two mixture components) converges faster than any power of
the step; the script evaluates every case at two steps and refuses to print
a value on which they disagree by more than 1e-10 relative.

Precision for small q: A_a is then 1 + something tiny, so the script
integrates A_a - 1 = E[(1 + x)^a - 1 - a x] with x = q (L - 1) (the subtracted
term has mean zero, E[L] = 1), evaluating (1 + x)^a - 1 - a x (>= 0) by its
binomial series where |x| < 0.1. Where A_a is large it integrates in log space.

Output, one line per case (numbers as float.hex, read back exactly by C's
strtod):
    rdp Q SIGMA ORDER VALUE
Exit code 0; 1 if a case did not converge.
"""
import math
import sys

CASES_Q = [1e-6, 1e-4, 0.01, 0.1, 0.5, 0.99]
CASES_SIGMA = [0.3, 0.8, 1.0, 2.0, 5.0, 20.0, 100.0]
CASES_ORDER = [1.1, 1.5, 2.0, 2.5, 3.0, 4.5, 8.0, 12.25, 32.0, 63.0]
# large orders, where the series run longest (a few parameter sets only:
# the integration grid grows with the order), and the best orders of TF
# Privacy's example-privacy test (q 0.01, sigma 0.35 and 0.7), where our
# epsilon differs from the published one
CASES_EXTRA = [(0.01, 0.3, 256.1), (0.01, 1.0, 512.0), (1e-3, 2.0, 300.5),
               (0.1, 4.0, 512.0), (1e-5, 0.7, 128.5), (0.5, 10.0, 257.0),
               (0.01, 0.35, 1.6), (0.01, 0.7, 4.4)]


def log_add(a, b):
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def excess(x, a):
    """(1 + x)^a - 1 - a x for x > -1."""
    if abs(x) < 0.1:
        total, term, k = 0.0, a * x, 1
        while True:
            term *= (a - k) * x / (k + 1)
            k += 1
            total += term
            if abs(term) <= 1e-18 * abs(total) or k > 200:
                return total
    return math.expm1(a * math.log1p(x)) - a * x


def log_integrand(z, q, s, a):
    """log of N(z; 0, s^2) (1 - q + q L(z))^a."""
    u = (2.0 * z - 1.0) / (2.0 * s * s)
    mix = log_add(math.log1p(-q), math.log(q) + u)
    return -z * z / (2.0 * s * s) - math.log(s * math.sqrt(2.0 * math.pi)) + a * mix


def grid(q, s, a, h):
    lo = -30.0 * s
    hi = a + 30.0 * s
    n = int(math.ceil((hi - lo) / h))
    return lo, (hi - lo) / n, n


def log_a_logspace(q, s, a, h):
    lo, step, n = grid(q, s, a, h)
    acc = -math.inf
    for k in range(n + 1):
        w = 0.5 if k in (0, n) else 1.0
        acc = log_add(acc, math.log(w) + log_integrand(lo + k * step, q, s, a))
    return acc + math.log(step)


def a_minus_1_linear(q, s, a, h):
    lo, step, n = grid(q, s, a, h)
    lc = -math.log(s * math.sqrt(2.0 * math.pi))
    total = 0.0
    for k in range(n + 1):
        z = lo + k * step
        w = 0.5 if k in (0, n) else 1.0
        u = (2.0 * z - 1.0) / (2.0 * s * s)
        lphi = lc - z * z / (2.0 * s * s)
        if u < 700.0:
            x = q * math.expm1(u)
            if abs(x) < 0.1:
                val = math.exp(lphi) * excess(x, a)
            else:
                val = math.exp(lphi + a * math.log1p(x)) - math.exp(lphi) * (1.0 + a * x)
        else:  # only (1 + x)^a matters; it may not fit a double before the Gaussian factor
            val = math.exp(lphi + a * log_add(math.log1p(-q), math.log(q) + u))
        total += w * val
    return total * step


def rdp(q, s, a):
    h = min(s, s * s) / 6.0
    la = log_a_logspace(q, s, a, h)
    if la > 1e-3:
        vals = [la, log_a_logspace(q, s, a, h / 2)]
    else:  # A_a close to 1: integrate A_a - 1 directly
        vals = [math.log1p(a_minus_1_linear(q, s, a, h)),
                math.log1p(a_minus_1_linear(q, s, a, h / 2))]
    if not abs(vals[0] - vals[1]) <= 1e-10 * abs(vals[1]):
        return None
    return vals[1] / (a - 1.0)


def main():
    cases = [(q, s, a) for q in CASES_Q for s in CASES_SIGMA for a in CASES_ORDER]
    cases += CASES_EXTRA
    bad = 0
    for q, s, a in cases:
        v = rdp(q, s, a)
        if v is None:
            print("rdp_ref.py: no convergence at q=%g sigma=%g order=%g" % (q, s, a),
                  file=sys.stderr)
            bad += 1
            continue
        print("rdp %s %s %s %s" % (q.hex(), s.hex(), a.hex(), v.hex()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
