"""The Triton implementation of the phase functions of ``secant_ext.reference``.

Same signatures and semantics; each phase is ONE launch over all tensors of the call. The
kernel files (``KERNEL_FILES``) each hold kernels, their launchers (named as the ops of
``_op_table``, which this package exports) and the launches they make (``aot_variants``,
compiled by ``_aot``); ``_tables`` builds the pointer tables. Tensors on CUDA, or on CPU
under ``TRITON_INTERPRET=1`` (how the tests run them). No function reads a device value on
the host, so a step never synchronizes.

``num_partial_rows(numels)`` is the number of rows P of the ``[P, K]`` table
``secant_stats`` returns for tensors of those sizes (fake kernels use it).
"""
import importlib

from .. import _op_table
from ._tables import clear_cache, num_partial_rows

KERNEL_FILES = ("lookahead", "stats", "alpha", "update", "adam")


def _launchers() -> dict:
    """Each op's launcher, by name, from the kernel file that defines it."""
    found = {}
    for file in KERNEL_FILES:
        module = importlib.import_module(f"{__name__}.{file}")
        found.update({name: getattr(module, name) for name in _op_table.NAMES
                      if getattr(getattr(module, name, None), "__module__", None)
                      == module.__name__})
    return found


# (after this, the attributes `lookahead` and `update` are the launchers, not the files)
globals().update(_launchers())

__all__ = [*_op_table.NAMES, "num_partial_rows", "clear_cache"]
