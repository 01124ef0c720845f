"""Grad mode on the step's path, set by the calls ``torch.no_grad`` and
``torch.enable_grad`` make, without their context-manager objects.

Entering and leaving one of those runs four or five Python frames (the decorator's
wrapper, ``__new__``, ``__init__``, ``__enter__``, ``__exit__``, and for ``no_grad``
``torch.set_grad_enabled``, a class too), a measurable share of a small model's step on
the caches a training closure leaves behind (docs/PERFORMANCE.md, 'The step's fixed
cost'). The behaviour is theirs: the previous
mode comes back on the way out, also when the call raises.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")

is_enabled = torch.is_grad_enabled
set_enabled = torch._C._set_grad_enabled  # what torch.no_grad/enable_grad call


def call_with_grad(fn: Callable[[], T]) -> T:
    """``fn()`` as ``with torch.enable_grad(): fn()`` runs it."""
    was = is_enabled()
    set_enabled(True)
    try:
        return fn()
    finally:
        set_enabled(was)
