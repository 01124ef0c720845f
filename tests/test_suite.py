"""The workload suite: its schedules, grids and scores against hand computations, its runs
(same weights and batches for every method, gradient evaluations counted), and the
command end to end under ``--quick``."""
import json
import math

import numpy as np
import pytest
import torch

from secant_ext.__main__ import main
from secant_ext.suite import methods, runner, scoring, tasks, workloads
from secant_ext.suite.runner import Job


# -- schedules and grids ------------------------------------------------------------------
def test_warmup_cosine_matches_its_formula():
    steps, warm = 200, 0.05
    f = methods.warmup_cosine(steps, warm)
    w = 10  # ceil(0.05 * 200)
    assert [f(t) for t in range(3)] == pytest.approx([1 / w, 2 / w, 3 / w])
    assert f(w - 1) == 1.0 and f(w) == 1.0
    t = 105
    assert f(t) == pytest.approx(0.5 * (1 + np.cos(np.pi * (t - w) / (steps - w))))
    assert f(steps) == pytest.approx(0.0, abs=1e-15)
    assert all(f(t) >= f(t + 1) for t in range(w, steps))


@pytest.mark.parametrize("finals, expected", [
    ({1e-3: 3.0, 1e-2: 2.0, 1e-1: 2.5}, None),            # best inside
    ({1e-3: 1.0, 1e-2: 2.0, 1e-1: 2.5}, 1e-4),            # best at the low end
    ({1e-3: 3.0, 1e-2: 2.0, 1e-1: 1.5}, 1.0),             # best at the high end
    ({1e-3: 3.0, 1e-2: 2.0, 1e-1: math.inf}, None),       # a diverged end is no best
    ({1e-3: 3.0, 1e-2: 2.0}, None),                       # the grid is not finished
])
def test_grid_extends_past_the_end_holding_the_best(finals, expected):
    got = methods.grid_extension([1e-3, 1e-2, 1e-1], finals)
    assert (got is None) if expected is None else got == pytest.approx(expected)


def test_grid_extension_is_rounded_to_the_rate_a_person_would_write():
    assert methods.grid_extension([0.03, 0.1, 0.3], {0.03: 3, 0.1: 2, 0.3: 1}) == 0.9


def test_best_rate_ignores_diverged_runs():
    assert methods.best_rate({1e-2: math.inf, 1e-3: 2.0, 3e-3: 1.5}) == 3e-3
    assert methods.best_rate({1e-2: math.inf}) is None


# -- scores ---------------------------------------------------------------------------------
def _record(method, seed, finals_along, lr=None, group="peer", every=10):
    evals = [{"metric": m, "loss": m, "grad_evals": i * every, "seconds": 0.5 * i * every}
             for i, m in enumerate(finals_along)]
    return {"job": {"workload": "w", "method": method, "seed": seed, "lr": lr,
                    "budget": every * (len(finals_along) - 1)},
            "label": method, "group": group, "diverged": not math.isfinite(finals_along[-1]),
            "final_metric": finals_along[-1], "final_loss": finals_along[-1],
            "best_metric": min(finals_along), "grad_evals": every * (len(finals_along) - 1),
            "seconds": 1.0, "evals": evals}


def test_time_to_target_is_the_first_evaluation_at_or_below_it():
    evals = _record("m", 0, [5.0, 3.0, 2.0, 2.5, 1.9])["evals"]
    assert scoring.time_to_target(evals, 2.0) == 20
    assert scoring.time_to_target(evals, 2.0, "seconds") == 10.0
    assert scoring.time_to_target(evals, 1.0) == math.inf


