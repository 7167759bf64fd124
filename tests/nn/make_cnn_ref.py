#!/usr/bin/python3
"""PyTorch reference for tests/nn/test_torch_cnn.c: the FedAvg CNN on one batch.

Usage: make_cnn_ref.py BATCH.safetensors OUT.safetensors

BATCH is written by the C test with ef_safetensors_save: "x" (N, 1, 28, 28),
the batch edgefl's ef_dataset_batch built from the Fashion-MNIST test set,
"y" (N) its labels stored as floats, and the metadata "edgefl.indices" (the
comma-separated test-set indices), "edgefl.data_dir" and "seed". Before
using the batch this script rebuilds it independently from the IDX files
(gzip + numpy, (p/255 - 0.2860)/0.3530 in float32) and requires the same
bits and labels, so edgefl's data path is checked too.

It then builds edgefl's CNN in torch with torch's default initialization
from torch.manual_seed(seed) (conv1: Conv2d(1,32,5,padding=2) -> ReLU ->
MaxPool2d(2); conv2: Conv2d(32,64,5,padding=2) -> ReLU -> MaxPool2d(2);
flatten; fc1: Linear(3136,512) -> ReLU; fc2: Linear(512,10); mean
cross-entropy), runs it and torch.optim.SGD (lr 0.03, momentum 0.9) for two
steps on the batch in float32 and in float64, and writes OUT, a
safetensors file written by hand (Debian 12 has no `safetensors` package;
same format code as tests/io/safetensors_peer.py) holding:

  <param>                 F32  the initial parameters (edgefl loads these)
  ref64.loss, ref32.loss  F64/F32 (1)  mean loss at the initial parameters
  ref64.grad.<param>      F64  gradients, computed in float64
  ref32.grad.<param>      F32  gradients, computed in float32 (a yardstick:
                               how far torch's own float32 lands from float64)
  ref64.step1.<param>     F64  parameters after one SGD step on the batch
  ref64.loss2             F64  loss at the step-1 parameters
  ref64.step2.<param>     F64  parameters after a second step on the same
                               batch (the first one where momentum matters)
  ref32.step1/2.<param>   F32  the same steps taken in float32 (yardstick)

The float64 run follows the float32 run's ReLU masks and max-pool indices
(see reference_pass for why, and for the check that makes this safe).
The float64 model starts from exactly the float32 initial values.
Exit status 0 on success, 1 with a message on stderr otherwise.
"""
import copy
import gzip
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from st_numpy import read_safetensors, write_safetensors  # this directory

LR = 0.03
MOMENTUM = 0.9
MEAN, STD = 0.2860, 0.3530
PARAM_NAMES = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
               "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


