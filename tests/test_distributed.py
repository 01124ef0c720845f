"""torch.distributed: two processes on CPU with gloo (docs/ALGORITHM.md, 'Distributed statistics').

DDP: every rank ends with the same bits, and with the parameters of one process trained on
the concatenated batch. Manual shard with ``process_group``: the result of the unsharded
run, one all-reduce per step, empty shards and gradient-less ranks still joining, and a
non-finite value on one rank skipping the step on all. FSDP2 (``fully_shard``, uneven
shards, ``fsdp_worker.py``): the unsharded run with default options, a lookahead that raises
leaving every shard bitwise at x_t. The two processes run every scenario once
(``distributed_worker.py``); the tests compare what they saved.
"""
from __future__ import annotations

import functools
import multiprocessing
import time

import pytest
import torch

import distributed_worker
import fsdp_worker
from secant_ext import _layout

JOIN_TIMEOUT_S = 150  # the collectives time out after 60 s; a hang fails, never waits


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Both ranks' results: {scenario: result} per rank."""
    out = tmp_path_factory.mktemp("distributed")
    ctx = multiprocessing.get_context("spawn")
    port = distributed_worker.free_port()
    procs = [ctx.Process(target=distributed_worker.main, args=(r, port, str(out)))
             for r in range(distributed_worker.WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in hung:
        procs[r].kill()
        procs[r].join()
    results = []
    for r in range(distributed_worker.WORLD):
        path = out / f"rank{r}.pt"
        results.append(torch.load(path, weights_only=False) if path.exists() else {})
    errors = [f"rank {r}:\n{res['__error__']}" for r, res in enumerate(results)
              if "__error__" in res]
    assert not hung, f"ranks {hung} still running after {JOIN_TIMEOUT_S} s; " + \
        "\n".join(errors)
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in procs] == [0] * distributed_worker.WORLD, \
        f"exit codes {[p.exitcode for p in procs]} without a saved error"
    return results


EPS_RATIO = torch.finfo(torch.float64).eps / torch.finfo(torch.float32).eps


@functools.lru_cache(maxsize=None)
def single(variant, probe, two_groups=False, backend="reference", dtype=torch.float64):
    return distributed_worker.train_single(variant, probe, dtype, two_groups, backend)


def single_of(scenario: dict, dtype=torch.float64):
    """The single-process run a distributed scenario must equal."""
    return single(scenario["variant"], scenario["probe"], scenario.get("two_groups", False),
                  scenario.get("backend", "reference"), dtype)


@functools.lru_cache(maxsize=None)
def rounding_tolerance(scenario_name):
    """(parameter tolerance, alpha relative tolerance) for two float64 runs that differ only
    in rounding (the order of sums over ranks), from the noise floor of this very trajectory.

    The float32 run shows how the trajectory amplifies rounding at float32's eps; the
    distributed run perturbs fewer operations, at float64's eps, so it stays within
    EPS_RATIO times that spread, but never below one rounding of the values themselves
    (eps64 times their size); factor 4 of margin. Asserted small, so a wrong sum (a missing
    average, a half-batch gradient, one rank's statistics) fails."""
    scenario = {**distributed_worker.DDP_SCENARIOS, **distributed_worker.SHARD_SCENARIOS,
                **fsdp_worker.FSDP_SCENARIOS}[scenario_name]
    r64, r32 = single_of(scenario), single_of(scenario, torch.float32)
    eps64 = torch.finfo(torch.float64).eps
    spread = max((a - b.double()).abs().max().item() for a, b in zip(r64["params"], r32["params"]))
    size = max(a.abs().max().item() for a in r64["params"])
    tol = 4 * max(EPS_RATIO * spread, eps64 * size)
    alpha_spread = ((r32["alpha"] - r64["alpha"]) / r64["alpha"]).abs().max().item()
    alpha_rtol = 4 * max(EPS_RATIO * alpha_spread, eps64)
    assert tol < 1e-12 and alpha_rtol < 1e-12, f"noise floor out of range: float32 run " \
        f"{spread:.3g} from the float64 one, alpha {alpha_spread:.3g} relative"
    return tol, alpha_rtol


def assert_close_alpha(got, want, rtol, what):
    worst = ((got - want) / want).abs().max().item()
    assert worst <= rtol, f"{what}: alpha relative difference {worst:.3g} exceeds {rtol:.3g}"


def assert_close_params(got, want, tol, what):
    worst = max((a - b).abs().max().item() for a, b in zip(got, want))
    assert worst <= tol, f"{what}: max |difference| {worst:.3g} exceeds {tol:.3g}"


def assemble(shard_results):
    """The full parameters from every rank's flat shard."""
    full = []
    for n in distributed_worker.SPLITS:
        parts = sorted(((res["bounds"][n], res["shards"][n]) for res in shard_results),
                       key=lambda b: b[0][0])
        covered = [b for b, _ in parts]
        assert covered[0][0] == 0 and all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
        full.append(torch.cat([t for _, t in parts]))
    ref = dict(distributed_worker.make_model().named_parameters())
    return [f.view_as(ref[n]) for f, n in zip(full, distributed_worker.SPLITS)]


@pytest.mark.parametrize("name", distributed_worker.DDP_SCENARIOS)
def test_ddp_ranks_agree_bitwise(ranks, name):
    r0, r1 = ranks[0][name], ranks[1][name]
    assert torch.equal(r0["alpha"], r1["alpha"]), f"{name}: alpha differs between ranks"
    assert torch.equal(r0["state"], r1["state"])
    for n, a, b in zip(distributed_worker.SPLITS, r0["params"], r1["params"]):
        assert torch.equal(a, b), f"{name}: parameter {n} differs between ranks"


@pytest.mark.parametrize("name", distributed_worker.DDP_SCENARIOS)
def test_ddp_matches_one_process_on_the_concatenated_batch(ranks, name):
    tol, alpha_rtol = rounding_tolerance(name)
    ref = single_of(distributed_worker.DDP_SCENARIOS[name])
    assert_close_params(ranks[0][name]["params"], ref["params"], tol, name)
    assert_close_alpha(ranks[0][name]["alpha"], ref["alpha"], alpha_rtol, name)


def test_ddp_gradient_as_bucket_view_gives_the_default_bits(ranks):
    """With gradient_as_bucket_view=True, p.grad is a view into DDP's bucket, which the next
    backward overwrites; the optimizer must keep copies, and then nothing else differs."""
    a, b = ranks[0]["ddp-sgdm-probe"], ranks[0]["ddp-sgdm-probe-bucket-view"]
    assert torch.equal(a["alpha"], b["alpha"])
    assert all(torch.equal(x, y) for x, y in zip(a["params"], b["params"]))


@pytest.mark.parametrize("name", distributed_worker.SHARD_SCENARIOS)
def test_shard_matches_unsharded_run(ranks, name):
    shards = [ranks[r][name] for r in range(distributed_worker.WORLD)]
    assert torch.equal(shards[0]["state"], shards[1]["state"]), \
        f"{name}: the ranks' group states (alpha, counters) differ"
    ref = single_of(distributed_worker.SHARD_SCENARIOS[name])
    tol, alpha_rtol = rounding_tolerance(name)
    assert_close_params(assemble(shards), ref["params"], tol, name)
    assert_close_alpha(shards[0]["alpha"], ref["alpha"], alpha_rtol, name)


def test_shards_really_are_uneven_and_empty(ranks):
    """The premise of the shard tests: each rank has an empty shard of some tensor."""
    for r in range(distributed_worker.WORLD):
        sizes = [t.numel() for t in ranks[r]["shard-sgd"]["shards"].values()]
        assert 0 in sizes and max(sizes) > 0, f"rank {r} shard sizes {sizes}"


@pytest.mark.parametrize("name", [*distributed_worker.SHARD_SCENARIOS,
                                  *distributed_worker.NAN_SCENARIOS])
def test_one_collective_per_step(ranks, name):
    """All groups' sums travel in one all-reduce per step, on every rank, also on rank 1
    whose second group has no gradient at all ("groups-nograd")."""
    for r in range(distributed_worker.WORLD):
        steps = ranks[r][name]["alpha"].shape[0]
        assert ranks[r][name]["optimizer_collectives"] == steps, \
            f"rank {r}: {ranks[r][name]['optimizer_collectives']} all-reduces in {steps} steps"


def test_nan_on_one_rank_skips_the_step_on_every_rank(ranks):
    for r in range(distributed_worker.WORLD):
        res = ranks[r]["shard-nan-skip"]
        before, after = res["around_nan"]["before"], res["around_nan"]["after"]
        assert all(torch.equal(a, b) for a, b in zip(before, after)), \
            f"rank {r} moved its shard in the step whose gradient was NaN on rank 1"
        state = res["state"][0]
        assert state[_layout.SKIPPED] == 1, f"rank {r}: skipped counter {state}"
        assert state[_layout.TAKEN] == distributed_worker.NAN_STEP + 1
    assert torch.equal(ranks[0]["shard-nan-skip"]["state"], ranks[1]["shard-nan-skip"]["state"])


def test_nan_on_one_rank_raises_on_every_rank(ranks):
    for r in range(distributed_worker.WORLD):
        errors = ranks[r]["shard-nan-raise"]["errors"]
        assert [t for t, _ in errors] == [distributed_worker.NAN_STEP], f"rank {r}: {errors}"
    assert "non-finite gradient in parameter" in ranks[1]["shard-nan-raise"]["errors"][0][1]
    assert "another rank" in ranks[0]["shard-nan-raise"]["errors"][0][1]


def test_process_group_of_one_rank_sums_nothing(ranks):
    """Each rank's optimizer has a subgroup of itself: its run is its own single-process
    run, bit for bit (the other rank trains another variant, so a sum over the world
    would show)."""
    for r in range(distributed_worker.WORLD):
        res = ranks[r]["own-group"]
        ref = single(res["variant"], False)
        assert torch.equal(res["alpha"], ref["alpha"]), f"rank {r}: alpha differs"
        assert all(torch.equal(a, b) for a, b in zip(res["params"], ref["params"]))


@pytest.mark.parametrize("name", fsdp_worker.FSDP_SCENARIOS)
def test_fsdp2_matches_one_process(ranks, name):
    """fully_shard parameters (DTensors, uneven shards), default options: the in-place
    lookahead and the statistics summed over the mesh give the unsharded run."""
    r0, r1 = ranks[0][name], ranks[1][name]
    assert torch.equal(r0["state"], r1["state"]), f"{name}: the ranks' group states differ"
    ref = single_of(fsdp_worker.FSDP_SCENARIOS[name])
    tol, alpha_rtol = rounding_tolerance(name)
    for r in (r0, r1):
        assert_close_params(r["params"], ref["params"], tol, name)
        assert_close_alpha(r["alpha"], ref["alpha"], alpha_rtol, name)
        assert r["stalled"] == 0, f"{name}: {r['stalled']} lookaheads did not move"


def test_fsdp2_shards_are_uneven(ranks):
    """The premise: Linear(6, 3) splits its 3 rows 2 + 1 over the two ranks."""
    sizes = [ranks[r]["fsdp-sgd"]["local_numels"] for r in range(distributed_worker.WORLD)]
    assert sizes[0] != sizes[1], f"local shard sizes {sizes}"


@pytest.mark.parametrize("name", ["fsdp-raise-at-start", "fsdp-raise-after-backward-probe"])
def test_fsdp2_lookahead_that_raises_leaves_every_rank_at_x_t(ranks, name):
    for r in range(distributed_worker.WORLD):
        around = ranks[r][name]["around"]
        for n, a, b in zip(distributed_worker.SPLITS, around["before"], around["after"]):
            assert torch.equal(a, b), f"rank {r}: shard of {n} not restored bit for bit"
        assert all(around["grads_after_raise"]), f"rank {r}: training gradient not put back"


def test_fsdp2_nan_on_one_rank_skips_the_step_on_every_rank(ranks):
    for r in range(distributed_worker.WORLD):
        res = ranks[r]["fsdp-nan-skip"]
        assert all(torch.equal(a, b) for a, b in
                   zip(res["around"]["before"], res["around"]["after"])), \
            f"rank {r} moved its shard in the step whose gradient was NaN on rank 1"
        assert res["state"][0][_layout.SKIPPED] == 1
    assert torch.equal(ranks[0]["fsdp-nan-skip"]["state"], ranks[1]["fsdp-nan-skip"]["state"])


def test_fsdp2_swap_lookahead_is_refused_with_the_fix(ranks):
    for r in range(distributed_worker.WORLD):
        message = ranks[r]["fsdp-swap-refused"]["refused"]
        assert message is not None, f"rank {r}: lookahead='swap' accepted DTensor parameters"
        assert "lookahead='inplace'" in message and "FSDP2" in message
