#!/usr/bin/python3
"""The PyTorch side of bench/sim_vs_torch: the FedAvg experiment of an
`edgefl simulate` run, replayed as a plain PyTorch FedAvg loop (what a
Flower virtual client runs inside each client, without Flower around it).

Same experiment: the script reads the run's --partition-out file (every
client's training example indices) and --trace file (per round, the clients
whose updates were aggregated), so both sides train exactly the same clients
on exactly the same examples in every round.

Model: edgefl's architecture with the same parameter names and shapes
(logreg, mlp, cnn, lenet5), torch's default initialization (for these
layers U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, the
distribution edgefl draws from; the draws themselves differ), float32 on
the CPU, mean cross-entropy.

Per round, for each client of the trace: load the global weights, run
--local-epochs epochs of torch.optim.SGD (a fresh optimizer per client, as
edgefl creates one per task) over the client's examples in batches of
--batch, reshuffled every epoch with torch.randperm from the client's own
generator (seeded by seed, round and client) and plain tensor indexing (no
DataLoader; the last batch may be short, as in edgefl), then delta = local -
global. With --workers 1 the clients train one after another in this
process with --threads torch threads (a single Flower process with a
thread-parallel torch); with --workers N, N forked processes with --threads
torch threads each train N clients at once, every task carrying the global
weights (what Flower's simulation engine does with N virtual-client
actors); the result is the same either way. The server adds the
example-weighted mean of the deltas to the global weights (FedAvg, server
learning rate 1). Centralized test evaluation on the test set every
--eval-every rounds and after the last round, in batches of --batch under
torch.no_grad().

Data, held like edgefl holds it: both whole splits as uint8 tensors, each
batch converted to floats (x/255 - 0.2860)/0.3530 inside the loop.

Timing (time.perf_counter): loop_s is the whole round loop (client training,
aggregation, evaluation), train_s the client training alone, eval_s the
evaluations; load_s (reading the data) and building the model are outside
loop_s. Prints one JSON object on stdout.
"""
import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from fmnist_torch import MODELS, read_idx, split_paths, to_input

def fail(msg):
    print(f"sim_vs_torch.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def read_partition(path, n_train):
    try:
        with open(path) as f:
            p = json.load(f)
        clients = p["clients"]
        if p.get("n_clients", len(clients)) != len(clients):
            fail(f"{path}: n_clients {p['n_clients']} but {len(clients)} client lists")
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"cannot read the partition {path}: {e}")
    out = []
    for c, ix in enumerate(clients):
        t = torch.tensor(ix, dtype=torch.int64)
        if len(ix) and (int(t.min()) < 0 or int(t.max()) >= n_train):
            fail(f"{path}: client {c} has an index outside 0..{n_train - 1}")
        out.append(t)
    return out


