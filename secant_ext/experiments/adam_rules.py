"""SecantAdam's step-size rule, varied: the research behind its defaults.

``RuleVariant`` describes a rule for ``eta`` from the measurements SecantAdam already
makes (docs/ALGORITHM.md, 'SecantAdam'): per unit step along Adam's direction ``d``, the
curvature ``a = <u, y> / eta'^2``, the descent left at ``x_t`` ``b = <u, s> / eta'`` and
the slope at the previous iterate ``c = <u, g_plus> / eta' = eta' a + b``.
``SecantAdamRule`` is ``SecantAdam`` with that rule applied in Python (float64) in place
of its step-size phase, between the package's own statistics and update kernels, so a
variant differs from the package's optimizer in the rule (and the averaging) alone.
``VARIANTS`` holds the rules docs/RESULTS.md ('SecantAdam at its defaults') reports;
``PACKAGE`` names the one that is ``SecantAdam()``, to the bit (tests check it). The
workload suite races them as the methods ``rule-<name>``::

    python -m secant_ext suite --methods all,rules --jobs 2 --out runs/adam-rules \\
        --workloads mlp,resnet-bn,vit,logreg,autoencoder,digits-epochs
    python -m secant_ext.experiments.adam_rules runs/adam-rules   # the table
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

import torch

from .. import _layout as layout, reference
from ..adam import SecantAdam


@dataclass(frozen=True)
class RuleVariant:
    """One rule for ``eta``. ``estimate``: ``"left"`` (``B / A``, the step left from
    ``x_t``) or ``"previous"`` (``C / A``, the step to the minimum from ``x_(t-1)``);
    ``normalize``: each measurement as it is (``"none"``), over the gradient's norm
    (``"grad"``), or over ``|c| + eta' |a|`` (``"measurement"``, with the ``b`` of ``"left"``
    in place of ``c``); ``reach``: the multiple of the estimate ``eta`` takes;
    ``negative``: what a positive ``B`` (or ``C``) with ``A <= 0`` does (``"keep"`` eta or
    ``"grow"`` it); ``uphill``: what ``B <= 0`` does (``"keep"`` or ``"shrink"``)."""
    description: str
    ema: float = 0.9
    growth: float = 1.1
    warmup_growth: float = 0.0  # growth during the warm-up (0: ``growth``)
    eta0: float = layout.ADAM_ETA0
    eta_max: float = math.inf   # a ceiling on eta
    average: bool = True        # evaluate at the averaged iterate
    # its weight's floor (about the last 1 / floor iterates): 0.01, as SecantAdam had when
    # the variants were raced; the package now uses layout.ADAM_AVG_FLOOR (0.03)
    avg_floor: float = 0.01
    reach: float = 2.0
    estimate: str = "previous"
    normalize: str = "measurement"
    negative: str = "grow"
    uphill: str = "shrink"
    warmup: int = 50            # curvature_warmup
    every: int = 8              # curvature_every


BEFORE = dict(ema=0.98, reach=1.0, estimate="left", normalize="none", negative="keep",
              uphill="keep")
VARIANTS: Dict[str, RuleVariant] = {
    "before": RuleVariant("min(B/A, 1.1 eta), raw averages, weight 0.98", **BEFORE),
    "before-w0.9": RuleVariant("same, weight 0.9", **dict(BEFORE, ema=0.9)),
    "before-grad-w0.9": RuleVariant("same, each measurement over |g|, weight 0.9",
                                    **dict(BEFORE, ema=0.9, normalize="grad")),
    "previous-raw": RuleVariant("C/A, raw averages, weight 0.98",
                                **dict(BEFORE, estimate="previous")),
    "previous-n": RuleVariant("C/A, each over n, weight 0.98",
                              **dict(BEFORE, estimate="previous", normalize="measurement")),
    "previous-n-w0.9": RuleVariant("C/A, each over n, weight 0.9",
                                   **dict(BEFORE, estimate="previous",
                                          normalize="measurement", ema=0.9)),
    "now": RuleVariant("2 C/A, each over n, weight 0.9, grows at negative curvature, "
                       "shrinks uphill (the package's rule; averaged over ~100 iterates)"),
    "now-reach1": RuleVariant("now, C/A once (reach 1)", reach=1.0),
    "now-keep-uphill": RuleVariant("now, eta kept (not shrunk) when C <= 0", uphill="keep"),
    "now-w0.95": RuleVariant("now, weight 0.95", ema=0.95),
    "now-w0.8": RuleVariant("now, weight 0.8", ema=0.8),
    "now-growth1.15": RuleVariant("now, growth x1.15", growth=1.15),
    "now-warmup-growth1.2": RuleVariant("now, growth x1.2 in the warm-up", warmup_growth=1.2),
    "now-warmup100": RuleVariant("now, 100 measuring steps of warm-up", warmup=100),
    "now-every4": RuleVariant("now, a measurement every 4th step", every=4),
    "now-eta0-1e-4": RuleVariant("now, starting at 1e-4", eta0=1e-4),
    "now-growth2": RuleVariant("now, growth x2 a measurement", growth=2.0),
    "now-growth1.15-w0.8": RuleVariant("now, growth x1.15, weight 0.8", growth=1.15,
                                       ema=0.8),
    "now-growth1.15-w0.7": RuleVariant("now, growth x1.15, weight 0.7", growth=1.15,
                                       ema=0.7),
    "now-growth1.2-w0.8": RuleVariant("now, growth x1.2, weight 0.8", growth=1.2, ema=0.8),
    "now-growth1.2-w0.7": RuleVariant("now, growth x1.2, weight 0.7", growth=1.2, ema=0.7),
    "now-growth1.15-reach1.5": RuleVariant("now, growth x1.15, reach 1.5", growth=1.15,
                                           reach=1.5),
    "now-eta0-3e-5": RuleVariant("now, starting at 3e-5", eta0=3e-5),
    "now-max0.1": RuleVariant("now, eta at most 0.1", eta_max=0.1),
    "now-eta0-1e-4-max0.1": RuleVariant("now, starting at 1e-4, eta at most 0.1", eta0=1e-4,
                                        eta_max=0.1),
    "now-no-average": RuleVariant("now, evaluated at the training iterate", average=False),
    "now-avg-floor0.03": RuleVariant("now, averaged over about the last 33 iterates (the "
                                     "package's defaults)", avg_floor=0.03),
    "now-avg-floor0.1": RuleVariant("now, averaged over about the last 10 iterates",
                                    avg_floor=0.1),
    "now-every4-warmup25": RuleVariant("now, every 4th step after 25 measuring steps",
                                       every=4, warmup=25),
}

PACKAGE = "now-avg-floor0.03"  # SecantAdam's defaults


class SecantAdamRule(SecantAdam):
    """``SecantAdam`` whose ``eta`` follows ``variant`` (one rule for every param group;
    the averages live in ``self.rule_state``, per group, not in checkpoints)."""

    def __init__(self, params, variant: RuleVariant, **kwargs):
        super().__init__(params, curvature_warmup=variant.warmup,
                         curvature_every=variant.every, average=variant.average, **kwargs)
        self.variant = variant
        self.rule_state: Dict[int, Dict[str, float]] = {}

    def _initial_state_values(self):
        values = super()._initial_state_values()
        values[layout.ALPHA] = self.variant.eta0
        values[layout.AVG_FLOOR] = self.variant.avg_floor
        return values

    def _step_size(self, i: int, w) -> None:
        self._rule(i, w.now.combined, w.now.state, w.group["betas"], w.now.measure, w.now.record)

    def _next_eta(self, mine: Dict[str, float], eta: float, scale: float, uy: float,
                  us: float, g_sq: float) -> float:
        """The variant's rule on one valid measurement: the arithmetic, in its order, of
        the kernels' ``adam_alpha`` for ``now``."""
        v = self.variant
        a = uy / (scale * scale)
        if v.estimate == "previous":
            c = (uy + us) / scale
            n = (abs(uy + us) + abs(uy)) / scale
        else:
            c = us / scale
            n = (abs(us) + abs(uy)) / scale
        if v.normalize == "grad":
            n = math.sqrt(g_sq)
        if v.normalize != "none":
            a, c = (a / n, c / n) if n > 0 else (0.0, 0.0)
        mine["A"] = v.ema * mine["A"] + (1 - v.ema) * a
        mine["C"] = v.ema * mine["C"] + (1 - v.ema) * c
        growth = v.warmup_growth if v.warmup_growth and mine["n"] < v.warmup else v.growth
        mine["n"] += 1
        big_a, big_c = mine["A"], mine["C"]
        grown = growth * eta
        if grown > v.eta_max:
            grown = v.eta_max
        if big_c > 0 and big_a > 0:
            ratio = v.reach * big_c / big_a
            return ratio if ratio < grown else grown
        if big_c > 0:
            return grown if v.negative == "grow" else eta
        return eta / growth if v.uphill == "shrink" else eta

    def _rule(self, i: int, stats: torch.Tensor, state: torch.Tensor, betas, measure: bool,
              record: bool) -> None:
        """``adam_alpha`` with the variant's rule for ``eta``; every other field as the
        kernels write it."""
        sums = stats.to(torch.float64).sum(dim=0).tolist()
        uy, us, y_sq, g_sq = (sums[k] for k in (layout.COL_UY, layout.COL_US,
                                                 layout.COL_Y_SQ, layout.COL_G_SQ))
        finite = all(math.isfinite(x) for x in sums[: layout.NUM_STATS])
        st = state.tolist()
        scale = st[layout.PREV_STEP_SCALE]
        valid = finite and scale > 0 and measure
        mine = self.rule_state.setdefault(i, {"A": 0.0, "C": 0.0, "n": 0})
        eta = st[layout.ALPHA]
        positive = True
        if valid:
            eta = self._next_eta(mine, eta, scale, uy, us, g_sq)
            positive = mine["A"] > 0 and mine["C"] > 0
        # the counters, the applied step and the average's weight: the reference's own
        new, old = state.cpu().clone(), state.cpu()
        g_sq_t = torch.tensor(g_sq, dtype=torch.float64)
        reference._count_step(new, torch.tensor(finite), g_sq_t)
        new[layout.LAST_MEASURED] = float(valid)
        new[layout.LAST_GUARDED] = float(valid and not positive)
        new[layout.GUARDED] += float(valid and not positive)
        new[layout.MEASURED] += float(valid)
        if valid:
            new[layout.ADAM_LAST_A] = uy / (scale * scale)
            new[layout.ADAM_LAST_B] = us / scale
            new[layout.Y_SQ] = y_sq
            new[layout.STALLED] += float(y_sq == 0)
            new[layout.ADAM_A], new[layout.ADAM_C] = mine["A"], mine["C"]
        new[layout.ALPHA] = eta
        if finite:
            new[layout.BETA1_POWER] *= betas[0]
            new[layout.BETA2_POWER] *= betas[1]
        step = float(reference._finish_step_size(new, old, g_sq_t, new[layout.ALPHA]))
        if finite:
            new[layout.PREV_STEP_SCALE] = step if record else 0.0
        state.copy_(new)


