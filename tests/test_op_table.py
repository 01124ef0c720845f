"""The op table (secant_ext/_op_table.py) is where the ops' schemas are written: the ops are
defined from it, their direct calls' parameters read from it, their fake kernels derived
from it where they return nothing, and what repeats it (the fakes of the ops that return a
tensor, the three backends) agrees with it. A mismatch names what to change."""
import pathlib
import re

import pytest
import torch

import secant_ext
from secant_ext import _backends, _op_table, reference

ROOT = pathlib.Path(secant_ext.__file__).parent.parent
CSRC = ROOT / "csrc"
FAKE = ROOT / "secant_ext" / "_fake.py"

needs_cpp = pytest.mark.skipif(not _backends.cpp_available(),
                               reason="the C++ extension secant_ext._C is not built")

def _line_of(path: pathlib.Path, pattern: str) -> str:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if re.search(pattern, line):
            return f"{path.relative_to(ROOT)}:{i}"
    return f"{path.relative_to(ROOT)} (no line matches {pattern!r}: add one)"


def _schema(op):
    return torch._C.parse_schema(f"secant_ext::{op.name}{op.schema}")


def test_the_table_is_well_formed():
    assert len(set(_op_table.NAMES)) == len(_op_table.OPS)
    for op in _op_table.OPS:
        assert op.used_by in ("sgd", "adam", "both"), op
        _schema(op)  # parses


@needs_cpp
@pytest.mark.parametrize("op", _op_table.OPS, ids=lambda op: op.name)
def test_each_op_is_defined_by_the_table_with_a_cpu_kernel(op):
    secant_ext._backends._cpp()  # defines the ops and loads the extension
    defined = getattr(torch.ops.secant_ext, op.name).default._schema
    assert str(defined) == str(_schema(op))
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"secant_ext::{op.name}", "CPU"), (
        f"secant_ext::{op.name} has no CPU kernel: register it at the end of its kernel's "
        "file in csrc/ (TORCH_LIBRARY_IMPL)")


def test_no_schema_is_written_in_cpp():
    """The schemas live in the table alone: C++ registers kernels, never a definition."""
    defining = [f"{p.relative_to(ROOT)}:{i}" for p in sorted(CSRC.glob("*.cpp"))
                for i, line in enumerate(p.read_text().splitlines(), 1)
                if re.search(r"TORCH_LIBRARY\(|m\.def\(", line)]
    assert not defining, f"schemas written in C++ at {defining}: they belong in _op_table.py"


@needs_cpp
def test_each_op_has_a_direct_call():
    """Registering a CPU kernel with ``direct_calls::impl`` makes it a function of ``_C`` of
    the op's name, whose parameters are read from the table's schema (tests/
    test_direct_calls.py calls each with positional and keyword arguments)."""
    from secant_ext import _ops
    secant_ext._backends._cpp()
    module = _ops.extension()
    missing = [name for name in _op_table.NAMES if not callable(getattr(module, name, None))]
    assert not missing, (
        f"secant_ext._C has no direct call of {missing}: register the CPU kernel with "
        "secant_ext::direct_calls::impl<&kernel>(m, name) in its file's TORCH_LIBRARY_IMPL")


@needs_cpp
def test_every_op_has_a_fake_kernel_and_only_results_are_written_out():
    """Each op has a fake kernel; ``_fake.py`` writes out those of the ops that return a
    tensor, and derives the others (returning None) from the table."""
    from torch._library import simple_registry
    secant_ext._backends._cpp()
    missing = [n for n in _op_table.NAMES
               if simple_registry.singleton.find(f"secant_ext::{n}").fake_impl.kernel is None]
    assert not missing, f"no fake kernel for {missing}"
    written = re.findall(r'register_fake\("secant_ext::(\w+)"\)', FAKE.read_text())
    returning = [op.name for op in _op_table.OPS if not op.schema.endswith("-> ()")]
    assert sorted(written) == sorted(returning), (
        f"secant_ext/_fake.py writes fakes for {written}; the ops that return a tensor are "
        f"{returning}")


def test_every_backend_has_every_op():
    from secant_ext import _triton
    for module in (reference, _triton):
        missing = [n for n in _op_table.NAMES if not callable(getattr(module, n, None))]
        assert not missing, f"{module.__name__} lacks {missing}"
    assert _backends.PHASES == _op_table.NAMES
