"""A run's meta.json names its MNIST data by content (SHA-256 of each file), not by the
path of the machine that ran it."""
import hashlib
import json

import numpy as np
import pytest

from secant_ext.experiments import datasets
from secant_ext.experiments.output import DATA_DIR_PLACEHOLDER, RunDir
from test_data import idx_bytes, write_mnist


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_mnist_sha256_is_of_the_uncompressed_files(tmp_path, compress):
    arrays = write_mnist(tmp_path / "mnist", compress=compress)
    sums = datasets.mnist_sha256(str(tmp_path / "mnist"))
    suffix = ".gz" if compress else ""
    assert sums == {name + suffix: hashlib.sha256(idx_bytes(a, 0x08, ">u1")).hexdigest()
                    for name, a in arrays.items()}
    assert datasets.mnist_sha256(str(tmp_path / "absent")) == {}


@pytest.mark.parametrize("flag_form", ["separate", "equals"])
def test_meta_json_records_checksums_instead_of_the_data_dir(tmp_path, flag_form):
    data_dir = str(tmp_path / "somewhere" / "mnist")
    write_mnist(tmp_path / "somewhere" / "mnist")
    argv = ["reproduce", "fig1"] + (["--data-dir", data_dir] if flag_form == "separate"
                                    else ["--data-dir=" + data_dir]) + ["--seed", "0"]
    out = RunDir("fig1", str(tmp_path / "out"), {"data_dir": data_dir, "seed": 0, "argv": argv})
    out.finish({"dataset": datasets.load_mnist(data_dir).describe()})
    for name in ("meta.json", "summary.json"):
        text = (tmp_path / "out" / name).read_text()
        assert str(tmp_path) not in text, f"{name} names the data directory"
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["args"]["data_dir"] == DATA_DIR_PLACEHOLDER
    assert DATA_DIR_PLACEHOLDER in meta["command"] and "--seed 0" in meta["command"]
    assert meta["data_sha256"] == datasets.mnist_sha256(data_dir)
    assert len(meta["data_sha256"]) == 4


def test_meta_json_without_data_dir_has_no_checksums(tmp_path):
    out = RunDir("demo", str(tmp_path / "out"), {"data_dir": None, "argv": ["demo"]})
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert "data_sha256" not in meta and meta["command"] == "python -m secant_ext demo"
    assert np.isfinite(meta["threads"])
