"""Context managers to register with ``SecantOptimizer.register_lookahead_context``: each
wraps every lookahead evaluation (the closure's run at ``x_t + s``)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.nn.modules.batchnorm import _NormBase


@contextlib.contextmanager
def frozen_batchnorm(model: torch.nn.Module) -> Iterator[None]:
    """Keep the running statistics (mean, var, batch count) of every BatchNorm /
    InstanceNorm module of ``model`` as they were on entry. Exact: buffers are restored
    with ``copy_``. The lookahead forward pass runs the model at ``x + s``, a point the
    optimizer never steps to; statistics updated there would describe the wrong weights.
    Register it with the optimizer so it wraps each lookahead evaluation::

        opt.register_lookahead_context(lambda: secant_ext.frozen_batchnorm(model))
    """
    saved = []
    for module in model.modules():
        if isinstance(module, _NormBase) and module.track_running_stats:
            buffers = [b for b in (module.running_mean, module.running_var,
                                   module.num_batches_tracked) if b is not None]
            saved.append((buffers, [b.clone() for b in buffers]))
    try:
        yield
    finally:
        with torch.no_grad():
            for buffers, copies in saved:
                for b, c in zip(buffers, copies):
                    b.copy_(c)
