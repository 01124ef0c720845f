"""The experiments behind ``python -m secant_ext`` (results in docs/RESULTS.md).

One file per purpose: ``idx`` and ``datasets`` load data, ``models`` and ``methods``
define what is trained and how, ``training`` is the loop they all share, ``output`` and
``plots`` write the results, and ``demo``, ``fig1``, ``bh``, ``trajectory``, ``beyond``,
``race`` and ``lm`` (with ``textlm``, its corpus and model) are the experiments, and
``adam_rules`` holds the variants of SecantAdam's step-size rule the workload suite races.
Needs scikit-learn, tqdm, matplotlib and scipy (``pip install secant_ext[experiments]``);
the core package does not.
"""
from ._deps import require

EXTRA_PACKAGES = ("sklearn", "tqdm", "matplotlib", "scipy")


def require_all() -> None:
    """Raise one clear ImportError when an experiment dependency is missing."""
    for name in EXTRA_PACKAGES:
        require(name)
