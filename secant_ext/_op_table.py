"""The ops of a step, each declared once: its name, its schema, and which optimizers use it.

Every backend implements each of them under the same name and signature: the reference
(``reference.py``), Triton (``_triton/``) and C++ (``csrc/``, as the custom ops
``torch.ops.secant_ext.<name>``). What is derived from this table: the ops' definitions
(``_ops.load_cpp``; C++ registers kernels only), the parameters of the C++ direct calls
(read from the registered schema on the first call), the fake kernels of the ops that
return nothing (``_fake``), the phases a backend must have (``_backends.PHASES``), the
launchers ``_triton`` exports and the ops they serve on CUDA (``_cuda_registration``).
``tests/test_op_table.py`` checks the rest against it and names what to change.

A new op: a row here and its kernels. The reference function; a Triton launcher of the
op's name in a kernel file of ``_triton.KERNEL_FILES``, with its launches listed in that
file's ``aot_variants``; a C++ kernel registered at the end of its file in ``csrc/`` with
``direct_calls::impl<&kernel>(m, "name")``. An op that returns a tensor also writes its
fake kernel in ``_fake.py``.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple


class Op(NamedTuple):
    name: str
    schema: str  # torch.library's schema language, without the name
    used_by: str  # "sgd" (the SGD family), "adam" (SecantAdam) or "both"


OPS: Tuple[Op, ...] = (
    Op("lookahead", "(Tensor[] x, Tensor[] s, Tensor(a!)[] out) -> ()", "both"),
    Op("lookahead_inplace", "(Tensor(a!)[] x, Tensor[] s, Tensor(b!)[] backup) -> ()", "both"),
    Op("restore", "(Tensor(a!)[] x, Tensor[] backup) -> ()", "both"),
    Op("average", "(Tensor(a!)[] avg, Tensor[] x, Tensor state) -> ()", "sgd"),
    Op("secant_stats", "(Tensor[] s, Tensor[] g_plus, Tensor[] g, Tensor[] x, Tensor[] m, "
       "Tensor state, *, float momentum, bool nesterov, float weight_decay, int sign_mode) "
       "-> Tensor", "sgd"),
    Op("secant_alpha", "(Tensor stats, Tensor(a!) state, *, int rule, bool safeguard, "
       "bool measure=True) -> ()", "sgd"),
    Op("update", "(Tensor(a!)[] x, Tensor[] g, Tensor(b!)[] m, Tensor stats, Tensor state, *, "
       "float momentum, bool nesterov, float weight_decay, int sign_mode) -> ()", "sgd"),
    Op("adam_stats", "(Tensor[] u, Tensor[] g_plus, Tensor[] s, Tensor[] g, Tensor state) "
       "-> Tensor", "adam"),
    Op("adam_alpha", "(Tensor stats, Tensor(a!) state, *, float beta1, float beta2, float ema, "
       "float growth, bool measure, bool record) -> ()", "adam"),
    Op("adam_update", "(Tensor(a!)[] x, Tensor[] g, Tensor(b!)[] m, Tensor(c!)[] v, "
       "Tensor(d!)[] u, Tensor(e!)[] avg, Tensor state, *, float beta1, float beta2, "
       "float eps, float weight_decay) -> ()", "adam"),
    Op("adam_previous_step", "(Tensor[] x, Tensor[] m, Tensor[] v, Tensor(a!)[] u, "
       "Tensor state, *, float eps, float weight_decay) -> ()", "adam"),
)

NAMES: Tuple[str, ...] = tuple(op.name for op in OPS)
