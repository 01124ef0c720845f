"""The race's language-model leg, ``reproduce race --models lm``: the race's methods on the
``lm`` workload (the byte transformer on the running Python's standard library, with
``reproduce lm``'s model options and defaults, batch 32 and validation), timed to a target
validation bits per byte instead of a test accuracy.

Each method runs ``--lm-budget`` gradient evaluations (backward passes) per seed and is
validated every ``--lm-budget / 15`` of them; the time to the target is read at that
resolution. Besides the cost to the target, a row gives the final and best bits per byte,
the value at the budget and the highest validation after the first fifth of the budget (a
loss spike shows there). Methods with a probe batch are left out (the LM loop has none).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

from .common import median_or_none, print_table
from .lm import LMResult, plot_curves, train_lm
from .methods import Method
from .output import RunDir
from .textlm import (ByteTransformer, add_model_arguments, load_corpus, unigram_bits, val_starts,
                     windows)

BATCH_SIZE = 32   # the lm batch (--batch-size is the image models')
VAL_POINTS = 15
LM_TARGET = 3.0   # validation bits per byte (byte frequencies: 4.51)
LM_BUDGET = 1500  # gradient evaluations per run


def add_arguments(p) -> None:
    add_model_arguments(p)
    p.add_argument("--target-lm", type=float, default=LM_TARGET,
                   help=f"LM target validation bits per byte (default {LM_TARGET:g})")
    p.add_argument("--lm-budget", type=int, default=LM_BUDGET,
                   help=f"LM gradient evaluations per run (default {LM_BUDGET})")


def to_target(r: LMResult, target: float) -> Dict[str, object]:
    """The race numbers of one LM run: the cost at the first validation at or below
    ``target`` bits per byte (None when never), the final, best and budget values, and
    the highest validation after the first fifth of the budget."""
    hit = next((e for e in r.evals if e["val_bpb"] <= target), None)
    bpb = [e["val_bpb"] if math.isfinite(e["val_bpb"]) else math.inf for e in r.evals]
    later = [v for e, v in zip(r.evals, bpb) if e["grad_evals"] >= r.budget / 5]
    return {"target": target, "reached": hit is not None,
            "grad_evals_to_target": hit["grad_evals"] if hit else None,
            "steps_to_target": hit["step"] if hit else None,
            "seconds_to_target": round(hit["train_seconds"], 3) if hit else None,
            "final_val_bpb": bpb[-1] if bpb else None, "best_val_bpb": min(bpb, default=None),
            "val_bpb_at_budget": r.bpb_at_evals,
            "max_val_bpb_after_first_fifth": max(later, default=None),
            "run_grad_evals": r.grad_evals, "run_seconds": round(r.train_seconds, 3),
            "diverged": r.diverged}


MEDIAN_KEYS = ("grad_evals_to_target", "steps_to_target", "seconds_to_target",
               "final_val_bpb", "best_val_bpb", "val_bpb_at_budget",
               "max_val_bpb_after_first_fifth")
COLUMNS = ("method", "reached") + MEDIAN_KEYS + ("tuning_grad_evals",)
HEADERS = ("method", "reached", "grad evals to target", "steps to target",
           "train s to target", "final bpb", "best bpb", "bpb @ budget",
           "max bpb after 1/5", "tuning-incl grad evals")


def summarize(per_run: Dict[str, Dict[int, Dict[str, object]]], families: Dict[str, str],
              grid_family: str) -> List[Dict[str, object]]:
    """One row per method (medians over seeds), and one for the SGD grid: per seed the
    member with the lowest bits per byte at the budget, with the cost of running every
    member until it reaches the target (or for its whole budget)."""
    rows = []
    grid = {n: v for n, v in per_run.items() if families[n] == grid_family}
    entries = [(n, v, families[n]) for n, v in per_run.items()]
    seeds = set.intersection(*(set(v) for v in grid.values())) if grid else set()
    if len(grid) > 1 and seeds:
        best = {}
        for s in sorted(seeds):
            runs = {n: v[s] for n, v in grid.items()}
            pick = min(runs, key=lambda n: math.inf if runs[n]["val_bpb_at_budget"] is None
                       else runs[n]["val_bpb_at_budget"])
            cost = sum(v["grad_evals_to_target"] if v["reached"] else v["run_grad_evals"]
                       for v in runs.values())
            best[s] = dict(runs[pick], best_member=pick, tuning_grad_evals=cost)
        entries.append((f"SGD grid (best of {len(grid)})", best, "SGD grid"))
    for name, per_seed, family in entries:
        vals = list(per_seed.values())
        row = {"model": "lm", "method": name, "family": family, "seeds": len(vals),
               "reached": f"{sum(bool(v['reached']) for v in vals)}/{len(vals)}"}
        row.update({k: median_or_none([v.get(k) for v in vals]) for k in MEDIAN_KEYS})
        row["tuning_grad_evals"] = median_or_none([v.get("tuning_grad_evals",
                                                  v["grad_evals_to_target"]) for v in vals])
        if family == "SGD grid":
            row["best_member"] = [v["best_member"] for v in vals]
        row["per_seed"] = {str(s): v for s, v in per_seed.items()}
        rows.append(row)
    return rows


def run_leg(args, out: RunDir, methods: Sequence[Method], seeds: Sequence[int],
            grid_family: str, progress: Optional[Callable[[str], None]] = None
            ) -> List[Dict[str, object]]:
    """Train every method without a probe batch on the LM for each seed; return the rows."""
    kept = [m for m in methods if m.probe_batch is None]
    for m in methods:
        if m.probe_batch is not None:
            print(f"lm: {m.name} left out (it needs a probe batch, which the LM loop has not)")
    corpus = load_corpus(max_bytes=args.max_bytes)
    ctx = args.context
    val_x, val_y = windows(corpus.val, val_starts(len(corpus.val), ctx, args.val_windows), ctx)
    baseline = unigram_bits(val_y)
    print(f"lm: {corpus.describe()}; byte-frequency baseline {baseline:.3f} bits/byte; "
          f"target {args.target_lm:g} bits/byte; {args.lm_budget} gradient evaluations a run")
    model = dict(d_model=args.d_model, layers=args.layers, heads=args.heads, context=ctx)
    model_fn = lambda: ByteTransformer(args.d_model, args.layers, args.heads, ctx)  # noqa: E731
    out.meta["lm"] = {"corpus": corpus.info(), "model": dict(model, batch_size=BATCH_SIZE),
                      "unigram_val_bits": baseline, "target": args.target_lm,
                      "budget": args.lm_budget}
    by_method: Dict[str, List[LMResult]] = {m.name: [] for m in kept}
    per_run: Dict[str, Dict[int, Dict[str, object]]] = {}
    families = {m.name: m.family for m in kept}
    rows: List[Dict[str, object]] = []
    try:
        for seed in seeds:
            for m in kept:
                if progress:
                    progress(f"lm seed {seed} {m.name}")
                r = train_lm(model_fn, m, corpus.train, val_x, val_y,
                             context=ctx, batch_size=BATCH_SIZE, seed=seed,
                             budget=args.lm_budget, step_budget=0, val_points=VAL_POINTS,
                             max_steps=args.max_steps, progress=not args.no_progress)
                by_method[m.name].append(r)
                numbers = to_target(r, args.target_lm)
                out.add(r, model="lm", seed=seed).update(numbers)
                out.write_json("results.json", out.rows)
                per_run.setdefault(m.name, {})[seed] = numbers
                rows = summarize(per_run, families, grid_family)
                out.write_json("race_lm.json", {"target": args.target_lm, "seeds": list(seeds),
                                                "rows": rows})
                hit = (f"target after {numbers['grad_evals_to_target']} grad evals"
                       if numbers["reached"] else "target not reached")
                print(f"      val {numbers['final_val_bpb']:.3f} bits/byte (best "
                      f"{numbers['best_val_bpb']:.3f}), {hit}"
                      + (", DIVERGED" if r.diverged else ""), flush=True)
    finally:
        if any(by_method.values()):
            plot_curves({k: v for k, v in by_method.items() if v},
                        out.file("lm_val_bpb.png"), baseline,
                        f"race, lm leg: validation bits per byte (mean over seed"
                        f"{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})")
    print_table(out, rows, COLUMNS, HEADERS,
                title=f"race, lm leg: medians over seeds {list(seeds)}; target "
                      f"{args.target_lm:g} bits/byte, budget {args.lm_budget} grad evals")
    for g in (r for r in rows if r["family"] == "SGD grid"):
        print(f"lm: best SGD grid member per seed: {', '.join(g['best_member'])}")
    return rows


def verdict(rows: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """The best Secant row, the best untuned peer and the SGD grid, by median bits per
    byte at the budget and gradient evaluations to the target; printed and returned."""
    def best(pred, key):
        cands = [r for r in rows if pred(r) and r[key] is not None]
        return min(cands, key=lambda r: r[key]) if cands else None
    secant = lambda r: r["family"].startswith("A-")  # noqa: E731
    grid = lambda r: r["family"] == "SGD grid"  # noqa: E731
    peer = lambda r: not secant(r) and not grid(r) and not r["method"].startswith("SGD ")  # noqa: E731,E501
    out: Dict[str, object] = {}
    for key, what in (("val_bpb_at_budget", "bits/byte at the budget"),
                      ("grad_evals_to_target", "grad evals to the target")):
        picks = {label: best(pred, key) for label, pred in
                 (("best secant", secant), ("best untuned peer", peer), ("SGD grid", grid))}
        out[key] = {k: v and {"method": v["method"], "value": v[key]} for k, v in picks.items()}
        print(f"lm, {what}: " + "; ".join(
            f"{k} {v['method']} {v[key]:.4g}" if v else f"{k}: none" for k, v in picks.items()))
    return out
