"""The two processes of ``test_distributed.py``: every scenario in turn on one gloo process
group, each rank's results saved for the parent to compare with a single-process run.

One spawn for all scenarios: starting a process and importing torch takes seconds on a
2-core CI machine, the scenarios themselves take milliseconds.
"""
from __future__ import annotations

import functools
import os
import socket
import sys
import time
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import secant_ext

WORLD = 2
STEPS = 20
TRAIN_ROWS, PROBE_ROWS = 16, 8   # the global batches; under DDP each rank takes its half
NAN_STEP = 3                     # the step whose training gradient is NaN on rank 1 only
COLLECTIVE_TIMEOUT = timedelta(seconds=60)

VARIANTS = {
    "sgd": (secant_ext.SecantSGD, {}),
    "sgdm": (secant_ext.SecantSGDM, dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    "sign": (secant_ext.SecantSignSGD, {}),
    "signum": (secant_ext.SecantSignSGD, dict(momentum=0.9)),
    # measuring from the second step, on a period of 2 after it; lr so the steps matter
    "adam": (secant_ext.SecantAdam, dict(lr=30.0, curvature_warmup=3, curvature_every=2,
                                         weight_decay=0.01)),
}

# Where each flattened parameter is cut: rank 0 owns [0, cut), rank 1 [cut, numel). Uneven,
# and each rank has an empty shard of some tensor (rank 1 of b1, rank 0 of W2).
SPLITS = {"0.weight": 11, "0.bias": 6, "2.weight": 0, "2.bias": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, 3)).to(dtype)


