"""``reproduce race``: time to a target test accuracy, the secant optimizers against the
learning-rate-free peers, Adam and a constant-rate SGD grid.

Methods (``--methods``; the default set is the first nine):

- ``secant-sgd``: SecantSGD with its defaults (A-SGD, 2 gradient evaluations a step);
- ``secant-sgdm``: SecantSGDM, momentum 0.9;
- ``secant-sgd-probe``: SecantSGD with a probe closure on a separate batch of
  ``--probe-batch`` (16) examples drawn uniformly, with replacement, from the training set
  at each step (seeded, independent of the training batch): 1 gradient on the 128-example
  batch and 2 on the probe batch, 3 gradient evaluations a step;
- ``sf-sgd``, ``sf-adamw``: Schedule-Free SGD and AdamW (package ``schedulefree``, their
  constructor defaults: lr 1.0 and 0.0025, no warmup), evaluated in ``eval()`` mode;
- ``prodigy``: Prodigy lr=1 (``prodigyopt``); ``dadapt-sgd``: D-Adaptation SGD lr=1
  (``dadaptation``); ``adam``: torch's Adam lr=1e-3;
- ``sgd-grid``: SGD at each of the constant rates ``--lrs`` (5 runs a user must make).

Secant levers (selectable, not in the default set; no per-task tuning: ``lr`` multiplier 1
except the ``-x2`` keys, which fix it at 2):

- ``asgd-k4``, ``asgd-k8``: SecantSGD with ``curvature_every`` 4 or 8 (every k-th step
  measures alpha with two evaluations, the others evaluate once and use the EMA of the
  measured alphas: 1 + 1/k gradient evaluations a step on average);
- ``asgd-avg``: SecantSGD with ``average=True`` (k=1), evaluated in ``eval()`` mode at
  the averaged iterate;
- ``asgd-k4-avg``, ``asgd-k8-avg``: ``curvature_every`` 4 or 8 and ``average=True``;
  ``asgdm-k8-avg``: k=8 and averaging for SecantSGDM, momentum 0.9;
- ``asgd-k8-avg-probe``: ``asgd-k8-avg`` plus the ``--probe-batch`` probe closure, which
  is called (twice) on the measuring steps only: 1 + 2/8 evaluations a step on average.
- These carry from the first step on (``curvature_warmup=0``, as first measured);
  ``asgd-k4-avg-warm``, ``asgd-k8-avg-warm``, ``asgdm-k8-avg-warm`` keep the optimizer's
  default warm-up: each of the first 100 steps measures before the carry starts.
- ``asgd-clip``, ``asgdm-clip``: ``max_grad_norm=1`` (the step is clipped, not the
  measurement); ``asgdm-k8-avg-clip``: SecantSGDM k=8, averaging, warm-up and the clip;
- ``asgd-steffensen-clip``: ``rule="steffensen"`` (alpha = 1 / curvature: no scale fixed
  by a regularization, so alpha may exceed 1) with ``max_grad_norm=1``;
- ``asgd-x2-clip``, ``asgd-x2-k8-clip``, ``asgd-x2-k8-avg-warm``, ``asgd-x2-k8-avg-clip``,
  ``asgd-x2-k16-avg-clip``, ``asgdm-x2-k8-avg-clip``: ``lr=2``, the rule's
  step doubled (gradient descent along a direction of curvature kappa is stable up to
  2 / kappa, twice the Newton step 1 / kappa that alpha approximates), with the clip,
  k=8 (with the warm-up), averaging and momentum as named;
- ``asgd-tensor``, ``asgdm-tensor``: one param group per parameter tensor, so each tensor
  takes its own alpha from its own statistics.

``--models lm`` adds a third model: the byte transformer of ``reproduce lm`` (its model
options, batch 32), each method run for ``--lm-budget`` gradient evaluations and timed to
``--target-lm`` validation bits per byte (``race_lm``); methods with a probe batch are left
out there. It is not in the default set: about 2.5 minutes per run on one core.

The three peers' packages are optional: a missing one is skipped and named (on screen, in
``summary.json`` and in ``race.json``).

Every method of a seed starts from the same weights and sees the same batches (and the
probe method the same probes); ``--seeds N`` runs seeds ``--seed`` ... ``--seed+N-1``.
Test accuracy is evaluated ``--evals-per-epoch`` times per epoch (4 here: every quarter
epoch), so the time to the target is read at quarter-epoch resolution. Wall seconds are
the timed optimizer steps only (closures included, evaluations excluded), one CPU thread
per run unless ``--threads`` says otherwise. A gradient evaluation is one backward pass
(one closure call), whatever its batch size: a probe pass counts as one; ``examples``
counts the examples whose gradient was taken.

Per model and method the table gives medians over the seeds (a seed that never reaches
the target counts as infinitely slow; ``reached`` says how many did) and ``race.json``
the per-seed values. The SGD grid row is, per seed, the grid member that reached the
target in the fewest gradient evaluations; its tuning-inclusive cost is what finding that
member costs: each of the 5 runs until it reaches the target, or its whole budget when it
never does. ``grid total`` is the cost of all 5 runs for the whole budget.

Cost on one CPU core (measured on full MNIST on a shared 2-core machine): the MLP's
13 runs take about 2.5 minutes per seed at 5 epochs, the CNN's about 12 minutes per
seed at 3 epochs; the defaults (both models, 3 seeds, 5 epochs) about an hour and a
half. ``--models mlp``, ``--epochs``, ``--max-train`` and ``--methods`` cut it down. The
Secant levers with Schedule-Free SGD (9 methods, MLP, 3 seeds) take about 3 minutes; the
CNN about 35 to 50 seconds a run.

After the verdicts the run prints a goal check per model (``goal_check`` in
``summary.json``): each secant method's median train seconds to the target against the
best untuned peer's, with its median final accuracy and lowest accuracy after epoch 1.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence

import torch

from .common import choices, floats, load_flat_mnist, median_or_none, print_table
from .datasets import Dataset
from .methods import (LEVERS, SECANT_ADAM, SECANT_ADAM_LEVERS, SECANT_DEFAULTS, Method, a_sgd,
                      adam, lever, lr_free_extras, secant_adam, secant_adam_lever, sgd_const)
from .models import cross_entropy, mlp, small_cnn
from .output import RunDir
from . import race_lm
from .training import RunResult, train
from ._deps import pyplot

DEFAULTS = dict(epochs=5, batch_size=128)
MODELS = ("mlp", "cnn", "lm")
IMAGE_MODELS = ("mlp", "cnn")
DEFAULT_KEYS = ("secant-adam", "secant-sgd", "secant-sgdm", "secant-sgd-probe", "sf-sgd", "sf-adamw",
                "prodigy", "dadapt-sgd", "adam", "sgd-grid")
METHOD_KEYS = DEFAULT_KEYS + tuple(LEVERS) + tuple(SECANT_ADAM_LEVERS) + tuple(SECANT_ADAM)
# target test accuracy (%) per data set and model
TARGETS = {("mnist", "mlp"): 97.0, ("mnist", "cnn"): 98.0,
           ("digits", "mlp"): 95.0, ("digits", "cnn"): 93.0}
PACKAGES = {"sf-sgd": "schedulefree", "sf-adamw": "schedulefree", "prodigy": "prodigyopt",
            "dadapt-sgd": "dadaptation"}
GRID_FAMILY = "SGD const"
GRID_ROW = "SGD grid (best of {n})"
SECANT_DEFAULT = "SecantAdam"  # the method the verdicts and goals judge


def add_arguments(p) -> None:
    p.add_argument("--models", type=choices(MODELS, "models"), default=list(IMAGE_MODELS),
                   help="comma-separated subset of mlp,cnn,lm (default mlp,cnn; lm: the "
                        "byte transformer of 'reproduce lm', to a bits-per-byte target)")
    p.add_argument("--methods", type=choices(METHOD_KEYS, "methods"),
                   default=list(DEFAULT_KEYS),
                   help=f"comma-separated subset of {','.join(METHOD_KEYS)} (default "
                        f"{','.join(DEFAULT_KEYS)}; the module's docstring says what each "
                        "Secant lever sets)")
    p.add_argument("--seeds", type=int, default=3,
                   help="number of seeds: --seed, --seed+1, ... (default 3)")
    p.add_argument("--lrs", type=floats, default=floats("0.01,0.03,0.1,0.3,1"),
                   help="the SGD grid's constant rates (default %(default)s)")
    p.add_argument("--probe-batch", type=int, default=16,
                   help="probe batch size of secant-sgd-probe (default 16)")
    p.add_argument("--target-mlp", type=float,
                   help="MLP target test accuracy %% (default 97 on MNIST, 95 on digits)")
    p.add_argument("--target-cnn", type=float,
                   help="CNN target test accuracy %% (default 98 on MNIST, 93 on digits)")
    p.add_argument("--train-loss-examples", type=int, default=10000,
                   help="training examples the logged training loss is measured on "
                        "(default 10000; 0: all)")
    p.add_argument("--hidden", type=int, default=128, help="MLP hidden units (default 128)")
    race_lm.add_arguments(p)
    p.set_defaults(evals_per_epoch=4)


# -- methods ---------------------------------------------------------------------------------
def _schedule_free(label: str, cls_name: str) -> Optional[Method]:
    try:
        cls = getattr(importlib.import_module("schedulefree"), cls_name)
    except ImportError:
        return None
    return Method(label, label, lambda p: cls(p), hyper={"defaults": True,
                                                       "package": "schedulefree"})


def build_methods(keys: Sequence[str], args):
    """The chosen methods in order, and the skipped optional peers: {name: reason}."""
    b = args.backend
    lr_free = None
    out: List[Method] = []
    skipped: Dict[str, str] = {}
    for key in keys:
        if key in SECANT_DEFAULTS:
            out.append(SECANT_DEFAULTS[key](b))
        elif key == "secant-sgd-probe":
            m = a_sgd(f"A-SGD b_H={args.probe_batch}", backend=b)
            out.append(dataclasses.replace(m, probe_batch=args.probe_batch,
                                           hyper={"b_H": args.probe_batch}))
        elif key in LEVERS:
            out.append(lever(key, backend=b, probe_batch=args.probe_batch))
        elif key in SECANT_ADAM_LEVERS:
            out.append(secant_adam_lever(key, backend=b))
        elif key in SECANT_ADAM:
            out.append(secant_adam(key))
        elif key in ("sf-sgd", "sf-adamw"):
            label, cls = (("SF-SGD", "SGDScheduleFree") if key == "sf-sgd" else
                          ("SF-AdamW", "AdamWScheduleFree"))
            m = _schedule_free(label, cls)
            if m is None:
                skipped[label] = f"package '{PACKAGES[key]}' not installed"
            else:
                out.append(m)
        elif key in ("prodigy", "dadapt-sgd"):
            lr_free = lr_free if lr_free is not None else lr_free_extras()
            label = "Prodigy" if key == "prodigy" else "D-Adapt SGD"
            if lr_free.get(label) is None:
                skipped[label] = f"package '{PACKAGES[key]}' not installed"
            else:
                out.append(lr_free[label])
        elif key == "adam":
            out.append(adam(1e-3))
        elif key == "sgd-grid":
            out += [sgd_const(lr) for lr in args.lrs]
    return out, skipped


# -- per-run and per-method numbers ------------------------------------------------------------
def to_target(r: RunResult, target: float) -> Dict[str, object]:
    """The race numbers of one run: the cost at the first evaluation at or above
    ``target`` (None when never), best and final accuracy, the lowest accuracy from the
    end of the first epoch on, and the whole run's cost."""
    hit = next((e for e in r.evals if e["test_acc"] >= target), None)
    accs = [e["test_acc"] for e in r.evals]
    later = [e["test_acc"] for e in r.evals if e["epoch"] >= 1.0]
    return {"target": target, "reached": hit is not None,
            "grad_evals_to_target": hit["grad_evals"] if hit else None,
            "examples_to_target": hit["examples"] if hit else None,
            "seconds_to_target": round(hit["train_seconds"], 3) if hit else None,
            "epochs_to_target": hit["epoch"] if hit else None,
            "final_test_acc": accs[-1] if accs else None,
            "best_test_acc": max(accs) if accs else None,
            "min_test_acc_after_epoch1": min(later) if later else None,
            "run_grad_evals": r.grad_evals, "run_seconds": round(r.train_seconds, 3),
            "diverged": r.diverged}


