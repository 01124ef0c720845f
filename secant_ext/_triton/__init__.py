"""The Triton implementation of the phase functions of ``secant_ext.reference``.

Same signatures and semantics; each phase is ONE launch over all tensors of the call (one
file per phase: ``lookahead``, ``stats``, ``alpha``, ``update``; ``_tables`` for the pointer
tables). Tensors on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (how the tests run them).
No function reads a device value on the host, so a step never synchronizes.

``num_partial_rows(numels)`` is the number of rows P of the ``[P, K]`` table
``secant_stats`` returns for tensors of those sizes (fake kernels use it).
"""
from ._tables import clear_cache, num_partial_rows
from .adam import adam_alpha, adam_previous_step, adam_stats, adam_update
from .alpha import secant_alpha
from .lookahead import average, lookahead, lookahead_inplace, restore
from .stats import secant_stats
from .update import update

__all__ = ["lookahead", "lookahead_inplace", "restore", "average", "secant_stats", "secant_alpha", "update",
           "adam_stats", "adam_alpha", "adam_update", "adam_previous_step", "num_partial_rows",
           "clear_cache"]
