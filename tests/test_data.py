"""Data loading of the experiments: the IDX reader (gzip and plain), the MNIST directory
loader, the svmlight path, and the errors for missing or corrupt data."""
import gzip
import struct

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from secant_ext.experiments import datasets  # noqa: E402
from secant_ext.experiments.idx import DataError, read_idx  # noqa: E402

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def idx_bytes(array: np.ndarray, code: int, be_dtype: str) -> bytes:
    """IDX written by hand from the format description, independent of the package's
    writer: 0, 0, type code, ndim, big-endian int32 sizes, big-endian values."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">i", d)
                                                        for d in array.shape)
    return header + array.astype(be_dtype).tobytes()


def write(path, data: bytes, compress: bool):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_idx_reads_ubyte_images(tmp_path, compress):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5) * 4
    path = write(tmp_path / "images.idx3", idx_bytes(images, 0x08, ">u1"), compress)
    out = read_idx(path)
    assert out.shape == (3, 4, 5)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("code,be,values", [
    (0x0C, ">i4", np.array([[-70000, 1], [2, 2 ** 30]], dtype=np.int32)),
    (0x0D, ">f4", np.array([1.5, -2.25, 3e-8], dtype=np.float32)),
    (0x0B, ">i2", np.array([-300, 300, 7], dtype=np.int16)),
])
def test_idx_reads_multibyte_big_endian(tmp_path, compress, code, be, values):
    # multi-byte types are big-endian on disk: a little-endian read would scramble them
    path = write(tmp_path / "v.idx", idx_bytes(values, code, be), compress)
    out = read_idx(path)
    assert out.shape == values.shape
    np.testing.assert_array_equal(out, values)


def test_idx_errors_name_the_path_and_the_problem(tmp_path):
    good = idx_bytes(np.zeros((2, 3, 3), np.uint8), 0x08, ">u1")
    with pytest.raises(DataError, match=r"not found.*nothere\.idx"):
        read_idx(tmp_path / "nothere.idx")
    truncated = write(tmp_path / "trunc.idx", good[:-4], False)
    with pytest.raises(DataError, match=r"trunc\.idx.*needs 34 bytes, the file has 30"):
        read_idx(truncated)
    bad_magic = write(tmp_path / "magic.idx", b"\x01\x02" + good[2:], False)
    with pytest.raises(DataError, match=r"magic\.idx is not an IDX file"):
        read_idx(bad_magic)
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(DataError, match=r"corrupt gzip data in .*broken\.gz"):
        read_idx(broken_gz)
    tiny = write(tmp_path / "tiny.idx", b"\x00\x00", False)
    with pytest.raises(DataError, match=r"tiny\.idx.*shorter than the 4-byte header"):
        read_idx(tiny)


def write_mnist(directory, n_train=12, n_test=6, side=4, compress=True, seed=0):
    """A small MNIST-shaped directory; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        write(directory / (name + (".gz" if compress else "")), idx_bytes(a, 0x08, ">u1"),
              compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_load_mnist_scales_standardizes_and_shapes(tmp_path, compress):
    arrays = write_mnist(tmp_path / "mnist", compress=compress)
    ds = datasets.load_mnist(str(tmp_path / "mnist"))
    assert ds.x_train.shape == (12, 1, 4, 4) and ds.x_test.shape == (6, 1, 4, 4)
    expected = (arrays["train-images-idx3-ubyte"].astype(np.float64) / 255 - MNIST_MEAN) \
        / MNIST_STD
    # float32 pixels: the error of (v/255 - m)/s in float32 is a few ulps of values <= 3
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == torch.int64
    flat = datasets.load_mnist(str(tmp_path / "mnist"), flatten=True)
    assert flat.x_train.shape == (12, 16)
    even_odd = datasets.mnist_even_odd(str(tmp_path / "mnist"))
    np.testing.assert_array_equal(even_odd.y_train.numpy(),
                                  arrays["train-labels-idx1-ubyte"] % 2)
    assert even_odd.num_classes == 2


def test_load_mnist_missing_or_corrupt_directory(tmp_path):
    with pytest.raises(DataError, match=r"nowhere does not exist"):
        datasets.load_mnist(str(tmp_path / "nowhere"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(DataError, match=r"afile is not a directory"):
        datasets.load_mnist(str(afile))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\[\.gz\] not found in "
                                        r".*empty"):
        datasets.load_mnist(str(tmp_path / "empty"))
    write_mnist(tmp_path / "bad")
    # labels for 5 images where the images file holds 12
    write(tmp_path / "bad" / "train-labels-idx1-ubyte.gz",
          idx_bytes(np.zeros(5, np.uint8), 0x08, ">u1"), True)
    with pytest.raises(DataError, match=r"MNIST train files in .*bad do not match"):
        datasets.load_mnist(str(tmp_path / "bad"))
    write_mnist(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError, match=r"corrupt gzip data in .*t10k-images"):
        datasets.load_mnist(str(tmp_path / "corrupt"))


def test_svmlight_binary_labels_and_standardized_features(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    raw = []
    for i in range(40):
        label = 1 if i % 2 else -1
        f1, f3 = rng.normal(), rng.normal() + 3 * label
        raw.append((label, f1, f3))
        lines.append(f"{label} 1:{f1:.6f} 3:{f3:.6f}")
    path = tmp_path / "tiny.svm"
    path.write_text("\n".join(lines) + "\n")
    ds = datasets.load_svmlight(str(path), seed=0)
    assert ds.num_classes == 2
    assert ds.x_train.shape == (32, 3) and ds.x_test.shape == (8, 3)
    assert set(ds.y_train.tolist()) == {0, 1}
    # the train split is standardized with its own statistics; feature 2 is absent (all 0)
    np.testing.assert_allclose(ds.x_train.mean(0).numpy(), [0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(ds.x_train[:, [0, 2]].std(0, unbiased=False).numpy(), [1, 1],
                               atol=1e-5)
    # label -1 -> 0, +1 -> 1: feature 3 is larger for class 1
    x3, y = ds.x_train[:, 2], ds.y_train
    assert x3[y == 1].mean() > x3[y == 0].mean()


def test_svmlight_multiclass_and_errors(tmp_path):
    path = tmp_path / "multi.svm"
    path.write_text("".join(f"{c} 1:{i}.0 2:{c}.5\n" for i in range(30) for c in (3, 7, 9)
                            if (i + c) % 3 == 0 or i < 10))
    ds = datasets.load_svmlight(str(path))
    assert ds.num_classes == 3
    assert set(ds.y_train.tolist()) == {0, 1, 2}
    with pytest.raises(DataError, match=r"svmlight file not found: .*missing\.svm"):
        datasets.load_svmlight(str(tmp_path / "missing.svm"))
    bad = tmp_path / "bad.svm"
    bad.write_text("1 1:0.5\nthis is not svmlight\n")
    with pytest.raises(DataError, match=r"cannot parse svmlight file .*bad\.svm"):
        datasets.load_svmlight(str(bad))
    one = tmp_path / "one.svm"
    one.write_text("1 1:0.5\n1 1:0.7\n")
    with pytest.raises(DataError, match=r"one\.svm has a single label"):
        datasets.load_svmlight(str(one))
