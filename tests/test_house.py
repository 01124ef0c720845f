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


def _modules_a_step_runs(opt, closure, steps):
    """{package file: calls} of the package code run by ``steps`` steps (kernels aside)."""
    import collections
    import sys
    ran = collections.Counter()

    def profile(frame, event, arg):
        path = pathlib.Path(frame.f_code.co_filename)
        if event == "call" and PACKAGE in path.parents:
            ran[path.relative_to(PACKAGE).as_posix()] += 1
    sys.setprofile(profile)
    try:
        for _ in range(steps):
            opt.step(closure)
    finally:
        sys.setprofile(None)
    return ran


def test_a_secant_adam_step_runs_the_five_modules_house_md_names():
    """docs/HOUSE.md's reading list for one step: a single-process ``SecantAdam`` step on
    CPU, measuring or not, runs code of these five modules and of the fenced ``_host/``
    alone (the layout, the backends and the distributed code are not entered)."""
    import pytest
    import torch
    if not secant_ext.cpp_available():
        pytest.fail("secant_ext._C is not built: the step's CPU path runs the C++ backend")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = secant_ext.SecantAdam(model.parameters(), curvature_warmup=0, curvature_every=4)
    x, y = torch.randn(32, 8), torch.randn(32, 1)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss
    for _ in range(3):  # the plan made, the state created
        opt.step(closure)
    ran = _modules_a_step_runs(opt, closure, steps=8)  # 2 measuring steps, 6 plain
    core = sorted(m for m in ran if not m.startswith("_host/"))
    lines = {m: len((PACKAGE / m).read_text().splitlines()) for m in ran}
    assert core == ["_base.py", "_grads.py", "_lookahead.py", "_plan.py", "adam.py"], lines


def test_the_house_map_names_every_module():
    """docs/HOUSE.md is the newcomer's map of the package: every module is named there."""
    import re
    house = (PACKAGE.parent / "docs" / "HOUSE.md").read_text()
    missing = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                     if p.stem not in ("__init__", "__main__")
                     and not re.search(rf"(?<![\w]){re.escape(p.stem)}(?![\w])", house))
    assert not missing, f"docs/HOUSE.md does not name {missing}: add a line for each"
