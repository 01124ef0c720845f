"""The models of the experiments and their losses."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mlp(in_features: int, num_classes: int, hidden: int = 128) -> nn.Module:
    """One hidden ReLU layer, the paper's MNIST model."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def small_cnn(in_channels: int, side: int, num_classes: int) -> nn.Module:
    """Two 3x3 conv + pool blocks and a linear head: small enough for a CPU epoch."""
    pooled = side // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * pooled * pooled, num_classes))


def linear(in_features: int, num_classes: int) -> nn.Module:
    """Logistic regression / linear SVM: one output for a binary problem."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 1 if num_classes == 2
                                                 else num_classes))


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multiclass cross-entropy, or the logistic loss for a single binary output."""
    if out.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype))
    return F.cross_entropy(out, y)


def squared_hinge(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The L2-SVM loss ``mean(max(0, 1 - y f)^2)`` with ``y`` in {-1, +1}."""
    sign = y.to(out.dtype) * 2 - 1
    return torch.clamp(1 - sign * out.squeeze(-1), min=0).pow(2).mean()


def predictions(out: torch.Tensor) -> torch.Tensor:
    """Class predictions: the sign for a single output, the argmax otherwise."""
    if out.shape[-1] == 1:
        return (out.squeeze(-1) > 0).long()
    return out.argmax(-1)
