"""``reproduce lm-diagnose``: why the secant step size falls behind on the byte transformer
of ``reproduce lm``, measured per parameter kind.

A-SGD (``SecantSGD()``, its defaults; ``--rule`` picks another of its rules) trains the
``lm`` model on the ``lm`` batches (same corpus, model, seed convention). The closure
records the gradients it computes: at ``x`` (``opt.in_lookahead`` False) the probe ``s``,
at ``x + s`` the lookahead gradient ``g_plus`` -- the very gradients the optimizer uses;
the optimizer is not changed. From them, per parameter kind ``k`` (token embedding,
position embedding, attention qkv, attention out, MLP in, MLP out, LayerNorm weight,
LayerNorm bias, output layer) and in float64::

    a_k = <s_k, y_k>,  b_k = |s_k|^2,  c_k = |y_k|^2,  y = g_plus - s
    kappa_k = a_k / b_k           (curvature along s, the Rayleigh quotient)
    alpha_k = b_k / (max(a_k, 0) + b_k) = 1 / (1 + kappa_k)   (the rule on kind k alone)

next to the optimizer's own ``last_stats`` (``dot``, ``s_sq``, ``alpha``, ``clipped``): the
sums over the kinds must equal them (the test checks it). Since ``a = sum a_k`` and
``b = sum b_k``, the shared ``kappa`` is the ``b``-weighted mean of the ``kappa_k``, and
with every ``a_k >= 0`` the shared ``alpha`` is the ``b``-weighted *harmonic* mean of the
``alpha_k``: ``1/alpha = sum_k (b_k/b) / alpha_k``.

``--per-kind-groups`` gives each kind its own param group (the optimizer already keeps one
alpha per group), so each kind steps with its own ``alpha_k``: the counterfactual of a
per-kind step size, with no change to the optimizer.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

import secant_ext

from ._deps import pyplot, require
from .common import print_table
from .output import RunDir
from .plots import _save
from .textlm import (ByteTransformer, add_model_arguments, bits_per_byte, batch_starts,
                     expected_params, lm_loss, load_corpus, n_params, unigram_bits, val_starts, windows)

DEFAULT_STEPS = 600
DEFAULTS = dict(epochs=None, batch_size=32)
UNUSED = ("data_dir", "epochs", "max_train", "max_test")

KINDS = ("token embedding", "position embedding", "attention qkv", "attention out",
         "MLP in", "MLP out", "LayerNorm weight", "LayerNorm bias", "output layer")


def add_arguments(p) -> None:
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"A-SGD steps (default {DEFAULT_STEPS}: about 2-3 minutes on one "
                        f"quiet CPU core, two gradient evaluations a step)")
    add_model_arguments(p)
    p.add_argument("--val-every", type=int, default=100,
                   help="validate every N steps, and at the start and the end (default 100)")
    p.add_argument("--per-kind-groups", action="store_true",
                   help="one param group per kind, so each kind gets its own alpha "
                        "(default: one group, the shared alpha of reproduce lm)")
    p.add_argument("--rule", default="secant", choices=("secant", "steffensen", "bb2"),
                   help="SecantSGD's rule (default secant, the default of SecantSGD())")
    p.add_argument("--spike", type=float, default=0.5,
                   help="a loss spike: the mini-batch loss rises by more than this many "
                        "nats over the previous step's (default 0.5)")


def kind_of(name: str) -> str:
    """The kind of a ``ByteTransformer`` parameter, from its name."""
    parts = name.split(".")
    if parts[0] == "tok":
        return "token embedding"
    if parts[0] == "pos":
        return "position embedding"
    if parts[0] == "head":
        return "output layer"
    layer = parts[-2]
    if layer.startswith("ln"):
        return "LayerNorm weight" if parts[-1] == "weight" else "LayerNorm bias"
    kind = {"qkv": "attention qkv", "proj": "attention out", "fc": "MLP in",
            "out": "MLP out"}.get(layer)
    if kind is None:
        raise ValueError(f"no kind for parameter {name!r}")
    return kind


def params_by_kind(model: torch.nn.Module) -> Dict[str, List[torch.nn.Parameter]]:
    """``{kind: [parameters]}`` in ``KINDS`` order (kinds the model lacks left out)."""
    by: Dict[str, List[torch.nn.Parameter]] = {k: [] for k in KINDS}
    for name, p in model.named_parameters():
        by[kind_of(name)].append(p)
    return {k: ps for k, ps in by.items() if ps}


class KindStats:
    """Closure-side recorder: call ``after_backward(opt)`` in the closure after
    ``backward()``. At ``x`` it keeps the probe gradients; at ``x + s`` it computes the
    per-kind ``a_k, b_k, c_k`` in float64 into ``last``."""

    def __init__(self, by_kind: Dict[str, List[torch.nn.Parameter]]):
        self.by_kind = by_kind
        self._probe: Optional[Dict[str, List[torch.Tensor]]] = None
        self.last: Dict[str, Dict[str, float]] = {}

    @torch.no_grad()
    def after_backward(self, opt) -> None:
        grads = {k: [torch.zeros_like(p, dtype=torch.float64) if p.grad is None
                     else p.grad.detach().to(torch.float64) for p in ps]
                 for k, ps in self.by_kind.items()}
        if not opt.in_lookahead:
            self._probe = {k: [g.clone() for g in gs] for k, gs in grads.items()}
            return
        stats = {}
        for k, gs in grads.items():
            a = b = c = 0.0
            for s, gp in zip(self._probe[k], gs):
                y = gp - s
                a += float((s * y).sum())
                b += float((s * s).sum())
                c += float((y * y).sum())
            stats[k] = {"a": a, "b": b, "c": c}
        self.last = stats
        self._probe = None


def ideal_alpha(a: float, b: float) -> float:
    """The secant rule with its safeguard, on one kind: ``b / (max(a, 0) + b)``."""
    return b / (max(a, 0.0) + b) if b > 0 else float("nan")


def diagnose(model: torch.nn.Module, train_bytes: torch.Tensor, *, steps: int, context: int,
             batch_size: int, seed: int, per_kind_groups: bool = False, backend: str = "auto",
             val=None, val_every: int = 0, progress: bool = False, rule: str = "secant"):
    """Train ``model`` with ``SecantSGD()`` for ``steps`` steps on the ``lm`` batches of
    ``seed``; return ``(rows, evals)``: one row per step (the optimizer's ``last_stats``
    and the per-kind statistics) and the validations."""
    by_kind = params_by_kind(model)
    kinds = list(by_kind)
    if per_kind_groups:
        opt = secant_ext.SecantSGD([{"params": ps, "kind": k} for k, ps in by_kind.items()],
                                   backend=backend, rule=rule)
    else:
        opt = secant_ext.SecantSGD([p for ps in by_kind.values() for p in ps], backend=backend,
                                   rule=rule)
    rec = KindStats(by_kind)
    gen = torch.Generator().manual_seed(seed)
    rows: List[Dict[str, object]] = []
    evals: List[Dict[str, float]] = []

    def validate(step):
        if val is not None:
            evals.append({"step": step, "val_bpb": bits_per_byte(model, *val)})

    validate(0)
    bar = require("tqdm").tqdm(total=steps, desc="A-SGD diagnose", leave=False,
                               disable=not progress, mininterval=0.5, dynamic_ncols=True)
    for step in range(steps):
        xb, yb = windows(train_bytes, batch_starts(len(train_bytes), context, batch_size, gen),
                         context)
        losses = {}

        def closure():
            opt.zero_grad()
            loss = lm_loss(model(xb), yb)
            loss.backward()
            rec.after_backward(opt)
            losses["plus" if opt.in_lookahead else "x"] = float(loss.detach())
            return loss

        opt.step(closure)
        st = opt.last_stats
        row: Dict[str, object] = {"step": step, "loss": losses["x"],
                                  "loss_plus": losses.get("plus")}
        vec = lambda t: [float(v) for v in t.reshape(-1)]  # noqa: E731
        if per_kind_groups:
            for k, al, d, s2, y2, cl in zip(kinds, vec(st.alpha), vec(st.dot), vec(st.s_sq),
                                            vec(st.y_sq), vec(st.clipped)):
                row.update({f"opt_alpha[{k}]": al, f"opt_dot[{k}]": d,
                            f"opt_s_sq[{k}]": s2, f"opt_y_sq[{k}]": y2,
                            f"opt_clipped[{k}]": bool(cl)})
        else:
            row.update(alpha=float(st.alpha), step_size=float(st.step_size),
                       dot=float(st.dot), s_sq=float(st.s_sq), y_sq=float(st.y_sq),
                       clipped=bool(st.clipped), skipped=bool(st.skipped))
        a_sum = b_sum = c_sum = 0.0
        for k in kinds:
            s = rec.last[k]
            a_sum, b_sum, c_sum = a_sum + s["a"], b_sum + s["b"], c_sum + s["c"]
            row.update({f"a[{k}]": s["a"], f"b[{k}]": s["b"], f"c[{k}]": s["c"],
                        f"kappa[{k}]": s["a"] / s["b"] if s["b"] > 0 else float("nan"),
                        f"alpha[{k}]": ideal_alpha(s["a"], s["b"])})
        row.update(a_sum=a_sum, b_sum=b_sum, c_sum=c_sum,
                   kappa_shared=a_sum / b_sum if b_sum > 0 else float("nan"),
                   alpha_shared_recomputed=ideal_alpha(a_sum, b_sum))
        rows.append(row)
        bar.update(1)
        if not math.isfinite(losses["x"]):
            break
        if val_every and ((step + 1) % val_every == 0 or step + 1 == steps):
            validate(step + 1)
    bar.close()
    if evals and evals[-1]["step"] != len(rows):
        validate(len(rows))
    return rows, evals


# -- analysis ---------------------------------------------------------------------------------
def _q(values: Sequence[float], q: float) -> float:
    vals = sorted(v for v in values if v is not None and math.isfinite(v))
    if not vals:
        return float("nan")
    i = min(max(q * (len(vals) - 1), 0), len(vals) - 1)
    lo, hi = int(math.floor(i)), int(math.ceil(i))
    return vals[lo] + (vals[hi] - vals[lo]) * (i - lo)


def _corr(x: Sequence[float], y: Sequence[float]) -> float:
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return float("nan")
    mx = statistics.mean(a for a, _ in pairs)
    my = statistics.mean(b for _, b in pairs)
    sxy = sum((a - mx) * (b - my) for a, b in pairs)
    sxx = sum((a - mx) ** 2 for a, _ in pairs)
    syy = sum((b - my) ** 2 for _, b in pairs)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def applied_alpha(row: Dict[str, object], kind: str) -> float:
    """The alpha the optimizer applied to ``kind`` at this step."""
    return row.get(f"opt_alpha[{kind}]", row.get("alpha"))


def kind_table(rows: Sequence[Dict[str, object]], kinds: Sequence[str]) -> List[Dict]:
    """Per kind: median kappa_k, alpha_k and 1/kappa_k, its share of b (median over the
    steps, and of the sum over all steps) and of a (of the sum over all steps),
    how often a_k < 0, and the median alpha the optimizer applied to it. The shares of the
    sums leave out the first ``min(50, steps // 2)`` steps, whose spikes dominate them."""
    late = rows[min(50, len(rows) // 2):]
    out = []
    for k in kinds:
        kap = [r[f"kappa[{k}]"] for r in rows]
        out.append({
            "kind": k,
            "median_kappa": _q(kap, 0.5),
            "p10_kappa": _q(kap, 0.1), "p90_kappa": _q(kap, 0.9),
            "median_alpha_k": _q([r[f"alpha[{k}]"] for r in rows], 0.5),
            "median_inv_kappa": _q([1 / x for x in kap if x > 0], 0.5),
            "median_b_share": _q([r[f"b[{k}]"] / r["b_sum"] for r in rows], 0.5),
            "total_b_share": sum(r[f"b[{k}]"] for r in late) / sum(r["b_sum"] for r in late),
            "total_a_share": sum(r[f"a[{k}]"] for r in late) / sum(r["a_sum"] for r in late),
            "median_a_share": _q([r[f"a[{k}]"] / r["a_sum"] for r in rows if r["a_sum"] > 0],
                                 0.5),
            "frac_a_negative": sum(r[f"a[{k}]"] < 0 for r in rows) / len(rows),
            "median_applied_alpha": _q([applied_alpha(r, k) for r in rows], 0.5),
            "median_ratio_alpha_k_to_applied": _q(
                [r[f"alpha[{k}]"] / applied_alpha(r, k) for r in rows], 0.5),
        })
    return out


def shared_summary(rows: Sequence[Dict[str, object]], spike: float) -> Dict[str, object]:
    """The shared alpha's level, noise and cap, and the loss spikes (one param group)."""
    alpha = [r["alpha"] for r in rows]
    n = len(rows)
    logs = [math.log(a) for a in alpha]
    dlog = [abs(b - a) for a, b in zip(logs, logs[1:])]
    rel = [abs(b - a) / a for a, b in zip(alpha, alpha[1:])]
    clipped = [r["step"] for r in rows if r["clipped"]]
    loss = [r["loss"] for r in rows]
    dloss = [b - a for a, b in zip(loss, loss[1:])]  # the change the step t update caused
    spikes = [{"step": rows[i + 1]["step"], "loss_before": loss[i], "loss": loss[i + 1],
               "alpha_of_step_before": alpha[i], "clipped_step_before": rows[i]["clipped"]}
              for i, d in enumerate(dloss) if d > spike]
    lag1 = _corr(logs[:-1], logs[1:])
    return {
        "steps": n,
        "alpha_median": _q(alpha, 0.5), "alpha_mean": statistics.mean(alpha),
        "alpha_p10": _q(alpha, 0.1), "alpha_p90": _q(alpha, 0.9),
        "alpha_min": min(alpha), "alpha_max": max(alpha),
        "alpha_median_after_50": _q(alpha[50:], 0.5),
        "frac_alpha_above_0.3": sum(a > 0.3 for a in alpha) / n,
        "frac_alpha_above_0.5": sum(a > 0.5 for a in alpha) / n,
        "median_abs_dlog_alpha": _q(dlog, 0.5), "p90_abs_dlog_alpha": _q(dlog, 0.9),
        "median_rel_change_alpha": _q(rel, 0.5),
        "lag1_autocorr_log_alpha": lag1,
        "cap_binds_steps": clipped, "cap_binds_frac": len(clipped) / n,
        "alpha_equal_1_steps": [r["step"] for r in rows if r["alpha"] >= 1.0],
        "kappa_shared_median": _q([r["kappa_shared"] for r in rows], 0.5),
        "corr_alpha_t_vs_loss_change_next": _corr(alpha[:-1], dloss),
        "spikes": spikes,
        "max_rel_err_dot": max(abs(r["a_sum"] - r["dot"]) / max(abs(r["dot"]), 1e-300)
                               for r in rows),
        "max_rel_err_s_sq": max(abs(r["b_sum"] - r["s_sq"]) / r["s_sq"] for r in rows),
        "max_rel_err_y_sq": max(abs(r["c_sum"] - r["y_sq"]) / r["y_sq"] for r in rows),
    }


def moving_median(values: Sequence[float], window: int) -> List[float]:
    """The median of the last ``window`` values at each step (one step is noisy)."""
    return [_q(values[max(0, i - window + 1):i + 1], 0.5) for i in range(len(values))]


def plot(rows, evals, kinds, path: str, title: str) -> str:
    """(a) per-kind alpha_k, moving median over 25 steps, next to the applied alpha's;
    (b) the applied alpha step by step, clipped steps and |g|; (c) the kinds' shares of
    b = |s|^2; (d) the mini-batch loss (log scale), validation and the clipped steps."""
    plt = pyplot()
    # rows read back from steps.json carry null for non-finite values
    rows = [{k: float("nan") if v is None else v for k, v in r.items()} for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(15, 9))
    (ax_a, ax_s), (ax_b, ax_l) = axes
    steps = [r["step"] for r in rows]
    window = 25
    for i, k in enumerate(kinds):
        ax_a.plot(steps, moving_median([r[f"alpha[{k}]"] for r in rows], window), lw=1.2,
                  color=f"C{i}", label=k)
    applied = [applied_alpha(r, kinds[0]) for r in rows] if "alpha" in rows[0] else None
    if applied is not None:
        ax_a.plot(steps, moving_median(applied, window), lw=2.2, color="black",
                  label="applied (shared) alpha")
    ax_a.set(xlabel="step", ylabel="alpha_k = b_k / (max(a_k, 0) + b_k)", yscale="log",
             title=f"per-kind alpha_k: moving median over {window} steps")
    ax_a.legend(fontsize=7, loc="lower right", ncol=2)
    if applied is not None:
        clipped = [r["step"] for r in rows if r["clipped"]]
        ax_s.plot(steps, applied, lw=0.7, color="black", label="applied alpha")
        ax_s.scatter(clipped, [1.0] * len(clipped), marker="v", color="red", zorder=5,
                     label="clipped (a < 0: alpha = 1)")
        ax_s.plot(steps, [r["s_sq"] ** 0.5 for r in rows], lw=0.7, color="C1",
                  label="|g| (mini-batch)")
        ax_s.set(xlabel="step", ylabel="alpha, |g|", yscale="log",
                 title="the applied alpha step by step, and the gradient norm")
        ax_s.legend(fontsize=7, loc="lower right")
    else:
        ax_s.set_visible(False)
    bottom = [0.0] * len(rows)
    for i, k in enumerate(kinds):
        top = [a + r[f"b[{k}]"] / r["b_sum"] for a, r in zip(bottom, rows)]
        ax_b.fill_between(steps, bottom, top, color=f"C{i}", lw=0, label=k)
        bottom = top
    ax_b.set(xlabel="step", ylabel="b_k / b", ylim=(0, 1),
             title="share of b = |s|^2: the weights of the shared curvature")
    ax_b.legend(fontsize=7, loc="lower left", ncol=3)
    ax_l.plot(steps, [r["loss"] for r in rows], lw=0.7, color="C0",
              label="mini-batch loss at x")
    if evals:
        ax_l.plot([e["step"] for e in evals], [e["val_bpb"] * math.log(2) for e in evals],
                  "o-", color="C3", label="validation")
    if applied is not None:
        for s in clipped:
            ax_l.axvline(s, color="red", lw=0.6, alpha=0.5)
    ax_l.set(xlabel="step", ylabel="nats per byte", yscale="log",
             title="loss; red lines: clipped steps (alpha = 1)")
    ax_l.legend(fontsize=7, loc="upper right")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def run(args) -> RunDir:
    out = RunDir("lm-diagnose", args.out, vars(args))
    for name in UNUSED:
        if getattr(args, name, None):
            print(f"note: --{name.replace('_', '-')} is not used by lm-diagnose")
    steps = min(args.steps, args.max_steps) if args.max_steps else args.steps
    corpus = load_corpus(max_bytes=args.max_bytes)
    print(corpus.describe())
    val = windows(corpus.val, val_starts(len(corpus.val), args.context, args.val_windows),
                  args.context)
    torch.manual_seed(args.seed)
    model = ByteTransformer(args.d_model, args.layers, args.heads, args.context)
    assert n_params(model) == expected_params(args.d_model, args.layers, args.context)
    mode = "one param group per kind" if args.per_kind_groups else "one param group"
    if args.rule != "secant":
        mode += f", rule={args.rule!r}"
    print(f"SecantSGD() ({mode}), {steps} steps, seed {args.seed}, batch {args.batch_size}, "
          f"{n_params(model):,} parameters; byte-frequency baseline "
          f"{unigram_bits(val[1]):.4f} bits/byte")
    out.meta.update(corpus=corpus.info(), parameters=n_params(model), steps=steps,
                    per_kind_groups=args.per_kind_groups, seed=args.seed,
                    unigram_val_bits=unigram_bits(val[1]))
    out.write_json("meta.json", out.meta)
    kinds = list(params_by_kind(model))
    t0 = time.perf_counter()
    rows, evals = diagnose(model, corpus.train, steps=steps, context=args.context,
                           batch_size=args.batch_size, seed=args.seed,
                           per_kind_groups=args.per_kind_groups, backend=args.backend,
                           rule=args.rule,
                           val=val, val_every=args.val_every, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    out.write_json("steps.json", rows)
    out.write_csv("steps.csv", rows)
    out.write_json("evals.json", evals)
    table = kind_table(rows, kinds)
    out.write_json("kinds.json", table)
    print_table(out, table, ("kind", "median_kappa", "p10_kappa", "p90_kappa", "median_alpha_k",
                             "median_inv_kappa", "median_b_share", "total_b_share",
                             "median_a_share", "total_a_share", "frac_a_negative",
                             "median_applied_alpha"),
                ("kind", "kappa med", "kappa p10", "kappa p90", "alpha_k med", "1/kappa med",
                 "b share med", "b share sum", "a share med",
                 "a share sum", "a_k<0", "applied alpha med"),
                title=f"lm-diagnose: per-kind secant statistics ({len(rows)} steps, "
                      f"seed {args.seed})")
    summary: Dict[str, object] = {"steps": len(rows), "seed": args.seed, "mode": mode,
                                  "train_wall_seconds": round(wall, 1), "kinds": table,
                                  "val": evals}
    if not args.per_kind_groups:
        sh = shared_summary(rows, args.spike)
        summary["shared"] = sh
        print(f"\nshared alpha: median {sh['alpha_median']:.4f} (after step 50: "
              f"{sh['alpha_median_after_50']:.4f}), mean {sh['alpha_mean']:.4f}, p10 "
              f"{sh['alpha_p10']:.4f}, p90 {sh['alpha_p90']:.4f}, max {sh['alpha_max']:.4f}")
        print(f"noise: median |dlog alpha| {sh['median_abs_dlog_alpha']:.3f} per step (p90 "
              f"{sh['p90_abs_dlog_alpha']:.3f}), lag-1 autocorrelation of log alpha "
              f"{sh['lag1_autocorr_log_alpha']:.3f}")
        print(f"cap at 1 (a < 0 clipped): {len(sh['cap_binds_steps'])} of {len(rows)} steps: "
              f"{sh['cap_binds_steps']}")
        print(f"loss spikes (> {args.spike} nats): {len(sh['spikes'])}: " + ", ".join(
            f"step {s['step']} ({s['loss_before']:.2f} -> {s['loss']:.2f}, alpha before "
            f"{s['alpha_of_step_before']:.3f})" for s in sh["spikes"]))
        print(f"instrumentation vs last_stats: max relative error dot "
              f"{sh['max_rel_err_dot']:.2e}, s_sq {sh['max_rel_err_s_sq']:.2e}, y_sq "
              f"{sh['max_rel_err_y_sq']:.2e}")
    if evals:
        print("validation bits/byte: " + ", ".join(f"step {e['step']}: {e['val_bpb']:.4f}"
                                                   for e in evals))
    print(f"train wall {wall:.1f} s ({1e3 * wall / max(len(rows), 1):.0f} ms per step)")
    plot(rows, evals, kinds, out.file("alpha_by_kind.png"),
         f"lm-diagnose: SecantSGD() ({mode}), seed {args.seed}, {len(rows)} steps")
    out.finish(summary)
    print(f"\nresults in {out.path}/")
    return out
