"""``reproduce fig1``: an MLP on MNIST, A-SGD / A-SGDM / A-SIGNSGD (untuned) against SGD
tuned over a constant learning-rate grid and over a ``c/(1+t)^gamma`` decay grid.

Every method runs the same epochs over the same batches; the table also reports gradient
evaluations, since a secant step costs two."""
from __future__ import annotations

from .methods import a_sgd, a_sgdm, a_signsgd
from .common import best, floats, load_flat_mnist, print_table, run_mlp_methods, sgd_grid
from .output import RunDir
from .plots import alpha_vs_grad_norm, loss_curves

DEFAULTS = dict(epochs=5, batch_size=128)


def add_arguments(p) -> None:
    p.add_argument("--lrs", type=floats, default=floats("0.01,0.03,0.1,0.3,1"),
                   help="SGD constant learning-rate grid (default %(default)s)")
    p.add_argument("--decay-c", type=floats, default=floats("0.1,0.3,1"),
                   help="decay grid: c of c/(1+t)^gamma, t in epochs (default %(default)s)")
    p.add_argument("--decay-gamma", type=floats, default=floats("0.5,1"),
                   help="decay grid: gamma (default %(default)s)")
    p.add_argument("--hidden", type=int, default=128, help="MLP hidden units (default 128)")


def run(args) -> RunDir:
    out = RunDir("fig1", args.out, vars(args))
    data = load_flat_mnist(args)
    methods = [a_sgd(backend=args.backend), a_sgdm(backend=args.backend),
               a_signsgd(backend=args.backend)]
    methods += sgd_grid(args)

    def plot(results):
        loss_curves(results, out.file("loss_curves.png"),
                    f"fig1: MLP on {data.name}, untuned secant methods vs tuned SGD")
        alpha_vs_grad_norm(results, out.file("alpha_vs_grad_norm.png"),
                           f"fig1: alpha_t of the secant methods on {data.name}")
    results = run_mlp_methods(out, methods, data, args, plot)
    summary = {"dataset": data.describe()}
    for fam in ("SGD const", "SGD decay"):
        b = best(results, fam)
        summary[f"best {fam}"] = {"method": b.method.name, "test_acc": b.final["test_acc"],
                                  "train_loss": b.final["train_loss"]}
    best_sgd = max((summary["best SGD const"], summary["best SGD decay"]),
                   key=lambda d: d["test_acc"])
    summary["best SGD"] = best_sgd
    for r in results[:3]:
        gap = best_sgd["test_acc"] - r.final["test_acc"]
        summary[r.method.name] = {"test_acc": r.final["test_acc"],
                                  "train_loss": r.final["train_loss"],
                                  "points_below_best_sgd": gap,
                                  "within_1_point": gap <= 1.0}
    print_table(out, out.rows, title=f"fig1 ({data.describe()})")
    for r in results[:3]:
        s = summary[r.method.name]
        print(f"{r.method.name}: {s['points_below_best_sgd']:+.2f} points below the best "
              f"tuned SGD ({best_sgd['method']}, {best_sgd['test_acc']:.2f}%)")
    out.finish(summary)
    print(f"\nresults, histories and plots in {out.path}/")
    return out
