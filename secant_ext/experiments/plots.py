"""The PNG plots of the experiments (matplotlib, Agg backend)."""
from __future__ import annotations

from typing import Dict, List, Sequence

from ._deps import pyplot


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def _style(family: str):
    """Secant methods solid and thick, baselines thin and dashed: the comparison at a glance."""
    if family.startswith("A-"):
        return dict(lw=2.0, ls="-")
    return dict(lw=1.0, ls="--", alpha=0.8)


def loss_curves(results: Sequence, path: str, title: str = "") -> str:
    """Training loss against epochs and against gradient evaluations, and test accuracy."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    # one colour per method: the default cycle has 10, a grid run plots more lines
    colors = plt.get_cmap("tab20").colors
    for i, r in enumerate(results):
        ev = r.evals
        if not ev:
            continue
        kw = dict(_style(r.method.family), color=colors[i % len(colors)])
        loss = [e["train_loss"] for e in ev]
        axes[0].plot([e["epoch"] for e in ev], loss, label=r.method.name, **kw)
        axes[1].plot([e["grad_evals"] for e in ev], loss, label=r.method.name, **kw)
        axes[2].plot([e["epoch"] for e in ev], [e["test_acc"] for e in ev],
                     label=r.method.name, **kw)
    for ax, xl, yl in ((axes[0], "epoch", "training loss (full set)"),
                       (axes[1], "gradient evaluations", "training loss (full set)"),
                       (axes[2], "epoch", "test accuracy %")):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].legend(fontsize=7, loc="lower right", ncol=2)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def smooth(values: Sequence[float], window: int) -> List[float]:
    """Trailing moving average (the first points average what there is)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def alpha_vs_grad_norm(results: Sequence, path: str, title: str = "") -> str:
    """For each secant run: alpha_t and |g_t| against the step (raw, faint, and a moving
    average over 2% of the run, bold: one mini-batch is noisy), and alpha_t against |g_t|."""
    plt = pyplot()
    secant = [r for r in results if r.method.secant and len(r.steps)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for i, r in enumerate(secant):
        color = f"C{i}"
        alpha, gnorm = r.steps.column("alpha"), r.steps.column("grad_norm")
        window = max(len(alpha) // 50, 1)
        steps = range(len(alpha))
        for ax, series in ((axes[0], alpha), (axes[1], gnorm)):
            ax.plot(steps, series, lw=0.4, alpha=0.25, color=color)
            ax.plot(steps, smooth(series, window), lw=1.8, color=color, label=r.method.name)
        axes[2].scatter(gnorm, alpha, s=3, alpha=0.3, color=color, label=r.method.name)
    axes[0].set(xlabel="step", ylabel="alpha_t", yscale="log")
    axes[1].set(xlabel="step", ylabel="|g_t| (mini-batch)", yscale="log")
    axes[2].set(xlabel="|g_t|", ylabel="alpha_t", xscale="log", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def bars(labels: List[str], values: List[float], path: str, ylabel: str,
         title: str = "") -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)), labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def panels(groups: Dict[str, Sequence], path: str, title: str = "") -> str:
    """One training-loss panel per group of runs (``beyond``'s studies side by side)."""
    plt = pyplot()
    n = max(len(groups), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, (name, results) in zip(axes.flat, groups.items()):
        for r in results:
            if r.evals:
                ax.plot([e["epoch"] for e in r.evals], [e["train_loss"] for e in r.evals],
                        label=r.method.name, **_style(r.method.family))
        ax.set(title=name, xlabel="epoch", ylabel="training loss", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
