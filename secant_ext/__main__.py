"""Command line: ``python -m secant_ext demo``, ``python -m secant_ext suite`` and
``python -m secant_ext reproduce NAME``.

Each run prints a results table and writes JSON/CSV tables, per-method histories and PNG
plots to an output folder (``runs/<experiment>-<timestamp>/`` unless ``--out``). The
experiments need scikit-learn, tqdm, matplotlib and scipy:
``pip install secant_ext[experiments]``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

EXPERIMENTS = {
    "fig1": "MLP on MNIST: A-SGD, A-SGDM, A-SIGNSGD against SGD tuned over a constant and "
            "a decaying learning-rate grid",
    "bh": "A-SGDM on logistic regression with probe batch sizes b_H in {10, 50, 100, 150}",
    "trajectory": "A-SGD vs SGD with a diminishing rate: alpha_t against the gradient norm, "
                  "and their Spearman rank correlation",
    "beyond": "Adam, the three rules, averaged vs heavy-ball momentum, scaled vs unscaled "
              "sign, a small CNN, a squared-hinge SVM, D-Adaptation/Prodigy if installed",
    "race": "time to a target test accuracy (MLP, small CNN): the secant optimizers against "
            "Schedule-Free, Prodigy, D-Adaptation (if installed), Adam and an SGD grid",
    "lm": "byte-level transformer language model on the standard library's own source: "
          "the secant methods against AdamW, an SGD grid, Prodigy/ScheduleFree if installed",
    "lm-diagnose": "the lm transformer under SecantSGD(): per-parameter-kind curvature and "
                   "alpha next to the shared alpha, its noise, the cap at 1, loss spikes",
}


def _common(p: argparse.ArgumentParser, defaults) -> None:
    p.add_argument("--out", help="output folder (default runs/<experiment>-<timestamp>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the "
                   "batch order and the data split (default 0)")
    p.add_argument("--data-dir", help="directory with the MNIST IDX files (gzip or plain)")
    per_data = "per data set"  # bh picks epochs and batch size for the data it loads
    p.add_argument("--epochs", type=float, default=defaults["epochs"],
                   help=f"epochs per method (default {defaults['epochs'] or per_data})")
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                   help=f"training mini-batch size (default {defaults['batch_size'] or per_data})")
    p.add_argument("--evals-per-epoch", type=int, default=1,
                   help="full train-loss / test-accuracy evaluations per epoch (default 1)")
    p.add_argument("--max-steps", type=int, help="stop each method after this many steps")
    p.add_argument("--max-train", type=int, help="use only the first N training examples")
    p.add_argument("--max-test", type=int, help="use only the first N test examples")
    p.add_argument("--backend", default="auto", choices=("auto", "cpp", "triton",
                                                         "reference"),
                   help="secant_ext kernel backend (default auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m secant_ext", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    from .experiments import demo
    p = sub.add_parser("demo", help="MLP on scikit-learn's digits: A-SGD vs tuned SGD "
                       "(under a minute on 2 CPU cores)")
    _common(p, demo.DEFAULTS)
    demo.add_arguments(p)
    p.set_defaults(module=demo)
    from .suite import cli as suite_cli
    p = sub.add_parser("suite", help="the workload suite: every optimizer against a "
                       "calibrated AdamW and the learning-rate-free peers, scored by time to "
                       "target and performance profiles (--list names the workloads)",
                       description=suite_cli.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    suite_cli.add_arguments(p)
    p.set_defaults(module=suite_cli)
    rep = sub.add_parser("reproduce", help="the paper's experiments and more, on real data")
    rsub = rep.add_subparsers(dest="experiment", required=True)
    for name, help_text in EXPERIMENTS.items():
        mod = importlib.import_module(f".experiments.{name.replace('-', '_')}", __package__)
        p = rsub.add_parser(name, help=help_text, description=help_text)
        _common(p, mod.DEFAULTS)
        mod.add_arguments(p)
        p.set_defaults(module=mod)
    return parser


def main(argv=None) -> int:
    try:
        from .experiments import require_all
        require_all()
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .experiments.idx import DataError
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in meta.json: the exact command of each result
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        status = args.module.run(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the methods that finished are saved in the output folder",
              file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
