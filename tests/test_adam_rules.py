"""SecantAdam's rule variants (experiments.adam_rules): the variant ``PACKAGE`` is
SecantAdam to the bit, the ``before`` rule is the old one on numbers worked out by
hand, and the suite races them as the ``rules`` group, outside ``all``."""
import pytest
import torch

import secant_ext
from secant_ext import _layout as layout
from secant_ext.experiments.adam_rules import PACKAGE, VARIANTS, RuleVariant, SecantAdamRule
from secant_ext.suite import cli, methods


def _run(make, steps, backend, dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3)).to(dtype)
    gen = torch.Generator().manual_seed(1)
    X, Y = torch.randn(64, 6, generator=gen).to(dtype), torch.randn(64, 3, generator=gen).to(dtype)
    opt = make(model.parameters(), backend=backend, lr=20.0)  # lr: eta moves within 60 steps
    etas, states = [], []
    for t in range(steps):
        rows = slice((t % 8) * 8, (t % 8) * 8 + 8)

        def closure():
            opt.zero_grad()
            loss = ((model(X[rows]) - Y[rows]) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)
        st = opt.state[next(iter(model.parameters()))]["secant_state"]
        etas.append(float(st[layout.ALPHA]))
        states.append(st.clone())
    return etas, states, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_the_package_variant_is_secant_adam_to_the_bit(backend):
    """70 steps (the warm-up and after, measuring and not): every field of the group state
    and every parameter equal, so a variant differs from SecantAdam in its rule alone."""
    mine = _run(lambda p, **kw: SecantAdamRule(p, VARIANTS[PACKAGE], **kw), 70, backend)
    theirs = _run(secant_ext.SecantAdam, 70, backend)
    assert len(set(mine[0])) > 20  # eta moved: the comparison covers the rule
    for i, (a, b) in enumerate(zip(mine[1], theirs[1])):
        assert torch.equal(a, b), f"group state differs after step {i}"
    for a, b in zip(mine[2], theirs[2]):
        assert torch.equal(a, b)


def test_now_is_the_packages_rule_with_the_averaging_the_variants_were_raced_with():
    import dataclasses
    now = VARIANTS["now"]
    assert dataclasses.replace(now, avg_floor=layout.ADAM_AVG_FLOOR,
                               description=VARIANTS[PACKAGE].description) == VARIANTS[PACKAGE]
    assert now.avg_floor == 0.01 != layout.ADAM_AVG_FLOOR


def test_the_before_rule_by_hand():
    """``min(B / A, growth eta)`` on raw averages; ``eta`` kept while ``A <= 0``."""
    opt = SecantAdamRule([torch.nn.Parameter(torch.zeros(1))], VARIANTS["before"])
    mine = {"A": 0.0, "C": 0.0, "n": 0}
    # a = <u,y>/scale^2 = 0.5 / 0.25 = 2, b = <u,s>/scale = 0.25 / 0.5 = 0.5
    eta = opt._next_eta(mine, 0.01, 0.5, 0.5, 0.25, 1.0)
    assert mine["A"] == pytest.approx(0.02 * 2) and mine["C"] == pytest.approx(0.02 * 0.5)
    assert eta == pytest.approx(min(0.5 / 2, 1.1 * 0.01))
    mine = {"A": 0.0, "C": 0.0, "n": 0}
    assert opt._next_eta(mine, 0.01, 0.5, -0.5, 0.25, 1.0) == 0.01  # A < 0: kept


def test_warmup_growth_applies_to_the_warmup_measurements_only():
    v = RuleVariant("test", growth=1.1, warmup_growth=2.0, warmup=2, reach=1e9)
    opt = SecantAdamRule([torch.nn.Parameter(torch.zeros(1))], v)
    mine = {"A": 0.0, "C": 0.0, "n": 0}
    etas = [1.0]
    for _ in range(3):  # a positive curvature and slope: the growth limit binds
        etas.append(opt._next_eta(mine, etas[-1], 0.5, 0.5, 0.25, 1.0))
    assert etas[1:] == [2.0, 4.0, pytest.approx(4.4)]


def test_the_suite_races_the_variants_as_their_own_group():
    rules = [m.key for m in methods.METHODS if m.group == "rules"]
    assert rules == [f"rule-{name}" for name in VARIANTS]
    groups = methods.GROUPS
    assert groups["rules"] == rules and set(groups["all"]) == set(methods.BY_KEY) - set(rules)
    assert not set(groups["all"]) & set(rules)
    picked = cli._pick("secant-adam,rules", list(methods.BY_KEY), groups, "method")
    assert picked == ["secant-adam"] + rules
    with pytest.raises(SystemExit, match="unknown method 'rule-nope'"):
        cli._pick("rule-nope", list(methods.BY_KEY), groups, "method")


def test_the_variants_table_reads_a_scored_suite(tmp_path, capsys):
    """One row per scored variant, the package's rule in bold, cells from the scores, and
    a clear error on a folder the suite has not scored."""
    from secant_ext.experiments import adam_rules
    workloads = {w: {"methods": {f"rule-{n}": {"final_metric": 1.5 + i, "final_loss": 0.25,
                                              "diverged_seeds": int(n == PACKAGE)}
                                 for n in ("before", PACKAGE)}}
                 for i, w in enumerate(adam_rules.SMALL_WORKLOADS)}
    scores = {"workloads": workloads, "summary": {"main": {"evals": {
        "rule-before": {"geomean_ratio": 3.5}, f"rule-{PACKAGE}": {"geomean_ratio": 2.25}}}}}
    rows = adam_rules.variants_table(scores)
    assert len(rows) == 4 and rows[0].startswith("| rule | mlp: test error % / held-out")
    assert rows[2].startswith("| `before`: ") and rows[2].endswith(" | 3.50 | 0 |")
    assert rows[3].startswith(f"| **`{PACKAGE}`: ") and rows[3].endswith(" | 2.25 | 6 |")
    assert "| 1.5 / 0.25 | 2.5 | 3.5 |" in rows[3]
    with pytest.raises(SystemExit, match="no scores.json"):
        adam_rules.main([str(tmp_path)])
