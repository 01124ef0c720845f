"""Every place that repeats the op table (secant_ext/_op_table.py) agrees with it: the
schemas the C++ extension defines, its direct-call signatures, the fake kernels, and the
three backends. A mismatch names the file and line to change."""
import pathlib
import re

import pytest
import torch

import secant_ext
from secant_ext import _backends, _op_table, reference

ROOT = pathlib.Path(secant_ext.__file__).parent.parent
REGISTER = ROOT / "csrc" / "register.cpp"
DIRECT_CALLS = ROOT / "csrc" / "direct_calls.cpp"
FAKE = ROOT / "secant_ext" / "_fake.py"

needs_cpp = pytest.mark.skipif(not _backends.cpp_available(),
                               reason="the C++ extension secant_ext._C is not built")

# the direct calls' argument kinds (csrc/direct_calls.cpp, enum Kind) for each schema type
KINDS = {"Tensor[]": "kTensors", "Tensor": "kTensor", "float": "kFloat", "bool": "kBool",
         "int": "kInt"}


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
def test_the_extension_defines_the_tables_schema(op):
    secant_ext._backends._cpp()  # loads the extension: its ops are defined
    defined = getattr(torch.ops.secant_ext, op.name).default._schema
    where = _line_of(REGISTER, r'm\.def\("' + op.name + r'\(')
    assert str(defined) == str(_schema(op)), (
        f"{where} defines {defined}, secant_ext/_op_table.py says {_schema(op)}")


def _direct_call_signatures():
    """name -> (positional count, [(argument, kind, has a default)]) from direct_calls.cpp."""
    text = DIRECT_CALLS.read_text()
    found = {}
    for m in re.finditer(r'const Signature k\w+\{\s*"(\w+)", "secant_ext::(\w+)", (\d+),\s*'
                         r'\{(.*?)\}\};', text, re.S):
        assert m.group(1) == m.group(2), m.group(0)
        params = re.findall(r'\{"(\w+)", K::(\w+)(, \d+)?\}', m.group(4))
        found[m.group(1)] = (int(m.group(3)), [(a, k, bool(d)) for a, k, d in params])
    return found


@pytest.mark.parametrize("op", _op_table.OPS, ids=lambda op: op.name)
def test_the_direct_calls_take_the_tables_arguments(op):
    schema = _schema(op)
    want = (sum(not a.kwarg_only for a in schema.arguments),
            [(a.name, KINDS[str(a.type).replace("List[Tensor]", "Tensor[]")],
              a.default_value is not None) for a in schema.arguments])
    got = _direct_call_signatures().get(op.name)
    where = _line_of(DIRECT_CALLS, rf'"{op.name}", "secant_ext::{op.name}"')
    assert got == want, f"{where}: the direct call's signature is {got}, the table's {want}"


def test_every_op_has_a_fake_kernel_and_no_other():
    faked = re.findall(r'register_fake\("secant_ext::(\w+)"\)', FAKE.read_text())
    missing = [n for n in _op_table.NAMES if n not in faked]
    extra = [n for n in faked if n not in _op_table.NAMES]
    assert not missing and not extra and len(faked) == len(set(faked)), (
        f"secant_ext/_fake.py: fakes missing for {missing}, not in the table {extra}")


def test_every_backend_has_every_op():
    from secant_ext import _triton
    for module in (reference, _triton):
        missing = [n for n in _op_table.NAMES if not callable(getattr(module, n, None))]
        assert not missing, f"{module.__name__} lacks {missing}"
    assert _backends.PHASES == _op_table.NAMES