MEDIAN_KEYS = ("grad_evals_to_target", "examples_to_target", "seconds_to_target",
               "final_test_acc", "best_test_acc", "min_test_acc_after_epoch1",
               "tuning_seconds", "tuning_grad_evals")


def _untuned(per_seed: Dict[int, Dict[str, object]]) -> Dict[int, Dict[str, object]]:
    return {s: dict(v, tuning_runs=1, tuning_seconds=v["seconds_to_target"],
                    tuning_grad_evals=v["grad_evals_to_target"])
            for s, v in per_seed.items()}


def _grid(members: Dict[str, Dict[int, Dict[str, object]]], n_lrs: int):
    """Per seed (only seeds where every grid member finished): the member that reached
    the target in the fewest gradient evaluations (else the best final accuracy), with
    the tuning-inclusive cost of finding it and the cost of the whole grid."""
    seeds = set.intersection(*(set(v) for v in members.values())) if members else set()
    out = {}
    for s in sorted(seeds):
        runs = {name: v[s] for name, v in members.items()}
        reached = {k: v for k, v in runs.items() if v["reached"]}
        if reached:
            pick = min(reached, key=lambda k: (reached[k]["grad_evals_to_target"],
                                               reached[k]["seconds_to_target"]))
            until = lambda v, key, full: v[key] if v["reached"] else v[full]  # noqa: E731
            tuning_s = sum(until(v, "seconds_to_target", "run_seconds") for v in runs.values())
            tuning_g = sum(until(v, "grad_evals_to_target", "run_grad_evals")
                           for v in runs.values())
        else:
            pick = max(runs, key=lambda k: runs[k]["final_test_acc"] or -1)
            tuning_s = tuning_g = None
        out[s] = dict(runs[pick], best_member=pick, tuning_runs=n_lrs,
                      tuning_seconds=None if tuning_s is None else round(tuning_s, 3),
                      tuning_grad_evals=tuning_g,
                      grid_total_seconds=round(sum(v["run_seconds"] for v in runs.values()), 3),
                      grid_total_grad_evals=sum(v["run_grad_evals"] for v in runs.values()))
    return out


