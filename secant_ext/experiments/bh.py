"""``reproduce bh``: A-SGDM on logistic regression with a separate probe batch ``S_H`` of
size ``b_H`` in {10, 50, 100, 150}: does the final training loss depend on ``b_H``?

Each step costs one gradient on the training batch and two on the probe batch, so the
table reports gradient evaluations and examples, and a run without a probe (``S_H = S_t``)
as a reference."""
from __future__ import annotations

from .methods import a_sgdm
from .common import ints, print_table, run_methods
from .datasets import load_breast_cancer, load_svmlight, mnist_even_odd
from .idx import DataError
from .models import cross_entropy, linear
from .output import STANDARD_COLUMNS, STANDARD_HEADERS, RunDir
from .plots import bars, loss_curves

DEFAULTS = dict(epochs=None, batch_size=None)
# per data set: (epochs, batch size), sized for a few minutes on 2 CPU cores
DATASET_DEFAULTS = {"breast_cancer": (40, 32), "mnist-even-odd": (3, 128), "svmlight": (10, 64)}


def add_arguments(p) -> None:
    p.add_argument("--dataset", default="breast_cancer",
                   choices=("breast_cancer", "mnist-even-odd"),
                   help="breast_cancer (scikit-learn, default) or mnist-even-odd (needs "
                        "--data-dir); --svmlight overrides it")
    p.add_argument("--svmlight", metavar="PATH", help="a LIBSVM/svmlight file to use instead")
    p.add_argument("--bh", type=ints, default=ints("10,50,100,150"),
                   help="probe batch sizes b_H (default %(default)s)")


def load(args):
    if args.svmlight:
        return load_svmlight(args.svmlight, args.seed), "svmlight"
    if args.dataset == "mnist-even-odd":
        if not args.data_dir:
            raise DataError("--dataset mnist-even-odd needs --data-dir, the directory with "
                            "the MNIST IDX files")
        return mnist_even_odd(args.data_dir), args.dataset
    return load_breast_cancer(args.seed), args.dataset


def run(args) -> RunDir:
    data, key = load(args)
    epochs, batch = DATASET_DEFAULTS[key]
    args.epochs = args.epochs or epochs
    args.batch_size = args.batch_size or batch
    out = RunDir("bh", args.out, vars(args))
    data = data.subset(args.max_train, args.max_test)
    print(data.describe())
    methods = [a_sgdm(f"A-SGDM b_H={bh}", backend=args.backend, probe_batch=bh)
               for bh in args.bh]
    methods.append(a_sgdm("A-SGDM no probe", backend=args.backend))
    results = []
    try:
        run_methods(out, methods, lambda: linear(data.input_shape[0], data.num_classes),
                    data, cross_entropy, args, args.batch_size, args.epochs, results)
    finally:
        if results:
            loss_curves(results, out.file("loss_curves.png"),
                        f"bh: A-SGDM, logistic regression on {data.name}")
            probe = [r for r in results if r.method.probe_batch]
            if probe:
                bars([r.method.name for r in probe],
                     [r.final["train_loss"] for r in probe], out.file("final_loss_by_bh.png"),
                     "final training loss", f"bh on {data.name}")
    probe = [r for r in results if r.method.probe_batch]
    losses = [r.final["train_loss"] for r in probe]
    spread = (max(losses) - min(losses)) / min(losses)
    summary = {"dataset": data.describe(),
               "final_train_loss_by_bh": {r.method.probe_batch: r.final["train_loss"]
                                          for r in probe},
               "relative_spread": spread, "within_5_percent": spread <= 0.05}
    print_table(out, out.rows, columns=("method",) + STANDARD_COLUMNS[2:],
                headers=("method",) + STANDARD_HEADERS[2:], title=f"bh ({data.describe()})")
    print(f"final training losses over b_H in {args.bh}: spread (max - min) / min = "
          f"{100 * spread:.2f}% ({'within' if spread <= 0.05 else 'more than'} 5%)")
    out.finish(summary)
    print(f"\nresults, histories and plots in {out.path}/")
    return out
