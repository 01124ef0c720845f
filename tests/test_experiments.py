"""The experiments' command line in tiny configurations, the shared training loop, the
heavy-ball comparison optimizer and the StepHistory logging helper."""
import csv
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("scipy")
pytest.importorskip("tqdm")

import secant_ext  # noqa: E402
from secant_ext.__main__ import main  # noqa: E402
from secant_ext.experiments import datasets, methods, models, training  # noqa: E402
from test_data import write_mnist  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["--no-progress", "--backend", "reference", "--threads", "1"]


def run_cli(args, out):
    rc = main(list(args) + QUICK + ["--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "results.json").read_text())
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["method"] for r in csv_rows] == [r["method"] for r in rows]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"].startswith("python -m secant_ext ")
    assert meta["wall_seconds"] > 0
    return rows, meta


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"


def test_demo_tiny(tmp_path, capsys):
    rows, meta = run_cli(["demo", "--epochs", "1", "--max-steps", "4", "--lrs", "0.1,0.5",
                          "--decay-c", "0.3", "--decay-gamma", "1"], tmp_path)
    assert [r["method"] for r in rows] == ["SecantAdam", "A-SGD", "SGD lr=0.1", "SGD lr=0.5",
                                           "SGD 0.3/(1+t)^1"]
    # the secant step costs two gradient evaluations, SGD one; SecantAdam measures from
    # its second step on (the warm-up), so 1 + 2 + 2 + 2; the table says so
    assert [r["grad_evals"] for r in rows] == [7, 8, 4, 4, 4]
    assert all(math.isfinite(r["final_train_loss"]) for r in rows)
    assert_png(tmp_path / "loss_curves.png")
    assert_png(tmp_path / "alpha_vs_grad_norm.png")
    printed = capsys.readouterr().out
    assert "test acc %" in printed and "SGD 0.3/(1+t)^1" in printed
    hist = json.loads((tmp_path / "history" / "A-SGD.json").read_text())
    assert len(hist["steps"]) == 4 and {"alpha", "grad_norm", "loss"} <= set(hist["steps"][0])


def test_fig1_on_idx_files(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=64, n_test=16, side=28)
    rows, meta = run_cli(["reproduce", "fig1", "--data-dir", str(tmp_path / "mnist"),
                          "--epochs", "1", "--batch-size", "16", "--lrs", "0.1",
                          "--decay-c", "0.1", "--decay-gamma", "0.5"], tmp_path / "out")
    assert [r["method"] for r in rows] == ["A-SGD", "A-SGDM", "A-SIGNSGD", "SGD lr=0.1",
                                           "SGD 0.1/(1+t)^0.5"]
    assert all(r["steps"] == 4 for r in rows)  # 64 examples / batch 16
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "mnist: 64 train / 16 test" in summary["dataset"]
    assert set(summary["A-SGD"]) >= {"points_below_best_sgd", "within_1_point"}
    assert_png(tmp_path / "out" / "loss_curves.png")


def test_fig1_falls_back_to_digits_and_says_so(tmp_path, capsys):
    run_cli(["reproduce", "fig1", "--max-steps", "2", "--lrs", "0.1", "--decay-c", "0.1",
             "--decay-gamma", "1"], tmp_path)
    assert "no --data-dir given: using scikit-learn's bundled 8x8 digits" in \
        capsys.readouterr().out


def test_bh_probe_batches_cost_what_they_should(tmp_path):
    rows, _ = run_cli(["reproduce", "bh", "--epochs", "1", "--batch-size", "100",
                       "--bh", "10,50"], tmp_path)
    assert [r["method"] for r in rows] == ["A-SGDM b_H=10", "A-SGDM b_H=50",
                                           "A-SGDM no probe"]
    steps = rows[0]["steps"]
    assert steps == 455 // 100  # breast cancer: 455 training examples
    # one gradient on S_t, two on S_H per step; without a probe, two on S_t
    assert [r["grad_evals"] for r in rows] == [3 * steps, 3 * steps, 2 * steps]
    assert [r["examples"] for r in rows] == [steps * 120, steps * 200, steps * 200]
    summary = json.loads((tmp_path / "summary.json").read_text())
    losses = list(summary["final_train_loss_by_bh"].values())
    assert summary["relative_spread"] == pytest.approx((max(losses) - min(losses))
                                                       / min(losses))
    assert_png(tmp_path / "final_loss_by_bh.png")


def test_bh_on_an_svmlight_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.svm"
    path.write_text("".join(f"{1 if i % 2 else -1} 1:{rng.normal() + (i % 2):.4f} "
                            f"2:{rng.normal():.4f}\n" for i in range(50)))
    rows, _ = run_cli(["reproduce", "bh", "--svmlight", str(path), "--epochs", "1",
                       "--batch-size", "8", "--bh", "10"], tmp_path / "out")
    assert rows[0]["method"] == "A-SGDM b_H=10" and rows[0]["steps"] == 40 // 8


def test_trajectory_reports_spearman(tmp_path):
    rows, _ = run_cli(["reproduce", "trajectory", "--max-steps", "12", "--batch-size", "32",
                       "--window", "4"], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    per_step = summary["spearman_per_step"]
    assert per_step["n"] == 12 and -1 <= per_step["rho"] <= 1
    with open(tmp_path / "trajectory.csv") as f:
        traj = list(csv.DictReader(f))
    alpha = [float(r["alpha"]) for r in traj]
    gnorm = [float(r["grad_norm"]) for r in traj]
    from scipy.stats import spearmanr
    assert per_step["rho"] == pytest.approx(spearmanr(alpha, gnorm)[0])
    assert summary["spearman_window_means"]["n"] == 3
    assert_png(tmp_path / "trajectory.png")


def test_beyond_all_studies_tiny(tmp_path):
    rows, _ = run_cli(["reproduce", "beyond", "--max-steps", "2", "--max-train", "256",
                       "--max-test", "64"], tmp_path)
    studies = {r["study"] for r in rows}
    assert {"adam", "rules", "momentum", "sign", "cnn", "svm"} <= studies
    rules = [r["method"] for r in rows if r["study"] == "rules"]
    assert rules == ["A-SGD secant", "A-SGD steffensen", "A-SGD bb2", "A-SGD steffensen raw"]
    # A-SGD runs in several studies: each keeps its own history file
    for study in ("adam", "cnn", "svm"):
        hist = json.loads((tmp_path / "history" / f"{study}-A-SGD.json").read_text())
        assert hist["method"] == "A-SGD" and hist["evals"]
    assert_png(tmp_path / "studies.png")


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no_mnist_here"
    rc = main(["reproduce", "fig1", "--data-dir", str(missing), "--out",
               str(tmp_path / "out")] + QUICK)
    assert rc == 2
    err = capsys.readouterr().err
    assert f"MNIST data directory {missing} does not exist" in err
    (tmp_path / "corrupt").mkdir()
    write_mnist(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08junk")
    rc = main(["reproduce", "trajectory", "--data-dir", str(tmp_path / "corrupt"), "--out",
               str(tmp_path / "out2")] + QUICK)
    assert rc == 2
    assert "corrupt gzip data in" in capsys.readouterr().err
    rc = main(["reproduce", "bh", "--dataset", "mnist-even-odd"] + QUICK)
    assert rc == 2
    assert "needs --data-dir" in capsys.readouterr().err


# -- the training loop ---------------------------------------------------------------------
def test_training_loop_decay_schedule_and_same_start():
    data = datasets.load_digits(0).subset(200, 50)
    model_fn = lambda: models.mlp(64, 10, 16)  # noqa: E731
    r = training.train(model_fn, methods.sgd_decay(0.5, 0.5), data, models.cross_entropy,
                       epochs=2, batch_size=50, seed=3, progress=False)
    lr = r.steps.column("lr")
    per_epoch = 200 // 50
    assert lr == pytest.approx([0.5 / (1 + k / per_epoch) ** 0.5 for k in range(8)])
    # every method starts from the same weights: equal initial evaluations
    r2 = training.train(model_fn, methods.a_sgd(backend="reference"), data, models.cross_entropy,
                        epochs=1, batch_size=50, seed=3, progress=False)
    assert r.evals[0]["train_loss"] == r2.evals[0]["train_loss"]
    assert r2.grad_evals == 2 * per_epoch


def test_training_stops_and_flags_divergence():
    data = datasets.load_digits(0).subset(200, 50)
    r = training.train(lambda: models.mlp(64, 10, 16), methods.sgd_const(1e6), data,
                       models.cross_entropy, epochs=3, batch_size=50, seed=0,
                       progress=False)
    assert r.diverged
    assert r.final["step"] < 12


def test_squared_hinge_matches_its_definition():
    out = torch.tensor([[2.0], [0.5], [-0.25], [-3.0]])
    y = torch.tensor([1, 1, 0, 1])
    expected = np.mean([0.0, 0.25, 0.75 ** 2, 16.0])  # (1 - y f)_+^2 with y in {-1, +1}
    assert models.squared_hinge(out, y).item() == pytest.approx(expected)


# -- heavy-ball comparison optimizer, against an independent computation ----------------------
def quadratic(d, x):
    """f = 0.5 sum d_i x_i^2: gradient d * x, so the secant quantities are closed-form."""
    return 0.5 * (d * x * x).sum()


def test_heavy_ball_secant_matches_hand_computation():
    d = np.array([0.5, 1.0, 2.0, 0.1])
    x = np.array([1.0, -2.0, 0.5, 3.0])
    mu = 0.9
    p = torch.nn.Parameter(torch.tensor(x))
    dt = torch.tensor(d)
    opt = methods.HeavyBallSecantSGD([p], momentum=mu, backend="reference")

    def closure():
        opt.zero_grad()
        loss = quadratic(dt, p)
        loss.backward()
        return loss

    m = np.zeros_like(x)
    for _ in range(4):
        g = d * x
        a, b = np.sum(g * d * g), np.sum(g * g)  # <s, y> with y = D g, |s|^2
        alpha = b / (a + b)
        x = x - alpha * (mu * m + g)
        m = mu * m + g
        opt.step(closure)
        # float64 throughout: agreement to a few ulps of the iterates' size
        np.testing.assert_allclose(p.detach().numpy(), x, rtol=1e-12, atol=1e-12)


# -- StepHistory ---------------------------------------------------------------------------
def test_step_history_records_alpha_and_exports(tmp_path):
    d = np.array([0.5, 1.0, 2.0])
    x = np.array([1.0, -1.0, 2.0])
    p = torch.nn.Parameter(torch.tensor(x))
    dt = torch.tensor(d)
    opt = secant_ext.SecantSGD([p], backend="reference")
    hist = secant_ext.StepHistory()

    def closure():
        opt.zero_grad()
        loss = quadratic(dt, p)
        loss.backward()
        return loss

    expected = []
    for _ in range(3):
        g = d * x
        a, b = np.sum(g * d * g), np.sum(g * g)
        expected.append((b / (a + b), math.sqrt(b), a / b))
        x = x - b / (a + b) * g
        loss = opt.step(closure)
        hist.record(opt, loss=loss)
    assert len(hist) == 3
    assert hist.columns[:5] == ["step", "alpha", "step_size", "grad_norm", "curvature"]
    assert hist.column("alpha") == pytest.approx([e[0] for e in expected], rel=1e-12)
    assert hist.column("step_size") == hist.column("alpha")  # lr 1, no clipping
    assert hist.column("grad_norm") == pytest.approx([e[1] for e in expected], rel=1e-12)
    assert hist.column("curvature") == pytest.approx([e[2] for e in expected], rel=1e-12)
    hist.to_csv(tmp_path / "h.csv")
    with open(tmp_path / "h.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["alpha"]) for r in rows] == pytest.approx(hist.column("alpha"), rel=1e-15)
    hist.to_json(tmp_path / "h.json")
    js = json.loads((tmp_path / "h.json").read_text())
    assert js["columns"] == hist.columns and len(js["rows"]) == 3
    hist.plot(tmp_path / "h.png")
    assert_png(tmp_path / "h.png")
    with pytest.raises(ValueError, match="record the same values every step"):
        hist.record(opt)  # without loss=: a different set of columns
    with pytest.raises(KeyError, match="no column 'nope'"):
        hist.column("nope")


def test_missing_experiment_dependency_names_what_to_install(monkeypatch):
    from secant_ext.experiments import _deps

    real = _deps.importlib.import_module

    def fake_import(name, *a, **k):
        if name.split(".")[0] == "sklearn":
            raise ImportError("No module named 'sklearn'")
        return real(name, *a, **k)

    monkeypatch.setattr(_deps.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"need the package 'scikit-learn'.*"
                                          r"pip install secant_ext\[experiments\]"):
        _deps.require("sklearn.datasets")
    assert main(["demo", "--out", "unused"]) == 2  # the CLI reports it, no traceback
