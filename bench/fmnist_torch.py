"""What bench/train_vs_torch.py and bench/sim_vs_torch.py share: edgefl's
Fashion-MNIST models as torch modules (same parameter names and shapes,
torch's default initialization) and the data as edgefl reads it."""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.2860, 0.3530


class LogReg(nn.Module):
    """EF_MODEL_LOGREG: one linear layer."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.fc = nn.Linear(784, n_classes)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class MLP(nn.Module):
    """EF_MODEL_MLP: 784-200-200-10 with ReLU."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(784, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, n_classes)

    def forward(self, x):
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    """EF_MODEL_CNN, the FedAvg CNN (McMahan et al. 2017)."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 512)
        self.fc2 = nn.Linear(512, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class LeNet5(nn.Module):
    """EF_MODEL_LENET5: unpadded 5x5 convolutions, 28x28 -> 16x4x4."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


MODELS = {"logreg": LogReg, "mlp": MLP, "cnn": CNN, "lenet5": LeNet5}


def read_idx(path, limit=None):
    """Decodes a u8 IDX file (gzip or plain); with `limit`, reads only the
    first `limit` items from the stream."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, = struct.unpack(">I", f.read(4))
        if magic >> 8 != 0x08:
            raise ValueError(f"{path}: not a u8 IDX file")
        dims = list(struct.unpack(">" + "I" * (magic & 0xFF), f.read(4 * (magic & 0xFF))))
        if limit is not None:
            dims[0] = min(dims[0], limit)
        count = int(np.prod(dims))
        raw = f.read(count)
    if len(raw) != count:
        raise ValueError(f"{path}: truncated")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def split_paths(data_dir, prefix):
    out = []
    for kind in ("images-idx3", "labels-idx1"):
        base = os.path.join(data_dir, f"{prefix}-{kind}-ubyte")
        out.append(base + ".gz" if os.path.exists(base + ".gz") else base)
    return out


def to_input(u8):
    # (B, 28, 28) uint8 -> (B, 1, 28, 28) float32, as ef_dataset_batch.
    return u8.unsqueeze(1).float().div_(255.0).sub_(MEAN).div_(STD)
