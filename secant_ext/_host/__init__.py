"""The host fast path: the step's work on Python objects rather than tensors' data, fenced
here because it leans on private torch APIs and CPython internals (``torch._C``'s grad
mode, ``Tensor._is_view``, ``torch.optim``'s hook registries, ``sys._getframe``), each of
which a torch or Python release may change. Nothing outside this package uses them
(``tests/test_house.py`` checks), so a break shows here first.

- ``passes``: ``p.grad`` moved out and put back, ``p.data`` pointed at the lookahead
  buffers and back (Python, or their C++ twins in ``csrc/host_passes.cpp``).
- ``grad_mode``: grad mode set without context-manager objects.
- ``step_hooks``: ``torch.optim``'s wrapper around ``step``, the profiler label only while a
  profiler runs.
- ``callers``: training loops that call ``step()`` through a wrapper (accelerate),
  recognised so that their pitfalls fail loudly.

The reason for each is measured in docs/PERFORMANCE.md, 'The step's fixed cost'.
"""
from . import callers, grad_mode
from .passes import PYTHON, copied_views, for_params, move_grads_out, move_grads_out_raw
from .step_hooks import hooked_step

__all__ = ["PYTHON", "callers", "copied_views", "for_params", "grad_mode", "hooked_step",
           "move_grads_out", "move_grads_out_raw"]