class CNN(nn.Module):
    """edgefl's EF_MODEL_CNN (McMahan et al. 2017), same parameter names."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 512)
        self.fc2 = nn.Linear(512, n_classes)

    def forward(self, x, path=None):
        """Returns (logits, decisions): the ReLU masks and max-pool indices.

        With path=None this is the ordinary forward (F.relu, F.max_pool2d).
        Given the decisions of another run, it stays on that run's piece of
        the piecewise-linear network: ReLU multiplies by the given mask and
        max-pool gathers the given indices.
        """
        rec = []

        def relu(z):
            if path is None:
                rec.append(z > 0)
                return F.relu(z)
            rec.append(path[len(rec)])
            return z * rec[-1].to(z.dtype)

        def pool(a):
            if path is None:
                out, idx = F.max_pool2d(a, 2, return_indices=True)
                rec.append(idx)
                return out
            idx = path[len(rec)]
            rec.append(idx)
            return a.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)

        x = pool(relu(self.conv1(x)))
        x = pool(relu(self.conv2(x)))
        x = relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x), rec


def read_idx(path):
    """Decodes a gzip-compressed IDX file of unsigned bytes."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not a u8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def check_batch(x, y, indices, data_dir):
    """Rebuilds the batch from the IDX files and requires identical bits."""
    images = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))
    px = images[indices].astype(np.float32)
    want = (px / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    want = want.reshape(x.shape)
    if not np.array_equal(want.view(np.uint32), x.view(np.uint32)):
        bad = np.count_nonzero(want != x)
        raise ValueError(f"ef_dataset_batch differs from numpy's normalization in {bad} "
                         f"values (max |diff| {np.abs(want - x).max():.3g})")
    if not np.array_equal(labels[indices].astype(np.int64), y):
        raise ValueError(f"labels differ: edgefl {y.tolist()}, IDX file "
                         f"{labels[indices].tolist()}")


def loss_and_grads(model, x, y, path=None):
    """Mean cross-entropy and its gradients; also the logits and decisions."""
    model.zero_grad(set_to_none=True)
    logits, rec = model(x, path)
    loss = F.cross_entropy(logits, y)  # mean over the batch
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return loss.detach(), grads, logits.detach(), rec


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def count_flips(a, b):
    return sum(int((u != v).sum()) for u, v in zip(a, b))


def reference_pass(m64, x64, y, path, when):
    """Float64 loss and gradients on the piece `path` of float32's forward.

    The gradient jumps where a ReLU input crosses 0 or two max-pool inputs
    swap order; at a near-tie (a real batch has some: two conv1 outputs 1e-8
    apart) float32 rounding picks a side, and no float32 implementation can
    be held to a float64 gradient of the other side. So the reference takes
    float32 torch's decisions, with every operation in float64. The
    unconstrained float64 forward must then give the same logits up to a
    tiny difference, which shows that every decision that differs is a
    near-tie and not a different path. Returns (None, None) on failure.
    """
    _, _, free_logits, free_path = loss_and_grads(m64, x64, y)
    loss, grads, logits, _ = loss_and_grads(m64, x64, y, path)
    gap = (logits - free_logits).abs().max().item() / free_logits.abs().max().item()
    print(f"make_cnn_ref: {when}: float32 and float64 differ in {count_flips(path, free_path)} "
          f"of {sum(t.numel() for t in path)} ReLU/max-pool decisions; logits on float32's "
          f"piece vs unconstrained float64: max rel diff {gap:.2e}")
    if not gap <= 1e-6:
        print(f"make_cnn_ref: {when}: float32 took another piece of the network than a "
              f"near-tie explains (logits differ by {gap:.3g})", file=sys.stderr)
        return None, None
    return loss, grads


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    batch_path, out_path = sys.argv[1], sys.argv[2]
    try:
        batch, meta = read_safetensors(batch_path)
        x_np = batch["x"].astype(np.float32)
        y_np = batch["y"].astype(np.int64)
        if not np.array_equal(y_np.astype(np.float32), batch["y"]):
            raise ValueError("labels are not whole numbers")
        indices = np.array([int(s) for s in meta["edgefl.indices"].split(",")])
        check_batch(x_np, y_np, indices, meta["edgefl.data_dir"])
        seed = int(meta["seed"])
    except (ValueError, KeyError, OSError) as e:
        print(f"make_cnn_ref: {batch_path}: {e}", file=sys.stderr)
        return 1

    torch.manual_seed(seed)
    m32 = CNN()  # torch's default init: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(fan_in))
    m64 = copy.deepcopy(m32).double()
    names = [n for n, _ in m32.named_parameters()]
    if names != PARAM_NAMES:
        print(f"make_cnn_ref: parameter names {names} != {PARAM_NAMES}", file=sys.stderr)
        return 1
    init = params_of(m32)
    x32, y = torch.from_numpy(x_np.copy()), torch.from_numpy(y_np)
    x64 = x32.double()

    # The float32 run, torch.optim.SGD in float32: the yardstick gradients
    # and, at each step, the ReLU masks and max-pool indices.
    opt32 = torch.optim.SGD(m32.parameters(), lr=LR, momentum=MOMENTUM)
    loss32, g32, _, path0 = loss_and_grads(m32, x32, y)
    opt32.step()
    step1_32 = params_of(m32)
    _, _, _, path1 = loss_and_grads(m32, x32, y)
    opt32.step()
    step2_32 = params_of(m32)

    # The float64 reference, on float32's piece of the network at each step.
    opt64 = torch.optim.SGD(m64.parameters(), lr=LR, momentum=MOMENTUM)
    loss64, g64 = reference_pass(m64, x64, y, path0, "initial parameters")
    opt64.step()
    step1 = params_of(m64)
    loss2, _ = reference_pass(m64, x64, y, path1, "after step 1")
    opt64.step()
    step2 = params_of(m64)
    if loss64 is None or loss2 is None:
        return 1

    out = {}
    for n in names:
        out[n] = init[n].numpy()
    out["ref64.loss"] = loss64.reshape(1).numpy()
    out["ref32.loss"] = loss32.reshape(1).numpy()
    out["ref64.loss2"] = loss2.reshape(1).numpy()
    for n in names:
        out["ref64.grad." + n] = g64[n].numpy()
        out["ref32.grad." + n] = g32[n].numpy()
        out["ref64.step1." + n] = step1[n].numpy()
        out["ref64.step2." + n] = step2[n].numpy()
        out["ref32.step1." + n] = step1_32[n].numpy()
        out["ref32.step2." + n] = step2_32[n].numpy()
    write_safetensors(out_path, out, {"format": "pt", "torch": torch.__version__,
                                      "seed": str(seed), "lr": str(LR),
                                      "momentum": str(MOMENTUM)})
    print(f"make_cnn_ref: torch {torch.__version__}, batch {len(y_np)}, seed {seed}, "
          f"loss float64 {loss64.item():.9f} float32 {loss32.item():.9f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
