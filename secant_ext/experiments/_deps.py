"""Optional dependencies of the experiments, imported on first use with a clear error.

The core package needs only torch and numpy; the experiments also need scikit-learn, tqdm,
matplotlib and scipy (``pip install secant_ext[experiments]``).
"""
from __future__ import annotations

import importlib

_PIP_NAMES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm",
              "scipy": "scipy"}


def require(module: str):
    """Import ``module`` or raise an ImportError that names the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        pip_name = _PIP_NAMES.get(top, top)
        raise ImportError(
            f"the secant_ext experiments need the package '{pip_name}' (import {module!r} "
            f"failed: {exc}); install it with `pip install {pip_name}` or install all the "
            "experiment dependencies with `pip install secant_ext[experiments]`") from exc


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (runs without a display)."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg", force=True)
    return require("matplotlib.pyplot")
