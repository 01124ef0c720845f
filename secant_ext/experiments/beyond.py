"""``reproduce beyond``: studies beyond the paper, each a small group of runs.

- adam: the secant methods against Adam (lr 1e-3, its usual default), on the MLP.
- rules: ``rule="secant"`` (regularized) against ``"steffensen"`` and ``"bb2"``, plus the
  Steffensen rule without the safeguard: what the ``|s|^2`` regularization buys.
- momentum: A-SGDM's averaged momentum against the heavy-ball sum on the same alpha.
- sign: A-SIGNSGD's scaled sign against the unscaled ``alpha * sign(g)``.
- cnn: a small CNN (non-convex) on the images: A-SGD, A-SGDM, SGD, Adam.
- svm: a linear SVM with the squared hinge loss on a binary problem (MNIST even/odd, or
  breast cancer without ``--data-dir``): A-SGD, A-SGDM, SGD, Adam.
- lrfree: D-Adaptation and Prodigy, when their packages are installed (not required).
"""
from __future__ import annotations

import math

from .methods import a_sgd, a_sgd_heavy_ball, a_sgdm, a_signsgd, adam, lr_free_extras, sgd_const
from .common import load_flat_mnist, print_table, run_methods
from .datasets import Dataset, load_breast_cancer, mnist_even_odd
from .models import cross_entropy, linear, mlp, small_cnn, squared_hinge
from .output import STANDARD_COLUMNS, STANDARD_HEADERS, RunDir
from .plots import panels

DEFAULTS = dict(epochs=3, batch_size=128)
STUDIES = ("adam", "rules", "momentum", "sign", "cnn", "svm", "lrfree")


def studies(text: str):
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in chosen if s not in STUDIES]
    if bad:
        raise ValueError(f"unknown studies {bad}; choose from {STUDIES}")
    return chosen


def add_arguments(p) -> None:
    p.add_argument("--studies", type=studies, default=list(STUDIES),
                   help=f"comma-separated subset of {','.join(STUDIES)} (default all)")
    p.add_argument("--cnn-epochs", type=float, default=1.0, help="CNN epochs (default 1)")
    p.add_argument("--svm-epochs", type=float, default=3.0, help="SVM epochs (default 3)")
    p.add_argument("--sgd-lr", type=float, default=0.1,
                   help="learning rate of the SGD baseline in cnn and svm (default 0.1)")
    p.add_argument("--hidden", type=int, default=128, help="MLP hidden units (default 128)")


def run(args) -> RunDir:
    out = RunDir("beyond", args.out, vars(args))
    data = load_flat_mnist(args)
    b = args.backend
    dim = data.input_shape[0]
    make_mlp = lambda: mlp(dim, 10, args.hidden)  # noqa: E731
    groups = {}
    skipped = {}

    def study(name, methods, model_fn, ds, loss_fn, epochs):
        print(f"\n== {name} ({ds.describe()}) ==")
        groups[name] = []
        run_methods(out, methods, model_fn, ds, loss_fn, args, args.batch_size, epochs,
                    groups[name], study=name)

    try:
        for name in args.studies:
            if name == "adam":
                study(name, [a_sgd(backend=b), a_sgdm(backend=b), adam(1e-3)],
                      make_mlp, data, cross_entropy, args.epochs)
            elif name == "rules":
                study(name, [a_sgd("A-SGD secant", backend=b),
                             a_sgd("A-SGD steffensen", backend=b, rule="steffensen"),
                             a_sgd("A-SGD bb2", backend=b, rule="bb2"),
                             a_sgd("A-SGD steffensen raw", backend=b, rule="steffensen",
                                     safeguard=False)],
                      make_mlp, data, cross_entropy, args.epochs)
            elif name == "momentum":
                study(name, [a_sgdm("A-SGDM averaged", backend=b),
                             a_sgd_heavy_ball(backend=b)],
                      make_mlp, data, cross_entropy, args.epochs)
            elif name == "sign":
                study(name, [a_signsgd("A-SIGNSGD scaled", backend=b),
                             a_signsgd("A-SIGNSGD unscaled", backend=b, sign_scale="none")],
                      make_mlp, data, cross_entropy, args.epochs)
            elif name == "cnn":
                side = int(math.isqrt(dim))
                images = Dataset(data.name, data.x_train.view(-1, 1, side, side),
                                 data.y_train, data.x_test.view(-1, 1, side, side),
                                 data.y_test, 10, data.note)
                study(name, [a_sgd(backend=b), a_sgdm(backend=b),
                             sgd_const(args.sgd_lr), adam(1e-3)],
                      lambda: small_cnn(1, side, 10), images, cross_entropy, args.cnn_epochs)
            elif name == "svm":
                binary = mnist_even_odd(args.data_dir) if args.data_dir else \
                    load_breast_cancer(args.seed)
                binary = binary.subset(args.max_train, args.max_test)
                study(name, [a_sgd(backend=b), a_sgdm(backend=b),
                             sgd_const(args.sgd_lr), adam(1e-3)],
                      lambda: linear(binary.input_shape[0], 2), binary, squared_hinge,
                      args.svm_epochs)
            elif name == "lrfree":
                extras = lr_free_extras()
                skipped.update({k: "not installed" for k, v in extras.items() if v is None})
                available = [v for v in extras.values() if v is not None]
                for k in skipped:
                    print(f"lrfree: {k} skipped (its package is not installed)")
                if available:
                    study(name, [a_sgd(backend=b)] + available, make_mlp, data,
                          cross_entropy, args.epochs)
    finally:
        if any(groups.values()):
            panels({k: v for k, v in groups.items() if v}, out.file("studies.png"),
                   f"beyond: training loss on {data.name}")
    summary = {"dataset": data.describe(), "skipped": skipped}
    if groups.get("rules"):
        summary["rules"] = {r.method.name: {"final_train_loss": r.final["train_loss"],
                                            "final_test_acc": r.final["test_acc"],
                                            "diverged": r.diverged}
                            for r in groups["rules"]}
    print_table(out, out.rows, columns=("study",) + STANDARD_COLUMNS,
                headers=("study",) + STANDARD_HEADERS, title=f"beyond ({data.describe()})")
    out.finish(summary)
    print(f"\nresults, histories and plots in {out.path}/")
    return out