def summarize(per_run: Dict[tuple, Dict[int, Dict[str, object]]], families: Dict[str, str],
              n_lrs: int) -> List[Dict[str, object]]:
    """One row per (model, method) with medians over seeds and the per-seed values; the
    grid members keep their own rows and add one 'SGD grid' row."""
    rows = []
    models = list(dict.fromkeys(m for m, _ in per_run))
    for model in models:
        names = [name for m, name in per_run if m == model]
        grid_members = {n: per_run[(model, n)] for n in names if families[n] == GRID_FAMILY}
        entries = [(n, _untuned(per_run[(model, n)]), families[n]) for n in names]
        if len(grid_members) == n_lrs and n_lrs:
            g = _grid(grid_members, n_lrs)
            if g:
                entries.append((GRID_ROW.format(n=n_lrs), g, "SGD grid"))
        for name, per_seed, family in entries:
            vals = list(per_seed.values())
            hits = sum(bool(v["reached"]) for v in vals)
            row = {"model": model, "method": name, "family": family, "seeds": len(vals),
                   "reached": f"{hits}/{len(vals)}", "reached_count": hits,
                   "tuning_runs": vals[0]["tuning_runs"] if vals else None}
            row.update({k: median_or_none([v.get(k) for v in vals]) for k in MEDIAN_KEYS})
            if family == "SGD grid":
                row["grid_total_seconds"] = median_or_none([v["grid_total_seconds"]
                                                            for v in vals])
                row["grid_total_grad_evals"] = median_or_none([v["grid_total_grad_evals"]
                                                               for v in vals])
                row["best_member"] = [v["best_member"] for v in vals]
            row["per_seed"] = {str(s): v for s, v in per_seed.items()}
            rows.append(row)
    return rows


