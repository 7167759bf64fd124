#!/usr/bin/env python3
"""Derives the Winograd/Toom-Cook matrices for F(m, r) and prints them as C.

Used to produce the constants of src/nn/conv2d_winograd.c (F(2,5): 2 outputs,
5-tap filter, alpha = 6 points 0, 1, -1, 2, -2, infinity). A^T and G follow
Lavin & Gray (2016); B is solved exactly (fractions) from the defining
identity sum_j A[j][i] G[j][k] B[l][j] = [l == i + k], then the identity is
checked for random integer inputs. Standard library only.

usage: scripts/winograd_matrices.py [m r]
"""
import random
import sys
from fractions import Fraction as Fr


def derive(m, r, points):
    alpha = m + r - 1
    assert len(points) == alpha - 1
    # A: alpha x m; A[j][i] = p_j^i, infinity row (0..0, 1)
    A = [[Fr(p) ** i for i in range(m)] for p in points] + [[Fr(0)] * (m - 1) + [Fr(1)]]
    # G: alpha x r; G[j][k] = p_j^k / prod_{l != j}(p_j - p_l), infinity row (0..0, 1)
    G = []
    for j, p in enumerate(points):
        den = Fr(1)
        for l, q in enumerate(points):
            if l != j:
                den *= Fr(p) - Fr(q)
        G.append([Fr(p) ** k / den for k in range(r)])
    G.append([Fr(0)] * (r - 1) + [Fr(1)])
    # Solve for B (alpha x alpha): for each l, C b = e with C[(i,k)][j] = A[j][i] G[j][k]
    C = [[A[j][i] * G[j][k] for j in range(alpha)] for i in range(m) for k in range(r)]
    B = []
    for l in range(alpha):
        e = [Fr(1) if l == i + k else Fr(0) for i in range(m) for k in range(r)]
        B.append(solve(C, e))
    return A, G, B


def solve(C, e):
    """Exact least-squares-free solve of an overdetermined consistent system."""
    rows = [list(C[i]) + [e[i]] for i in range(len(C))]
    n = len(C[0])
    piv_rows = []
    r = 0
    for c in range(n):
        p = next((i for i in range(r, len(rows)) if rows[i][c] != 0), None)
        if p is None:
            raise ValueError("singular")
        rows[r], rows[p] = rows[p], rows[r]
        pv = rows[r][c]
        rows[r] = [x / pv for x in rows[r]]
        for i in range(len(rows)):
            if i != r and rows[i][c] != 0:
                f = rows[i][c]
                rows[i] = [a - f * b for a, b in zip(rows[i], rows[r])]
        piv_rows.append(r)
        r += 1
    for i in range(r, len(rows)):
        if rows[i][n] != 0:
            raise ValueError("inconsistent")
    return [rows[i][n] for i in range(n)]


def check(m, r, A, G, B):
    alpha = m + r - 1
    for _ in range(20):
        d = [random.randint(-9, 9) for _ in range(alpha)]
        g = [random.randint(-9, 9) for _ in range(r)]
        direct = [sum(d[i + k] * g[k] for k in range(r)) for i in range(m)]
        Gg = [sum(G[j][k] * g[k] for k in range(r)) for j in range(alpha)]
        Bd = [sum(B[l][j] * d[l] for l in range(alpha)) for j in range(alpha)]
        wino = [sum(A[j][i] * Gg[j] * Bd[j] for j in range(alpha)) for i in range(m)]
        assert wino == direct, (wino, direct)


def c_array(name, M):
    rows = ",\n    ".join("{" + ", ".join(f"{float(x)!r}f" for x in row) + "}" for row in M)
    return f"static const float {name}[{len(M)}][{len(M[0])}] = {{\n    {rows}}};"


if __name__ == "__main__":
    m, r = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (2, 5)
    pts = [0, 1, -1, 2, -2, Fr(1, 2), Fr(-1, 2)][: m + r - 2]
    A, G, B = derive(m, r, pts)
    check(m, r, A, G, B)
    print(f"/* F({m},{r}), points {[str(p) for p in pts]} + infinity */")
    print(c_array("WA", A))   # alpha x m  (output transform: A^T M A)
    print(c_array("WG", G))   # alpha x r  (filter transform: G g G^T)
    print(c_array("WB", B))   # alpha x alpha, B[l][j] (input transform: B^T d B)
