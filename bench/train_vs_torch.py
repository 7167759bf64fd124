#!/usr/bin/python3
"""The PyTorch side of bench/train_vs_torch: edgefl's CNN trained the way
`edgefl train` trains it, as a minimal, well-written PyTorch loop.

Model: the FedAvg CNN (conv5x5x32-pool-conv5x5x64-pool-fc512-fc10, mean
cross-entropy) with torch's default initialization, torch.optim.SGD with
momentum, constant learning rate, float32 on the CPU.

Data, held like edgefl holds it: `edgefl train` reads only the first
--limit training images into a uint8 array, trains, frees them, then reads
the first --eval-limit test images and evaluates; each batch is converted
to normalized floats inside the loop. With --hold slice (the default) this
script does the same. With --hold full it keeps both whole splits in
memory for the whole run (a reference point: PyTorch's peak then grows by
the unused images). Batches are gathered by plain tensor indexing with a fresh
permutation every epoch (no DataLoader, no worker processes), converted
with (x/255 - 0.2860)/0.3530 as edgefl does.

Timing: train_samples_per_s is the number of samples trained divided by
the wall time of the epoch loop alone (shuffling, batch gathering and
conversion, forward, backward, optimizer step), which is what edgefl
reports as train_samples_per_s; loading and evaluation are outside it.

Prints one JSON object on stdout. Thread count: torch.set_num_threads(T);
the caller also sets OMP_NUM_THREADS / MKL_NUM_THREADS /
OPENBLAS_NUM_THREADS.
"""
import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from fmnist_torch import CNN, read_idx, split_paths, to_input


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--limit", type=int, default=10000, help="training images (first N)")
    ap.add_argument("--eval-limit", type=int, default=10000, help="test images (first N)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hold", choices=("full", "slice"), default="slice",
                    help="hold only the images in use, like edgefl (slice), or both whole "
                         "splits throughout (full)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    t_load = time.perf_counter()
    tr_img, tr_lab = split_paths(a.data_dir, "train")
    te_img, te_lab = split_paths(a.data_dir, "t10k")
    lim = None if a.hold == "full" else a.limit
    elim = None if a.hold == "full" else a.eval_limit
    train_x = torch.from_numpy(read_idx(tr_img, lim).copy())
    train_y = torch.from_numpy(read_idx(tr_lab, lim).astype(np.int64))
    if a.hold == "full":
        test_x = torch.from_numpy(read_idx(te_img, elim).copy())
        test_y = torch.from_numpy(read_idx(te_lab, elim).astype(np.int64))
    n = min(a.limit, len(train_y))
    load_s = time.perf_counter() - t_load

    torch.manual_seed(a.seed)
    model = CNN()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    gen = torch.Generator().manual_seed(a.seed)
    model.train()
    done, loss_sum, seen = 0, 0.0, 0
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum, seen = 0.0, 0
        for b0 in range(0, n, a.batch):
            idx = perm[b0:b0 + a.batch]
            x, y = to_input(train_x[idx]), train_y[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            # edgefl also reads every step's loss (for its running mean).
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            done += len(idx)
    train_s = time.perf_counter() - t0

    if a.hold == "slice":
        # as edgefl: the training images go, then the test images are read
        del train_x, train_y
        test_x = torch.from_numpy(read_idx(te_img, elim).copy())
        test_y = torch.from_numpy(read_idx(te_lab, elim).astype(np.int64))
    n_test = min(a.eval_limit, len(test_y))
    model.eval()
    correct, test_loss = 0, 0.0
    with torch.no_grad():
        for b0 in range(0, n_test, a.batch):  # edgefl evaluates in batches of --batch too
            x, y = to_input(test_x[b0:b0 + a.batch]), test_y[b0:b0 + a.batch]
            logits = model(x)
            test_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
    print(json.dumps({
        "side": "torch",
        "torch_version": torch.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "threads": torch.get_num_threads(),
        "hold": a.hold,
        "train_examples": n,
        "test_examples": n_test,
        "epochs": a.epochs,
        "batch": a.batch,
        "lr": a.lr,
        "train_samples_per_s": done / train_s,
        "train_s": train_s,
        "load_s": load_s,
        "final_train_loss": loss_sum / seen,
        "test_accuracy": correct / n_test,
        "test_loss": test_loss / n_test,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
