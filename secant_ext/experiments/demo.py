"""``demo``: an MLP on scikit-learn's bundled digits, SecantAdam and A-SGD (untuned) against
SGD tuned over a constant learning-rate grid and over a decaying schedule
``c/(1+t)^gamma``."""
from __future__ import annotations

import torch

from .methods import a_sgd, secant_adam_method
from .common import best, floats, print_table, run_mlp_methods, sgd_grid
from .datasets import load_digits
from .output import RunDir
from .plots import alpha_vs_grad_norm, loss_curves
from ..suite.workloads import DIGITS_BATCH, DIGITS_EPOCHS, DIGITS_HIDDEN

# the problem is the suite's ``digits-epochs`` workload, declared there
DEFAULTS = dict(epochs=DIGITS_EPOCHS, batch_size=DIGITS_BATCH, lrs="0.01,0.03,0.1,0.3,1",
                decay_c="0.1,0.3,1", decay_gamma="0.5,1")


def add_arguments(p) -> None:
    p.add_argument("--lrs", type=floats, default=floats(DEFAULTS["lrs"]),
                   help="SGD constant learning-rate grid (default %(default)s)")
    p.add_argument("--decay-c", type=floats, default=floats(DEFAULTS["decay_c"]),
                   help="SGD decay grid: c of c/(1+t)^gamma, t in epochs (default %(default)s)")
    p.add_argument("--decay-gamma", type=floats, default=floats(DEFAULTS["decay_gamma"]),
                   help="SGD decay grid: gamma (default %(default)s)")
    p.add_argument("--hidden", type=int, default=DIGITS_HIDDEN,
                   help=f"MLP hidden units (default {DIGITS_HIDDEN})")


def run(args) -> RunDir:
    if not args.threads:
        # a 64-unit MLP on batches of 32: a second thread only adds synchronization, and
        # on a busy 2-core machine its spin-waits made a step 10x slower (measured)
        torch.set_num_threads(1)
    out = RunDir("demo", args.out, vars(args))
    data = load_digits(args.seed).subset(args.max_train, args.max_test)
    print(data.describe())
    methods = [secant_adam_method(backend=args.backend), a_sgd(backend=args.backend)]
    methods += sgd_grid(args)

    def plot(results):
        loss_curves(results, out.file("loss_curves.png"),
                    "digits MLP: SecantAdam and A-SGD (untuned) vs SGD grids")
        alpha_vs_grad_norm(results, out.file("alpha_vs_grad_norm.png"),
                           "digits: the measured step size (A-SGD alpha_t, SecantAdam eta) "
                           "and the gradient norm")
    results = run_mlp_methods(out, methods, data, args, plot)
    summary = {"dataset": data.describe()}
    a = next(r for r in results if r.method.family == "A-SGD")
    for fam in ("SGD const", "SGD decay"):
        b = best(results, fam)
        if b:
            summary[f"best {fam}"] = {"method": b.method.name, "test_acc": b.final["test_acc"]}
    summary["A-SGD test_acc"] = a.final["test_acc"]
    adam = next(r for r in results if r.method.family == "A-Adam")
    summary["SecantAdam test_acc"] = adam.final["test_acc"]
    print_table(out, out.rows, title=f"demo ({data.describe()})")
    out.finish(summary)
    print(f"\nresults, histories and plots in {out.path}/")
    return out
