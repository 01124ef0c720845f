"""Loading the C++ extension ``secant_ext._C``, explicitly and in one place.

``load_cpp()`` imports the extension (which defines the ``torch.ops.secant_ext`` schemas and
their CPU kernels), checks that the layout constants it was compiled with are those of
``_layout``, registers the fake kernels of ``_fake`` and, when triton is installed, the
Triton launchers as the ops' CUDA kernels (``_cuda_registration``). It returns
``torch.ops.secant_ext``. ``_backends._cpp()`` calls it; ``_backends.cpp_available()`` only
asks whether the extension imports.

``extension()`` is the first two steps alone (import and check), for code that needs
``_C``'s constants without registering anything.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Dict

import torch

from . import _layout

_STATE_FIELDS = ("ALPHA", "STEP", "TAKEN", "SKIPPED", "CLIPPED", "LAST_SKIPPED",
                 "LAST_CLIPPED", "MOMENTUM_READY", "DOT", "S_SQ", "Y_SQ", "G_SQ", "STALLED",
                 "LR", "MAX_GRAD_NORM", "STEP_SIZE", "ALPHA_EMA", "BETA_POWER", "MEASURED",
                 "LAST_MEASURED", "CARRY_BETA", "AVG_WEIGHT", "AVG_FLOOR", "CLIP_G_SQ_OTHERS",
                 "ADAM_A", "ADAM_B", "PREV_STEP_SCALE", "BETA1_POWER", "BETA2_POWER",
                 "STATE_SIZE")
_STATS_COLUMNS = ("COL_DOT", "COL_S_SQ", "COL_Y_SQ", "COL_G_SQ", "NUM_STATS")
_SIGN_MODES = ("SIGN_NONE", "SIGN_SCALED", "SIGN_UNSCALED")


def expected_constants() -> Dict[str, int]:
    """The name and value of every layout constant ``_C`` exports, as ``_layout`` says.

    The rule codes of ``_layout.RULES`` are exported as ``RULE_<NAME>`` (``RULE_SECANT``...)."""
    names = _STATE_FIELDS + _STATS_COLUMNS + _SIGN_MODES
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
def extension() -> ModuleType:
    """``secant_ext._C``, imported (ImportError when not built) and checked against
    ``_layout`` (RuntimeError naming the mismatched constant)."""
    module = importlib.import_module("secant_ext._C")
    check_layout(module)
    return module


@functools.lru_cache(maxsize=None)
def load_cpp():
    """Load the extension and register every kernel of the ``secant_ext`` ops; returns
    ``torch.ops.secant_ext``. ImportError when the extension is not built."""
    extension()
    importlib.import_module("secant_ext._fake")  # the fake (meta) kernels
    from ._backends import triton_available
    if triton_available():  # the Triton launchers as the ops' CUDA kernels
        importlib.import_module("secant_ext._cuda_registration")
    return torch.ops.secant_ext
