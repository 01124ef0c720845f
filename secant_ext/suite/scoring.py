"""The scores, AlgoPerf's way: a target per workload, each method's time to reach it, and
across workloads a performance profile and a geometric mean.

- The **target** of a workload is the calibrated ceiling's final metric (the median over
  seeds at its best peak rate) relaxed by ``TARGET_SLACK`` (2%): every metric is lower is
  better, so the target is ``1.02 x`` that value.
- A run's **time to target** is the gradient evaluations (or training seconds) at the
  first evaluation whose metric is at or below the target; a run that never gets there
  takes infinitely long. A method's time on a workload is the median over its seeds.
- The **performance profile** of a method is, for each ``tau`` in [1, ``TAU_MAX``], the
  fraction of workloads on which its time is within ``tau`` times the best method's.
- The **geometric mean** of a method's ratios to the best, with ratios beyond ``TAU_MAX``
  (and never reaching the target) counted as ``TAU_MAX``: the profile's own horizon.

Both are over the workloads a method ran (every one, but Muon's: the transformers).

A tuned method (the ceiling, Muon) is scored at its best rate, chosen on the first seed's
final metric; its tuning cost (the runs of its grid) is reported beside it.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

from .methods import CEILING, best_rate

TARGET_SLACK = 0.02
TAU_MAX = 4.0


def median(values: Sequence[float]) -> float:
    """The median, with infinities (never reached, diverged) ordered last."""
    return statistics.median(values) if values else math.nan


def target_of(ceiling_finals: Sequence[float], slack: float = TARGET_SLACK) -> float:
    return median(ceiling_finals) * (1.0 + slack)


def time_to_target(evals: Sequence[Dict[str, float]], target: float,
                   key: str = "grad_evals") -> float:
    """``key`` at the first evaluation whose metric is at or below ``target`` (inf if none)."""
    for e in evals:
        if math.isfinite(e["metric"]) and e["metric"] <= target:
            return float(e[key])
    return math.inf


def _grids(records: Iterable[dict]) -> Dict[str, Dict[float, dict]]:
    """For each tuned method, its first-seed runs by rate."""
    first_seed = min((r["job"]["seed"] for r in records), default=0)
    grids: Dict[str, Dict[float, dict]] = defaultdict(dict)
    for r in records:
        j = r["job"]
        if j["lr"] is not None and j["seed"] == first_seed:
            grids[j["method"]][j["lr"]] = r
    return grids


def score_workload(records: List[dict]) -> Optional[Dict[str, object]]:
    """The scores of one workload's runs (all at its full budget): the ceiling's grid and
    best rate, the target, and per method the seeds' finals, times to target and their
    medians. None without a ceiling run."""
    grids = _grids(records)
    if CEILING not in grids:
        return None
    best = {m: best_rate({lr: r["final_metric"] for lr, r in g.items()})
            for m, g in grids.items()}
    if best[CEILING] is None:
        return None
    chosen: Dict[str, List[dict]] = defaultdict(list)
    for r in records:
        j = r["job"]
        if j["lr"] is None or j["lr"] == best.get(j["method"]):
            chosen[j["method"]].append(r)
    target = target_of([r["final_metric"] for r in chosen[CEILING]])
    methods = {}
    for key, runs in chosen.items():
        runs = sorted(runs, key=lambda r: r["job"]["seed"])
        per_seed = [{"seed": r["job"]["seed"], "final_metric": r["final_metric"],
                     "final_loss": r["final_loss"], "best_metric": r["best_metric"],
                     "evals_to_target": time_to_target(r["evals"], target, "grad_evals"),
                     "seconds_to_target": time_to_target(r["evals"], target, "seconds"),
                     "diverged": r["diverged"], "grad_evals": r["grad_evals"],
                     "seconds": r["seconds"]} for r in runs]
        finals = [s["final_metric"] for s in per_seed]
        methods[key] = {
            "label": runs[0]["label"], "group": runs[0]["group"],
            "lr": best.get(key), "tuning_runs": len(grids[key]) if key in grids else 0,
            "grid": sorted(grids[key]) if key in grids else None,
            "seeds": len(runs), "final_metric": median(finals),
            "final_metric_min": min(finals), "final_metric_max": max(finals),
            "final_loss": median([s["final_loss"] for s in per_seed]),
            "evals_to_target": median([s["evals_to_target"] for s in per_seed]),
            "seconds_to_target": median([s["seconds_to_target"] for s in per_seed]),
            "diverged_seeds": sum(s["diverged"] for s in per_seed),
            "per_seed": per_seed}
    return {"target": target, "ceiling_lr": best[CEILING], "methods": methods,
            "grid_finals": {m: {lr: r["final_metric"] for lr, r in sorted(g.items())}
                            for m, g in grids.items()}}


def ratios(times: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """``times[workload][method]`` -> each method's time over the workload's best (inf when
    it never reached the target; a workload no method solved is left out)."""
    out: Dict[str, Dict[str, float]] = {}
    for w, by_method in times.items():
        best = min(by_method.values(), default=math.inf)
        if not math.isfinite(best) or best <= 0:
            continue
        out[w] = {m: t / best for m, t in by_method.items()}
    return out


def profile(ratio: Dict[str, Dict[str, float]], taus: Sequence[float]) -> Dict[str, List[float]]:
    """For each method, the fraction of the workloads it ran with a ratio at most each
    ``tau`` (Muon runs on the transformers only)."""
    methods = sorted({m for r in ratio.values() for m in r})
    out = {}
    for m in methods:
        mine = [r[m] for r in ratio.values() if m in r]
        out[m] = [sum(v <= tau for v in mine) / len(mine) for tau in taus]
    return out


def geometric_mean(values: Sequence[float], cap: float = TAU_MAX) -> float:
    """The geometric mean of ``min(v, cap)``."""
    if not values:
        return math.nan
    return math.exp(sum(math.log(min(v, cap)) for v in values) / len(values))


def summary(scores: Dict[str, Dict[str, object]], workloads: Sequence[str],
            key: str = "evals_to_target") -> Dict[str, Dict[str, object]]:
    """Per method over ``workloads``: the geometric mean of its ratios to the best, the
    workloads it is first on (ties shared), and its ratios."""
    times = {w: {m: s[key] for m, s in scores[w]["methods"].items()}
             for w in workloads if w in scores and scores[w] is not None}
    ratio = ratios(times)
    methods = sorted({m for r in ratio.values() for m in r})
    out = {}
    for m in methods:
        # over the workloads it ran: Muon runs on the transformers only
        rs = [ratio[w][m] for w in ratio if m in ratio[w]]
        out[m] = {"geomean_ratio": geometric_mean(rs),
                  "first_on": sum(r == 1.0 for r in rs), "workloads": len(rs),
                  "solved": sum(math.isfinite(r) for r in rs),
                  "ratios": {w: ratio[w][m] for w in ratio if m in ratio[w]}}
    return out


def profile_curves(scores, workloads, key: str, taus: Sequence[float]):
    times = {w: {m: s[key] for m, s in scores[w]["methods"].items()}
             for w in workloads if scores.get(w) is not None}
    return profile(ratios(times), taus)


def default_taus(n: int = 121) -> List[float]:
    return [1.0 + (TAU_MAX - 1.0) * i / (n - 1) for i in range(n)]
