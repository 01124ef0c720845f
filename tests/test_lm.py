"""``reproduce lm`` in a tiny configuration, the standard-library corpus, the byte
transformer's size and bits per byte against hand computations."""
import hashlib
import json
import math
import os
import platform

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from secant_ext.__main__ import main  # noqa: E402
from secant_ext.experiments import lm, textlm  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["reproduce", "lm", "--d-model", "16", "--heads", "2", "--layers", "1", "--context",
        "16", "--val-windows", "64", "--budget", "8", "--step-budget", "4", "--max-bytes",
        "60000", "--sgd-lrs", "0.1", "--no-progress", "--backend", "reference",
        "--threads", "1"]


def test_lm_tiny_run_and_a_missing_peer_is_named(tmp_path, monkeypatch, capsys):
    real = lm.importlib.import_module

    def no_peers(name, *a, **k):
        if name in ("prodigyopt", "schedulefree"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(lm.importlib, "import_module", no_peers)
    assert main(TINY + ["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "skipped: Prodigy lr=1: prodigyopt not installed (pip install prodigyopt)" in printed
    rows = json.loads((tmp_path / "results.json").read_text())
    names = [r["method"] for r in rows]
    assert "skipped: ScheduleFree AdamW: schedulefree not installed" in printed
    assert names == ["SecantAdam", "A-SGD", "A-SGDM", "A-SIGNSGD", "A-SIGNSGD m=0.9",
                     "AdamW lr=0.001", "SGD lr=0.1"]
    by = {r["method"]: r for r in rows}
    # each method runs until it has taken 4 steps and used 8 gradient evaluations: the
    # SGD family measures on every step (2 evaluations each); SecantAdam not on its first,
    # so it needs a fifth step (1 + 2 + 2 + 2 + 2 evaluations)
    for name, r in by.items():
        secant = name.startswith("A-") or name == "SecantAdam"
        want = (5, 9) if name == "SecantAdam" else (4, 8) if secant else (8, 8)
        assert (r["steps"], r["grad_evals"]) == want, name
        assert math.isfinite(r["val_bpb_at_4_steps"]) and math.isfinite(
            r["val_bpb_at_8_grad_evals"])
        assert (r["alpha_median"] is not None) == secant, name
    # a secant method reaches 4 steps and 8 gradient evaluations at the same point
    assert by["A-SGD"]["val_bpb_at_4_steps"] == by["A-SGD"]["val_bpb_at_8_grad_evals"]
    # same initial weights and same first batch for every method: equal first losses and
    # equal initial validation
    hists = [json.loads(p.read_text()) for p in sorted((tmp_path / "history").iterdir())]
    assert len(hists) == len(rows)
    assert len({h["steps"][0]["loss"] for h in hists}) == 1
    assert len({h["evals"][0]["val_bpb"] for h in hists}) == 1
    sgd = next(h for h in hists if h["method"] == "SGD lr=0.1")
    assert [e["step"] for e in sgd["evals"]][:2] == [0, 2] and sgd["evals"][-1]["step"] == 8
    assert any(e["step"] == 4 for e in sgd["evals"])
    meta = json.loads((tmp_path / "meta.json").read_text())
    corpus = meta["corpus"]
    assert corpus["bytes"] == 60000 and (corpus["train_bytes"], corpus["val_bytes"]) == \
        (54000, 6000)
    assert corpus["python"] == platform.python_version() and len(corpus["sha256"]) == 64
    assert meta["parameters"] == textlm.expected_params(16, 1, 16)
    assert "Prodigy lr=1" in meta["skipped"] and "Prodigy lr=1" in meta["summary"]["skipped"]
    assert 3.0 < meta["unigram_val_bits"] < 6.0
    assert os.sep + "lib" not in json.dumps(meta)  # no machine path of the corpus
    table = json.loads((tmp_path / "budget_table.json").read_text())
    assert [r["method"] for r in table] == names
    assert (tmp_path / "val_bpb.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "alpha.png").read_bytes()[:8] == PNG_MAGIC
    assert "bpb @ 4 steps" in printed and "alpha median" in printed


def test_an_installed_peer_runs_and_a_missing_one_is_named(monkeypatch):
    real = lm.importlib.import_module

    class FakeProdigy(torch.optim.SGD):
        def __init__(self, params, lr):
            super().__init__(params, lr=lr)

    def fake(name, *a, **k):
        if name == "prodigyopt":
            return type("mod", (), {"Prodigy": FakeProdigy})
        if name == "schedulefree":
            raise ImportError("No module named 'schedulefree'")
        return real(name, *a, **k)

    monkeypatch.setattr(lm.importlib, "import_module", fake)
    found, skipped = lm.optional_peers()
    assert [m.name for m in found] == ["Prodigy lr=1"]
    assert isinstance(found[0].make([torch.nn.Parameter(torch.zeros(2))]), FakeProdigy)
    assert list(skipped) == ["ScheduleFree AdamW"]
    assert "pip install schedulefree" in skipped["ScheduleFree AdamW"]


def test_corpus_is_sorted_py_files_concatenated(tmp_path):
    for name, text in (("b.py", b"bbbb" * 400), ("a.py", b"a" * 1000), ("c.txt", b"no"),
                       ("z.py", b"zz" * 500)):
        (tmp_path / name).write_bytes(text)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.py").write_bytes(b"nested, not included")
    (tmp_path / "d.py").mkdir()  # a folder named like a module: not a file
    c = textlm.load_corpus(str(tmp_path))
    data = b"a" * 1000 + b"bbbb" * 400 + b"zz" * 500
    assert c.files == ["a.py", "b.py", "z.py"]
    assert c.n_bytes == len(data) == 3600
    assert (len(c.train), len(c.val)) == (3240, 360)
    assert bytes(c.train.tolist()) + bytes(c.val.tolist()) == data
    assert c.sha256 == hashlib.sha256(data).hexdigest()
    assert textlm.split_sizes(1001) == (901, 100)


def test_stdlib_corpus_is_deterministic():
    folder = textlm.stdlib_folder()
    expected = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
                   if f.endswith(".py") and os.path.isfile(os.path.join(folder, f)))
    a, b = textlm.load_corpus(), textlm.load_corpus()
    assert a.n_bytes == expected and a.sha256 == b.sha256
    assert len(a.val) == a.n_bytes // 10 and torch.equal(a.val, b.val)
    assert a.info()["python"] == platform.python_version()


def test_model_size_is_the_stated_one():
    torch.manual_seed(0)
    assert textlm.n_params(textlm.ByteTransformer()) == 470_784
    assert textlm.expected_params(128, 2, 64) == 470_784
    m = textlm.ByteTransformer(24, 3, 3, 8)
    assert textlm.n_params(m) == textlm.expected_params(24, 3, 8)
    # causal: the prediction at position t does not depend on bytes after t
    x = torch.randint(0, 256, (2, 8))
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 256
    with torch.no_grad():
        torch.testing.assert_close(m(x)[:, :5], m(y)[:, :5])


class Bigram(torch.nn.Module):
    """Logits of the next byte read from a table by the current byte."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, idx):
        return self.table[idx]


def test_bits_per_byte_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(256, 256))
    data = torch.tensor(rng.integers(0, 6, size=300), dtype=torch.uint8)
    starts = textlm.val_starts(len(data), 16, 10)
    assert starts[0] == 0 and starts[-1] == len(data) - 17
    x, y = textlm.windows(data, starts, 16)
    assert torch.equal(y[:, :-1], x[:, 1:])
    bits = []
    for s in starts.tolist():
        for t in range(16):
            cur, nxt = int(data[s + t]), int(data[s + t + 1])
            row = table[cur]
            logp = row[nxt] - np.log(np.exp(row - row.max()).sum()) - row.max()
            bits.append(-logp / np.log(2))
    model = Bigram(torch.tensor(table))
    assert textlm.bits_per_byte(model, x, y, chunk=3) == pytest.approx(np.mean(bits),
                                                                       rel=1e-12)
    # a uniform model costs exactly 8 bits per byte
    assert textlm.bits_per_byte(Bigram(torch.zeros(256, 256)), x, y) == pytest.approx(8.0)


def test_unigram_bits_is_the_byte_entropy():
    assert textlm.unigram_bits(torch.tensor([0, 0, 1, 2], dtype=torch.uint8)) == \
        pytest.approx(1.5)
    assert textlm.unigram_bits(torch.arange(256, dtype=torch.uint8)) == pytest.approx(8.0)


def test_budget_must_be_even(tmp_path):
    with pytest.raises(SystemExit, match="even"):
        main(TINY[:-2] + ["--budget", "7", "--out", str(tmp_path)])


def test_lm_methods_selects_levers_and_counts_their_evaluations(tmp_path, capsys):
    """``--methods`` takes the race's lever keys; a method that measures the curvature on
    every 8th step only (1 evaluation on the other steps) runs until it has used the whole
    gradient-evaluation budget, and is compared there."""
    argv = TINY + ["--methods", "asgd-k8-avg,asgd-tensor,sgd-grid", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert list(rows) == ["A-SGD k=8 avg", "A-SGD per-tensor alpha", "SGD lr=0.1"]
    # k=8 without warm-up: step 0 measures (2 evaluations), steps 1-6 take 1 each
    assert (rows["A-SGD k=8 avg"]["steps"], rows["A-SGD k=8 avg"]["grad_evals"]) == (7, 8)
    assert (rows["A-SGD per-tensor alpha"]["steps"],
            rows["A-SGD per-tensor alpha"]["grad_evals"]) == (4, 8)
    for r in rows.values():
        assert math.isfinite(r["val_bpb_at_8_grad_evals"])
    with pytest.raises(SystemExit):
        main(TINY + ["--methods", "asgd-k8-avg-probe"])  # the LM loop has no probe batch
    assert "unknown methods ['asgd-k8-avg-probe']" in capsys.readouterr().err


def test_per_tensor_lever_gives_each_tensor_its_own_alpha():
    """One param group per tensor: each takes the secant rule on its own statistics, the
    same as a separate optimizer on that tensor alone."""
    from secant_ext.experiments.methods import lever
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 2))
    target = [torch.randn(5), torch.randn(3, 2)]

    def loss_of(ps, scale):
        return sum(scale[i] * ((p - t) ** 2).sum() for i, (p, t) in
                   enumerate(zip(ps, target)) if p is not None)
    opt = lever("asgd-tensor", backend="reference").make([a, b])
    assert len(opt.param_groups) == 2
    solo = []
    for i, p in enumerate((a, b)):
        q = torch.nn.Parameter(p.detach().clone())
        o = lever("asgd-tensor", backend="reference").make([q])

        def c(q=q, i=i):
            o.zero_grad()
            loss = loss_of([q if j == i else None for j in range(2)], (1.0, 7.0))
            loss.backward()
            return loss
        o.step(c)
        solo.append((float(o.last_stats.alpha), q.detach()))

    def closure():
        opt.zero_grad()
        loss = loss_of([a, b], (1.0, 7.0))
        loss.backward()
        return loss
    opt.step(closure)
    alphas = [float(v) for v in opt.last_stats.alpha.reshape(-1)]
    assert alphas == [solo[0][0], solo[1][0]] and alphas[0] != alphas[1]
    assert torch.equal(a.detach(), solo[0][1]) and torch.equal(b.detach(), solo[1][1])


@pytest.mark.parametrize("scale", [2.0, 0.05])  # |g| = 10 (clipped) and 0.25 (not)
def test_clipped_sgd_is_sgd_on_the_gradient_clipped_to_norm_one(scale):
    from secant_ext.experiments.methods import sgd_clipped
    x0 = torch.tensor([3.0, 4.0], dtype=torch.float64)
    p = torch.nn.Parameter(x0.clone())
    opt = sgd_clipped(0.5).make([p])

    def closure():
        opt.zero_grad()
        loss = scale * (p ** 2).sum()  # gradient 2 scale p: norm 10 scale
        loss.backward()
        return loss
    opt.step(closure)
    g = 2 * scale * x0
    norm = float(g.norm())
    expected = x0 - 0.5 * g * min(1.0, 1.0 / (norm + 1e-6))
    assert torch.allclose(p.detach(), expected, rtol=1e-12, atol=0)
