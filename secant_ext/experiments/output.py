"""Where a run's results go: an output folder with tables (JSON and CSV), per-method
histories and plots, written as each method finishes so an interrupted run keeps them."""
from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

import secant_ext


def _clean(v):
    """JSON-safe values: non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _write_atomic(path: str, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep.strip("_") or "run"


DATA_DIR_PLACEHOLDER = "PATH/TO/MNIST"


def _data_by_content(args: Dict[str, object], argv: List[str]):
    """``args`` and ``argv`` with the ``--data-dir`` path replaced by a placeholder, and the
    SHA-256 of the MNIST files found there: a run's metadata names its data by content,
    not by a path of the machine that ran it."""
    data_dir = args.get("data_dir")
    if not data_dir:
        return args, argv, None
    from .datasets import mnist_sha256
    flag = "--data-dir="
    argv = [DATA_DIR_PLACEHOLDER if a == data_dir else
            flag + DATA_DIR_PLACEHOLDER if a == flag + str(data_dir) else a for a in argv]
    args = dict(args, data_dir=DATA_DIR_PLACEHOLDER)
    if "argv" in args:
        args["argv"] = argv
    return args, argv, mnist_sha256(str(data_dir))


class RunDir:
    """An output folder: ``results.json``/``results.csv`` (one row per method),
    ``history/<method>.json`` (evaluations and steps), ``meta.json`` and the plots."""

    def __init__(self, experiment: str, out: Optional[str], args: Dict[str, object]):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = out or os.path.join("runs", f"{experiment}-{stamp}")
        os.makedirs(os.path.join(self.path, "history"), exist_ok=True)
        self.rows: List[Dict[str, object]] = []
        self.started = time.perf_counter()
        args, argv, data_sha256 = _data_by_content(
            args, [str(a) for a in args.get("argv", sys.argv[1:])])
        self.meta = {"experiment": experiment, "command": "python -m secant_ext " + " ".join(argv),
                     "args": _clean({k: v for k, v in args.items() if k != "module"}),
                     "started": stamp,
                     "secant_ext": secant_ext.__version__, "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "python": platform.python_version(),
                     "backend": secant_ext.backend_for("cpu")}
        if data_sha256 is not None:
            self.meta["data_sha256"] = data_sha256
        self.write_json("meta.json", self.meta)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write_json(self, name: str, obj) -> str:
        path = self.file(name)
        _write_atomic(path, json.dumps(_clean(obj), indent=1, default=str))
        return path

    def write_csv(self, name: str, rows: Sequence[Dict[str, object]]) -> str:
        path = self.file(name)
        columns: List[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                             for k, v in r.items()})
        _write_atomic(path, buf.getvalue())
        return path

    def add(self, result, **extra) -> Dict[str, object]:
        """Record a finished method: its summary row (plus ``extra`` columns) in the tables,
        its evaluations and per-step history in ``history/``."""
        row = dict(extra, **result.summary())
        self.rows.append(row)
        self.write_json("results.json", self.rows)
        self.write_csv("results.csv", self.rows)
        steps = result.steps.rows() if result.steps is not None else []
        # one file per row: a method may appear in several studies of one run
        name = "-".join([str(v) for v in extra.values()] + [row["method"]])
        self.write_json(os.path.join("history", slug(name) + ".json"),
                        {"method": row["method"], "evals": result.evals, "steps": steps})
        return row

    def finish(self, summary: Optional[Dict[str, object]] = None) -> None:
        self.meta["wall_seconds"] = round(time.perf_counter() - self.started, 2)
        if summary is not None:
            self.meta["summary"] = summary
            self.write_json("summary.json", summary)
        self.write_json("meta.json", self.meta)


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items()) or "-"
    return str(v)


def table(rows: Sequence[Dict[str, object]], columns: Sequence[str],
          headers: Optional[Sequence[str]] = None) -> str:
    """A plain-text table with one line per row."""
    headers = list(headers or columns)
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


STANDARD_COLUMNS = ("method", "hyper", "final_train_loss", "final_test_acc", "train_seconds",
                    "grad_evals", "examples", "diverged")
STANDARD_HEADERS = ("method", "hyperparameters", "train loss", "test acc %", "train wall s",
                    "grad evals", "examples", "diverged")