def read_trace(path, n_clients):
    rounds = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    rounds.append((int(r["round"]), [int(c) for c in r["clients"]]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"cannot read the trace {path}: {e}")
    for k, (rnd, cl) in enumerate(rounds):
        if rnd != k + 1:
            fail(f"{path}: line {k + 1} is round {rnd}, expected {k + 1}")
        if any(c < 0 or c >= n_clients for c in cl):
            fail(f"{path}: round {rnd} names a client outside 0..{n_clients - 1}")
    return [cl for _, cl in rounds]


def evaluate(model, x_u8, y, batch):
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for b0 in range(0, len(y), batch):  # edgefl evaluates in batches of --batch too
            x, t = to_input(x_u8[b0:b0 + batch]), y[b0:b0 + batch]
            logits = model(x)
            loss_sum += F.cross_entropy(logits, t, reduction="sum").item()
            correct += int((logits.argmax(1) == t).sum())
    model.train()
    return correct / len(y), loss_sum / len(y)


# State of one training process: the data, the partition and a model, set
# once (before the round loop, so forked workers inherit it copy-on-write).
G = {}


def client_generator(seed, rnd, c):
    """Every client's shuffles come from its own stream, so the result does
    not depend on how many processes train the clients."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rnd * 10_007 + c) % (1 << 63))


def train_client(glob, c, rnd):
    """One FedAvg client task: load the global weights, --local-epochs of SGD
    over the client's examples, return (n * (local - global), n, loss sum)."""
    a, model, params = G["args"], G["model"], G["params"]
    train_x, train_y, idx_all = G["train_x"], G["train_y"], G["parts"][c]
    n = len(idx_all)
    with torch.no_grad():
        for p, g in zip(params, glob):
            p.copy_(g)
    opt = torch.optim.SGD(params, lr=a.lr, momentum=a.momentum)
    gen = client_generator(a.seed, rnd, c)
    ep_loss = 0.0
    for _ in range(a.local_epochs):
        perm = idx_all[torch.randperm(n, generator=gen)]
        ep_loss = 0.0
        for b0 in range(0, n, a.batch):
            idx = perm[b0:b0 + a.batch]
            x, y = to_input(train_x[idx]), train_y[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            # edgefl also reads every step's loss (for its running mean).
            ep_loss += loss.item() * len(idx)
    with torch.no_grad():
        delta = [(p - g).mul_(float(n)) for p, g in zip(params, glob)]
    return delta, n, ep_loss


def worker_init(threads):
    torch.set_num_threads(threads)


def worker_task(job):
    glob, c, rnd = job
    return train_client(glob, c, rnd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--partition", required=True, help="edgefl simulate --partition-out file")
    ap.add_argument("--trace", required=True, help="edgefl simulate --trace file")
    ap.add_argument("--model", choices=sorted(MODELS), default="mlp")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds to run (default: every round of the trace)")
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--eval-every", type=int, default=5,
                    help="test evaluation every K rounds and after the last (0: last only)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads in each training process")
    ap.add_argument("--workers", type=int, default=1,
                    help="training processes: 1 trains the clients one after another in this "
                         "process; N > 1 forks N workers that train N clients at once, as "
                         "Flower's simulation engine runs N virtual clients at once")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if (a.local_epochs < 1 or a.batch < 1 or a.eval_every < 0 or a.threads < 1
            or a.workers < 1):
        fail("--local-epochs, --batch, --threads and --workers must be >= 1, "
             "--eval-every >= 0")

    torch.set_num_threads(a.threads)
    t_load = time.perf_counter()
    tr_img, tr_lab = split_paths(a.data_dir, "train")
    te_img, te_lab = split_paths(a.data_dir, "t10k")
    try:
        train_x = torch.from_numpy(read_idx(tr_img).copy())
        train_y = torch.from_numpy(read_idx(tr_lab).astype(np.int64))
        test_x = torch.from_numpy(read_idx(te_img).copy())
        test_y = torch.from_numpy(read_idx(te_lab).astype(np.int64))
    except (OSError, ValueError) as e:
        fail(f"cannot read Fashion-MNIST from {a.data_dir}: {e}")
    parts = read_partition(a.partition, len(train_y))
    trace = read_trace(a.trace, len(parts))
    if a.rounds is not None:
        if a.rounds > len(trace):
            fail(f"--rounds {a.rounds} but the trace {a.trace} has {len(trace)} rounds")
        trace = trace[:a.rounds]
    if not trace:
        fail(f"the trace {a.trace} has no rounds")
    for rnd, clients in enumerate(trace, 1):
        for c in clients:
            if len(parts[c]) == 0:
                fail(f"client {c} (round {rnd}) has no training examples")

    torch.manual_seed(a.seed)
    model = MODELS[a.model]()
    params = list(model.parameters())
    model.train()
    G.update(args=a, model=model, params=params, train_x=train_x, train_y=train_y, parts=parts)
    pool = None
    if a.workers > 1:
        # Fork before this process runs any torch kernel (an OpenMP pool
        # that has run does not survive a fork); the workers inherit G.
        import multiprocessing
        pool = multiprocessing.get_context("fork").Pool(a.workers, worker_init, (a.threads,))
    glob = [p.detach().clone() for p in params]  # the server's global model
    load_s = time.perf_counter() - t_load

    curve, train_s, eval_s, updates, examples = [], 0.0, 0.0, 0, 0
    t0 = time.perf_counter()
    for rnd, clients in enumerate(trace, 1):
        t_round = time.perf_counter()
        acc_buf = [torch.zeros_like(p) for p in params]  # sum of weight * delta
        wsum, loss_sum = 0, 0.0
        if pool is None:
            results = (train_client(glob, c, rnd) for c in clients)
        else:
            # Each task carries the global weights, as a simulation engine
            # sends them to every virtual client.
            results = pool.imap(worker_task, [(glob, c, rnd) for c in clients])  # in order
        for delta, n, ep_loss in results:
            for b, d in zip(acc_buf, delta):
                b.add_(d)
            wsum += n
            loss_sum += ep_loss  # the last epoch's mean loss, weighted by examples, as edgefl
            updates += 1
            examples += n * a.local_epochs
        train_s += time.perf_counter() - t_round
        with torch.no_grad():
            for g, b in zip(glob, acc_buf):
                g.add_(b, alpha=1.0 / wsum)
        t_eval = time.perf_counter()
        rec = {"round": rnd, "train_loss": loss_sum / wsum}
        if rnd == len(trace) or (a.eval_every and rnd % a.eval_every == 0):
            with torch.no_grad():
                for p, g in zip(params, glob):
                    p.copy_(g)
            rec["test_accuracy"], rec["test_loss"] = evaluate(model, test_x, test_y, a.batch)
            eval_s += time.perf_counter() - t_eval
        curve.append(rec)
    loop_s = time.perf_counter() - t0
    # Peak RSS of this process and of each worker (a worker holds its own
    # model and optimizer; it shares the data pages with this process, so
    # the sum counts those more than once).
    workers_rss = []
    if pool is not None:
        for proc in pool._pool:  # the worker processes
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    hwm = [l for l in f if l.startswith("VmHWM:")]
                workers_rss.append(int(hwm[0].split()[1]) / 1024.0)
            except (OSError, IndexError, ValueError):
                pass
        pool.close()
        pool.join()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    final = curve[-1]
    print(json.dumps({
        "side": "torch",
        "torch_version": torch.__version__,
        "threads": a.threads,
        "workers": a.workers,
        "model": a.model,
        "parameters": sum(p.numel() for p in params),
        "clients": len(parts),
        "rounds": len(trace),
        "updates": updates,
        "examples_trained": examples,
        "local_epochs": a.local_epochs,
        "batch": a.batch,
        "lr": a.lr,
        "momentum": a.momentum,
        "load_s": load_s,
        "loop_s": loop_s,
        "train_s": train_s,
        "eval_s": eval_s,
        "final_accuracy": final["test_accuracy"],
        "final_test_loss": final["test_loss"],
        "curve": curve,
        "peak_rss_mb": rss,
        "workers_peak_rss_mb": workers_rss,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