def test_score_workload_by_hand():
    c = methods.CEILING
    recs = [_record(c, 0, [5, 3, 2.0], lr=1e-3, group="ceiling"),
            _record(c, 0, [5, 2, 1.0], lr=1e-2, group="ceiling"),
            _record(c, 0, [5, 4, math.inf], lr=1e-1, group="ceiling"),
            _record(c, 1, [5, 2, 1.2], lr=1e-2, group="ceiling"),
            _record(c, 2, [5, 3, 0.9], lr=1e-2, group="ceiling"),
            _record("p", 0, [5, 1.0, 1.0]), _record("p", 1, [5, 3, 3]),
            _record("p", 2, [5, 1.01, 2])]
    s = scoring.score_workload(recs)
    assert s["ceiling_lr"] == 1e-2
    assert s["target"] == pytest.approx(1.0 * 1.02)  # median of 1.0, 1.2, 0.9
    ceil, p = s["methods"][c], s["methods"]["p"]
    assert ceil["tuning_runs"] == 3 and ceil["seeds"] == 3
    assert [x["evals_to_target"] for x in ceil["per_seed"]] == [20, math.inf, 20]
    assert ceil["evals_to_target"] == 20
    assert p["final_metric"] == 2 and (p["final_metric_min"], p["final_metric_max"]) == (1, 3)
    assert [x["evals_to_target"] for x in p["per_seed"]] == [10, math.inf, 10]
    assert p["evals_to_target"] == 10


def test_profile_and_geometric_mean_by_hand():
    times = {"w1": {"a": 10.0, "b": 20.0, "c": math.inf},
             "w2": {"a": 30.0, "b": 15.0, "c": 90.0},
             "w3": {"a": math.inf, "b": math.inf, "c": math.inf}}  # nobody: left out
    r = scoring.ratios(times)
    assert set(r) == {"w1", "w2"}
    assert r["w1"] == {"a": 1.0, "b": 2.0, "c": math.inf}
    assert r["w2"] == {"a": 2.0, "b": 1.0, "c": 6.0}
    prof = scoring.profile(r, [1.0, 2.0, 4.0])
    assert prof == {"a": [0.5, 1.0, 1.0], "b": [0.5, 1.0, 1.0], "c": [0.0, 0.0, 0.0]}
    assert scoring.geometric_mean([1.0, 2.0]) == pytest.approx(math.sqrt(2))
    assert scoring.geometric_mean([math.inf, 6.0]) == pytest.approx(4.0)  # capped at 4
    summ = scoring.summary({w: {"methods": {m: {"evals_to_target": t}
                                            for m, t in ms.items()}}
                            for w, ms in times.items()}, list(times))
    assert summ["a"]["first_on"] == 1 and summ["b"]["first_on"] == 1
    assert summ["c"]["solved"] == 1 and summ["c"]["geomean_ratio"] == pytest.approx(4.0)
    # a method that did not run on a workload (Muon off the transformers) is scored on
    # the workloads it ran
    partial = scoring.ratios({"w1": {"a": 10.0, "m": 5.0}, "w2": {"a": 10.0}})
    assert scoring.profile(partial, [1.0, 2.0]) == {"a": [0.5, 1.0], "m": [1.0, 1.0]}


# -- workloads and runs --------------------------------------------------------------------
def test_every_held_out_workload_varies_a_main_one():
    names = {w.name: w for w in workloads.WORKLOADS}
    assert len(names) == len(workloads.WORKLOADS)
    held = [w for w in workloads.WORKLOADS if w.held_out]
    assert held and all(w.base in names and not names[w.base].held_out for w in held)
    kinds = {w.kind for w in workloads.WORKLOADS if not w.held_out}
    assert {w.kind for w in held} <= kinds  # a variant of every kind it names
    assert all(w.quick_budget < w.budget for w in workloads.WORKLOADS)


def test_batches_are_the_same_for_every_method_of_a_seed():
    x, y = torch.arange(100.0).reshape(50, 2), torch.arange(50)
    stream = tasks.epoch_batches(x, y, 8)
    a, b, c = stream(3), stream(3), stream(4)
    first = [next(a)[1] for _ in range(7)]  # 6 batches an epoch: crosses into the next
    assert all(torch.equal(u, next(b)[1]) for u in first)
    assert not all(torch.equal(u, next(c)[1]) for u in first)
    epoch = torch.cat(first[:6])
    assert len(set(epoch.tolist())) == 48  # an epoch: full batches without repeats


