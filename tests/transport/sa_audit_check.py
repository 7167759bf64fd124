#!/usr/bin/env python3
"""Checks a secure-aggregation round from --audit-dir files (format in
src/cli/audit.h and docs/deploy.md, "Audit files"): the server's unmasked sum
of round R must equal, word for word, the sum mod 2^bits of the pre-mask
inputs of the clients it says it included, and those clients must be
exactly the expected ones.

usage: sa_audit_check.py DIR ROUND --expect ID,ID,... [--also ID,...]

--also adds the inputs of these clients to the expected sum, as if the
server had included them: the check must then fail (the test's proof that a
killed client's input would be caught). Exit 0 when the round checks out,
1 with the reason otherwise."""
import argparse
import os
import struct
import sys

HEADER = struct.Struct("<4sIIIIIQ")


def read(path, kind, rnd):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER.size:
        raise ValueError(f"{path}: {len(data)} bytes, shorter than the header")
    magic, version, k, r, bits, n_ids, n = HEADER.unpack_from(data)
    if magic != b"EFSA" or version != 1 or k != kind or r != rnd:
        raise ValueError(f"{path}: header {magic!r} v{version} kind {k} round {r}")
    if len(data) != HEADER.size + 4 * (n_ids + n):
        raise ValueError(f"{path}: {len(data)} bytes, the header says {n_ids} ids and {n} words")
    ids = struct.unpack_from(f"<{n_ids}I", data, HEADER.size)
    words = struct.unpack_from(f"<{n}I", data, HEADER.size + 4 * n_ids)
    return bits, list(ids), words


def ids_arg(text):
    return sorted(int(x) for x in text.split(",") if x != "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("round", type=int)
    ap.add_argument("--expect", type=ids_arg, required=True)
    ap.add_argument("--also", type=ids_arg, default=[])
    a = ap.parse_args()
    bits, included, total = read(os.path.join(a.dir, f"sa-round{a.round}-sum.bin"), 1, a.round)
    if not 1 <= bits <= 32:
        sys.exit(f"round {a.round}: bits {bits}")
    if sorted(included) != a.expect:
        sys.exit(f"round {a.round}: the server included {sorted(included)}, expected {a.expect}")
    mask = (1 << bits) - 1
    want = [0] * len(total)
    for c in included + a.also:
        _, ids, words = read(os.path.join(a.dir, f"sa-round{a.round}-client{c}.bin"), 2, a.round)
        if ids != [c] or len(words) != len(total):
            sys.exit(f"round {a.round}: client {c}'s file has ids {ids}, {len(words)} words")
        want = [(x + y) & mask for x, y in zip(want, words)]
    bad = [j for j in range(len(total)) if want[j] != total[j]]
    if bad:
        j = bad[0]
        sys.exit(f"round {a.round}: {len(bad)} of {len(total)} words differ from the sum of "
                 f"clients {sorted(included + a.also)} (first: word {j}, server {total[j]}, "
                 f"inputs {want[j]})")
    print(f"round {a.round}: the unmasked sum of {len(total)} words mod 2^{bits} is the sum of "
          f"clients {sorted(included)}")


if __name__ == "__main__":
    main()
