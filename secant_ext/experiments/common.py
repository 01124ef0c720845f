"""Pieces the experiment files share: running a list of methods into an output folder,
picking the best-tuned baseline, printing the table."""
from __future__ import annotations

import argparse
import math
import statistics

from typing import Callable, Dict, List, Optional, Sequence

from .methods import sgd_const, sgd_decay
from .datasets import Dataset, mnist_or_digits
from .methods import Method
from .models import cross_entropy, mlp
from .output import STANDARD_COLUMNS, STANDARD_HEADERS, RunDir, table
from .training import RunResult, train


def run_methods(out: RunDir, methods: Sequence[Method], model_fn: Callable, data: Dataset,
                loss_fn: Callable, args, batch_size: int, epochs: float,
                results: Optional[List[RunResult]] = None, **extra) -> List[RunResult]:
    """Train each method in turn; each one's row and history are saved as it finishes."""
    results = [] if results is None else results
    for i, m in enumerate(methods, 1):
        print(f"[{i}/{len(methods)}] {m.name}", flush=True)
        r = train(model_fn, m, data, loss_fn, epochs=epochs, batch_size=batch_size,
                  seed=args.seed, max_steps=args.max_steps,
                  evals_per_epoch=getattr(args, "evals_per_epoch", 1),
                  progress=not args.no_progress)
        row = out.add(r, **extra)
        print(f"      train loss {row['final_train_loss']:.4g}, test acc "
              f"{row['final_test_acc']:.2f}%, {row['train_seconds']:.1f} s"
              + (", DIVERGED" if r.diverged else ""), flush=True)
        results.append(r)
    return results


def run_mlp_methods(out: RunDir, methods: Sequence[Method], data: Dataset, args,
                    plot: Callable[[List[RunResult]], None]) -> List[RunResult]:
    """Train each method on a fresh one-hidden-layer MLP (``--hidden`` units); ``plot``
    draws whatever finished, also when the run is interrupted."""
    results: List[RunResult] = []
    try:
        run_methods(out, methods, lambda: mlp(data.input_shape[0], 10, args.hidden), data,
                    cross_entropy, args, args.batch_size, args.epochs, results)
    finally:
        if results:
            plot(results)
    return results


def load_flat_mnist(args) -> Dataset:
    """MNIST from ``--data-dir`` (digits, said aloud, without one), flattened and cut to
    ``--max-train``/``--max-test``."""
    data = mnist_or_digits(args.data_dir, args.seed, flatten=True)
    data = data.subset(args.max_train, args.max_test)
    if not args.data_dir:
        print("note: " + data.note)
    print(data.describe())
    return data


def sgd_grid(args) -> List[Method]:
    """SGD over the constant rates ``--lrs`` and the decays ``c/(1+t)^gamma``."""
    grid = [sgd_const(lr) for lr in args.lrs]
    return grid + [sgd_decay(c, g) for c in args.decay_c for g in args.decay_gamma]


def best(results: Sequence[RunResult], family: str) -> Optional[RunResult]:
    """The run of ``family`` with the highest final test accuracy (the tuned baseline)."""
    runs = [r for r in results if r.method.family == family and r.evals]
    return max(runs, key=lambda r: r.final["test_acc"]) if runs else None


def print_table(out: RunDir, rows: Sequence[Dict[str, object]], columns=STANDARD_COLUMNS,
                headers=STANDARD_HEADERS, title: str = "") -> str:
    text = table(rows, columns, headers)
    if title:
        text = f"{title}\n{text}"
    print("\n" + text)
    with open(out.file("table.txt"), "a") as f:
        f.write(text + "\n\n")
    return text


def floats(text: str) -> List[float]:
    """Parse a comma-separated list of numbers (argparse type)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def ints(text: str) -> List[int]:
    values = floats(text)
    if any(v != int(v) or v <= 0 for v in values):
        raise ValueError(f"expected comma-separated positive integers, got {text!r}")
    return [int(v) for v in values]


def choices(allowed: Sequence[str], what: str) -> Callable[[str], List[str]]:
    """An argparse type: a comma-separated, non-empty subset of ``allowed``; the error
    names the unknown entries and the choices."""
    def parse(text: str) -> List[str]:
        chosen = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in chosen if s not in allowed]
        if bad or not chosen:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad}; choose from "
                                             f"{','.join(allowed)}")
        return chosen
    return parse


def median_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """Median with None as +infinity (a seed that never reached a target, or diverged);
    None when the median itself is infinite or there are no values."""
    if not values:
        return None
    m = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(m) else m