def test_logreg_optimum_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from secant_ext.experiments.datasets import load_breast_cancer
    data = load_breast_cancer(0)
    n = len(data.x_train)
    task = workloads._logreg(load_breast_cancer)(workloads.Context(0))
    best = workloads.optimum(task.model_fn, task.loss_fn, task.penalty, data.x_train,
                             data.y_train)
    assert f"the objective's minimum {best:.6f}" in task.data
    # sklearn minimises C * sum(log loss) + |w|^2 / 2: ours times n, with C = 1 / (L2 n)
    clf = LogisticRegression(C=1.0 / (workloads.L2 * n), tol=1e-12, max_iter=10_000)
    clf.fit(data.x_train.double().numpy(), data.y_train.numpy())
    z = data.x_train.double().numpy() @ clf.coef_[0] + clf.intercept_[0]
    yy = data.y_train.double().numpy()
    sk = np.mean(np.logaddexp(0, z) - yy * z) + 0.5 * workloads.L2 * np.sum(clf.coef_ ** 2)
    assert best == pytest.approx(sk, rel=1e-6)


def test_a_run_counts_gradient_evaluations_and_starts_where_every_method_starts():
    w = workloads.get("digits-epochs")
    job = Job(w.name, "secant-adam", 0, 40, quick=True)
    task = runner.build_task(job)
    adam = runner.train(job, task)
    sgd = runner.train(Job(w.name, "nadamw-algoperf", 0, 40, quick=True), task)
    assert adam["evals"][0]["metric"] == sgd["evals"][0]["metric"]
    assert adam["evals"][0]["loss"] == sgd["evals"][0]["loss"]
    assert sgd["grad_evals"] == sgd["steps"] == 40
    # SecantAdam measures on some steps (two evaluations), never more than the budget + 1
    assert 40 <= adam["grad_evals"] <= 41 and adam["steps"] < adam["grad_evals"]
    assert [e["grad_evals"] for e in sgd["evals"]] == list(range(0, 41, 4))
    assert len(adam["history"]) == adam["steps"]


def test_the_ceiling_follows_its_schedule():
    job = Job("logreg", "adamw-cosine", 0, 20, lr=0.1, quick=True)
    task = runner.build_task(job)
    seen = []
    orig = runner.set_lr

    def spy(opt, base, factor):
        orig(opt, base, factor)
        seen.append(opt.param_groups[0]["lr"])
    runner.set_lr = spy
    try:
        runner.train(job, task)
    finally:
        runner.set_lr = orig
    f = methods.warmup_cosine(20, methods.WARMUP)
    assert seen == pytest.approx([0.1 * f(t) for t in range(20)])


@pytest.mark.parametrize("name", [w.name for w in workloads.WORKLOADS])
def test_every_workload_builds_and_trains(name, tmp_path):
    w = workloads.get(name)
    if any(methods.missing_package(p) for p in w.requires):
        pytest.skip(f"{name} needs {w.requires}")  # requirements-dev installs them
    job = Job(name, "secant-adam", 0, 3, quick=True, cache_dir=str(tmp_path))
    task = runner.build_task(job)
    r = runner.train(job, task)
    assert r["grad_evals"] >= 3 and math.isfinite(r["final_metric"])
    assert r["evals"][-1]["loss"] != r["evals"][0]["loss"]  # it trained
    if w.transformer:
        hidden, rest = task.muon_split(task.model_fn())
        assert hidden and all(p.ndim == 2 for p in hidden)


def test_lora_trains_only_the_adapters(tmp_path):
    pytest.importorskip("peft")
    job = Job("lora", "adamw-cosine", 0, 2, lr=1e-2, quick=True, cache_dir=str(tmp_path))
    task = runner.build_task(job)
    model = task.model_fn()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    state = workloads.pretrained_lm(workloads.Context(0, quick=True, cache_dir=str(tmp_path)))
    assert torch.equal(frozen["base_model.model.tok.weight"], state["tok.weight"])


