"""``reproduce lm-diagnose``: the per-kind secant statistics, recorded in the closure, sum
to the optimizer's own ``last_stats`` (an independent computation, in the kernels), and
recording them leaves the training trajectory unchanged."""
import json
import math

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import secant_ext  # noqa: E402
from secant_ext.__main__ import main  # noqa: E402
from secant_ext.experiments import lm_diagnose as lmd  # noqa: E402
from secant_ext.experiments.textlm import (ByteTransformer, batch_starts, lm_loss,  # noqa: E402
                                           windows)

D, HEADS, LAYERS, CONTEXT, BATCH, STEPS = 16, 2, 2, 16, 8, 12


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest (and several crawl on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return ByteTransformer(D, LAYERS, HEADS, CONTEXT)


def corpus_bytes(n=20000, seed=1):
    g = torch.Generator().manual_seed(seed)
    # skewed byte frequencies with some structure, so the model has something to learn
    return (torch.randint(0, 40, (n,), generator=g) * 3 % 97 + 32).to(torch.uint8)


def test_every_parameter_has_a_kind_and_every_kind_is_present():
    model = tiny_model()
    by = lmd.params_by_kind(model)
    assert list(by) == list(lmd.KINDS)
    assert sum(p.numel() for ps in by.values() for p in ps) == \
        sum(p.numel() for p in model.parameters())
    assert len({id(p) for ps in by.values() for p in ps}) == len(list(model.parameters()))
    assert [p.shape for p in by["LayerNorm bias"]] == [torch.Size([D])] * (2 * LAYERS + 1)
    with pytest.raises(ValueError):
        lmd.kind_of("blocks.0.unknown.weight")


def close(x, y, scale, rel=1e-5):
    return abs(x - y) <= rel * scale


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_per_kind_sums_equal_the_optimizers_statistics(backend):
    rows, _ = lmd.diagnose(tiny_model(), corpus_bytes(), steps=STEPS, context=CONTEXT,
                           batch_size=BATCH, seed=0, backend=backend)
    assert len(rows) == STEPS
    kinds = list(lmd.KINDS)
    for r in rows:
        a = sum(r[f"a[{k}]"] for k in kinds)
        b = sum(r[f"b[{k}]"] for k in kinds)
        c = sum(r[f"c[{k}]"] for k in kinds)
        scale = math.sqrt(b * c) + b  # |<s, y>| <= |s||y|: the size of a's rounding
        assert close(a, r["dot"], scale), (r["step"], a, r["dot"])
        assert close(b, r["s_sq"], b), (r["step"], b, r["s_sq"])
        assert close(c, r["y_sq"], c), (r["step"], c, r["y_sq"])
        assert r["clipped"] == (r["dot"] < 0)
        assert not r["skipped"]
        # the shared alpha is the rule on the summed statistics ...
        assert r["alpha"] == pytest.approx(lmd.ideal_alpha(a, b), rel=1e-5)
        # ... and, unclipped, the b-weighted harmonic mean of the per-kind 1 + kappa_k
        if a > 0:
            inv = sum(r[f"b[{k}]"] / b * (1 + r[f"kappa[{k}]"]) for k in kinds)
            assert 1 / inv == pytest.approx(r["alpha"], rel=1e-5)
    summary = lmd.shared_summary(rows, spike=0.5)
    assert summary["max_rel_err_s_sq"] < 1e-5
    assert summary["cap_binds_frac"] == sum(r["clipped"] for r in rows) / STEPS
    table = lmd.kind_table(rows, kinds)
    assert sum(t["total_b_share"] for t in table) == pytest.approx(1.0)


def test_per_kind_groups_give_each_kind_its_own_statistics_and_alpha():
    rows, _ = lmd.diagnose(tiny_model(), corpus_bytes(), steps=6, context=CONTEXT,
                           batch_size=BATCH, seed=0, per_kind_groups=True)
    for r in rows:
        for k in lmd.KINDS:
            a, b, c = r[f"a[{k}]"], r[f"b[{k}]"], r[f"c[{k}]"]
            assert close(a, r[f"opt_dot[{k}]"], math.sqrt(b * c) + b)
            assert close(b, r[f"opt_s_sq[{k}]"], b)
            assert close(c, r[f"opt_y_sq[{k}]"], c)
            assert r[f"opt_alpha[{k}]"] == pytest.approx(r[f"alpha[{k}]"], rel=1e-5)


def test_recording_does_not_change_the_trajectory():
    model = tiny_model()
    lmd.diagnose(model, corpus_bytes(), steps=5, context=CONTEXT, batch_size=BATCH, seed=0)
    plain = tiny_model()
    opt = secant_ext.SecantSGD(
        [p for ps in lmd.params_by_kind(plain).values() for p in ps])
    data, gen = corpus_bytes(), torch.Generator().manual_seed(0)
    for _ in range(5):
        xb, yb = windows(data, batch_starts(len(data), CONTEXT, BATCH, gen), CONTEXT)

        def closure():
            opt.zero_grad()
            loss = lm_loss(plain(xb), yb)
            loss.backward()
            return loss
        opt.step(closure)
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p, q)


def test_cli_tiny_run_writes_its_tables_and_plot(tmp_path, capsys):
    argv = ["reproduce", "lm-diagnose", "--d-model", "16", "--heads", "2", "--layers", "1",
            "--context", "16", "--val-windows", "32", "--steps", "6", "--val-every", "3",
            "--max-bytes", "60000", "--no-progress", "--threads", "1", "--out",
            str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "per-kind secant statistics" in printed and "instrumentation vs last_stats" in printed
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert len(steps) == 6 and "alpha[output layer]" in steps[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [e["step"] for e in summary["val"]] == [0, 3, 6]
    assert summary["shared"]["max_rel_err_dot"] < 1e-4
    assert (tmp_path / "alpha_by_kind.png").read_bytes()[:4] == b"\x89PNG"
