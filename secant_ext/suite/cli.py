"""``python -m secant_ext suite``: run the workloads, score them, write the results.

The run goes in two phases over every chosen workload at once: first the tuned methods'
grids on the first seed (a grid whose best rate sits at an end is extended by one point,
up to ``--max-extensions`` times), then the tuned methods' best rates on the other seeds
and every other method on every seed. Each run's record is written to
``OUT/runs/<workload>/`` as it finishes, so an interrupted suite loses at most the runs in
flight: the same command with the same ``--out`` picks up where it stopped.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Dict, List, Optional, Sequence, Tuple

import torch

import secant_ext

from . import methods as methods_mod
from . import report, runner, scoring
from . import workloads as workloads_mod
from .runner import Job

DEFAULT_SEEDS, QUICK_SEEDS = 3, 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list", action="store_true",
                   help="print the workloads (name, what it is, its data, its budget) and "
                        "the methods, then exit")
    p.add_argument("--workloads", default="all",
                   help="comma-separated workload names, or 'main', 'held-out', 'all' "
                        "(default all)")
    p.add_argument("--methods", default="all",
                   help="comma-separated method keys and groups: 'all' (default), 'rules' "
                        "(SecantAdam's rule variants, not in 'all'); the calibrated ceiling "
                        "(adamw-cosine) always runs: it sets the targets")
    p.add_argument("--seeds", type=int,
                   help=f"seeds per method: --seed, --seed+1, ... (default {DEFAULT_SEEDS}, "
                        f"{QUICK_SEEDS} with --quick); tuned methods search their grid on "
                        "the first seed only")
    p.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--out", help="output folder (default runs/suite-<timestamp>); an "
                                 "existing one is resumed")
    p.add_argument("--quick", action="store_true",
                   help="every budget shrunk (seconds per run): a smoke test of the whole "
                        "pipeline, not a score")
    p.add_argument("--data-dir", help="folder of the four MNIST IDX files (gzip or plain); "
                                      "without it the image workloads use scikit-learn's "
                                      "8x8 digits")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each in its own process (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per run (default 1)")
    p.add_argument("--anytime", action="store_true",
                   help="also run the ceiling at its best rate with cosine horizons of 1/4 "
                        "and 1/2 the budget (first seed) for anytime.png")
    p.add_argument("--max-extensions", type=int, default=3,
                   help="grid points a tuned method may add past an end of its grid "
                        "(default 3)")
    p.add_argument("--score-only", action="store_true",
                   help="run nothing: score the runs already in --out (a suite stopped "
                        "early, or workloads run with different --seeds)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _pick(spec: str, names: Sequence[str], groups: Dict[str, Sequence[str]], what: str):
    """Names and group names, comma-separated, in order, each once."""
    picked: List[str] = []
    for s in (s.strip() for s in spec.split(",")):
        for n in groups.get(s, [s] if s else []):
            if n not in picked:
                picked.append(n)
    unknown = [s for s in picked if s not in names]
    if unknown:
        raise SystemExit(f"error: unknown {what} {', '.join(map(repr, unknown))}; choose "
                         f"from {', '.join(names)} (or {', '.join(groups)})")
    return picked


def listing() -> str:
    lines = ["workloads (budget in gradient evaluations; quick budget in brackets):"]
    width = max(len(w.name) for w in workloads_mod.WORKLOADS)
    for w in workloads_mod.WORKLOADS:
        tag = f" [held-out variant of {w.base}]" if w.held_out else ""
        tag += f" [{w.max_seeds} seed]" if w.max_seeds else ""
        lines.append(f"  {w.name:<{width}}  {w.kind}: {w.summary}; data: {w.data}; metric: "
                     f"{w.metric}; budget {w.budget} [{w.quick_budget}]{tag}")
    lines.append("methods:")
    width = max(len(m.key) for m in methods_mod.METHODS)
    for m in methods_mod.METHODS:
        extra = "; rate tuned per workload" if m.tuned else ""
        extra += "; transformers only" if m.transformer_only else ""
        missing = m.missing()
        extra += f"; SKIPPED here: {missing}" if missing else ""
        lines.append(f"  {m.key:<{width}}  [{m.group}] {m.label}{extra}")
    return "\n".join(lines)


class Executor:
    """Runs jobs (in ``jobs`` worker processes, or in this one), skipping the finished."""

    def __init__(self, out: str, jobs: int, threads: int, progress: bool, dry: bool = False):
        self.out, self.jobs, self.threads, self.progress = out, jobs, threads, progress
        self.dry = dry  # run nothing (--score-only)
        self.failures: Dict[str, str] = {}

    def __call__(self, todo: List[Job], desc: str) -> None:
        todo = [j for j in todo if runner.load(j.path(self.out)) is None]
        if not todo or self.dry:
            return
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc=desc, disable=not self.progress, dynamic_ncols=True)
        try:
            if self.jobs <= 1:
                for j in todo:
                    self._one(j, bar, lambda: runner.run_job(j, self.out, self.threads,
                                                             self.progress))
            else:
                import multiprocessing
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(self.jobs, mp_context=ctx) as pool:
                    futures = {pool.submit(runner.run_job, j, self.out, self.threads,
                                           False): j for j in todo}
                    for f in as_completed(futures):
                        self._one(futures[f], bar, f.result)
        finally:
            bar.close()

    def _one(self, job: Job, bar, result) -> None:
        try:
            r = result()
            bar.set_postfix_str(f"{job.workload} {job.name}: {r['final_metric']:.4g}")
        except Exception as exc:  # one failed run must not end the suite: say which, go on
            self.failures[f"{job.workload}/{job.name}"] = f"{type(exc).__name__}: {exc}"
            bar.write(f"run {job.workload}/{job.name} failed: {type(exc).__name__}: {exc}")
        bar.update(1)


def grid_finals(out: str, workload: str, method: str, seed: int, lrs,
                ctx_kw) -> Dict[float, float]:
    """The final metric of each finished run of a tuned method's grid, by rate."""
    budget = workloads_mod.get(workload).budget_for(ctx_kw["quick"])
    records = {lr: runner.load(Job(workload, method, seed, budget, lr, **ctx_kw).path(out))
               for lr in lrs}
    return {lr: r["final_metric"] for lr, r in records.items() if r is not None}


