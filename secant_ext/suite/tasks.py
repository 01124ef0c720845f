"""What a workload is made of: a model, a stream of training batches, a loss and a
held-out evaluation, built for one seed.

Every method of a run gets the same ``Task``: the same initial weights (the model is built
after ``torch.manual_seed(seed)``), the same batches in the same order (``batches(seed)``
starts a fresh, seeded stream each time) and the same held-out data. Nothing here is
downloaded: the corpora are the running Python's own files, the small data sets ship
with scikit-learn, and MNIST is read only from a ``--data-dir`` the user gives.
"""
from __future__ import annotations

import glob
import math
import os
import sysconfig
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..experiments.datasets import Dataset
from ..experiments.models import cross_entropy, predictions
from ..experiments.textlm import bits_per_byte, val_starts, windows

Batch = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class Task:
    """One workload, built for one seed."""
    model_fn: Callable[[], nn.Module]           # a fresh model (seeded by the caller)
    batches: Callable[[int], Iterator[Batch]]   # seed -> the training batches, in order
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    evaluate: Callable[[nn.Module], Dict[str, float]]  # {"metric": ..., "loss": ...}
    data: str                                   # what the data is, for the listing
    # the hidden matrices for Muon and the rest for AdamW (transformers only)
    muon_split: Optional[Callable[[nn.Module], Tuple[List[nn.Parameter],
                                                     List[nn.Parameter]]]] = None
    # a term added to every training loss (the L2 term of a regularized convex problem)
    penalty: Optional[Callable[[nn.Module], torch.Tensor]] = None


def trainable(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# -- batches ------------------------------------------------------------------------------
def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch: int) -> Callable[[int], Iterator]:
    """Shuffled epochs of full batches, the order drawn from a generator seeded by the
    seed: every method sees the same batches in the same order, epoch after epoch."""
    n = len(x)
    batch = min(batch, n)
    per_epoch = max(n // batch, 1)

    def stream(seed: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed)
        while True:
            perm = torch.randperm(n, generator=gen)
            for i in range(per_epoch):
                idx = perm[i * batch:(i + 1) * batch]
                yield x[idx], y[idx]
    return stream


def window_batches(data: torch.Tensor, context: int, batch: int) -> Callable[[int], Iterator]:
    """Random byte windows of ``context + 1`` bytes, the starts drawn from a generator
    seeded by the seed."""
    def stream(seed: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(seed)
        while True:
            starts = torch.randint(0, len(data) - context, (batch,), generator=gen)
            yield windows(data, starts, context)
    return stream


# -- evaluations ---------------------------------------------------------------------------
def classification_eval(x: torch.Tensor, y: torch.Tensor, chunk: int = 512):
    """Test error (percent) as the metric, and the mean test cross-entropy."""
    @torch.no_grad()
    def evaluate(model: nn.Module) -> Dict[str, float]:
        was = model.training
        model.eval()
        loss, wrong = 0.0, 0
        for i in range(0, len(x), chunk):
            out = model(x[i:i + chunk])
            loss += float(cross_entropy(out, y[i:i + chunk])) * len(out)
            wrong += int((predictions(out) != y[i:i + chunk]).sum())
        model.train(was)
        return {"metric": 100.0 * wrong / len(x), "loss": loss / len(x)}
    return evaluate


def mse_eval(x: torch.Tensor, target_of: Callable[[torch.Tensor], torch.Tensor]):
    """The mean squared error on held-out data, as both metric and loss."""
    @torch.no_grad()
    def evaluate(model: nn.Module) -> Dict[str, float]:
        was = model.training
        model.eval()
        mse = float(F.mse_loss(model(x), target_of(x)))
        model.train(was)
        return {"metric": mse, "loss": mse}
    return evaluate


def bpb_eval(val: torch.Tensor, context: int, count: int):
    """Validation bits per byte on ``count`` fixed windows spread over ``val``; the loss
    is the same quantity in nats."""
    vx, vy = windows(val, val_starts(len(val), context, count), context)

    def evaluate(model: nn.Module) -> Dict[str, float]:
        bpb = bits_per_byte(model, vx, vy)
        return {"metric": bpb, "loss": bpb * math.log(2)}
    return evaluate


# -- corpora ------------------------------------------------------------------------------
def c_headers_corpus(max_bytes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, str]:
    """The running Python's C headers (``*.h`` under ``sysconfig``'s include folder,
    sorted by path, concatenated), split 90/10: text in another language than the
    standard library's Python, for the fine-tuning workloads."""
    folder = sysconfig.get_path("include")
    paths = sorted(glob.glob(os.path.join(folder, "**", "*.h"), recursive=True))
    data = b"".join(open(p, "rb").read() for p in paths)
    if max_bytes:
        data = data[:max_bytes]
    if len(data) < 64 * 1024:
        raise ValueError(f"the Python C headers under {folder} hold only {len(data)} bytes "
                         "(a Python installed without its headers?); the fine-tuning "
                         "workloads need them")
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    n_val = len(t) // 10
    return (t[:-n_val].clone(), t[-n_val:].clone(),
            f"the running Python's C headers ({len(paths)} *.h files, {len(data):,} bytes)")


# -- models -------------------------------------------------------------------------------
class ByteLSTM(nn.Module):
    """A byte-level LSTM language model: embedding, one LSTM layer, an output layer."""

    def __init__(self, d_embed: int = 64, hidden: int = 256, layers: int = 1, vocab: int = 256):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_embed)
        self.lstm = nn.LSTM(d_embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, idx):
        out, _ = self.lstm(self.tok(idx))
        return self.head(out)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (a 1x1 conv-BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout)))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


def resnet(in_channels: int, num_classes: int, width: int = 16, blocks: int = 2) -> nn.Module:
    """A small residual CNN with BatchNorm: a stem, ``blocks`` residual blocks at each of two
    widths (the second halves the resolution), global average pooling, a linear head."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    for i in range(blocks):
        layers.append(ResidualBlock(width, width))
    for i in range(blocks):
        layers.append(ResidualBlock(width if i == 0 else 2 * width, 2 * width,
                                    stride=2 if i == 0 else 1))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes)]
    return nn.Sequential(*layers)


class TinyViT(nn.Module):
    """A tiny vision transformer: non-overlapping patches, learned position embeddings,
    pre-LN encoder blocks, mean pooling and a linear head."""

    def __init__(self, side: int, in_channels: int, num_classes: int, patch: int,
                 d: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        if side % patch:
            raise ValueError(f"image side {side} is not a multiple of the patch size {patch}")
        self.embed = nn.Conv2d(in_channels, d, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, (side // patch) ** 2, d))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x):
        h = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln(h).mean(1))


def mlp(sizes: List[int], activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Module:
    """Linear layers of the given sizes with ``activation`` between them."""
    layers: List[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def hidden_matrices(model: nn.Module):
    """Muon's split of a transformer: the 2-D weights of the blocks (attention and MLP)
    for Muon, everything else (embeddings, head, biases, norms) for AdamW."""
    hidden, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (hidden if p.ndim == 2 and name.startswith("blocks.") else rest).append(p)
    return hidden, rest


def classification_task(data: Dataset, model_fn, batch: int) -> Task:
    return Task(model_fn, epoch_batches(data.x_train, data.y_train, batch), cross_entropy,
                classification_eval(data.x_test, data.y_test), data.describe())
