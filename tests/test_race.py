"""``reproduce race`` in a tiny configuration on scikit-learn's digits: output files, table
columns, skipped optional peers, gradient-evaluation counts, the grid's tuning cost."""
import csv
import importlib
import json

import pytest
import torch

import secant_ext

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from secant_ext.__main__ import main  # noqa: E402
from secant_ext.experiments import common, datasets, methods, models, race, training  # noqa: E402

QUICK = ["--no-progress", "--backend", "reference", "--threads", "1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _hide(monkeypatch, *packages):
    real = importlib.import_module

    def fake(name, *a, **k):
        if name.split(".")[0] in packages:
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)


def test_race_tiny_on_digits(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "schedulefree")
    steps = 3
    rc = main(["reproduce", "race", "--models", "mlp", "--seeds", "1", "--max-steps",
               str(steps), "--methods", "secant-sgd,secant-sgd-probe,sf-sgd,sf-adamw,adam,"
               "sgd-grid", "--lrs", "0.1,0.5", "--out", str(tmp_path)] + QUICK)
    assert rc == 0
    printed = capsys.readouterr().out
    # the missing peers are named, on screen and in the outputs
    assert "skipped: SF-SGD (package 'schedulefree' not installed" in printed
    assert "skipped (not installed): SF-SGD, SF-AdamW" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["skipped"]) == {"SF-SGD", "SF-AdamW"}
    assert summary["targets"] == {"mlp": 95.0}  # the digits default
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["seeds"] == [0] and meta["threads"] == 1 and meta["loadavg_end"]

    rows = json.loads((tmp_path / "results.json").read_text())
    by = {r["method"]: r for r in rows}
    assert list(by) == ["A-SGD", "A-SGD b_H=16", "Adam lr=0.001", "SGD lr=0.1",
                        "SGD lr=0.5"]
    # counted closure calls: a secant step 2 gradients, with a probe 1 + 2 (two on the
    # 16-example probe batch), SGD and Adam 1
    assert by["A-SGD"]["grad_evals"] == 2 * steps
    assert by["A-SGD"]["examples"] == 2 * steps * 128
    assert by["A-SGD b_H=16"]["grad_evals"] == 3 * steps
    assert by["A-SGD b_H=16"]["examples"] == steps * (128 + 2 * 16)
    assert by["SGD lr=0.1"]["grad_evals"] == steps and by["Adam lr=0.001"]["grad_evals"] == steps
    for r in rows:
        assert r["model"] == "mlp" and r["seed"] == 0 and r["steps"] == steps
        assert {"grad_evals_to_target", "seconds_to_target", "best_test_acc",
                "min_test_acc_after_epoch1", "run_seconds"} <= set(r)

    race_rows = json.loads((tmp_path / "race.json").read_text())["rows"]
    names = [r["method"] for r in race_rows]
    assert names[-1] == "SGD grid (best of 2)"
    grid = race_rows[-1]
    assert grid["tuning_runs"] == 2 and grid["grid_total_grad_evals"] == 2 * steps
    assert all(r["tuning_runs"] == 1 for r in race_rows[:-1])
    assert set(race_rows[0]["per_seed"]) == {"0"}
    with open(tmp_path / "race.csv") as f:
        header = next(csv.reader(f))
    assert set(race.RACE_COLUMNS) <= set(header)
    table = (tmp_path / "table.txt").read_text()
    for h in race.RACE_HEADERS:
        assert h in table
    for png in ("acc_vs_grad_evals.png", "acc_vs_seconds.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC


def test_missing_prodigy_and_dadaptation_are_named(monkeypatch):
    _hide(monkeypatch, "prodigyopt", "dadaptation")

    class Args:
        backend, probe_batch, lrs = "reference", 16, [0.1]
    chosen, skipped = race.build_methods(["prodigy", "dadapt-sgd", "adam"], Args)
    assert [m.name for m in chosen] == ["Adam lr=0.001"]
    assert skipped == {"Prodigy": "package 'prodigyopt' not installed",
                       "D-Adapt SGD": "package 'dadaptation' not installed"}


def test_schedule_free_convention_eval_mode_around_evaluations():
    """An optimizer with train()/eval() is evaluated in eval mode and steps in train mode."""
    calls = []

    class ModeSGD(torch.optim.SGD):
        mode = None

        def train(self):
            calls.append("train")
            self.mode = "train"

        def eval(self):
            calls.append("eval")
            self.mode = "eval"

        def step(self, closure=None):
            assert self.mode == "train"
            return super().step(closure)

    data = datasets.load_digits(0).subset(200, 50)
    m = methods.Method("mode", "mode", lambda p: ModeSGD(p, lr=0.1))
    r = training.train(lambda: models.mlp(64, 10, 8), m, data, models.cross_entropy,
                       epochs=1, batch_size=50, seed=0, evals_per_epoch=2, progress=False)
    assert len(r.evals) == 3
    assert calls == ["train"] + ["eval", "train"] * 3


def _run(reached, ge, s, total_ge, total_s, acc):
    return {"reached": reached, "grad_evals_to_target": ge if reached else None,
            "seconds_to_target": s if reached else None, "examples_to_target": None,
            "final_test_acc": acc, "best_test_acc": acc, "min_test_acc_after_epoch1": acc,
            "run_grad_evals": total_ge, "run_seconds": total_s}


def test_grid_row_picks_the_fastest_member_and_charges_the_whole_search():
    per_run = {("mlp", "SGD lr=0.1"): {0: _run(True, 300, 3.0, 1000, 10.0, 97.5)},
               ("mlp", "SGD lr=1"): {0: _run(True, 200, 2.0, 1000, 10.0, 97.2)},
               ("mlp", "SGD lr=0.01"): {0: _run(False, 0, 0, 1000, 10.0, 95.0)},
               ("mlp", race.SECANT_DEFAULT): {0: _run(True, 500, 6.0, 2000, 20.0, 97.4)}}
    fam = {"SGD lr=0.1": "SGD const", "SGD lr=1": "SGD const", "SGD lr=0.01": "SGD const",
           race.SECANT_DEFAULT: "A-Adam"}
    rows = {r["method"]: r for r in race.summarize(per_run, fam, 3)}
    g = rows["SGD grid (best of 3)"]
    assert g["best_member"] == ["SGD lr=1"] and g["grad_evals_to_target"] == 200
    # each member runs until it reaches the target, or its whole budget when it never does
    assert g["tuning_grad_evals"] == 300 + 200 + 1000
    assert g["tuning_seconds"] == pytest.approx(15.0)
    assert g["grid_total_grad_evals"] == 3000 and g["tuning_runs"] == 3
    assert rows[race.SECANT_DEFAULT]["tuning_seconds"] == 6.0 and rows[race.SECANT_DEFAULT]["reached"] == "1/1"
    v = race.verdicts(list(rows.values()))["mlp"]
    assert v["best peer incl. grid: grad_evals_to_target"]["ratio"] == pytest.approx(2.5)


def test_median_counts_a_missed_target_as_infinitely_slow():
    assert common.median_or_none([1.0, None, 3.0]) == 3.0
    assert common.median_or_none([None, None, 3.0]) is None


class _Args:
    backend, probe_batch, lrs = "reference", 16, [0.1]


def _lever(key):
    (m,), skipped = race.build_methods([key], _Args)
    assert not skipped
    return m


@pytest.mark.parametrize("key, steps, evals, examples", [
    ("asgd-k4", 4, 2 + 1 + 1 + 1, 5 * 50),           # measures on step 1 only
    ("asgd-k4", 5, 2 + 1 + 1 + 1 + 2, 7 * 50),       # and again on step 5
    ("asgd-k8", 9, 9 + 2, 11 * 50),
    ("asgd-avg", 3, 2 * 3, 6 * 50),
    ("asgd-k8-avg-probe", 9, 9 + 2 * 2, 9 * 50 + 4 * 16),  # probe twice, measuring steps only
    ("asgdm-k8-avg", 8, 8 + 1, 9 * 50),
    ("asgd-k8-avg-warm", 4, 2 * 4, 8 * 50),             # warm-up: the first 100 all measure
])
def test_lever_gradient_evaluations_are_counted_closure_calls(key, steps, evals, examples):
    data = datasets.load_digits(0).subset(400, 50)
    r = training.train(lambda: models.mlp(64, 10, 8), _lever(key), data, models.cross_entropy,
                       epochs=2, batch_size=50, seed=0, max_steps=steps, progress=False)
    assert r.grad_evals == evals and r.examples == examples


def test_lever_keys_build_the_documented_options():
    m = _lever("asgdm-k8-avg")
    assert m.family == "A-SGDM" and m.hyper == {"momentum": 0.9, "curvature_every": 8,
                                                "curvature_warmup": 0, "average": True}
    opt = m.make([torch.nn.Parameter(torch.zeros(3))])
    g = opt.param_groups[0]
    assert (g["curvature_every"], g["average"], g["momentum"]) == (8, True, 0.9)
    p = _lever("asgd-k8-avg-probe")
    assert p.name == "A-SGD k=8 avg b_H=16" and p.probe_batch == 16
    assert "asgd-k4" not in race.DEFAULT_KEYS and set(race.LEVERS) <= set(race.METHOD_KEYS)


@pytest.mark.parametrize("average", [False, True])
def test_secant_evaluations_use_eval_mode_a_no_op_without_average(average):
    """The loop evaluates a secant optimizer in eval() mode (the averaged iterate with
    average=True) and steps in train() mode; without averaging eval() changes nothing."""
    seen = []

    class Recording(secant_ext.SecantSGD):
        def eval(self):
            before = [p.detach().clone() for g in self.param_groups for p in g["params"]]
            super().eval()
            after = [p.detach().clone() for g in self.param_groups for p in g["params"]]
            seen.append(("eval", all(torch.equal(a, b) for a, b in zip(before, after))))

        def train(self):
            super().train()
            seen.append(("train", None))

    data = datasets.load_digits(0).subset(200, 50)
    m = methods.Method("rec", "A-SGD", lambda p: Recording(p, average=average,
                                                         backend="reference"), secant=True)
    r = training.train(lambda: models.mlp(64, 10, 8), m, data, models.cross_entropy,
                       epochs=1, batch_size=50, seed=0, evals_per_epoch=2, progress=False)
    assert len(r.evals) == 3 and [k for k, _ in seen] == ["train"] + ["eval", "train"] * 3
    unchanged = [same for k, same in seen if k == "eval"]
    assert unchanged[0]  # no step yet: no average
    assert all(unchanged) if not average else not any(unchanged[1:])


def test_goal_check_flags_what_meets_the_goal():
    rows = []
    for name, fam, s, final, low in (("SF-SGD", "SF-SGD", 2.0, 97.8, 96.9),
                                     ("A-SGD", "A-SGD", 2.4, 97.6, 95.5),
                                     ("A-SGD k=8", "A-SGD", 2.6, 97.6, 95.5),
                                     ("A-SGD avg", "A-SGD", 2.2, 97.4, 96.0)):
        rows.append({"model": "mlp", "method": name, "family": fam, "seeds": 3,
                     "reached": "3/3", "reached_count": 3, "seconds_to_target": s,
                     "final_test_acc": final, "min_test_acc_after_epoch1": low})
    g = race.goal_check(rows)["mlp"]
    assert g["best_untuned_peer"] == "SF-SGD"
    assert g["secant"]["A-SGD"]["meets_goal"] and g["secant"]["A-SGD"]["seconds_ratio"] == 1.2
    assert not g["secant"]["A-SGD k=8"]["meets_goal"]  # 1.3x
    assert not g["secant"]["A-SGD avg"]["meets_goal"]  # final below 97.5


def test_race_lm_leg_times_each_method_to_a_bits_per_byte_target(tmp_path, capsys):
    """``--models lm``: the race's methods on a tiny byte transformer; the cost to the
    target is the first validation at or below it, read back from each run's history."""
    argv = ["reproduce", "race", "--models", "lm", "--methods",
            "secant-sgd,asgd-k8-avg,asgd-k8-avg-probe,sgd-grid", "--lrs", "0.1,1",
            "--lm-budget", "8", "--target-lm", "6.8", "--seeds", "2", "--d-model", "16",
            "--heads", "2", "--layers", "1", "--context", "16", "--val-windows", "32",
            "--max-bytes", "60000", "--backend", "reference", "--no-progress",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "A-SGD k=8 avg b_H=16 left out (it needs a probe batch" in printed
    rows = {r["method"]: r for r in json.loads((tmp_path / "race_lm.json").read_text())["rows"]}
    assert list(rows) == ["A-SGD", "A-SGD k=8 avg", "SGD lr=0.1", "SGD lr=1",
                          "SGD grid (best of 2)"]
    hists = {p.name: json.loads(p.read_text()) for p in (tmp_path / "history").iterdir()}
    assert len(hists) == 8  # 4 methods x 2 seeds
    for name in ("A-SGD", "A-SGD k=8 avg", "SGD lr=0.1", "SGD lr=1"):
        for seed in ("0", "1"):
            got = rows[name]["per_seed"][seed]
            evals = hists[[k for k, h in hists.items() if h["method"] == name
                           and k.startswith(f"lm-{seed}-")][0]]["evals"]
            hit = next((e for e in evals if e["val_bpb"] <= 6.8), None)
            assert got["reached"] == (hit is not None)
            assert got["grad_evals_to_target"] == (hit and hit["grad_evals"])
            assert got["final_val_bpb"] == pytest.approx(evals[-1]["val_bpb"])
            assert got["val_bpb_at_budget"] == next(e["val_bpb"] for e in evals
                                                    if e["grad_evals"] >= 8)
            assert got["run_grad_evals"] == 8 or got["diverged"]
    grid = rows["SGD grid (best of 2)"]
    for seed, member in zip(("0", "1"), grid["best_member"]):
        members = {n: rows[n]["per_seed"][seed]["val_bpb_at_budget"] for n in
                   ("SGD lr=0.1", "SGD lr=1")}
        finite = {n: v for n, v in members.items() if v is not None}
        assert member == min(finite, key=finite.get)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["targets"] == {"lm": 6.8}
    assert (tmp_path / "lm_val_bpb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fast_setting_lever_builds_the_readme_options():
    """docs/USAGE.md's 'A faster setting', as the race and lm build it."""
    m = _lever("asgd-x2-k8-avg-clip")
    assert m.family == "A-SGD" and m.hyper == {"lr": 2.0, "curvature_every": 8,
                                               "average": True, "max_grad_norm": 1.0}
    g = m.make([torch.nn.Parameter(torch.zeros(3))]).param_groups[0]
    assert (g["lr"], g["curvature_every"], g["curvature_warmup"], g["average"],
            g["max_grad_norm"]) == (2.0, 8, 100, True, 1.0)
    t = _lever("asgd-tensor").make([torch.nn.Parameter(torch.zeros(3)),
                                    torch.nn.Parameter(torch.zeros(2))])
    assert [len(g["params"]) for g in t.param_groups] == [1, 1]


def test_race_lm_budget_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="--lm-budget must be at least 1, got 0"):
        main(["reproduce", "race", "--models", "lm", "--methods", "adam", "--lm-budget", "0",
              "--max-bytes", "60000", "--no-progress", "--out", str(tmp_path)])
