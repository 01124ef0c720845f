"""The Triton launchers as the CUDA kernels of the ``secant_ext::`` custom ops.

``_ops.load_cpp`` defines the schemas (from ``_op_table``) and loads the CPU kernels; this
module adds the CUDA implementation, so ``torch.ops.secant_ext.*`` on CUDA tensors runs the
Triton kernels, and ``torch.compile`` graphs call them as single opaque ops sized by the
fake kernels of ``_fake``. The launchers are not wrapped with ``torch.library.wrap_triton``
/ ``triton_op``: they build their pointer tables from ``data_ptr()`` on the host, which
has no meaning on the fake tensors of a trace, so the ops must stay opaque to the tracer.

Imported by ``_backends._cpp()`` once the extension loads and triton is installed.
Importing it touches no GPU; a CPU-only machine simply never dispatches here.
"""
import torch

from . import _op_table, _triton

for _name in _op_table.NAMES:
    torch.library.register_kernel(f"secant_ext::{_name}", "cuda", getattr(_triton, _name))
