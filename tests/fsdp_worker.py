"""FSDP2 scenarios for the two gloo processes of ``distributed_worker``.

``fully_shard`` on each Linear and on the root, on a 1-D CPU mesh: the parameters become
DTensors sharded on dim 0 (Linear(5, 6): 3 + 3 rows; Linear(6, 3): 2 + 1 rows, uneven).
Each rank takes its half of the global batches, FSDP2 averages the gradients, and the
optimizer (``lookahead="auto"``, so in place) must give the unsharded single-process run.
"""
from __future__ import annotations

import torch

import distributed_worker as worker

LOOKAHEAD_CALL = {False: 2, True: 3}  # which closure call is the lookahead (with a probe: 3)


class Boom(Exception):
    pass


def _fsdp_model(reshard_after_backward=True):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    model = worker.make_model()
    mesh = init_device_mesh("cpu", (worker.WORLD,))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
        layer.set_reshard_after_backward(reshard_after_backward)
    fully_shard(model, mesh=mesh)
    return model


def run_fsdp(rank, variant, probe, backend="reference", reshard_after_backward=True,
             nan_on_rank1=False, raise_in_lookahead=None, steps=worker.STEPS):
    """``raise_in_lookahead``: "start" or "after_backward": the lookahead closure raises
    there at step NAN_STEP on both ranks; the shards before and after are saved."""
    cls, kwargs = worker.VARIANTS[variant]
    model = _fsdp_model(reshard_after_backward)
    names = list(worker.SPLITS)
    named = dict(model.named_parameters())
    opt = cls([named[n] for n in names], backend=backend, **kwargs)
    step_ref, calls = [0], [0]
    half = lambda n: slice(rank * n // worker.WORLD, (rank + 1) * n // worker.WORLD)  # noqa: E731

    def evaluate(is_probe):
        calls[0] += 1
        boom = raise_in_lookahead is not None and step_ref[0] == worker.NAN_STEP and \
            calls[0] == LOOKAHEAD_CALL[probe]
        if boom and raise_in_lookahead == "start":
            raise Boom()
        rows = worker.PROBE_ROWS if is_probe else worker.TRAIN_ROWS
        x, y = worker.batch(step_ref[0], rows, is_probe)
        opt.zero_grad()
        loss = ((model(x[half(rows)]) - y[half(rows)]) ** 2).mean()
        loss.backward()
        if nan_on_rank1 and rank == 1 and step_ref[0] == worker.NAN_STEP and not is_probe \
                and not opt.in_lookahead:
            named["0.weight"].grad.to_local()[0] = float("nan")
        if boom:
            raise Boom()
        return loss

    alphas, around = [], {}
    for t in range(steps):
        step_ref[0], calls[0] = t, 0
        if t == worker.NAN_STEP:
            around["before"] = [named[n].to_local().clone() for n in names]
        try:
            opt.step(lambda: evaluate(False), (lambda: evaluate(True)) if probe else None)
        except Boom:
            around["grads_after_raise"] = [named[n].grad is not None for n in names]
        if t == worker.NAN_STEP:
            around["after"] = [named[n].to_local().clone() for n in names]
        alphas.append(worker.group_states(opt)[:, 0])
    full = [named[n].full_tensor().detach().clone() for n in names]
    return dict(params=full, alpha=torch.stack(alphas), state=worker.group_states(opt),
                around=around, local_numels=[named[n].to_local().numel() for n in names],
                stalled=opt.last_stats.stalled_total.item())


def run_swap_refused(rank):
    """lookahead='swap' with DTensor parameters is refused, naming the fix."""
    model = _fsdp_model()
    try:
        worker.VARIANTS["sgd"][0](model.parameters(), backend="reference", lookahead="swap")
    except ValueError as e:
        return dict(refused=str(e))
    return dict(refused=None)


# name -> keyword arguments; each must equal train_single(variant, probe)
FSDP_SCENARIOS = {
    "fsdp-sgd": dict(variant="sgd", probe=False),
    "fsdp-sgd-probe-cpp": dict(variant="sgd", probe=True, backend="cpp"),
    "fsdp-sgdm-probe": dict(variant="sgdm", probe=True),
    "fsdp-sgdm-cpp": dict(variant="sgdm", probe=False, backend="cpp"),
    "fsdp-sign": dict(variant="sign", probe=False),
    "fsdp-signum-probe-cpp": dict(variant="signum", probe=True, backend="cpp"),
    "fsdp-adam-cpp": dict(variant="adam", probe=False, backend="cpp"),
    # modules that keep their gathered weights after backward: resharded by the optimizer
    "fsdp-sgdm-keep-unsharded": dict(variant="sgdm", probe=True, reshard_after_backward=False),
}
FSDP_FAULT_SCENARIOS = {
    "fsdp-nan-skip": dict(variant="sgdm", probe=False, nan_on_rank1=True,
                          steps=worker.NAN_STEP + 2),
    "fsdp-raise-at-start": dict(variant="sgdm", probe=False, raise_in_lookahead="start",
                                steps=worker.NAN_STEP + 1),
    "fsdp-raise-after-backward-probe": dict(variant="sgd", probe=True,
                                            raise_in_lookahead="after_backward",
                                            steps=worker.NAN_STEP + 1),
}


def scenarios(rank):
    out = {name: (lambda kw=kw: run_fsdp(rank, **kw))
           for name, kw in {**FSDP_SCENARIOS, **FSDP_FAULT_SCENARIOS}.items()}
    out["fsdp-swap-refused"] = lambda: run_swap_refused(rank)
    return out