SMALL_WORKLOADS = ("mlp", "resnet-bn", "vit", "logreg", "autoencoder", "digits-epochs")
WITH_LOSS = ("mlp", "digits-epochs")  # where the error alone would hide a runaway


def variants_table(scores: Dict[str, object]) -> List[str]:
    """docs/RESULTS.md's table of the variants, from a scored suite folder's
    ``scores.json``: per variant the median final metric of each small workload (and the
    held-out loss where the error alone hides a runaway), the geomean of evaluations to
    target and the diverged runs."""
    from ..suite.workloads import WORKLOADS
    metric = {w.name: w.metric for w in WORKLOADS}
    summary = scores["summary"]["main"]["evals"]
    rows = ["| rule | " + " | ".join(
                f"{w}: {metric[w]}" + (" / held-out loss" if w in WITH_LOSS else "")
                for w in SMALL_WORKLOADS) + " | geomean | diverged runs |",
            "| --- |" + " ---: |" * (len(SMALL_WORKLOADS) + 2)]
    for name, v in VARIANTS.items():
        key = f"rule-{name}"
        if key not in summary:
            continue
        cells, diverged = [], 0
        for w in SMALL_WORKLOADS:
            m = scores["workloads"][w]["methods"][key]
            diverged += m["diverged_seeds"]
            cell = f"{m['final_metric']:.3g}"
            if w in WITH_LOSS:
                cell += f" / {m['final_loss']:.2g}"
            cells.append(cell)
        text = f"`{name}`: " + v.description.replace("|", "\\|")
        if name == PACKAGE:
            text = f"**{text}**"
        rows.append(f"| {text} | " + " | ".join(cells)
                    + f" | {summary[key]['geomean_ratio']:.2f} | {diverged} |")
    return rows


def main(argv=None) -> int:
    import argparse
    import os

    from ..suite import runner
    p = argparse.ArgumentParser(
        prog="python -m secant_ext.experiments.adam_rules",
        description="Print the table of SecantAdam's rule variants from a suite folder "
                    "scored with --methods all,rules on the six small main workloads.")
    p.add_argument("out", help="the suite's --out folder (holds scores.json)")
    args = p.parse_args(argv)
    path = os.path.join(args.out, "scores.json")
    scores = runner.load(path)  # the run records' reader: the same JSON, infinities included
    if scores is None:
        raise SystemExit(f"error: no scores.json in {args.out!r}; run the suite there first")
    missing = [w for w in SMALL_WORKLOADS if w not in scores["workloads"]]
    if missing:
        raise SystemExit(f"error: {path} has no scores for {', '.join(missing)}")
    print("\n".join(variants_table(scores)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