def batch(step: int, rows: int, probe: bool, dtype=torch.float64):
    """The global batch of ``step``, the same in every process."""
    gen = torch.Generator().manual_seed(1000 * step + (1 if probe else 0))
    x = torch.randn(rows, 5, generator=gen, dtype=torch.float64)
    y = torch.sin(x[:, :3]) + 0.1 * torch.randn(rows, 3, generator=gen, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def closures(model, opt, step_ref, rows=slice(None), dtype=torch.float64, after=None):
    """The training and probe closures on rows ``rows`` of the global batches of the
    current step; ``after(model)`` runs after each backward (the shard scatters there)."""
    def evaluate(probe):
        x, y = batch(step_ref[0], PROBE_ROWS if probe else TRAIN_ROWS, probe, dtype)
        opt.zero_grad()
        model.zero_grad()
        loss = ((model(x[rows]) - y[rows]) ** 2).mean()
        loss.backward()
        if after is not None:
            after(probe)
        return loss
    return (lambda: evaluate(False)), (lambda: evaluate(True))


def group_states(opt) -> torch.Tensor:
    return torch.stack([opt._group_state(g).clone() for g in opt.param_groups])


def train_single(variant: str, probe: bool, dtype=torch.float64, two_groups=False,
                 backend="reference", steps=STEPS):
    """The unsharded single-process run every distributed run must equal."""
    cls, kwargs = VARIANTS[variant]
    model = make_model(dtype)
    named = dict(model.named_parameters())
    params = [named[n] for n in SPLITS] if not two_groups else \
        [{"params": [named[n] for n in SPLITS if n != "0.bias"]}, {"params": [named["0.bias"]]}]
    opt = cls(params, backend=backend, **kwargs)
    step_ref = [0]
    closure, probe_closure = closures(model, opt, step_ref, dtype=dtype)
    alphas = []
    for t in range(steps):
        step_ref[0] = t
        opt.step(closure, probe_closure if probe else None)
        alphas.append(group_states(opt)[:, 0])
    return dict(params=[named[n].detach().clone() for n in SPLITS], alpha=torch.stack(alphas),
                state=group_states(opt))


# -- DDP ----------------------------------------------------------------------------------
def run_ddp(rank, variant, probe, bucket_view=False, backend="reference"):
    """Each rank takes its half of the global training and probe batches; DDP averages the
    gradients in every backward (at x, at the probe, at the lookahead point), so every rank
    sees the global gradients and computes the same alpha. No process_group is given: the
    parameters are replicated, there is nothing to sum."""
    cls, kwargs = VARIANTS[variant]
    model = make_model()
    ddp = DDP(model, gradient_as_bucket_view=bucket_view)
    named = dict(model.named_parameters())
    opt = cls([named[n] for n in SPLITS], backend=backend, **kwargs)
    step_ref = [0]
    half = lambda n: slice(rank * n // WORLD, (rank + 1) * n // WORLD)  # noqa: E731
    closure, _ = closures(ddp, opt, step_ref, rows=half(TRAIN_ROWS))
    _, probe_closure = closures(ddp, opt, step_ref, rows=half(PROBE_ROWS))
    alphas = []
    for t in range(STEPS):
        step_ref[0] = t
        opt.step(closure, probe_closure if probe else None)
        alphas.append(group_states(opt)[:, 0])
    return dict(params=[named[n].detach().clone() for n in SPLITS], alpha=torch.stack(alphas),
                state=group_states(opt))


# -- manual shard -------------------------------------------------------------------------
def shard_bounds(name: str, numel: int, rank: int):
    cut = SPLITS[name]
    return (0, cut) if rank == 0 else (cut, numel)


class ManualShard:
    """Each rank owns a flat slice of every parameter and keeps optimizer state for it only.

    The model is replicated for the forward: ``gather`` writes every rank's shards into the
    full parameters (one all-reduce of zeros and owned slices: exact, one non-zero term per
    element), the backward runs on the full model, and ``scatter`` hands each rank the slice
    of the gradient it owns. With ``grad_for_empty=False`` an empty shard gets no gradient
    at all (``None``), as a rank that owns nothing of a tensor would leave it."""

    def __init__(self, model, rank, grad_for_empty=True):
        self.named = dict(model.named_parameters())
        self.rank = rank
        self.grad_for_empty = grad_for_empty
        self.bounds = {n: shard_bounds(n, p.numel(), rank) for n, p in self.named.items()}
        self.shards = {n: p.detach().reshape(-1)[lo:hi].clone().requires_grad_()
                       for n, p in self.named.items() for lo, hi in [self.bounds[n]]}

    def gather(self):
        full = torch.zeros(sum(p.numel() for p in self.named.values()), dtype=torch.float64)
        offset = 0
        for n, p in self.named.items():
            lo, hi = self.bounds[n]
            full[offset + lo:offset + hi] = self.shards[n].detach()
            offset += p.numel()
        dist.all_reduce(full)
        offset = 0
        with torch.no_grad():
            for p in self.named.values():
                p.copy_(full[offset:offset + p.numel()].view_as(p))
                offset += p.numel()

    def scatter(self, _probe=None):
        for n, p in self.named.items():
            lo, hi = self.bounds[n]
            keep = hi > lo or self.grad_for_empty
            self.shards[n].grad = p.grad.reshape(-1)[lo:hi].clone() if keep else None


class _GatherFirst(torch.nn.Module):
    """The full model, its parameters gathered from the shards before each forward."""

    def __init__(self, model, shard):
        super().__init__()
        self.model, self.shard = model, shard

    def forward(self, x):
        self.shard.gather()
        return self.model(x)


def run_shard(rank, pg, variant, probe, two_groups=False, grad_for_empty=True,
              backend="reference", nan_on_rank1=False, nonfinite="skip", steps=STEPS):
    cls, kwargs = VARIANTS[variant]
    model = make_model()
    shard = ManualShard(model, rank, grad_for_empty)
    s = shard.shards
    params = [s[n] for n in SPLITS] if not two_groups else \
        [{"params": [s[n] for n in SPLITS if n != "0.bias"]}, {"params": [s["0.bias"]]}]
    opt = cls(params, backend=backend, process_group=pg, nonfinite=nonfinite, **kwargs)
    step_ref = [0]

    def after(is_probe):
        shard.scatter()
        if nan_on_rank1 and rank == 1 and step_ref[0] == NAN_STEP and not is_probe \
                and not opt.in_lookahead:
            s["0.weight"].grad[0] = float("nan")

    closure, probe_closure = closures(_GatherFirst(model, shard), opt, step_ref, after=after)
    collectives = []
    all_reduce = dist.all_reduce

    def counting_all_reduce(tensor, *args, **kw):
        collectives.append(sys._getframe(1).f_code.co_name)
        return all_reduce(tensor, *args, **kw)

    alphas, around_nan, errors = [], {}, []
    dist.all_reduce = counting_all_reduce
    try:
        for t in range(steps):
            step_ref[0] = t
            if t == NAN_STEP:
                around_nan["before"] = [x.detach().clone() for x in s.values()]
            try:
                opt.step(closure, probe_closure if probe else None)
            except FloatingPointError as e:
                errors.append((t, str(e)))
            if t == NAN_STEP:
                around_nan["after"] = [x.detach().clone() for x in s.values()]
            alphas.append(group_states(opt)[:, 0])
    finally:
        dist.all_reduce = all_reduce
    return dict(shards={n: x.detach().clone() for n, x in s.items()},
                bounds=shard.bounds, alpha=torch.stack(alphas), state=group_states(opt),
                around_nan=around_nan, errors=errors,
                optimizer_collectives=collectives.count("reduce_tables"))


def run_own_group(rank, pg_self):
    """A subgroup of one rank: each rank trains its own unsharded model with
    ``process_group`` = a group of itself, so its alpha must be its own single-process
    alpha; summing over the world (the other rank trains with other hyperparameters)
    would change it."""
    variant = "sgd" if rank == 0 else "sgdm"
    cls, kwargs = VARIANTS[variant]
    model = make_model()
    named = dict(model.named_parameters())
    opt = cls([named[n] for n in SPLITS], backend="reference", process_group=pg_self,
              **kwargs)
    step_ref = [0]
    closure, _ = closures(model, opt, step_ref)
    alphas = []
    for t in range(STEPS):
        step_ref[0] = t
        opt.step(closure)
        alphas.append(group_states(opt)[:, 0])
    return dict(variant=variant, params=[named[n].detach().clone() for n in SPLITS],
                alpha=torch.stack(alphas))


# name -> keyword arguments; the tests compare each with train_single(variant, probe, ...)
DDP_SCENARIOS = {
    "ddp-sgd": dict(variant="sgd", probe=False),
    "ddp-sgdm-probe": dict(variant="sgdm", probe=True),
    "ddp-sgdm-probe-bucket-view": dict(variant="sgdm", probe=True, bucket_view=True),
    "ddp-sign-bucket-view": dict(variant="sign", probe=False, bucket_view=True),
    "ddp-signum-probe-cpp": dict(variant="signum", probe=True, backend="cpp"),
    "ddp-adam-cpp": dict(variant="adam", probe=False, backend="cpp"),
}
# "nograd": a second param group, b1 alone, whose shard on rank 1 is empty and gets no
# gradient: rank 1 has no gradient at all in that group and must still join the sum.
SHARD_SCENARIOS = {
    "shard-sgd": dict(variant="sgd", probe=False),
    "shard-sgdm-probe": dict(variant="sgdm", probe=True),
    "shard-sign": dict(variant="sign", probe=False),
    "shard-signum-probe": dict(variant="signum", probe=True),
    "shard-sign-groups-nograd": dict(variant="sign", probe=False, two_groups=True,
                                     grad_for_empty=False),
    "shard-sgdm-groups-nograd": dict(variant="sgdm", probe=True, two_groups=True,
                                     grad_for_empty=False),
    "shard-sign-cpp": dict(variant="sign", probe=False, backend="cpp"),
    "shard-adam-probe": dict(variant="adam", probe=True),
    "shard-sgdm-groups-nograd-cpp": dict(variant="sgdm", probe=True, two_groups=True,
                                         grad_for_empty=False, backend="cpp"),
}
NAN_SCENARIOS = {
    "shard-nan-skip": dict(variant="sgdm", probe=False, nan_on_rank1=True,
                           steps=NAN_STEP + 2),
    # with a probe the lookahead point stays finite, so rank 0 sees the NaN only in the sum
    "shard-nan-raise": dict(variant="sgd", probe=True, nan_on_rank1=True, nonfinite="raise",
                            steps=NAN_STEP + 2),
}


def scenarios(rank):
    """name -> thunk, in the order both ranks run them (collectives must match)."""
    pair = dist.new_group([0, 1])  # a group object other than the default one
    own = {r: dist.new_group([r]) for r in range(WORLD)}  # every rank creates every group
    out = {name: functools.partial(run_ddp, rank, **kw) for name, kw in DDP_SCENARIOS.items()}
    out["own-group"] = lambda: run_own_group(rank, own[rank])
    for name, kw in {**SHARD_SCENARIOS, **NAN_SCENARIOS}.items():
        out[name] = functools.partial(run_shard, rank, pair, **kw)
    import fsdp_worker  # imports this module: loaded here, not at the top
    out.update(fsdp_worker.scenarios(rank))
    return out


def main(rank: int, port: int, out_dir: str) -> None:
    """Run every scenario; on any error save the traceback and exit at once, so that the
    other rank's pending collective fails on the closed connection instead of waiting."""
    torch.set_num_threads(1)  # two processes share two cores
    results = {}
    path = os.path.join(out_dir, f"rank{rank}.pt")
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=WORLD, timeout=COLLECTIVE_TIMEOUT)
        for name, thunk in scenarios(rank).items():
            t0 = time.perf_counter()
            results[name] = thunk()
            results.setdefault("__seconds__", {})[name] = time.perf_counter() - t0
        torch.save(results, path)
        dist.destroy_process_group()
    except BaseException:
        results["__error__"] = traceback.format_exc()
        torch.save(results, path)
        os._exit(1)