def plan_grids(ws, tuned, seed, ctx_kw, execute,
               max_extensions) -> Dict[Tuple[str, str], List[float]]:
    """Run the tuned methods' grids on the first seed, extending each grid past an end
    while its best point is there; the final grid of each (workload, method)."""
    grids = {(w.name, m.key): list(w.lr_grid) for w in ws for m in tuned
             if methods_mod.applies(m, w)}
    for round_ in range(max_extensions + 1):
        jobs = [Job(w, m, seed, workloads_mod.get(w).budget_for(ctx_kw["quick"]), lr,
                    **ctx_kw) for (w, m), lrs in grids.items() for lr in lrs]
        execute(jobs, "grids" if round_ == 0 else f"grid extensions ({round_})")
        if round_ == max_extensions:
            break
        grown = False
        for (w, m), lrs in grids.items():
            nxt = methods_mod.grid_extension(
                lrs, grid_finals(execute.out, w, m, seed, lrs, ctx_kw))
            if nxt is not None:
                lrs.append(nxt)
                grown = True
        if not grown:
            break
    return grids


def run(args) -> int:
    if args.list:
        print(listing())
        return 0
    groups = {"all": [w.name for w in workloads_mod.WORKLOADS],
              "main": [w.name for w in workloads_mod.WORKLOADS if not w.held_out],
              "held-out": [w.name for w in workloads_mod.WORKLOADS if w.held_out]}
    names = _pick(args.workloads, groups["all"], groups, "workload")
    keys = _pick(args.methods, list(methods_mod.BY_KEY), methods_mod.GROUPS, "method")
    if methods_mod.CEILING not in keys:
        keys.insert(0, methods_mod.CEILING)
        print(f"note: {methods_mod.CEILING} added: the calibrated ceiling sets every target")
    skipped: Dict[str, str] = {}
    chosen = []
    for k in keys:
        m = methods_mod.get(k)
        why = m.missing()
        if why:
            skipped[k] = why
        else:
            chosen.append(m)
    ws = []
    for n in names:
        w = workloads_mod.get(n)
        missing = [p for p in w.requires if methods_mod.missing_package(p)]
        if missing:
            skipped[n] = f"needs {', '.join(missing)} (pip install {' '.join(missing)})"
        else:
            ws.append(w)
    for k, why in skipped.items():
        print(f"skipped {k}: {why}")
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit(f"error: --seeds must be at least 1, got {args.seeds}")
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs must be at least 1, got {args.jobs}")
    n_seeds = args.seeds or (QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    seeds = list(range(args.seed, args.seed + n_seeds))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join("runs", f"suite-{stamp}")
    if args.score_only and not (args.out and os.path.isdir(os.path.join(out, "runs"))):
        raise SystemExit(f"error: --score-only needs the --out folder of an earlier suite "
                         f"run (one with a runs/ folder); got {args.out!r}")
    os.makedirs(out, exist_ok=True)
    ctx_kw = dict(quick=args.quick, data_dir=args.data_dir,
                  cache_dir=os.path.join(out, "cache"))
    execute = Executor(out, args.jobs, args.threads, not args.no_progress, args.score_only)
    started = time.perf_counter()
    tuned = [m for m in chosen if m.tuned]
    grids = plan_grids(ws, tuned, seeds[0], ctx_kw, execute, args.max_extensions)

    def budget(w):
        return w.budget_for(args.quick)
    best = {(w, m): methods_mod.best_rate(grid_finals(out, w, m, seeds[0], lrs, ctx_kw))
            for (w, m), lrs in grids.items()}
    rest: List[Job] = []
    anytime: List[Job] = []
    for w in ws:
        w_seeds = seeds[:w.max_seeds] if w.max_seeds else seeds
        for m in chosen:
            if not methods_mod.applies(m, w):
                continue
            if m.tuned:
                lr = best.get((w.name, m.key))
                if lr is not None:
                    rest += [Job(w.name, m.key, s, budget(w), lr, **ctx_kw)
                             for s in w_seeds[1:]]
                    if args.anytime and m.key == methods_mod.CEILING:
                        anytime += [Job(w.name, m.key, seeds[0], budget(w) // k, lr, **ctx_kw)
                                    for k in (4, 2)]
            else:
                rest += [Job(w.name, m.key, s, budget(w), **ctx_kw) for s in w_seeds]
    execute(rest + anytime, "runs")

    # -- scores ------------------------------------------------------------------------
    scores: Dict[str, Optional[dict]] = {}
    records_by_w: Dict[str, List[dict]] = {}
    for w in ws:
        jobs = [Job(w.name, m, seeds[0], budget(w), lr, **ctx_kw)
                for (wn, m), lrs in grids.items() if wn == w.name for lr in lrs]
        jobs += [j for j in rest if j.workload == w.name]
        recs = [r for r in (runner.load(j.path(out)) for j in jobs) if r is not None]
        records_by_w[w.name] = recs
        scores[w.name] = scoring.score_workload(recs)
    main = [w.name for w in ws if not w.held_out]
    held = [w.name for w in ws if w.held_out]
    labels = {m.key: m.label for m in methods_mod.METHODS}
    summaries = {"main": {"evals": scoring.summary(scores, main, "evals_to_target"),
                          "seconds": scoring.summary(scores, main, "seconds_to_target")},
                 "held-out": {"evals": scoring.summary(scores, held, "evals_to_target"),
                              "seconds": scoring.summary(scores, held, "seconds_to_target")}}
    meta = {"command": "python -m secant_ext " + " ".join(
                "--data-dir PATH/TO/MNIST" if a == args.data_dir else a for a in args.argv),
            "started": stamp, "wall_seconds": round(time.perf_counter() - started, 1),
            "score_only": args.score_only,
            # the runs' own wall time, summed (building, training, evaluating)
            "run_seconds": round(sum(r.get("wall_seconds", 0.0) for rs in records_by_w.values()
                                     for r in rs), 1),
            "seeds": seeds, "quick": args.quick, "jobs": args.jobs,
            "threads_per_run": args.threads,
            "images": "MNIST" if args.data_dir else "scikit-learn digits (stand-in)",
            "secant_ext": secant_ext.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "skipped": skipped,
            "failed_runs": execute.failures,
            "grids": {f"{w}/{m}": sorted(lrs) for (w, m), lrs in grids.items()},
            "target_slack": scoring.TARGET_SLACK, "tau_max": scoring.TAU_MAX}
    if args.data_dir:
        from ..experiments.datasets import mnist_sha256
        meta["mnist_sha256"] = mnist_sha256(args.data_dir)
    report.write_results(out, scores, {w.name: w.held_out for w in ws}, summaries, meta)
    text = []
    for w in ws:
        if scores[w.name] is None:
            text.append(f"{w.name}: no score (the ceiling has no finished run)")
        else:
            text.append(report.workload_table(w.name + (" [held-out]" if w.held_out else ""),
                                              scores[w.name], w.metric))
    for gname, ws_ in (("main", main), ("held-out", held)):
        if ws_:
            for cost in ("evals", "seconds"):
                text.append(report.summary_table(
                    summaries[gname][cost], labels,
                    f"{gname} workloads: time to target in {cost}"))
    body = "\n\n".join(text)
    from ..experiments.output import _write_atomic
    _write_atomic(os.path.join(out, "table.txt"), body + "\n")
    _write_atomic(os.path.join(out, "results.md"),
                  report.markdown(ws, scores, summaries, labels, meta))
    print(body)
    report.plot_profiles(os.path.join(out, "performance_profile.png"), scores,
                         {"main": main, "held-out": held}, labels)
    if args.anytime:
        horizon_free = {m.key for m in chosen if not m.knows_horizon and not m.tuned}
        panels = {}
        for w in ws:
            lr = best.get((w.name, methods_mod.CEILING))
            recs = [r for r in records_by_w[w.name] if r["job"]["seed"] == seeds[0] and (
                r["job"]["method"] in horizon_free or (
                    r["job"]["method"] == methods_mod.CEILING and r["job"]["lr"] == lr))]
            recs += [r for r in (runner.load(j.path(out)) for j in anytime
                                 if j.workload == w.name) if r is not None]
            panels[w.name] = recs
        report.plot_anytime(os.path.join(out, "anytime.png"), panels,
                            {w.name: w.metric for w in ws})
    if execute.failures:
        print(f"\n{len(execute.failures)} run(s) failed (listed in scores.json's meta): "
              f"{', '.join(execute.failures)}", file=sys.stderr)
    print(f"\nresults, records and plots in {out}/")
    return 1 if execute.failures else 0
