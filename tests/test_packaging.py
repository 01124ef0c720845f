"""The install the README gives, in a fresh virtual environment with the pip that ships with
Python (no upgrade): ``pip install --no-build-isolation -e .`` and ``pip install
--no-build-isolation .`` both go through pyproject.toml's PEP 517 / PEP 660 build, never
the legacy ``setup.py develop`` route (which under recent setuptools re-runs pip with build
isolation, where torch is missing), and install the package with its metadata: version,
extras, the ``secant-ext`` command.

The environment sees torch and setuptools through a ``.pth`` file pointing at the test
run's own site-packages (nothing is downloaded), and builds without the C++ extension
(``SECANT_EXT_NO_BUILD=1``): ``make setup`` builds the extension with the same command in
a fresh ``.venv``. Marked slow (about half a minute)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import secant_ext

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd, cwd, env):
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    """A venv of the base interpreter with its stock pip; the test run's site-packages
    behind it (torch, setuptools); the bundled old setuptools removed so that the current
    one builds, as in a venv where setuptools was upgraded."""
    root = tmp_path_factory.mktemp("packaging")
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(SECANT_EXT_NO_BUILD="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([python, "-m", "pip", "uninstall", "-y", "setuptools"], root, env)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                root, env).strip()
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = root / "src"
    # the files a clone would have: tracked, or new and not ignored
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    return dict(root=root, python=python, site=Path(site), source=source, env=env)


def _installed(env):
    """What the fresh environment imports, from a folder outside the source tree."""
    out = _run([env["python"], "-c",
                "import secant_ext, importlib.metadata as m; "
                "d = m.distribution('secant_ext'); "
                "print(secant_ext.__file__); print(d.version); "
                "print(','.join(sorted(d.metadata.get_all('Provides-Extra')))); "
                "print(','.join(e.name for e in d.entry_points))"],
               env["root"], env["env"])
    return out.strip().splitlines()


def test_editable_install_uses_pep660_not_setup_py_develop(fresh_env):
    env = fresh_env
    _run([env["python"], "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e",
          env["source"]], env["root"], env["env"])
    assert not list(env["site"].glob("*.egg-link"))          # the legacy route's mark
    assert list(env["site"].glob("__editable__*secant_ext*"))
    path, version, extras, scripts = _installed(env)
    assert Path(path).resolve().is_relative_to(env["source"].resolve())
    assert version == secant_ext.__version__
    assert {"huggingface", "experiments", "test", "triton"} <= set(extras.split(","))
    assert scripts == "secant-ext"
    _run([env["python"], "-m", "pip", "uninstall", "-y", "secant_ext"], env["root"], env["env"])


def test_regular_install_copies_every_subpackage(fresh_env):
    env = fresh_env
    _run([env["python"], "-m", "pip", "install", "--no-build-isolation", "--no-deps",
          env["source"]], env["root"], env["env"])
    path, version, extras, _ = _installed(env)
    package = Path(path).parent
    assert package.parent == env["site"]
    for sub in ("experiments", "_triton"):
        assert (package / sub / "__init__.py").is_file(), sub
    assert version == secant_ext.__version__
    help_text = _run([env["root"] / "venv" / "bin" / "secant-ext", "--help"], env["root"],
                     env["env"])
    assert "reproduce" in help_text
