"""Which implementation runs the phases of a step, and how it is chosen.

A backend is a namespace with one function per op of ``_op_table`` (``PHASES``), of the
signatures of ``reference``. There are three:

- ``reference``: eager PyTorch (``secant_ext.reference``), any device.
- ``cpp``: the ``torch.ops.secant_ext`` custom ops, CPU kernels in ``csrc/`` (called
  through ``secant_ext._C``'s functions of the same names, which skip the dispatcher).
- ``triton``: the Triton kernels of ``secant_ext._triton``; CUDA tensors, or CPU
  tensors under ``TRITON_INTERPRET=1``.

``"auto"`` picks Triton on CUDA, C++ on CPU, and the reference when the fast path is not
available (with one warning).
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings
from types import SimpleNamespace

import torch

from . import _op_table, _ops, reference as _reference

BACKENDS = ("auto", "triton", "cpp", "reference")


def cpp_available() -> bool:
    """True when the compiled extension ``secant_ext._C`` loads. Only a question: the
    kernels are registered by ``_ops.load_cpp()``, which ``_cpp()`` calls."""
    return _ops.compiled() is not None


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when Triton imports (it may still lack a GPU; see ``triton_runs_on``)."""
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_runs_on(device: torch.device) -> bool:
    return triton_available() and (device.type == "cuda" or
                                   (device.type == "cpu" and triton_interpreter_on()))


PHASES = _op_table.NAMES  # every op of the table, under its name


def _namespace(name: str, functions) -> SimpleNamespace:
    """A backend: ``name`` and the phase functions of ``PHASES`` taken from ``functions``."""
    return SimpleNamespace(name=name, **{phase: getattr(functions, phase) for phase in PHASES})


REFERENCE = _namespace("reference", _reference)


@functools.lru_cache(maxsize=None)
def _cpp() -> SimpleNamespace:
    if not cpp_available():
        raise ImportError("the C++ extension secant_ext._C is not built")
    ops = _ops.load_cpp()  # checks the layout, registers the fake kernels
    if triton_available():  # the Triton launchers as the ops' CUDA kernels
        importlib.import_module("secant_ext._cuda_registration")
    # The same ops as functions of the extension, which call the CPU kernels without the
    # dispatcher (cheaper per call: docs/PERFORMANCE.md, 'The step's fixed cost') and hand
    # any call the dispatcher could treat otherwise to the op itself (csrc/direct_calls.cpp).
    direct = _ops.extension()
    return _namespace("cpp", direct if all(hasattr(direct, p) for p in PHASES) else ops)


@functools.lru_cache(maxsize=None)
def _triton() -> SimpleNamespace:
    return _namespace("triton", importlib.import_module("secant_ext._triton"))


_warned = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def validate_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpp" and not cpp_available():
        raise ValueError("backend='cpp' needs the compiled extension secant_ext._C, which is "
                         "not built; reinstall with `pip install --no-build-isolation -e .` "
                         "(without SECANT_EXT_NO_BUILD=1), or use backend='reference'")
    if backend == "triton" and not triton_available():
        raise ValueError("backend='triton' needs the triton package, which is not installed")


def resolve(backend: str, device: torch.device) -> SimpleNamespace:
    """The backend that runs tensors on ``device`` for the user's choice ``backend``.

    An explicit choice always wins and fails loudly where it cannot run."""
    if backend == "reference":
        return REFERENCE
    if backend == "cpp":
        if device.type != "cpu":
            raise ValueError(f"backend='cpp' runs on CPU tensors only, got a {device} tensor; "
                             "use backend='triton' or 'auto' for CUDA")
        return _cpp()
    if backend == "triton":
        if not triton_runs_on(device):
            raise ValueError(f"backend='triton' got {device} tensors: Triton runs on CUDA, or on "
                             "CPU only under the interpreter (set TRITON_INTERPRET=1 before "
                             "importing triton)")
        return _triton()
    # auto
    if device.type == "cuda" and triton_available():
        return _triton()
    if device.type == "cpu" and cpp_available():
        return _cpp()
    _warn_once(f"auto-{device.type}",
               f"secant_ext: no fast path for {device.type} tensors "
               f"({'the C++ extension is not built' if device.type == 'cpu' else 'triton is not installed'}); "
               "backend='auto' uses the eager reference, which is correct but slower")
    return REFERENCE
