"""A step history of a secant optimizer: record ``last_stats`` each step, export, plot.

    history = secant_ext.StepHistory()
    for batch in loader:
        loss = opt.step(closure)
        history.record(opt, loss=loss)      # no host sync: the values stay on the device
    history.to_csv("steps.csv")             # one sync, here
    history.plot("alpha.png")               # needs matplotlib

``record`` stacks the chosen statistics (and any extra values) into one small device
tensor per step; nothing is read back until an export, so recording does not slow a GPU
run down. Works for any optimizer when only extra values are given.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

import torch

DEFAULT_FIELDS = ("alpha", "step_size", "grad_norm", "curvature", "dot", "s_sq", "y_sq", "skipped",
                  "clipped")


class StepHistory:
    """Per-step statistics, kept on the device until exported.

    Args:
        fields: attributes of ``optimizer.last_stats`` to record each step.
    """

    def __init__(self, fields: Sequence[str] = DEFAULT_FIELDS):
        self.fields = tuple(fields)
        self._rows: List[torch.Tensor] = []
        self._columns: Optional[List[str]] = None
        self._keys: Optional[tuple] = None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def columns(self) -> List[str]:
        """Column names: ``step``, the recorded fields (``alpha_0, alpha_1, ...`` with
        several param groups) and the extra values, in that order."""
        return ["step"] + list(self._columns or [])

    def record(self, optimizer=None, **values) -> None:
        """Append one row: ``optimizer.last_stats`` fields (when an optimizer is given) and
        ``values`` (tensors or numbers, e.g. ``loss=loss``). Does not synchronize."""
        parts: List[torch.Tensor] = []
        names: List[str] = []
        if optimizer is not None:
            stats = optimizer.last_stats
            for f in self.fields:
                t = getattr(stats, f)
                if not isinstance(t, torch.Tensor):
                    raise TypeError(f"last_stats.{f} is not a tensor: {type(t).__name__}")
                t = t.detach().to(torch.float64).reshape(-1)
                parts.append(t)
                names += [f] if t.numel() == 1 else [f"{f}_{i}" for i in range(t.numel())]
        device = parts[0].device if parts else None
        for key, v in values.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(f"record({key}=...) needs a single value, got a tensor "
                                     f"of shape {tuple(v.shape)}")
                device = device or v.device
                parts.append(v.detach().to(device=device, dtype=torch.float64).reshape(1))
            else:
                parts.append(torch.tensor([float(v)], dtype=torch.float64, device=device))
            names.append(key)
        if not parts:
            raise ValueError("record() needs an optimizer or at least one value")
        keys = (optimizer is not None, tuple(values))
        if self._columns is None:
            self._columns, self._keys = names, keys
        elif keys != self._keys or names != self._columns:
            raise ValueError(f"record() was called with columns {names}, but the history "
                             f"holds {self._columns}; record the same values every step")
        self._rows.append(torch.cat([p.to(device) for p in parts]))

    def rows(self) -> List[Dict[str, float]]:
        """The history as a list of dicts (one host sync for the whole history)."""
        if not self._rows:
            return []
        table = torch.stack(self._rows).cpu().tolist()
        return [dict(zip(self.columns, [i] + r)) for i, r in enumerate(table)]

    def column(self, name: str) -> List[float]:
        if name not in self.columns:
            raise KeyError(f"no column {name!r} in the history; columns: {self.columns}")
        if name == "step":
            return [float(i) for i in range(len(self))]
        j = self._columns.index(name)
        return torch.stack(self._rows)[:, j].cpu().tolist() if self._rows else []

    def to_csv(self, path) -> None:
        rows = self.rows()
        with open(os.fspath(path), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def to_json(self, path) -> None:
        # non-finite values become null: JSON has no NaN/Infinity
        rows = [{k: (v if v == v and abs(v) != float("inf") else None) for k, v in r.items()}
                for r in self.rows()]
        with open(os.fspath(path), "w") as f:
            json.dump({"columns": self.columns, "rows": rows}, f)

    def plot(self, path, columns: Iterable[str] = ("alpha", "grad_norm"),
             log_scale: bool = True) -> None:
        """One panel per column against the step, saved as an image (needs matplotlib)."""
        try:
            import matplotlib
        except ImportError as exc:
            raise ImportError("StepHistory.plot needs matplotlib: `pip install matplotlib` "
                              "(or `pip install secant_ext[experiments]`)") from exc
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        columns = list(columns)
        fig, axes = plt.subplots(len(columns), 1, figsize=(7, 2.4 * len(columns)),
                                 sharex=True, squeeze=False)
        steps = self.column("step")
        for ax, name in zip(axes[:, 0], columns):
            ax.plot(steps, self.column(name), lw=0.8)
            ax.set_ylabel(name)
            if log_scale:
                ax.set_yscale("log")
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=120)
        plt.close(fig)
