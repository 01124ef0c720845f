"""Loading the C++ extension ``secant_ext._C``: the one module that imports it, and a leaf
(it imports ``_layout`` and ``_op_table`` alone at load time).

``compiled()`` is the extension as it imports, or None when it is not built: the question
"is it built?" (``_backends.cpp_available``) and the host passes (``_host``), which read
no layout. ``extension()`` imports it and checks that the layout constants it was
compiled with are those of ``_layout`` (RuntimeError naming each one that differs).
``load_cpp()`` defines the ops from ``_op_table`` (the one place their schemas are
written), does that, and registers the fake kernels of ``_fake``; it returns
``torch.ops.secant_ext``, whose CPU kernels importing the extension registered.
``_backends._cpp()`` calls it, and registers the Triton launchers as the ops' CUDA kernels
when triton is installed.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Dict, Optional

import torch

from . import _layout, _op_table

_STATE_FIELDS = ("ALPHA", "STEP", "TAKEN", "SKIPPED", "CLIPPED", "LAST_SKIPPED",
                 "LAST_CLIPPED", "MOMENTUM_READY", "DOT", "S_SQ", "Y_SQ", "G_SQ", "STALLED",
                 "LR", "MAX_GRAD_NORM", "STEP_SIZE", "ALPHA_EMA", "BETA_POWER", "MEASURED",
                 "LAST_MEASURED", "CARRY_BETA", "AVG_WEIGHT", "AVG_FLOOR", "CLIP_G_SQ_OTHERS",
                 "ADAM_A", "ADAM_C", "PREV_STEP_SCALE", "BETA1_POWER", "BETA2_POWER",
                 "STATE_SIZE", "ADAM_LAST_A", "ADAM_LAST_B", "GUARDED", "LAST_GUARDED")
_STATS_COLUMNS = ("COL_DOT", "COL_S_SQ", "COL_Y_SQ", "COL_G_SQ", "NUM_STATS", "COL_UY",
                  "COL_US")
_SIGN_MODES = ("SIGN_NONE", "SIGN_SCALED", "SIGN_UNSCALED")
_CHUNKING = ("CHUNK_NUMEL",)


def expected_constants() -> Dict[str, int]:
    """The name and value of every layout constant ``_C`` exports, as ``_layout`` says.

    The rule codes of ``_layout.RULES`` are exported as ``RULE_<NAME>`` (``RULE_SECANT``...)."""
    names = _STATE_FIELDS + _STATS_COLUMNS + _SIGN_MODES + _CHUNKING
    constants = {name: getattr(_layout, name) for name in names}
    constants.update({f"RULE_{rule.upper()}": code for rule, code in _layout.RULES.items()})
    return constants


def check_layout(module: ModuleType) -> None:
    """Raise ``RuntimeError`` naming each constant of ``module`` (the compiled extension)
    that is missing or differs from ``_layout``: the kernels would read the wrong fields."""
    problems = []
    for name, want in expected_constants().items():
        got = getattr(module, name, None)
        if got is None:
            problems.append(f"{name} is missing (secant_ext/_layout.py: {want})")
        elif got != want:
            problems.append(f"{name} = {got} in the extension, {want} in secant_ext/_layout.py")
    if problems:
        raise RuntimeError(
            f"{module.__name__} was compiled with a layout that does not match "
            f"secant_ext/_layout.py: {'; '.join(problems)}. Update csrc/flat_lists.h (or "
            "_layout.py) so they agree, and rebuild with "
            "`pip install --no-build-isolation -e .`")


@functools.lru_cache(maxsize=None)
def compiled() -> Optional[ModuleType]:
    """``secant_ext._C`` as it imports, unchecked, or None when it is not built."""
    try:
        return importlib.import_module("secant_ext._C")
    except ImportError:
        return None


@functools.lru_cache(maxsize=None)
def extension() -> ModuleType:
    """``secant_ext._C``, imported (ImportError when not built) and checked against
    ``_layout`` (RuntimeError naming the mismatched constant)."""
    module = compiled()
    if module is None:
        raise ImportError("the C++ extension secant_ext._C is not built; build it with "
                          "`pip install --no-build-isolation -e .`")
    check_layout(module)
    return module


@functools.lru_cache(maxsize=None)
def _define_ops() -> torch.library.Library:
    """Every op of ``_op_table`` under its schema (the library is kept alive by the cache:
    the definitions last as long as it does)."""
    library = torch.library.Library("secant_ext", "DEF")
    for op in _op_table.OPS:
        library.define(op.name + op.schema)
    return library


@functools.lru_cache(maxsize=None)
def load_cpp():
    """Define the ``secant_ext`` ops, load the extension (their CPU kernels) and register
    their fake kernels; returns ``torch.ops.secant_ext``. ImportError when the extension is
    not built."""
    _define_ops()
    extension()
    importlib.import_module("secant_ext._fake")  # the fake (meta) kernels
    return torch.ops.secant_ext
