"""``reproduce lm``: a byte-level transformer language model on the running Python's own
standard library (``textlm``), the secant methods against AdamW, an SGD grid and, when
installed, Prodigy and ScheduleFree AdamW.

Every method starts from the same weights and sees the same batches (random windows drawn
from a generator seeded by the seed) in the same order; validation is bits per byte on
fixed windows of the held-out last 10%. A secant step evaluates the gradient twice, so
methods are compared at two budgets: a number of steps (``--step-budget``) and a number of
gradient evaluations (``--budget``). Each method runs until it has reached both
(``--step-budget 2``: compare at gradient evaluations only).

``--methods`` picks the methods: the default set, ``sgd-clip-grid`` (the SGD grid with
the gradient clipped to norm 1, the comparison for Secant settings that clip), and the
Secant levers of ``reproduce race`` (the same keys, the same settings).
"""
from __future__ import annotations

import importlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from secant_ext.history import StepHistory

from ._deps import pyplot, require
from .common import choices, floats, print_table
from .methods import (LEVERS, SECANT_ADAM, SECANT_ADAM_LEVERS, SECANT_DEFAULTS, Method,
                      closure_loss, lever, secant_adam, secant_adam_lever, sgd_clipped,
                      sgd_const)
from .output import RunDir
from .plots import _save, _style, alpha_vs_grad_norm
from .training import counting_closure, evaluating, has_eval_mode
from .textlm import (ByteTransformer, add_model_arguments, bits_per_byte, batch_starts,
                     expected_params, lm_loss, load_corpus, n_params, unigram_bits, val_starts, windows)

from ..suite.workloads import LM_BATCH, LM_BUDGET

# the model, batch and full budget are the suite's lm workload's
FULL_BUDGET = LM_BUDGET
DEFAULT_BUDGET = 300
DEFAULTS = dict(epochs=None, batch_size=LM_BATCH)
UNUSED = ("data_dir", "epochs", "max_train", "max_test")


def add_arguments(p) -> None:
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                   help=f"gradient evaluations per method at which methods are compared "
                        f"(default {DEFAULT_BUDGET}, sized for a few minutes on 2 CPU cores; "
                        f"the full run is --budget {FULL_BUDGET}, 5x longer)")
    p.add_argument("--step-budget", type=int,
                   help="steps per method at which methods are compared (default: --budget); "
                        "a secant method runs until it has taken these steps and used "
                        "--budget gradient evaluations, the others likewise")
    p.add_argument("--seeds", type=int, default=1,
                   help="number of seeds, --seed, --seed+1, ... (default 1; 3 for error bars)")
    add_model_arguments(p)
    p.add_argument("--val-points", type=int, default=5,
                   help="validations per --budget gradient evaluations (default 5), plus "
                        "the start and the two budgets")
    p.add_argument("--sgd-lrs", type=floats, default=floats("0.1,0.3,1"),
                   help="SGD learning-rate grid (default %(default)s)")
    p.add_argument("--adamw-lr", type=float, default=1e-3, help="AdamW lr (default 1e-3)")
    p.add_argument("--adamw-lrs", type=floats, default=floats("3e-4,1e-3,3e-3,1e-2"),
                   help="AdamW grid of --methods adamw-grid (default %(default)s)")
    p.add_argument("--muon-lrs", type=floats, default=floats("3e-3"),
                   help="learning rates of --methods muon (torch.optim.Muon on the hidden "
                        "matrices, AdamW on the rest, the same lr; default %(default)s)")
    p.add_argument("--no-peers", action="store_true",
                   help="leave out the optional peers Prodigy and ScheduleFree AdamW")
    p.add_argument("--methods", type=choices(METHOD_KEYS, "methods"), default=list(DEFAULT_KEYS),
                   help=f"comma-separated subset of {','.join(METHOD_KEYS)} (default "
                        f"{','.join(DEFAULT_KEYS)}; the Secant levers (asgd-*, asgdm-*) are "
                        "the settings of the same keys in 'reproduce race')")


# -- methods ----------------------------------------------------------------------------------
def adamw(lr: float) -> Method:
    return Method(f"AdamW lr={lr:g}", "AdamW", lambda p: torch.optim.AdamW(p, lr=lr),
                  hyper={"lr": lr})


class MuonAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` on the blocks' 2-D weights, ``torch.optim.AdamW`` on the rest
    (embeddings, head, biases, LayerNorms), both at ``lr``. The hidden matrices are told
    apart by the byte transformer's parameter order: the two embeddings come first and the
    head's weight is the last 2-D parameter."""

    def __init__(self, params, lr: float):
        params = list(params)
        mats = [i for i, p in enumerate(params) if p.ndim == 2]
        outer = set(mats[:2] + mats[-1:])
        hidden = [p for i, p in enumerate(params) if p.ndim == 2 and i not in outer]
        rest = [p for i, p in enumerate(params) if not (p.ndim == 2 and i not in outer)]
        self.muon = torch.optim.Muon(hidden, lr=lr)
        self.adamw = torch.optim.AdamW(rest, lr=lr)
        super().__init__(params, {"lr": lr})

    def zero_grad(self, set_to_none: bool = True):
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        self.muon.step()
        self.adamw.step()
        return loss


def muon(lr: float) -> Method:
    return Method(f"Muon+AdamW lr={lr:g}", "Muon", lambda p: MuonAdamW(p, lr=lr),
                  hyper={"lr": lr, "muon": "torch.optim.Muon on the hidden matrices"})


# (label, module, class, kwargs, pip name): learning-rate-free or schedule-free peers
OPTIONAL_PEERS = (("Prodigy lr=1", "prodigyopt", "Prodigy", {"lr": 1.0}, "prodigyopt"),
                  ("ScheduleFree AdamW", "schedulefree", "AdamWScheduleFree", {},
                   "schedulefree"))


def optional_peers(peers=OPTIONAL_PEERS) -> Tuple[List[Method], Dict[str, str]]:
    """The peers whose packages import, and ``{label: why skipped}`` for the others."""
    found, skipped = [], {}
    for label, module, cls, kw, pip_name in peers:
        try:
            opt_cls = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            skipped[label] = f"{module} not installed (pip install {pip_name}): {exc}"
            continue
        found.append(Method(label, label.split(" lr=")[0], lambda p, c=opt_cls, k=kw: c(p, **k),
                            hyper=dict(kw, package=module)))
    return found, skipped


# --methods keys: the default set, then the Secant levers the MNIST race measures too
# (those without a probe: this loop has no probe batch)
DEFAULT_KEYS = ("secant-adam", "secant-sgd", "secant-sgdm", "secant-signsgd", "secant-signsgdm", "adamw",
                "sgd-grid", "prodigy", "sf-adamw")
# sgd-clip-grid: the SGD grid with the gradient clipped to norm 1 first, the fair
# comparison for the Secant settings that clip (max_grad_norm=1)
METHOD_KEYS = DEFAULT_KEYS + ("sgd-clip-grid", "adamw-grid", "muon") + tuple(
    k for k, v in LEVERS.items() if not v.probe) + tuple(SECANT_ADAM_LEVERS) + tuple(SECANT_ADAM)
PEER_KEYS = {"prodigy": OPTIONAL_PEERS[0], "sf-adamw": OPTIONAL_PEERS[1]}


def lm_methods(args) -> Tuple[List[Method], Dict[str, str]]:
    b = args.backend
    keys = getattr(args, "methods", None) or list(DEFAULT_KEYS)
    methods: List[Method] = []
    skipped: Dict[str, str] = {}
    for key in keys:
        if key in SECANT_DEFAULTS:
            methods.append(SECANT_DEFAULTS[key](b))
        elif key == "adamw":
            methods.append(adamw(args.adamw_lr))
        elif key == "sgd-grid":
            methods += [sgd_const(lr) for lr in args.sgd_lrs]
        elif key == "sgd-clip-grid":
            methods += [sgd_clipped(lr) for lr in args.sgd_lrs]
        elif key == "adamw-grid":
            methods += [adamw(lr) for lr in args.adamw_lrs]
        elif key == "muon":
            methods += [muon(lr) for lr in args.muon_lrs]
        elif key in SECANT_ADAM_LEVERS:
            methods.append(secant_adam_lever(key, backend=b))
        elif key in SECANT_ADAM:
            methods.append(secant_adam(key))
        elif key in PEER_KEYS:
            label = PEER_KEYS[key][0]
            if args.no_peers:
                skipped[label] = "left out (--no-peers)"
                continue
            found, missing = optional_peers([PEER_KEYS[key]])
            methods += found
            skipped.update(missing)
        else:
            methods.append(lever(key, backend=b))
    return methods, skipped


# -- one run ----------------------------------------------------------------------------------
@dataclass
class LMResult:
    method: Method
    seed: int
    step_budget: int
    budget: int
    evals: List[Dict[str, float]] = field(default_factory=list)
    steps: Optional[StepHistory] = None
    train_seconds: float = 0.0
    grad_evals: int = 0
    examples: int = 0
    diverged: bool = False

    def _at(self, key: str, value: int) -> Optional[float]:
        """Validation at the first check with ``key`` at least ``value``: a step that
        measures the curvature costs 2 evaluations, so with ``curvature_every > 1`` the
        count may pass ``value`` by one."""
        for e in self.evals:
            if e[key] >= value:
                return e["val_bpb"]
        return None

    @property
    def bpb_at_steps(self) -> Optional[float]:
        return self._at("step", self.step_budget)

    @property
    def bpb_at_evals(self) -> Optional[float]:
        return self._at("grad_evals", self.budget)

    def alpha_stats(self) -> Optional[Dict[str, float]]:
        if not self.method.secant or not len(self.steps):
            return None
        def pooled(name):
            # one column per param group when there are several ("alpha_0", ...)
            cols = [c for c in self.steps.columns if c == name or c.startswith(name + "_")]
            return [self.steps.column(c) for c in cols]
        alpha = [a for col in pooled("alpha") for a in col if math.isfinite(a)]
        clipped, skipped = pooled("clipped"), pooled("skipped")
        return {"median": statistics.median(alpha) if alpha else None,
                "min": min(alpha) if alpha else None, "max": max(alpha) if alpha else None,
                # a step counts once, whichever of its groups was clipped or skipped
                "clipped_steps": int(sum(any(v) for v in zip(*clipped))),
                "skipped_steps": int(sum(any(v) for v in zip(*skipped))),
                "steps": len(self.steps)}

    def summary(self) -> Dict[str, object]:
        f = self.evals[-1] if self.evals else {}
        a = self.alpha_stats() or {}
        return {"method": self.method.name, "family": self.method.family,
                "hyper": self.method.hyper,
                **({f"val_bpb_at_{self.step_budget}_steps": self.bpb_at_steps}
                   if self.step_budget else {}),
                f"val_bpb_at_{self.budget}_grad_evals": self.bpb_at_evals,
                "final_val_bpb": f.get("val_bpb"), "steps": f.get("step"),
                "grad_evals": self.grad_evals, "examples": self.examples,
                "train_seconds": round(self.train_seconds, 3),
                "ms_per_grad_eval": round(1e3 * self.train_seconds / max(self.grad_evals, 1),
                                          2),
                "alpha_median": a.get("median"), "alpha_min": a.get("min"),
                "alpha_max": a.get("max"), "clipped_steps": a.get("clipped_steps"),
                "diverged": self.diverged}


def train_lm(model_fn, method: Method, train_bytes: torch.Tensor, val_x, val_y, *,
             context: int, batch_size: int, seed: int, budget: int, step_budget: int,
             val_points: int, max_steps: Optional[int] = None,
             progress: bool = True) -> LMResult:
    """Train a fresh model (initialized from ``seed``) on batches drawn from a generator
    seeded by ``seed`` until the method has taken ``step_budget`` steps and used
    ``budget`` gradient evaluations; validate at the start, every ``budget / val_points``
    gradient evaluations, at both budgets and at the end."""
    tqdm = require("tqdm").tqdm
    torch.manual_seed(seed)
    model = model_fn()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = method.make(params)
    modes = has_eval_mode(opt)  # evaluate at the averaged point (Schedule-Free, average=True)
    if modes:
        opt.train()
    # validations every budget / val_points gradient evaluations (a step that passes a
    # point validates), at the step budget and at the end
    every = max(round(budget / val_points), 1)
    # the bar's length: a secant step costs 2 evaluations (fewer with curvature_every > 1)
    total = max(step_budget, -(-budget // (2 if method.secant else 1)))
    if max_steps:
        total = min(total, max_steps)
    gen = torch.Generator().manual_seed(seed)
    result = LMResult(method, seed, step_budget, budget,
                      steps=StepHistory(getattr(opt, "HISTORY_FIELDS",
                                                ("alpha", "grad_norm", "clipped", "skipped")))
                      if method.secant else StepHistory(()))

    def validate(step: int) -> float:
        with evaluating(opt, modes):
            bpb = bits_per_byte(model, val_x, val_y)
        result.evals.append({"step": step, "grad_evals": result.grad_evals,
                             "train_seconds": result.train_seconds, "val_bpb": bpb})
        return bpb

    validate(0)
    bar = tqdm(total=total, desc=f"{method.name:<20.20}", leave=False, disable=not progress,
               mininterval=0.5, dynamic_ncols=True)
    step, next_point = 0, every
    try:
        while step < step_budget or result.grad_evals < budget:
            if max_steps and step >= max_steps:
                break
            xb, yb = windows(train_bytes, batch_starts(len(train_bytes), context, batch_size,
                                                       gen), context)
            t0 = time.perf_counter()
            loss = opt.step(counting_closure(opt, model, lm_loss, xb, yb, result))
            result.train_seconds += time.perf_counter() - t0
            if method.secant:
                result.steps.record(opt, loss=loss)
            else:
                result.steps.record(loss=loss)
            step += 1
            bar.update(1)
            due = step == step_budget or not (step < step_budget or result.grad_evals < budget)
            while next_point <= result.grad_evals:
                due, next_point = True, next_point + every
            finite = math.isfinite(float(loss.detach()))
            if due or not finite:
                bpb = validate(step)
                bar.set_postfix(val_bpb=f"{bpb:.3f}")
                if not (finite and math.isfinite(bpb)):
                    result.diverged = True
                    break
    finally:
        bar.close()
    return result


# -- output -----------------------------------------------------------------------------------
def mean_curve(runs: Sequence[LMResult], key: str):
    """x (from the first seed) and val bpb averaged over the seeds' common evaluations."""
    n = min(len(r.evals) for r in runs)
    xs = [runs[0].evals[i][key] for i in range(n)]
    if key == "train_seconds":
        xs = [statistics.mean(r.evals[i][key] for r in runs) for i in range(n)]
    ys = [statistics.mean(r.evals[i]["val_bpb"] for r in runs) for i in range(n)]
    return xs, ys


def plot_curves(by_method: Dict[str, List[LMResult]], path: str, baseline: float,
                title: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    colors = plt.get_cmap("tab10" if len(by_method) <= 10 else "tab20").colors
    for i, runs in enumerate(by_method.values()):
        runs = [r for r in runs if r.evals]
        if not runs:
            continue
        kw = dict(_style(runs[0].method.family), color=colors[i % len(colors)],
                  label=runs[0].method.name)
        for ax, key in zip(axes, ("step", "grad_evals", "train_seconds")):
            xs, ys = mean_curve(runs, key)
            ax.plot(xs, [y if math.isfinite(y) else float("nan") for y in ys], **kw)
    for ax, xl in zip(axes, ("step", "gradient evaluations", "training wall seconds")):
        ax.axhline(baseline, color="gray", lw=0.8, ls=":", label="byte frequencies")
        ax.set(xlabel=xl, ylabel="validation bits per byte")
        ax.set_ylim(top=8.6)  # 8 bits: a uniform guess; divergent runs leave the plot
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="upper right", ncol=2)
    fig.suptitle(title)
    return _save(fig, path)


def aggregate(by_method: Dict[str, List[LMResult]], step_budget: int,
              budget: int) -> List[Dict[str, object]]:
    """One row per method: the mean (and spread, over several seeds) at each budget."""
    rows = []
    for name, runs in by_method.items():
        if not runs:
            continue

        def stat(vals):
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            if len(vals) < len(runs):
                return None, None
            return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)
        at_s, sd_s = stat([r.bpb_at_steps for r in runs])
        at_e, sd_e = stat([r.bpb_at_evals for r in runs])
        row = {"method": name, "family": runs[0].method.family,
               "hyper": runs[0].method.hyper, "seeds": len(runs),
               "at_steps": at_s, "at_steps_sd": sd_s, "at_evals": at_e, "at_evals_sd": sd_e,
               "steps": runs[0].evals[-1]["step"] if runs[0].evals else None,
               "grad_evals": runs[0].grad_evals,
               "train_seconds": statistics.mean(r.train_seconds for r in runs),
               "ms_per_grad_eval": statistics.mean(1e3 * r.train_seconds / max(r.grad_evals, 1)
                                                   for r in runs),
               "diverged": sum(r.diverged for r in runs)}
        rows.append(row)
    return rows


def alpha_table(by_method: Dict[str, List[LMResult]]) -> List[Dict[str, object]]:
    rows = []
    for name, runs in by_method.items():
        stats = [r.alpha_stats() for r in runs if r.method.secant]
        stats = [s for s in stats if s and s["median"] is not None]
        if not stats:
            continue
        rows.append({"method": name, "median": statistics.median(s["median"] for s in stats),
                     "min": min(s["min"] for s in stats), "max": max(s["max"] for s in stats),
                     "clipped_steps": sum(s["clipped_steps"] for s in stats),
                     "skipped_steps": sum(s["skipped_steps"] for s in stats),
                     "steps": sum(s["steps"] for s in stats)})
    return rows


def run(args) -> RunDir:
    if args.budget < 2 or args.budget % 2:
        raise SystemExit("error: --budget must be an even number >= 2 (a secant step costs 2)")
    step_budget = args.step_budget or args.budget
    out = RunDir("lm", args.out, vars(args))
    for name in UNUSED:
        if getattr(args, name, None):
            print(f"note: --{name.replace('_', '-')} is not used by lm")
    if args.budget != FULL_BUDGET:
        print(f"note: budget {args.budget} gradient evaluations / {step_budget} steps per "
              f"method (the default is sized for a few minutes on 2 CPU cores; the full "
              f"run is --budget {FULL_BUDGET})")
    corpus = load_corpus(max_bytes=args.max_bytes)
    print(corpus.describe())
    val_x, val_y = windows(corpus.val, val_starts(len(corpus.val), args.context,
                                                  args.val_windows), args.context)
    baseline = unigram_bits(val_y)
    model_fn = lambda: ByteTransformer(args.d_model, args.layers, args.heads,  # noqa: E731
                                       args.context)
    params = n_params(model_fn())
    assert params == expected_params(args.d_model, args.layers, args.context)
    model_desc = (f"byte transformer: {args.layers} pre-LN blocks, d_model {args.d_model}, "
                  f"{args.heads} heads, context {args.context}, untied head, {params:,} "
                  f"parameters; batch {args.batch_size}")
    print(model_desc)
    print(f"validation: {len(val_x)} fixed windows ({val_y.numel():,} predicted bytes); "
          f"byte-frequency baseline {baseline:.4f} bits/byte")
    methods, skipped = lm_methods(args)
    for label, why in skipped.items():
        print(f"skipped: {label}: {why}")
    seeds = [args.seed + i for i in range(max(args.seeds, 1))]
    out.meta.update(corpus=corpus.info(), model=model_desc, parameters=params,
                    val_windows=len(val_x), unigram_val_bits=baseline, budget=args.budget,
                    step_budget=step_budget, seeds=seeds, skipped=skipped,
                    methods=[m.name for m in methods])
    out.write_json("meta.json", out.meta)

    by_method: Dict[str, List[LMResult]] = {m.name: [] for m in methods}
    title = (f"lm: {params:,}-parameter byte transformer on the Python "
             f"{corpus.info()['python']} standard library")

    def plot():
        plot_curves(by_method, out.file("val_bpb.png"), baseline, title)
        # one alpha per step: the methods with one param group
        secant = [rs[0] for rs in by_method.values()
                  if rs and rs[0].method.secant and "alpha" in rs[0].steps.columns]
        if secant:
            alpha_vs_grad_norm(secant, out.file("alpha.png"), f"lm: alpha_t of the secant "
                               f"methods (seed {seeds[0]})")

    k, n = 0, len(methods) * len(seeds)
    try:
        for seed in seeds:
            for m in methods:
                k += 1
                print(f"[{k}/{n}] {m.name} (seed {seed})", flush=True)
                r = train_lm(model_fn, m, corpus.train, val_x, val_y, context=args.context,
                             batch_size=args.batch_size, seed=seed, budget=args.budget,
                             step_budget=step_budget, val_points=args.val_points,
                             max_steps=args.max_steps, progress=not args.no_progress)
                by_method[m.name].append(r)
                row = out.add(r, seed=seed)
                print(f"      val bits/byte {row['final_val_bpb']:.4f} after {row['steps']} "
                      f"steps, {r.grad_evals} gradient evaluations, "
                      f"{row['train_seconds']:.1f} s ({row['ms_per_grad_eval']:.0f} ms per "
                      f"gradient evaluation)" + (", DIVERGED" if r.diverged else ""),
                      flush=True)
    finally:
        if any(by_method.values()):
            plot()

    rows = aggregate(by_method, step_budget, args.budget)
    out.write_json("budget_table.json", rows)
    s_col, e_col = f"bpb @ {step_budget} steps", f"bpb @ {args.budget} grad evals"
    cols = ("method", "hyper", "at_steps", "at_evals", "steps", "grad_evals", "train_seconds",
            "ms_per_grad_eval", "diverged")
    heads = ("method", "hyperparameters", s_col, e_col, "steps run", "grad evals",
             "train wall s", "ms/grad eval", "diverged")
    if len(seeds) > 1:
        cols = cols[:3] + ("at_steps_sd",) + cols[3:4] + ("at_evals_sd",) + cols[4:]
        heads = heads[:3] + ("sd",) + heads[3:4] + ("sd",) + heads[4:]
    print_table(out, rows, cols, heads,
                title=f"lm: validation bits/byte (mean of {len(seeds)} seed(s); byte "
                      f"frequencies {baseline:.3f})")
    alphas = alpha_table(by_method)
    if alphas:
        print_table(out, alphas, ("method", "median", "min", "max", "clipped_steps",
                                  "skipped_steps", "steps"),
                    ("method", "alpha median", "alpha min", "alpha max", "clipped steps",
                     "skipped steps", "steps"), title="lm: alpha_t of the secant methods")

    def best(rows_, key, pred):
        cands = [r for r in rows_ if pred(r) and r[key] is not None]
        return min(cands, key=lambda r: r[key]) if cands else None
    summary: Dict[str, object] = {"corpus": corpus.info(), "parameters": params,
                                  "unigram_val_bits": baseline, "skipped": skipped,
                                  "budget": args.budget, "step_budget": step_budget,
                                  "seeds": seeds, "table": rows, "alpha": alphas}
    for key, label in (("at_steps", f"{step_budget} steps"), ("at_evals",
                                                              f"{args.budget} grad evals")):
        sgd = best(rows, key, lambda r: r["family"] == "SGD const")
        adam = best(rows, key, lambda r: r["family"] == "AdamW")
        sec = best(rows, key, lambda r: r["family"].startswith("A-"))
        summary[key] = {"best_sgd": sgd and {"method": sgd["method"], "bpb": sgd[key]},
                        "adamw": adam and {"method": adam["method"], "bpb": adam[key]},
                        "best_secant": sec and {"method": sec["method"], "bpb": sec[key]}}
        if sgd and adam and sec:
            print(f"at {label}: best secant {sec['method']} {sec[key]:.4f}, best SGD "
                  f"{sgd['method']} {sgd[key]:.4f}, {adam['method']} {adam[key]:.4f} "
                  f"bits/byte")
    if skipped:
        print("skipped peers: " + ", ".join(skipped))
    out.finish(summary)
    print(f"\nresults, histories and plots in {out.path}/")
    return out
