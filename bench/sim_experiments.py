#!/usr/bin/python3
"""Runs the federated-simulation experiments documented in docs/simulation.md
with `edgefl simulate` and prints their tables (Markdown) and a JSON summary.

  bench/sim_experiments.py [--edgefl build/edgefl] [--only NAME[,NAME]] [--json-out FILE]

Experiments (names for --only):
  cnn       FedAvg, CNN, 100 clients, dirichlet:0.5, 10 per round, 1 local epoch,
            batch 32, 100 rounds (the README's headline run; ~6-12 minutes)
  niid      NIID-Bench's setting: 10 clients, dirichlet:0.5, all clients every round,
            2 local epochs, 50 rounds, lenet5 (NIID-Bench's simple CNN); FedAvg,
            FedProx, FedAdam, FedYogi (~6 minutes each)
  deadline  heavy-tailed devices: waiting for every selected client vs
            over-selection + deadline vs asynchronous (FedBuff) aggregation, MLP
  attack    20% of clients send sign-flipped updates scaled x4: FedAvg against
            FedMedian, FedTrimmedAvg, Krum and Multi-Krum, MLP
  scale     10,000 registered clients, 100 per round, MLP, 5 rounds: peak memory

Every figure comes from a run made by this script; nothing is copied in.
Standard library only; runs `edgefl` as a subprocess under /usr/bin/time -v.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time


def simulate(edgefl, args):
    """Runs edgefl simulate --json; returns (result dict, peak RSS MB)."""
    cmd = ["/usr/bin/time", "-v", edgefl, "simulate", "--json", "--quiet"] + args
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"sim_experiments: edgefl simulate failed ({' '.join(args)}):\n{p.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    d = json.loads(p.stdout.strip().splitlines()[-1])
    return d, (int(m.group(1)) / 1024.0 if m else float("nan"))


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def sec(x):
    return "-" if x is None else f"{x:.1f}"


ART = None  # --artifacts DIR: metrics and reports of the runs that have them


def extract_svg(html_path, title, svg_path):
    """Saves the chart whose heading is `title` from a report as a standalone SVG."""
    html = open(html_path, encoding="utf-8").read()
    at = html.find(f'aria-label="{title}"')
    start = html.rfind("<svg", 0, at)
    end = html.find("</svg>", at) + len("</svg>")
    if at < 0 or start < 0 or end < len("</svg>"):
        return False
    svg = html[start:end].replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
    with open(svg_path, "w", encoding="utf-8") as f:
        f.write(svg + "\n")
    return True


def exp_cnn(ef, out):
    args = ["--dataset", "fashion-mnist", "--model", "cnn", "--clients", "100", "--partition",
            "dirichlet:0.5", "--clients-per-round", "10", "--local-epochs", "1", "--batch", "32",
            "--rounds", "100", "--seed", "1", "--eval-every", "5", "--threads", "2"]
    extra = []
    if ART:
        extra = ["--metrics", os.path.join(ART, "cnn-dirichlet.jsonl"),
                 "--report", os.path.join(ART, "cnn-dirichlet.html")]
    d, rss = simulate(ef, args + extra)
    out["cnn"] = {"args": args, "result": d, "peak_rss_mb": rss}
    print("\n### FedAvg, CNN, 100 clients, dirichlet:0.5, 10 per round, 100 rounds\n")
    print("| final accuracy | mean of last 5 evaluations | best | simulated time | wall time | peak RSS |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {pct(d['final_accuracy'])}% | {pct(d.get('final_accuracy_last5'))}% | "
          f"{pct(d['best_accuracy'])}% | {sec(d['sim_time_s'])} s | {sec(d['wall_s'])} s | {rss:.0f} MB |")
    print(f"\n`edgefl simulate {' '.join(args)}`")
    if ART:
        rows = [json.loads(l) for l in open(os.path.join(ART, "cnn-dirichlet.jsonl"))]
        pts = [(r["round"], r["test_accuracy"]) for r in rows if "test_accuracy" in r]
        print("\nTest accuracy by round:\n")
        print("| round | " + " | ".join(str(r) for r, _ in pts[::2]) + " |")
        print("| --- |" + " ---: |" * len(pts[::2]))
        print("| accuracy (%) | " + " | ".join(f"{100 * a:.1f}" for _, a in pts[::2]) + " |")
        svg = os.path.join(ART, "cnn-dirichlet-accuracy.svg")
        if extract_svg(os.path.join(ART, "cnn-dirichlet.html"), "Accuracy per round", svg):
            print(f"\n(chart: {svg})")


def exp_niid(ef, out):
    base = ["--model", "lenet5", "--clients", "10", "--partition", "dirichlet:0.5",
            "--clients-per-round", "10", "--local-epochs", "2", "--batch", "64", "--lr", "0.02",
            "--momentum", "0.9", "--rounds", "50", "--seed", "1", "--eval-every", "5",
            "--threads", "2"]
    variants = [("FedAvg", ["--strategy", "fedavg"]),
                ("FedProx (mu 0.01)", ["--strategy", "fedprox", "--proximal-mu", "0.01"]),
                ("FedAdam (eta 0.03)", ["--strategy", "fedadam", "--server-lr", "0.03"]),
                ("FedYogi (eta 0.03)", ["--strategy", "fedyogi", "--server-lr", "0.03"])]
    rows = []
    for name, extra in variants:
        d, rss = simulate(ef, base + extra)
        rows.append((name, d))
        out.setdefault("niid", []).append({"name": name, "args": base + extra, "result": d})
    print("\n### NIID-Bench setting: 10 clients, dirichlet:0.5, all clients every round, "
          "2 local epochs, 50 rounds, lenet5\n")
    print("| strategy | final accuracy | mean of last 5 evaluations | best |")
    print("| --- | ---: | ---: | ---: |")
    for name, d in rows:
        print(f"| {name} | {pct(d['final_accuracy'])}% | {pct(d.get('final_accuracy_last5'))}% | "
              f"{pct(d['best_accuracy'])}% |")
    print(f"\nCommon options: `{' '.join(base)}`")


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def exp_deadline(ef, out):
    base = ["--model", "mlp", "--clients", "100", "--partition", "iid", "--clients-per-round",
            "10", "--rounds", "60", "--profile", "heavy-tail", "--eval-every", "1",
            "--threads", "1", "--target-accuracy", "0.83"]
    variants = [("wait for every selected client", ["--overselect", "1.0"]),
                ("over-select 130% + 1 s deadline", ["--overselect", "1.3", "--deadline", "1"]),
                ("asynchronous, K = 10, staleness <= 10", ["--async", "--buffer-k", "10",
                                                           "--max-staleness", "10"]),
                ("asynchronous, K = 5, staleness <= 10", ["--async", "--buffer-k", "5",
                                                          "--max-staleness", "10"])]
    seeds = ["1", "2", "3"]
    rows = []
    for name, extra in variants:
        runs = [simulate(ef, base + extra + ["--seed", sd])[0] for sd in seeds]
        agg = {k: mean([r.get(k) for r in runs])
               for k in ("mean_round_s", "sim_time_s", "time_to_target_s", "final_accuracy_last5",
                         "updates", "dropped", "late")}
        agg["reached"] = sum(r.get("time_to_target_s") is not None for r in runs)
        rows.append((name, agg))
        out.setdefault("deadline", []).append({"name": name, "args": base + extra, "seeds": seeds,
                                               "runs": runs, "mean": agg})
    print("\n### Heavy-tailed devices: deadline, over-selection, asynchronous aggregation\n")
    print("Means over seeds 1, 2 and 3.\n")
    print("| mode | mean round (sim s) | 60 rounds (sim s) | time to 83% (sim s) | "
          "accuracy (mean of last 5) | updates | dropped | late |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, d in rows:
        ttt = sec(d["time_to_target_s"]) + ("" if d["reached"] == len(seeds) else
                                             f" ({d['reached']} of {len(seeds)} runs)")
        print(f"| {name} | {d['mean_round_s']:.2f} | {sec(d['sim_time_s'])} | {ttt} | "
              f"{pct(d['final_accuracy_last5'])}% | {d['updates']:.0f} | {d['dropped']:.0f} | "
              f"{d['late']:.0f} |")
    w, s2 = rows[0][1], rows[1][1]
    print(f"\nDeadline + over-selection: mean round {w['mean_round_s'] / s2['mean_round_s']:.2f}x "
          f"shorter; accuracy {100 * (s2['final_accuracy_last5'] - w['final_accuracy_last5']):+.2f} "
          f"points.")
    print(f"\nCommon options: `{' '.join(base)}` plus `--seed N`")


def exp_attack(ef, out):
    base = ["--model", "mlp", "--clients", "100", "--partition", "iid", "--clients-per-round",
            "20", "--rounds", "50", "--seed", "1", "--eval-every", "5", "--threads", "1"]
    attack = ["--malicious", "0.2", "--attack-scale", "4"]
    strategies = [("FedAvg", ["--strategy", "fedavg"]),
                  ("FedMedian", ["--strategy", "fedmedian"]),
                  ("FedTrimmedAvg (beta 0.3)", ["--strategy", "fedtrimmedavg", "--trim-beta", "0.3"]),
                  ("Krum (f = 4)", ["--strategy", "krum", "--krum-f", "4"]),
                  ("Multi-Krum (f = 4)", ["--strategy", "multikrum", "--krum-f", "4"])]
    rows = []
    for name, extra in strategies:
        clean, _ = simulate(ef, base + extra)
        hit, _ = simulate(ef, base + extra + attack)
        rows.append((name, clean, hit))
        out.setdefault("attack", []).append({"name": name, "clean": clean, "attacked": hit,
                                             "args": base + extra, "attack": attack})
    ref = rows[0][1]["final_accuracy_last5"]
    print("\n### 20% of clients send sign-flipped updates scaled x4\n")
    print("| strategy | no attack | under attack | change vs. FedAvg without attack |")
    print("| --- | ---: | ---: | ---: |")
    for name, c, h in rows:
        print(f"| {name} | {pct(c['final_accuracy_last5'])}% | {pct(h['final_accuracy_last5'])}% | "
              f"{100 * (h['final_accuracy_last5'] - ref):+.2f} points |")
    print("\nAccuracy is the mean of the last five evaluations (rounds 30-50).")
    print(f"Common options: `{' '.join(base)}`; attack: `{' '.join(attack)}`")


def exp_scale(ef, out):
    args = ["--model", "mlp", "--clients", "10000", "--partition", "iid", "--clients-per-round",
            "100", "--rounds", "5", "--seed", "1", "--eval-every", "5", "--threads", "2"]
    d, rss = simulate(ef, args)
    out["scale"] = {"args": args, "result": d, "peak_rss_mb": rss}
    print("\n### 10,000 registered clients, 100 per round, MLP, 5 rounds\n")
    print("| peak RSS | wall time | final accuracy | bytes up | bytes down |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {rss:.0f} MB | {d['wall_s']:.1f} s | {pct(d['final_accuracy'])}% | "
          f"{d['bytes_up'] / 1e6:.0f} MB | {d['bytes_down'] / 1e6:.0f} MB |")
    print(f"\n`edgefl simulate {' '.join(args)}`")


EXPERIMENTS = {"scale": exp_scale, "attack": exp_attack, "deadline": exp_deadline,
               "niid": exp_niid, "cnn": exp_cnn}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edgefl", default=os.path.join(os.path.dirname(__file__), "..", "build", "edgefl"))
    ap.add_argument("--only", default=",".join(EXPERIMENTS))
    ap.add_argument("--json-out")
    ap.add_argument("--artifacts", help="folder for metrics, reports and charts of the runs")
    a = ap.parse_args()
    global ART
    if a.artifacts:
        os.makedirs(a.artifacts, exist_ok=True)
        ART = a.artifacts
    if not os.access(a.edgefl, os.X_OK):
        sys.exit(f"sim_experiments: {a.edgefl} not found; run `make` first")
    names = a.only.split(",")
    for n in names:
        if n not in EXPERIMENTS:
            sys.exit(f"sim_experiments: unknown experiment '{n}' (known: {', '.join(EXPERIMENTS)})")
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load1_before": os.getloadavg()[0]}
    print(f"Measured {out['date']}; 1-minute load average {out['load1_before']:.2f} at the start.")
    for n in names:
        t0 = time.time()
        EXPERIMENTS[n](a.edgefl, out)
        print(f"\n({n}: {time.time() - t0:.0f} s)", file=sys.stderr)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
