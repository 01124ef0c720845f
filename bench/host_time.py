"""The optimizer's host time per step on a model-sized parameter list, against AdamW.

150 fp32 parameter tensors (``--tensors``), about the count of a small transformer, in two
sizes: random sizes of 64 to 4096 elements (seed 0), and one element each, where the
kernels have no work and what is left is the host side of the step (the Python that drives
it, the op dispatch of each tensor list). Target: each Secant optimizer's own time at most
2x that of ``torch.optim.AdamW(foreach=True)`` (the same gradients; its step pays the same
``torch.optim`` hooks).

What is timed per step is as in ``bench/many_tensors.py``: Secant ``step(closure)`` minus
the closure calls (which only assign precomputed gradients); AdamW ``step()`` after the
same assignment, outside the timer. Interleaved rounds, gc off while timing; cells are
median us ±half the interquartile range, ratios of medians from the same rounds.

    python bench/host_time.py                    # 150 tensors, 1 thread, 400 rounds
    python bench/host_time.py --tensors 40 --repeats 100
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import secant_ext  # noqa: E402

from many_tensors import secant_case, torch_case  # noqa: E402
from report import _table  # noqa: E402
from timing import interleaved  # noqa: E402

TARGET = 2.0  # own time at most 2x that of AdamW(foreach=True)
SECANT = (("SecantSGD", secant_ext.SecantSGD, {}),
          ("SecantSGDM", secant_ext.SecantSGDM, dict(momentum=0.9)),
          ("SecantSignSGD", secant_ext.SecantSignSGD, {}),
          # at its defaults: after the warm-up 1 step in 8 measures, so the median is a
          # step that does not (bench/adam_step.py times the two kinds apart)
          ("SecantAdam", secant_ext.SecantAdam, {}))


def make_problem(sizes: List[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(k, generator=gen)) for k in sizes]
    grads = [torch.randn(k, generator=gen) * 1e-3 for k in sizes]
    return params, (grads, [g * 1.01 for g in grads])


def run(sizes: List[int], backend: str, repeats: int, warmup: int = 20) -> Dict[str, dict]:
    _, grad_sets = make_problem(sizes)
    cases = {name: secant_case(cls, make_problem(sizes)[0], grad_sets, backend=backend, **kw)
             for name, cls, kw in SECANT}
    adamw_params = make_problem(sizes)[0]
    cases["AdamW foreach"] = torch_case(
        torch.optim.AdamW(adamw_params, lr=1e-3, foreach=True), adamw_params, grad_sets)
    return interleaved(cases, repeats, warmup)


def render(res: Dict[str, dict], label: str) -> List[str]:
    ref = res["AdamW foreach"]["median_s"]
    body = []
    for name, r in res.items():
        spread = (r["q75_s"] - r["q25_s"]) / 2 / r["median_s"]
        ratio = r["median_s"] / ref
        verdict = "" if name.startswith("AdamW") else ("met" if ratio <= TARGET else "MISSED")
        body.append([name, f"{r['median_s'] * 1e6:.0f} ±{spread:.0%}", f"{ratio:.2f}x",
                     verdict])
    return ["", label, ""] + _table(["case", "own us/step", "vs AdamW foreach",
                                     f"<= {TARGET:g}x"], body)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="cpp", choices=["cpp", "reference"])
    args = ap.parse_args(argv)
    if args.tensors < 1 or args.repeats < 1:
        ap.error(f"--tensors and --repeats must be at least 1, got {args.tensors} and "
                 f"{args.repeats}")
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    model = torch.randint(64, 4097, (args.tensors,), generator=gen).tolist()
    load = os.getloadavg()[0]
    lines = [f"{args.tensors} fp32 tensors, torch {torch.__version__}, {args.threads} "
             f"thread(s), backend {args.backend}, {args.repeats} interleaved rounds; load "
             f"average {load:.2f} before"]
    for sizes, label in ((model, f"sizes 64-4096 ({sum(model):,} elements)"),
                         ([1] * args.tensors, "1 element each (host time alone)")):
        lines += render(run(sizes, args.backend, args.repeats), label)
    lines.append(f"\nload average {os.getloadavg()[0]:.2f} after")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
