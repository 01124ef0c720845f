"""The house's load-bearing rules, read from the source: the compiled extension is imported
in one module, which imports nothing else of the package but the layout and the op table
(both leaves)."""
import ast
import pathlib

import secant_ext

PACKAGE = pathlib.Path(secant_ext.__file__).parent


def _package_imports(path: pathlib.Path):
    """The package modules ``path`` imports (``from . import x``, ``from .x import y``,
    ``import secant_ext.x``), and whether it names ``secant_ext._C`` anywhere."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("secant_ext"):
            found.add(node.module.split(".", 1)[-1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[-1] for a in node.names
                         if a.name.startswith("secant_ext."))
    names_c = any(isinstance(n, ast.Constant) and n.value == "secant_ext._C"
                  for n in ast.walk(tree))
    return found, names_c or "_C" in found


def test_the_extension_is_imported_in_one_leaf_module():
    importers = sorted(p.name for p in PACKAGE.glob("*.py") if _package_imports(p)[1])
    assert importers == ["_ops.py"], importers
    imports, _ = _package_imports(PACKAGE / "_ops.py")
    # _fake is imported by name inside load_cpp(), after the extension has loaded
    assert imports == {"_layout", "_op_table"}, imports
    for leaf in ("_layout.py", "_op_table.py"):
        assert _package_imports(PACKAGE / leaf)[0] == set(), leaf
    fake_imports, _ = _package_imports(PACKAGE / "_fake.py")
    assert "_ops" not in fake_imports and "_backends" not in fake_imports, fake_imports


# the private torch APIs and CPython internals the host fast path leans on
_FENCED = (r"sys\._getframe", r"torch\._C\._set_grad_enabled", r"\._is_view\(",
           r"_optimizer_step_code", r"_global_optimizer_p(re|ost)_hooks", r"_profiler_enabled")


def test_the_host_fast_path_is_fenced_in_its_package():
    """The private APIs the step's host side uses appear in ``secant_ext/_host/`` alone, so
    a torch or Python release that changes one breaks there first."""
    import re
    outside = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
               for p in sorted(PACKAGE.rglob("*.py")) if "_host" not in p.parts
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if any(re.search(pattern, line) for pattern in _FENCED)]
    assert not outside, f"host fast path outside secant_ext/_host/: {outside}"
    inside = "\n".join(p.read_text() for p in (PACKAGE / "_host").glob("*.py"))
    missing = [pattern for pattern in _FENCED if not re.search(pattern, inside)]
    assert not missing, f"no longer used, drop from the fence: {missing}"
