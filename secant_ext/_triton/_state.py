"""The group state's and the stats table's layout as Triton constants: each name of
``secant_ext/_layout.py`` that the C++ extension also exports (``_ops.expected_constants``:
the state's fields, the table's columns, the sign modes and rule codes) is a module-level
``tl.constexpr`` here, which the kernels read as ``_state.<NAME>``. The layout stays written
once, and no launcher passes it."""
import triton.language as tl

from .. import _ops

for _name, _value in _ops.expected_constants().items():
    globals()[_name] = tl.constexpr(_value)
del _name, _value
