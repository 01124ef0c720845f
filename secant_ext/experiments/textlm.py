"""The pieces of ``reproduce lm``: a byte corpus built from the running Python's standard
library, a small byte-level decoder-only transformer, and bits-per-byte evaluation.

Nothing is downloaded: the corpus is the ``*.py`` files directly in the standard-library
folder (``os.path.dirname(os.__file__)``), sorted by name and concatenated as bytes; the
last 10% is held out for validation. Another Python version gives another corpus, so the
run records its size and SHA-256.
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 256  # bytes


@dataclass
class Corpus:
    train: torch.Tensor  # uint8, the first 90% of the bytes
    val: torch.Tensor    # uint8, the last 10%
    files: List[str]     # file names, in the order concatenated
    source: str          # the folder they came from (not recorded: machine-specific)
    sha256: str          # of all the bytes, train then val

    @property
    def n_bytes(self) -> int:
        return len(self.train) + len(self.val)

    def describe(self) -> str:
        return (f"Python {platform.python_version()} standard library: {len(self.files)} "
                f"*.py files, {self.n_bytes:,} bytes ({len(self.train):,} train / "
                f"{len(self.val):,} validation), sha256 {self.sha256[:16]}...")

    def info(self) -> Dict[str, object]:
        """What meta.json records: enough to tell corpora of other Pythons apart."""
        return {"python": platform.python_version(), "files": len(self.files),
                "bytes": self.n_bytes, "train_bytes": len(self.train),
                "val_bytes": len(self.val), "val_fraction": VAL_FRACTION,
                "sha256": self.sha256, "source": "*.py directly in os.path.dirname(os.__file__)"}


VAL_FRACTION = 0.1


def add_model_arguments(p) -> None:
    """The options of the corpus, the model and its validation, shared by ``lm`` and
    ``lm-diagnose``; the model's defaults are the suite's ``lm`` workload."""
    from ..suite.workloads import LM_CONTEXT, LM_D_MODEL, LM_HEADS, LM_LAYERS
    p.add_argument("--d-model", type=int, default=LM_D_MODEL,
                   help=f"model width (default {LM_D_MODEL})")
    p.add_argument("--layers", type=int, default=LM_LAYERS,
                   help=f"transformer blocks (default {LM_LAYERS})")
    p.add_argument("--heads", type=int, default=LM_HEADS,
                   help=f"attention heads (default {LM_HEADS})")
    p.add_argument("--context", type=int, default=LM_CONTEXT,
                   help=f"context in bytes (default {LM_CONTEXT})")
    p.add_argument("--val-windows", type=int, default=1024,
                   help="fixed validation windows (default 1024)")
    p.add_argument("--max-bytes", type=int,
                   help="use only the first N bytes of the corpus (quick runs)")


def split_sizes(n: int, val_fraction: float = VAL_FRACTION):
    """(train, val) byte counts: the last ``floor(n * val_fraction)`` bytes are held out."""
    n_val = int(n * val_fraction)
    return n - n_val, n_val


def stdlib_folder() -> str:
    return os.path.dirname(os.__file__)


def load_corpus(folder: Optional[str] = None, max_bytes: Optional[int] = None) -> Corpus:
    """The ``*.py`` files directly in ``folder`` (default: this interpreter's standard
    library), sorted by name, concatenated; ``max_bytes`` keeps only the first bytes
    (before the split, for quick runs)."""
    folder = folder or stdlib_folder()
    names = sorted(f for f in os.listdir(folder)
                   if f.endswith(".py") and os.path.isfile(os.path.join(folder, f)))
    parts = []
    for name in names:
        with open(os.path.join(folder, name), "rb") as fh:
            parts.append(fh.read())
    data = b"".join(parts)
    if max_bytes:
        data = data[:max_bytes]
    if len(data) < 2 * 1024:
        raise ValueError(f"the corpus from {folder} has only {len(data)} bytes")
    n_train, _ = split_sizes(len(data))
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return Corpus(t[:n_train].clone(), t[n_train:].clone(), names, folder,
                  hashlib.sha256(data).hexdigest())


# -- the model --------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class ByteTransformer(nn.Module):
    """Decoder-only byte-level transformer: token and learned position embeddings, pre-LN
    blocks, a final LayerNorm and an untied output layer with bias. PyTorch's default
    initialization, no dropout. With d=128, 2 blocks, context 64: 470,784 parameters."""

    def __init__(self, d: int = 128, layers: int = 2, heads: int = 4, context: int = 64,
                 vocab: int = VOCAB):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by {heads} heads")
        self.context = context
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(d: int, layers: int, context: int, vocab: int = VOCAB) -> int:
    """The parameter count by hand: embeddings, per block 2 LayerNorms, qkv, proj and the
    4x MLP (all with biases), the final LayerNorm and the untied head with bias."""
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return vocab * d + context * d + layers * block + 2 * d + (d * vocab + vocab)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-byte cross-entropy in nats."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# -- batches and validation -----------------------------------------------------------------
def windows(data: torch.Tensor, starts: torch.Tensor, context: int):
    """Inputs ``data[s:s+context]`` and next-byte targets ``data[s+1:s+context+1]``."""
    offs = starts[:, None] + torch.arange(context + 1)[None, :]
    w = data[offs].long()
    return w[:, :-1], w[:, 1:]


def batch_starts(n: int, context: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n - context, (batch,), generator=gen)


def val_starts(n: int, context: int, count: int) -> torch.Tensor:
    """``count`` fixed window starts spread evenly over the validation bytes."""
    last = n - context - 1
    if last < 0:
        raise ValueError(f"the validation set ({n} bytes) is shorter than one window")
    return torch.linspace(0, last, count).round().long()


@torch.no_grad()
def bits_per_byte(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> float:
    """Mean next-byte cross-entropy over every position of the windows, in bits."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(x), chunk):
        logits = model(x[i:i + chunk])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       y[i:i + chunk].reshape(-1), reduction="sum"))
    model.train(was_training)
    return total / y.numel() / math.log(2)


def unigram_bits(data: torch.Tensor) -> float:
    """Entropy (bits per byte) of the bytes' own frequencies: the bits per byte of the best
    context-free model of ``data``, the baseline a language model should beat."""
    counts = torch.bincount(data.long().reshape(-1), minlength=VOCAB).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())