RACE_COLUMNS = ("model", "method", "reached", "grad_evals_to_target", "examples_to_target",
                "seconds_to_target", "final_test_acc", "best_test_acc",
                "min_test_acc_after_epoch1", "tuning_runs", "tuning_grad_evals",
                "tuning_seconds")
RACE_HEADERS = ("model", "method", "reached", "grad evals to target", "examples to target",
                "train s to target", "final acc %", "best acc %", "min acc % after ep 1",
                "tuning runs", "tuning-incl grad evals", "tuning-incl s")


def verdicts(rows: Sequence[Dict[str, object]]) -> Dict[str, Dict[str, object]]:
    """Per model: the secant default against the best untuned peer and the tuned grid, in
    median gradient evaluations and wall seconds to the target (ratio > 1: slower)."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["method"]: r for r in rows if r["model"] == model}
        a = mine.get(SECANT_DEFAULT)
        peers = [r for r in mine.values() if not r["family"].startswith("A-")
                 and r["family"] not in (GRID_FAMILY,)]
        untuned = [r for r in peers if r["family"] != "SGD grid"]
        v: Dict[str, object] = {}
        for label, pool in (("best untuned peer", untuned), ("best peer incl. grid", peers)):
            for key in ("grad_evals_to_target", "seconds_to_target", "tuning_seconds"):
                ok = [r for r in pool if r[key] is not None]
                if not ok:
                    continue
                b = min(ok, key=lambda r: r[key])
                entry = {"method": b["method"], "value": b[key]}
                if a is not None and a[key] is not None:
                    entry["secant_default"] = a[key]
                    entry["ratio"] = round(a[key] / b[key], 3) if b[key] else None
                elif a is not None:
                    entry["secant_default"] = None  # did not reach the target
                v[f"{label}: {key}"] = entry
        out[model] = v
    return out


GOAL = dict(seconds_ratio=1.25, final_acc=97.5, min_acc_after_epoch1=95.0)


def goal_check(rows: Sequence[Dict[str, object]], goal=GOAL) -> Dict[str, Dict[str, object]]:
    """Per model and secant method: its median train seconds to the target against the
    best untuned peer's (ratio > 1: slower), and whether it meets ``goal``: reached on
    every seed, a ratio within ``seconds_ratio``, median final accuracy at least
    ``final_acc`` and median lowest accuracy after epoch 1 at least
    ``min_acc_after_epoch1``."""
    out: Dict[str, Dict[str, object]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        peers = [r for r in mine if not r["family"].startswith("A-")
                 and r["family"] not in (GRID_FAMILY, "SGD grid")
                 and r["seconds_to_target"] is not None]
        best = min(peers, key=lambda r: r["seconds_to_target"]) if peers else None
        checks = {}
        for r in mine:
            if not r["family"].startswith("A-"):
                continue
            ratio = (round(r["seconds_to_target"] / best["seconds_to_target"], 3)
                     if best and r["seconds_to_target"] is not None
                     and best["seconds_to_target"] else None)
            final, low = r["final_test_acc"], r["min_test_acc_after_epoch1"]
            checks[r["method"]] = {
                "seconds_ratio": ratio, "final_test_acc": final,
                "min_test_acc_after_epoch1": low, "reached": r["reached"],
                "meets_goal": bool(r["reached_count"] == r["seeds"] and ratio is not None
                                   and ratio <= goal["seconds_ratio"]
                                   and final is not None and final >= goal["final_acc"]
                                   and low is not None
                                   and low >= goal["min_acc_after_epoch1"])}
        out[model] = {"best_untuned_peer": best["method"] if best else None,
                      "peer_seconds": best["seconds_to_target"] if best else None,
                      "goal": dict(goal), "secant": checks}
    return out


# -- plots ---------------------------------------------------------------------------------------
def _median_curve(results: Sequence[RunResult], xkey: str):
    n = min(len(r.evals) for r in results)
    xs = [statistics.median([r.evals[i][xkey] for r in results]) for i in range(n)]
    ys = [statistics.median([r.evals[i]["test_acc"] for r in results]) for i in range(n)]
    return xs, ys


def plot_race(runs: Dict[tuple, List[RunResult]], targets: Dict[str, float], path: str,
              xkey: str, xlabel: str, title: str) -> str:
    """Median (over seeds) test accuracy against ``xkey``, one panel per model."""
    plt = pyplot()
    models = list(dict.fromkeys(m for m, _ in runs))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.8), squeeze=False)
    # distinct hues: tab20 pairs a dark and a light shade of one colour
    colors = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors
    for ax, model in zip(axes.flat, models):
        names = [n for m, n in runs if m == model]
        lowest = 100.0
        for i, name in enumerate(names):
            results = [r for r in runs[(model, name)] if r.evals]
            if not results:
                continue
            xs, ys = _median_curve(results, xkey)
            fam = results[0].method.family
            style = (dict(lw=2.2, ls="-") if fam.startswith("A-") else
                     dict(lw=0.9, ls=":") if fam == GRID_FAMILY else dict(lw=1.3, ls="--"))
            ax.plot(xs[1:], ys[1:], label=name, color=colors[i % len(colors)], **style)
            lowest = min([lowest] + ys[1:])
        t = targets[model]
        ax.axhline(t, color="k", lw=0.8, alpha=0.6)
        ax.set_ylim(max(lowest - 0.5, t - 8.0), 100.0)
        ax.set(title=f"{model} (target {t:g}%)", xlabel=xlabel,
               ylabel="test accuracy % (median over seeds)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the experiment ------------------------------------------------------------------------------
def _model_data(model: str, data: Dataset, hidden: int):
    dim = data.input_shape[0]
    if model == "mlp":
        return (lambda: mlp(dim, 10, hidden)), data
    side = int(math.isqrt(dim))
    images = Dataset(data.name, data.x_train.view(-1, 1, side, side), data.y_train,
                     data.x_test.view(-1, 1, side, side), data.y_test, 10, data.note)
    return (lambda: small_cnn(1, side, 10)), images


def run(args) -> RunDir:
    if not args.threads:
        torch.set_num_threads(1)  # comparable wall times: one CPU thread per run
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    if "lm" in args.models and args.lm_budget < 1:  # before any model runs
        raise ValueError(f"--lm-budget must be at least 1, got {args.lm_budget}")
    out = RunDir("race", args.out, vars(args))
    out.meta["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    image_models = [m for m in args.models if m in IMAGE_MODELS]
    data = load_flat_mnist(args) if image_models else None
    kind = "mnist" if data is not None and data.name == "mnist" else "digits"
    targets = {m: getattr(args, f"target_{m}") or TARGETS[(kind, m)] for m in image_models}
    methods, skipped = build_methods(args.methods, args)
    for name, why in skipped.items():
        print(f"skipped: {name} ({why}; pip install {why.split(chr(39))[1]})")
    seeds = [args.seed + i for i in range(args.seeds)]
    families = {m.name: m.family for m in methods}
    n_lrs = sum(m.family == GRID_FAMILY for m in methods)
    out.meta.update(seeds=seeds, targets=targets, skipped=skipped,
                    methods=[m.name for m in methods])
    out.write_json("meta.json", out.meta)

    runs: Dict[tuple, List[RunResult]] = {}
    per_run: Dict[tuple, Dict[int, Dict[str, object]]] = {}
    rows: List[Dict[str, object]] = []

    def save():
        nonlocal rows
        rows = summarize(per_run, families, n_lrs)
        out.write_json("race.json", {"dataset": data.describe(), "targets": targets,
                                     "seeds": seeds, "skipped": skipped, "rows": rows})
        out.write_csv("race.csv", [{k: v for k, v in r.items() if k != "per_seed"}
                                   for r in rows])

    total = len(seeds) * (len(image_models) * len(methods) + ("lm" in args.models) * sum(
        m.probe_batch is None for m in methods))
    done = 0
    title = f"race on {data.name}" if data is not None else "race"
    try:
        for model in image_models:
            model_fn, ds = _model_data(model, data, args.hidden)
            for seed in seeds:
                for m in methods:
                    done += 1
                    print(f"[{done}/{total}] {model} seed {seed} {m.name}", flush=True)
                    r = train(model_fn, m, ds, cross_entropy, epochs=args.epochs,
                              batch_size=args.batch_size, seed=seed,
                              max_steps=args.max_steps, evals_per_epoch=args.evals_per_epoch,
                              progress=not args.no_progress,
                              train_loss_examples=args.train_loss_examples or None)
                    row = out.add(r, model=model, seed=seed)
                    numbers = to_target(r, targets[model])
                    row.update(numbers)
                    out.write_json("results.json", out.rows)
                    out.write_csv("results.csv", out.rows)
                    runs.setdefault((model, m.name), []).append(r)
                    per_run.setdefault((model, m.name), {})[seed] = numbers
                    save()
                    hit = (f"target {targets[model]:g}% after {numbers['grad_evals_to_target']}"
                           f" grad evals, {numbers['seconds_to_target']:.1f} s"
                           if numbers["reached"] else f"target {targets[model]:g}% not reached")
                    print(f"      test acc {numbers['final_test_acc']:.2f}% (best "
                          f"{numbers['best_test_acc']:.2f}%), {hit}"
                          + (", DIVERGED" if r.diverged else ""), flush=True)
    finally:
        if runs:
            plot_race(runs, targets, out.file("acc_vs_grad_evals.png"), "grad_evals",
                      "gradient evaluations (backward passes)", title)
            plot_race(runs, targets, out.file("acc_vs_seconds.png"), "train_seconds",
                      "train wall seconds (evaluations excluded)", title)
    lm_rows: List[Dict[str, object]] = []
    if "lm" in args.models:
        def announce(what):
            nonlocal done
            done += 1
            print(f"[{done}/{total}] {what}", flush=True)
        lm_rows = race_lm.run_leg(args, out, methods, seeds, GRID_FAMILY, announce)
    text = ""
    if rows:
        text = print_table(out, rows, RACE_COLUMNS, RACE_HEADERS,
                           title=f"race ({data.describe()}); medians over seeds {seeds}; "
                                 f"targets {targets}")
    grid = [r for r in rows if r["family"] == "SGD grid"]
    for g in grid:
        print(f"{g['model']}: the SGD grid costs {g['grid_total_grad_evals']:.0f} grad evals, "
              f"{g['grid_total_seconds']:.1f} train s for all {n_lrs} runs (median over "
              f"seeds); best member per seed: {', '.join(g['best_member'])}")
    if skipped:
        print("skipped (not installed): " + ", ".join(skipped))
    v = verdicts(rows)
    for model, entries in v.items():
        for key, e in entries.items():
            ratio = e.get("ratio")
            print(f"{model}: {key}: {e['method']} {e['value']:.4g}; {SECANT_DEFAULT} "
                  + (f"{e['secant_default']:.4g} (x{ratio:.2f})" if ratio is not None
                     else "did not reach the target" if "secant_default" in e else "not run"))
    goals = goal_check(rows)
    for model, g in goals.items():
        if not g["secant"] or g["best_untuned_peer"] is None:
            continue
        print(f"{model}: goal (train s to target <= {GOAL['seconds_ratio']}x "
              f"{g['best_untuned_peer']}'s {g['peer_seconds']:.4g}, final acc >= "
              f"{GOAL['final_acc']}%, no dip below {GOAL['min_acc_after_epoch1']}% after "
              "epoch 1; medians):")
        for name, c in g["secant"].items():
            ratio = "-" if c["seconds_ratio"] is None else f"x{c['seconds_ratio']:.2f}"
            print(f"  {name}: {ratio}, final {c['final_test_acc']}, min after ep 1 "
                  f"{c['min_test_acc_after_epoch1']}, reached {c['reached']}: "
                  + ("MEETS the goal" if c["meets_goal"] else "misses the goal"))
    out.meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.finish({"dataset": data.describe() if data is not None else None,
                "targets": dict(targets, **({"lm": args.target_lm} if lm_rows else {})),
                "seeds": seeds, "skipped": skipped, "verdicts": v, "goal_check": goals,
                "table": text, "lm": race_lm.verdict(lm_rows) if lm_rows else None})
    print(f"\nresults, histories and plots in {out.path}/")
    return out
