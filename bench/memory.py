"""The memory each optimizer holds, in bytes per parameter, on one model.

Between steps: every tensor storage the optimizer keeps from one step to the next, each
once: its ``state``, and for the Secant optimizers the lookahead's buffers and the plan's
caches. The parameters and their gradients (the model's) are left out, and so are the
few bytes of per-group scalars that do not grow with the model (SecantAdam's group state
is 29 float64 values). At peak, for the Secant optimizers: the same storages plus what the
step holds for itself (the lookahead buffers and the recomputed previous step), read while
the closure runs at the lookahead point, where a measuring step holds the most. The peers'
peaks include their kernels' temporaries, which only the CUDA allocator shows:
``bench/gpu_check.py`` reports ``torch.cuda.max_memory_allocated`` for them.

    python bench/memory.py                 # fp32
    python bench/memory.py --dtype bfloat16
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, Dict, Iterable, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import secant_ext  # noqa: E402

from report import _table  # noqa: E402

STEPS = 24  # past SecantAdam's warm-up of 12 below, and on to its measuring steps


def _storages(tensors: Iterable[torch.Tensor]) -> Dict[int, int]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in tensors if torch.is_tensor(t) and t.numel() > 1}


def held_bytes(opt, params: List[torch.Tensor], during_step: bool = False) -> int:
    """Bytes of the storages ``opt`` holds (each once), the parameters' and gradients' own
    left out; ``during_step``: the step's own records too (Secant optimizers)."""
    own = {p.untyped_storage().data_ptr() for p in params}
    own |= {p.grad.untyped_storage().data_ptr() for p in params if p.grad is not None}
    tensors = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    if isinstance(opt, secant_ext.SecantOptimizer):
        tensors += list(opt._lookahead.buffers.values())
        buckets = [b for w in opt._plan_template for b in w.buckets]
        tensors += [t for b in buckets for ts in b.cache.values() for t in ts]
        if during_step:  # the offsets the step made (SecantAdam's u), not gradients moved
            own |= {t.untyped_storage().data_ptr() for b in buckets
                    for t in b.now.grads + b.now.own_grads + b.now.probes + b.now.taken_grads}
            tensors += [t for b in buckets for t in b.now.offsets]
    return sum(n for ptr, n in _storages(tensors).items() if ptr not in own)


def makers() -> Dict[str, Optional[Callable]]:
    """The optimizers measured; None for a peer that is not installed."""
    schedule = dict(curvature_warmup=12, curvature_every=4)  # the defaults' pattern, sooner
    out: Dict[str, Optional[Callable]] = {
        "SecantAdam (average=True, the default)":
            lambda p: secant_ext.SecantAdam(p, **schedule),
        "SecantAdam (average=False)":
            lambda p: secant_ext.SecantAdam(p, average=False, **schedule),
        "SecantSGD": lambda p: secant_ext.SecantSGD(p),
        "SecantSGDM": lambda p: secant_ext.SecantSGDM(p),
        "SecantSignSGD": lambda p: secant_ext.SecantSignSGD(p),
        "torch.optim.AdamW": lambda p: torch.optim.AdamW(p, lr=1e-3),
    }
    for name, module, cls, kwargs in (
            ("Schedule-Free AdamW", "schedulefree", "AdamWScheduleFree", dict(lr=1e-3)),
            ("Prodigy", "prodigyopt", "Prodigy", dict(lr=1.0))):
        try:
            peer = getattr(importlib.import_module(module), cls)
            out[f"{name} ({module})"] = lambda p, peer=peer, kwargs=kwargs: peer(p, **kwargs)
        except ImportError:
            out[f"{name} ({module} not installed)"] = None
    return out


def measure(make: Callable, dtype: torch.dtype = torch.float32, steps: int = STEPS):
    """(bytes per parameter between steps, the most of them, at the peak of a step or None)
    on a small MLP of ``dtype``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 8)).to(dtype)
    x, y = torch.randn(32, 64, dtype=dtype), torch.randn(32, 8, dtype=dtype)
    params = list(model.parameters())
    opt = make(params)
    if hasattr(opt, "train") and not isinstance(opt, secant_ext.SecantOptimizer):
        opt.train()  # Schedule-Free's mode switch
    secant = isinstance(opt, secant_ext.SecantOptimizer)
    peak = [0]

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        if secant and opt.in_lookahead:
            peak[0] = max(peak[0], held_bytes(opt, params, during_step=True))
        return loss
    between = 0
    for _ in range(steps):
        if secant:
            opt.step(closure)
        else:
            closure()
            opt.step()
        between = max(between, held_bytes(opt, params))
    n = sum(p.numel() for p in params)
    return between / n, (max(peak[0], between) / n if secant else None)


def memory_rows(dtype: torch.dtype = torch.float32) -> List[List[str]]:
    rows = []
    for name, make in makers().items():
        if make is None:
            rows.append([name, "-", "-"])
            continue
        between, peak = measure(make, dtype)
        rows.append([name, f"{between:.1f}",
                     f"{peak:.1f}" if peak is not None else "CUDA only (gpu_check)"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    print(f"bytes per {args.dtype} parameter, a 64-64-8 MLP, {STEPS} steps")
    print("\n".join(_table(["optimizer", "between steps", "at peak (measuring step)"],
                           memory_rows(dtype))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
