#!/usr/bin/python3
"""Learning curve of an `edgefl lm train` run as an SVG chart and a Markdown table.

Usage: bench/lm_curve.py RUN.json RUN.err OUT.svg [--target BPB] [--title TEXT]

RUN.json is the run's `--json` output (its "evals": step, valid_bpb,
elapsed_s); RUN.err its stderr (progress lines "step N/M  loss L ..."). The
training loss of each progress line (nats per token, mean since the previous
line) is converted to bits per byte with the training text's bytes per token
(train_bytes / train_tokens from RUN.json, or --bytes-per-token), and placed
in time by interpolating the step between the validation points. The chart
has both curves against minutes, and the target as a dashed line. The
Markdown table of the validation points goes to stdout. Standard library only.
"""
import argparse
import json
import math
import re
import sys


def fail(msg):
    print(f"lm_curve: error: {msg}", file=sys.stderr)
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_json")
    ap.add_argument("run_err")
    ap.add_argument("out_svg")
    ap.add_argument("--target", type=float, default=None, help="target bits per byte (dashed line)")
    ap.add_argument("--bytes-per-token", type=float, default=None)
    ap.add_argument("--title", default="edgefl lm train on the KJV")
    a = ap.parse_args()

    try:
        run = json.load(open(a.run_json))
        err = open(a.run_err, encoding="utf-8", errors="replace").read()
    except (OSError, ValueError) as e:
        fail(str(e))
    evals = run.get("evals") or []
    if not evals:
        fail(f"{a.run_json} has no validation points ('evals')")
    bpt = a.bytes_per_token
    if bpt is None:
        if run.get("train_bytes") and run.get("train_tokens"):
            bpt = run["train_bytes"] / run["train_tokens"]
        else:
            fail("no train_bytes/train_tokens in the JSON: give --bytes-per-token")

    # time of a step: linear between validation points (and 0 at step 0);
    # validation time itself is inside elapsed_s, which is what a user waits
    pts = [(0, 0.0)] + [(e["step"], e["elapsed_s"]) for e in evals]

    def t_of(step):
        for (s0, t0), (s1, t1) in zip(pts, pts[1:]):
            if step <= s1:
                return t0 + (t1 - t0) * (step - s0) / max(1, s1 - s0)
        (s0, t0), (s1, t1) = pts[-2], pts[-1]
        return t1 + (t1 - t0) * (step - s1) / max(1, s1 - s0)

    train = []
    for m in re.finditer(r"^step\s+(\d+)/\d+\s+loss\s+([0-9.]+)", err, re.M):
        step, loss = int(m.group(1)), float(m.group(2))
        train.append((t_of(step) / 60, loss / math.log(2) / bpt))
    valid = [(e["elapsed_s"] / 60, e["valid_bpb"]) for e in evals]

    # chart
    W, H, L, R, T, B = 720, 420, 64, 20, 40, 52
    xmax = max([x for x, _ in train + valid] + [1.0])
    xmax = math.ceil(xmax / 5) * 5
    ys = [y for _, y in valid] + [y for _, y in train[len(train) // 20:]]
    if a.target is not None:
        ys.append(a.target)
    ymin = math.floor(min(ys) * 5) / 5 - 0.2
    ymax = math.ceil(max(ys) * 5) / 5
    ymin = max(0.0, ymin)

    def X(x):
        return L + (W - L - R) * x / xmax

    def Y(y):
        y = min(max(y, ymin), ymax)
        return T + (H - T - B) * (ymax - y) / (ymax - ymin)

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{a.title}</text>']
    xstep = 5 if xmax <= 60 else 10
    for x in range(0, int(xmax) + 1, xstep):
        o.append(f'<line x1="{X(x):.1f}" y1="{T}" x2="{X(x):.1f}" y2="{H - B}" stroke="#ddd"/>')
        o.append(f'<text x="{X(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x}</text>')
    y = ymin
    while y <= ymax + 1e-9:
        o.append(f'<line x1="{L}" y1="{Y(y):.1f}" x2="{W - R}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
        y += 0.2
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">minutes (2 threads)</text>')
    o.append(f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 16 {(T + H - B) / 2})">bits per byte</text>')
    if a.target is not None:
        o.append(f'<line x1="{L}" y1="{Y(a.target):.1f}" x2="{W - R}" y2="{Y(a.target):.1f}" '
                 f'stroke="#c00" stroke-dasharray="6 4"/>')
        o.append(f'<text x="{W - R - 4}" y="{Y(a.target) - 5:.1f}" text-anchor="end" '
                 f'fill="#c00">target {a.target}</text>')
    if train:
        d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in train)
        o.append(f'<polyline points="{d}" fill="none" stroke="#7aa6d6" stroke-width="1.2"/>')
    d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in valid)
    o.append(f'<polyline points="{d}" fill="none" stroke="#1b4f8a" stroke-width="2"/>')
    for x, y in valid:
        o.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="#1b4f8a"/>')
    lx = W - R - 250
    o.append(f'<line x1="{lx}" y1="{T + 14}" x2="{lx + 24}" y2="{T + 14}" stroke="#7aa6d6" stroke-width="1.2"/>')
    o.append(f'<text x="{lx + 30}" y="{T + 18}">training batches (mean since last line)</text>')
    o.append(f'<line x1="{lx}" y1="{T + 32}" x2="{lx + 24}" y2="{T + 32}" stroke="#1b4f8a" stroke-width="2"/>')
    o.append(f'<text x="{lx + 30}" y="{T + 36}">held-out verses</text>')
    o.append("</svg>")
    tmp = a.out_svg + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(o) + "\n")
    import os
    os.replace(tmp, a.out_svg)

    print("| step | minutes | held-out loss (nats/token) | held-out bits/byte |")
    print("| ---: | ---: | ---: | ---: |")
    for e in evals:
        print(f"| {e['step']} | {e['elapsed_s'] / 60:.1f} | {e['valid_loss']:.4f} | {e['valid_bpb']:.4f} |")


if __name__ == "__main__":
    main()
