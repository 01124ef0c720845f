"""torch.distributed support: what the optimizers refuse, and why.

DDP needs nothing from here (its gradients arrive averaged, so every rank computes the
same alpha); a manual shard passes ``process_group=`` and ``SecantOptimizer._reduce_tables``
sums the statistics over it. See ``docs/DISTRIBUTED.md``.
"""
from __future__ import annotations

import torch

DTENSOR_REFUSED = (
    "DTensor parameters (FSDP2 fully_shard, tensor parallel) are not supported: the "
    "lookahead evaluation points p.data at a buffer holding x + s, and FSDP2 all-gathers "
    "from its own sharded storage, so the closure would silently run at x again (and the "
    "phase kernels take plain tensors). Shard manually and pass process_group= (each rank "
    "gives the optimizer plain tensors holding its slice of every parameter), or use DDP; "
    "docs/DISTRIBUTED.md shows both recipes")


def is_dtensor(t: torch.Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor``; imports it only for tensor
    subclasses, so plain parameters cost nothing."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)