# -- the command -----------------------------------------------------------------------------
def test_suite_quick_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "suite"
    argv = ["suite", "--quick", "--workloads", "logreg", "--methods",
            "secant-adam,nadamw-algoperf", "--out", str(out), "--no-progress", "--anytime"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "adamw-cosine added" in printed and "logreg: target" in printed
    for f in ("results.json", "results.csv", "scores.json", "table.txt",
              "performance_profile.png", "anytime.png"):
        assert (out / f).stat().st_size > 0, f
    rows = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in rows} == {"adamw-cosine", "secant-adam", "nadamw-algoperf"}
    assert all(r["seed"] == 0 and r["workload"] == "logreg" for r in rows)
    scores = json.loads((out / "scores.json").read_text())
    grid = scores["meta"]["grids"]["logreg/adamw-cosine"]
    assert len(grid) >= 6 and scores["workloads"]["logreg"]["ceiling_lr"] in grid
    first = scores["workloads"]["logreg"]["methods"]["adamw-cosine"]["final_metric"]
    assert scores["workloads"]["logreg"]["target"] == pytest.approx(first * 1.02)
    runs = sorted((out / "runs" / "logreg").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in runs}
    assert main(argv) == 0  # the same command again: every run is already on disk
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs" / "logreg").iterdir()} == stamps


def test_suite_names_a_bad_workload_or_method(capsys):
    with pytest.raises(SystemExit, match="unknown workload 'nope'"):
        main(["suite", "--workloads", "nope"])
    with pytest.raises(SystemExit, match="unknown method 'adam'"):
        main(["suite", "--methods", "adam"])


def test_suite_list_names_every_workload_and_method(capsys):
    assert main(["suite", "--list"]) == 0
    out = capsys.readouterr().out
    for w in workloads.WORKLOADS:
        assert f"  {w.name} " in out
    for m in methods.METHODS:
        assert f"  {m.key} " in out
    assert "held-out variant of lm" in out


def test_a_missing_peer_is_named_and_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(methods.IMPORT_NAMES, "schedulefree", "no_such_module_here")
    assert main(["suite", "--quick", "--workloads", "logreg", "--methods", "sf-adamw",
                 "--out", str(tmp_path), "--no-progress", "--max-extensions", "0"]) == 0
    out = capsys.readouterr().out
    assert "skipped sf-adamw: schedulefree is not installed (pip install schedulefree)" in out
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["method"] for r in rows} == {"adamw-cosine"}


def test_the_demo_is_a_view_of_the_many_epoch_workload():
    from secant_ext.experiments import demo, models
    from secant_ext.experiments.datasets import load_digits
    w = workloads.get("digits-epochs")
    task = runner.build_task(Job(w.name, "secant-adam", 0, w.budget))
    data = load_digits(0)
    torch.manual_seed(0)
    ours = task.model_fn()
    torch.manual_seed(0)
    theirs = models.mlp(data.input_shape[0], 10, workloads.DIGITS_HIDDEN)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    # the demo's loop: one randperm of the training set per epoch from a generator seeded 0
    perm = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
    x, y = next(task.batches(0))
    assert torch.equal(x, data.x_train[perm[:demo.DEFAULTS["batch_size"]]])
    per_epoch = len(data.x_train) // demo.DEFAULTS["batch_size"]
    assert w.budget == demo.DEFAULTS["epochs"] * per_epoch


def test_reproduce_lm_is_a_view_of_the_lm_workload():
    from secant_ext.experiments import lm, textlm
    w = workloads.get("lm")
    task = runner.build_task(Job("lm", "secant-adam", 0, w.budget, quick=True))
    corpus = textlm.load_corpus(max_bytes=2_000_000)
    torch.manual_seed(0)
    ours = task.model_fn()
    torch.manual_seed(0)
    theirs = textlm.ByteTransformer(workloads.LM_D_MODEL, workloads.LM_LAYERS,
                                    workloads.LM_HEADS, workloads.LM_CONTEXT)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    # reproduce lm's batches: window starts from a generator seeded by the seed
    gen = torch.Generator().manual_seed(0)
    starts = textlm.batch_starts(len(corpus.train), workloads.LM_CONTEXT,
                                 lm.DEFAULTS["batch_size"], gen)
    x, y = next(task.batches(0))
    assert torch.equal(x, textlm.windows(corpus.train, starts, workloads.LM_CONTEXT)[0])
    assert lm.FULL_BUDGET == w.budget
