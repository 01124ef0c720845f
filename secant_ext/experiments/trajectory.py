"""``reproduce trajectory``: A-SGD against SGD with a diminishing rate ``c/(1+t)^gamma``;
alpha_t and the gradient norm over time, and their Spearman rank correlation.

The correlation is reported per step (noisy: each |g_t| is one mini-batch) and over
window means (non-overlapping windows of ``--window`` steps), which show the trend."""
from __future__ import annotations

from typing import List

from .methods import a_sgd, sgd_decay
from ._deps import pyplot, require
from .common import load_flat_mnist, print_table, run_mlp_methods
from .output import RunDir
from .plots import smooth

DEFAULTS = dict(epochs=3, batch_size=128)


def add_arguments(p) -> None:
    p.add_argument("--c", type=float, default=0.1, help="SGD schedule c (default 0.1)")
    p.add_argument("--gamma", type=float, default=0.5, help="SGD schedule gamma (default 0.5)")
    p.add_argument("--window", type=int, default=50,
                   help="steps per window for the window-mean correlation (default 50)")
    p.add_argument("--hidden", type=int, default=128, help="MLP hidden units (default 128)")


def window_means(values: List[float], window: int) -> List[float]:
    n = len(values) // window
    return [sum(values[i * window:(i + 1) * window]) / window for i in range(n)]


def spearman(a: List[float], b: List[float]):
    """Spearman's rho and its p-value (None when fewer than 3 points)."""
    if len(a) < 3:
        return None, None
    res = require("scipy.stats").spearmanr(a, b)
    return float(res.statistic if hasattr(res, "statistic") else res[0]), float(res.pvalue)


def plot(results, path: str, title: str) -> str:
    """Rates and gradient norms against the step: raw (faint) and a moving average over 2%
    of the run (bold); and A-SGD's alpha_t against |g_t|."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for i, r in enumerate(results):
        color = f"C{i}"
        gnorm = r.steps.column("grad_norm")
        rate = r.steps.column("alpha") if r.method.secant else r.steps.column("lr")
        window = max(len(gnorm) // 50, 1)
        label = ("alpha_t of " if r.method.secant else "lr of ") + r.method.name
        axes[0].plot(rate, lw=0.4, alpha=0.25, color=color)
        axes[0].plot(smooth(rate, window), lw=1.8, color=color, label=label)
        axes[1].plot(gnorm, lw=0.4, alpha=0.25, color=color)
        axes[1].plot(smooth(gnorm, window), lw=1.8, color=color, label=r.method.name)
        if r.method.secant:
            axes[2].scatter(gnorm, rate, s=3, alpha=0.3, color=color)
    axes[0].set(xlabel="step", ylabel="learning rate", yscale="log")
    axes[1].set(xlabel="step", ylabel="|g_t| (mini-batch)", yscale="log")
    axes[2].set(xlabel="|g_t|", ylabel="alpha_t (A-SGD)", xscale="log", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args) -> RunDir:
    out = RunDir("trajectory", args.out, vars(args))
    data = load_flat_mnist(args)
    methods = [a_sgd(backend=args.backend), sgd_decay(args.c, args.gamma)]
    results = run_mlp_methods(out, methods, data, args, lambda rs: plot(
        rs, out.file("trajectory.png"),
        f"trajectory on {data.name}: A-SGD's alpha_t and the gradient norm"))
    a = results[0]
    alpha, gnorm = a.steps.column("alpha"), a.steps.column("grad_norm")
    rho, p = spearman(alpha, gnorm)
    w = max(min(args.window, len(alpha) // 3), 1)
    rho_w, p_w = spearman(window_means(alpha, w), window_means(gnorm, w))
    summary = {"dataset": data.describe(), "steps": len(alpha),
               "spearman_per_step": {"rho": rho, "p": p, "n": len(alpha)},
               "spearman_window_means": {"rho": rho_w, "p": p_w, "window": w,
                                         "n": len(alpha) // w},
               "alpha_first_last": [alpha[0], alpha[-1]] if alpha else None,
               "grad_norm_first_last": [gnorm[0], gnorm[-1]] if gnorm else None,
               "negative_correlation": rho_w is not None and rho_w < 0}
    out.write_csv("trajectory.csv", [{"step": i, "alpha": x, "grad_norm": g}
                                     for i, (x, g) in enumerate(zip(alpha, gnorm))])
    print_table(out, out.rows, title=f"trajectory ({data.describe()})")
    fmt = lambda v: "n/a" if v is None else f"{v:+.3f}"  # noqa: E731
    print(f"Spearman(alpha_t, |g_t|): per step {fmt(rho)} (n={len(alpha)}, p={p}); "
          f"over {w}-step window means {fmt(rho_w)} (p={p_w})")
    out.finish(summary)
    print(f"\nresults, histories and plots in {out.path}/")
    return out
