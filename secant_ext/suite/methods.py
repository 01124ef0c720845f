"""The methods the suite races, in four groups:

- ``ceiling``: AdamW with a 5% linear warm-up and cosine decay to 0 at the budget, its peak
  rate tuned on a log grid per workload (the grid is extended until its best point is
  inside it). It knows the horizon and costs one run per grid point.
- ``fixed``: one configuration for every workload, AlgoPerf's self-tuning entries: its
  NAdamW baseline (lr 1.75e-3, betas (0.933, 0.9955), weight decay 0.081, 2% warm-up,
  cosine) and Schedule-Free AdamW (lr 2.5e-3, betas (0.9, 0.9955), weight decay 0.081, 2%
  warm-up).
- ``peer``: the learning-rate-free optimizers at their defaults (Schedule-Free AdamW,
  Prodigy, D-Adaptation Adam, prodigy-plus-schedule-free), Prodigy also as its README
  advises (``safeguard_warmup``, bias correction, warm-up and cosine), and Muon on the
  transformers (its rate tuned like the ceiling). Their packages are optional: a missing
  one is named and skipped.
- ``secant``: this package's optimizers at their defaults.

and, outside ``all``, the group ``rules``: ``SecantAdam`` with the variants of its
step-size rule in ``experiments.adam_rules`` (the research behind its defaults).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

import secant_ext

from .tasks import Task, trainable

WARMUP = 0.05           # the ceiling's warm-up, a fraction of the budget
ALGOPERF_WARMUP = 0.02  # AlgoPerf's fixed configurations'


def warmup_cosine(steps: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate factor at step ``t`` (0-based) of ``steps``: linear from
    ``1/w`` to 1 over the ``w = ceil(warmup * steps)`` warm-up steps, then cosine to 0 at
    ``steps``."""
    w = max(int(math.ceil(warmup * steps)), 1)

    def factor(t: int) -> float:
        if t < w:
            return (t + 1) / w
        progress = min((t - w) / max(steps - w, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


class MuonAdamW:
    """``torch.optim.Muon`` on a transformer's hidden matrices, ``torch.optim.AdamW`` on
    the rest, both at ``lr``; ``param_groups`` lists both optimizers' groups, so a schedule
    sets them together."""

    def __init__(self, hidden, rest, lr: float):
        self.optimizers = [torch.optim.Muon(hidden, lr=lr), torch.optim.AdamW(rest, lr=lr)]
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self.optimizers:
            o.step()
        return loss


# make(model, task, budget in steps, lr) -> optimizer
Maker = Callable[[torch.nn.Module, Task, int, Optional[float]], object]


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    group: str                      # "ceiling", "fixed", "peer" or "secant"
    make: Maker = field(repr=False)
    warmup: Optional[float] = None  # warm-up + cosine to the budget (None: no schedule)
    tuned: bool = False             # a peak rate on a grid, per workload
    package: Optional[str] = None   # the optional package it needs
    transformer_only: bool = False

    @property
    def knows_horizon(self) -> bool:
        """Whether it is told the budget (a schedule, or a warm-up of its own)."""
        return self.warmup is not None or self.key == "sf-adamw-algoperf"

    def missing(self) -> Optional[str]:
        """Why it cannot run here (its package is not installed), or None."""
        return missing_package(self.package) if self.package else None


# pip name -> module name, where they differ
IMPORT_NAMES = {"prodigy-plus-schedule-free": "prodigyplus"}


def missing_package(pip_name: str) -> Optional[str]:
    """Why the optional package ``pip_name`` cannot be used (not installed), or None."""
    try:
        importlib.import_module(IMPORT_NAMES.get(pip_name, pip_name))
    except ImportError:
        return f"{pip_name} is not installed (pip install {pip_name})"
    return None


def _adamw(model, task, budget, lr):
    return torch.optim.AdamW(trainable(model), lr=lr)


def _nadamw(model, task, budget, lr):
    return torch.optim.NAdam(trainable(model), lr=1.75e-3, betas=(0.933, 0.9955),
                             weight_decay=0.081, decoupled_weight_decay=True)


def _sf_algoperf(model, task, budget, lr):
    from schedulefree import AdamWScheduleFree
    return AdamWScheduleFree(trainable(model), lr=2.5e-3, betas=(0.9, 0.9955),
                             weight_decay=0.081,
                             warmup_steps=int(math.ceil(ALGOPERF_WARMUP * budget)))


def _sf(model, task, budget, lr):
    from schedulefree import AdamWScheduleFree
    return AdamWScheduleFree(trainable(model))


def _prodigy(model, task, budget, lr):
    from prodigyopt import Prodigy
    return Prodigy(trainable(model), lr=1.0)


def _prodigy_advised(model, task, budget, lr):
    from prodigyopt import Prodigy
    return Prodigy(trainable(model), lr=1.0, safeguard_warmup=True,
                   use_bias_correction=True)


def _dadapt_adam(model, task, budget, lr):
    from dadaptation import DAdaptAdam
    return DAdaptAdam(trainable(model), lr=1.0)


def _prodigy_plus(model, task, budget, lr):
    from prodigyplus import ProdigyPlusScheduleFree
    return ProdigyPlusScheduleFree(trainable(model), lr=1.0)


def _muon(model, task, budget, lr):
    hidden, rest = task.muon_split(model)
    return MuonAdamW(hidden, rest, lr)


def _secant(cls, **kw):
    def make(model, task, budget, lr):
        return cls(trainable(model), **kw)
    return make


def _rule(name: str):
    def make(model, task, budget, lr):
        from ..experiments.adam_rules import VARIANTS, SecantAdamRule
        return SecantAdamRule(trainable(model), VARIANTS[name])
    return make


def _rule_methods() -> Tuple[Method, ...]:
    from ..experiments.adam_rules import VARIANTS
    return tuple(Method(f"rule-{name}", f"SecantAdam rule {name}", "rules", _rule(name))
                 for name in VARIANTS)


METHODS: Tuple[Method, ...] = (
    Method("adamw-cosine", "AdamW warm-up+cosine (tuned)", "ceiling", _adamw, warmup=WARMUP,
           tuned=True),
    Method("nadamw-algoperf", "NAdamW AlgoPerf config", "fixed", _nadamw,
           warmup=ALGOPERF_WARMUP),
    Method("sf-adamw-algoperf", "Schedule-Free AdamW AlgoPerf config", "fixed", _sf_algoperf,
           package="schedulefree"),
    Method("sf-adamw", "Schedule-Free AdamW", "peer", _sf, package="schedulefree"),
    Method("prodigy", "Prodigy", "peer", _prodigy, package="prodigyopt"),
    Method("prodigy-advised", "Prodigy safeguard+bias corr.+cosine", "peer",
           _prodigy_advised, warmup=WARMUP, package="prodigyopt"),
    Method("dadapt-adam", "D-Adaptation Adam", "peer", _dadapt_adam, package="dadaptation"),
    Method("prodigy-plus-sf", "Prodigy+ScheduleFree", "peer", _prodigy_plus,
           package="prodigy-plus-schedule-free"),
    Method("muon", "Muon+AdamW warm-up+cosine (tuned)", "peer", _muon, warmup=WARMUP,
           tuned=True, transformer_only=True),
    Method("secant-adam", "SecantAdam", "secant", _secant(secant_ext.SecantAdam)),
    Method("secant-sgd", "SecantSGD", "secant", _secant(secant_ext.SecantSGD)),
    Method("secant-sgdm", "SecantSGDM m=0.9", "secant",
           _secant(secant_ext.SecantSGDM, momentum=0.9)),
    Method("secant-signsgd", "SecantSignSGD", "secant", _secant(secant_ext.SecantSignSGD)),
)

METHODS += _rule_methods()
BY_KEY: Dict[str, Method] = {m.key: m for m in METHODS}
CEILING = "adamw-cosine"
# the groups --methods accepts: 'all' is every method but SecantAdam's rule variants
GROUPS: Dict[str, List[str]] = {
    "all": [m.key for m in METHODS if m.group != "rules"],
    "rules": [m.key for m in METHODS if m.group == "rules"]}


def get(key: str) -> Method:
    try:
        return BY_KEY[key]
    except KeyError:
        raise ValueError(f"unknown method {key!r}; the methods are "
                         f"{', '.join(BY_KEY)}") from None


def applies(method: Method, workload) -> bool:
    """Whether ``method`` is raced on ``workload`` (Muon only on the transformers)."""
    return workload.transformer or not method.transformer_only


def grid_extension(grid: List[float], finals: Dict[float, float]) -> Optional[float]:
    """The next rate to try when the best of ``finals`` (rate -> final metric, lower is
    better, non-finite for a diverged run) sits at an end of ``grid``: one step of the
    grid's own ratio beyond that end; None when the best is inside."""
    rates = sorted(grid)
    scored = [r for r in rates if r in finals]
    if len(scored) < len(rates):
        return None
    best = min(rates, key=lambda r: (not math.isfinite(finals[r]), finals[r], r))
    if best == rates[0]:
        return float(f"{rates[0] * rates[0] / rates[1]:.12g}")  # 0.9, not 0.8999999999999999
    if best == rates[-1]:
        return float(f"{rates[-1] * rates[-1] / rates[-2]:.12g}")
    return None


def best_rate(finals: Dict[float, float]) -> Optional[float]:
    """The rate of the lowest finite final metric (None when every run diverged)."""
    ok = {r: v for r, v in finals.items() if v is not None and math.isfinite(v)}
    return min(ok, key=lambda r: (ok[r], r)) if ok else None
