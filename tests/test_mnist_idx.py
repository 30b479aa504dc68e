"""MNIST's four original IDX files in --data-dir, plain and gzipped: read as mnist.npz is, each bad file named.

The files are written here from the format's definition (yann.lecun.com/exdb/mnist: a magic number 0x00000803 or
0x00000801, then each axis's size as a big-endian 32-bit integer, then the bytes), not by the reader's code.
"""
import gzip
import re
import struct

import numpy as np
import pytest

import lenet
from conftest import assert_fails_cleanly, fixture_arrays, run_script

NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def idx_bytes(array):
    """The IDX file of a uint8 array: magic 0x0000 08 <axes>, the sizes, the values."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(folder, gzipped=(), **changes):
    """Write the fixture's four arrays as IDX files in folder (the keys in gzipped as .gz); changes replace a file's
    bytes (key=bytes) or leave it out (key=None). Returns {key: path}."""
    folder.mkdir(exist_ok=True)
    paths = {}
    for key, array in fixture_arrays().items():
        content = changes.get(key, idx_bytes(array))
        if content is None:
            continue
        path = folder / (NAMES[key] + ".gz" * (key in gzipped))
        path.write_bytes(gzip.compress(content) if key in gzipped else content)
        paths[key] = path
    return paths


@pytest.mark.parametrize("gzipped", [(), tuple(NAMES), ("x_train", "y_test")], ids=["plain", "gzipped", "mixed"])
def test_reads_the_four_files_as_mnist_npz(tmp_path, gzipped):
    write_idx(tmp_path, gzipped)
    (x_train, y_train), (x_test, y_test), path, found = lenet.load_mnist(tmp_path)
    raw = fixture_arrays()
    assert path == tmp_path and found == f"MNIST's original files found in {tmp_path}"
    assert x_train.shape == (1000, 1, 28, 28) and x_train.dtype == np.float32 and y_test.dtype == np.int32
    assert np.array_equal(x_train[:, 0] * 255, raw["x_train"]) and np.array_equal(x_test[:, 0] * 255, raw["x_test"])
    assert np.array_equal(y_train, raw["y_train"]) and np.array_equal(y_test, raw["y_test"])


def test_mnist_npz_comes_first(tmp_path):
    labels = fixture_arrays()["y_train"]
    write_idx(tmp_path, y_train=idx_bytes((labels + 1) % 10))
    np.savez(tmp_path / "mnist.npz", **fixture_arrays())
    (_, y_train), _, path, found = lenet.load_mnist(tmp_path)
    assert np.array_equal(y_train, labels) and found.startswith("File mnist.npz already exist")


def test_a_missing_file_is_named(tmp_path):
    write_idx(tmp_path, y_test=None)
    with pytest.raises(lenet.InputError, match=f"^{tmp_path} lacks t10k-labels-idx1-ubyte \\(or .gz\\)"):
        lenet.load_mnist(tmp_path, sources=[])


images = fixture_arrays()["x_train"]
GOOD = idx_bytes(images)


@pytest.mark.parametrize("content, gz, message", [
    (b"", False, "is not an IDX file"),
    (b"\x1f\x8b" + GOOD[:40], False, "is not a readable gzip file"),
    (gzip.compress(GOOD)[:-100], False, "is not a readable gzip file"),
    (b"\1\0" + GOOD[2:], False, "is not an IDX file (its first two bytes are not zero)"),
    (GOOD[:2] + b"\x0d" + GOOD[3:], False, "holds type 0x0d in 3 axes, expected unsigned bytes (0x08) in 3"),
    (idx_bytes(images[:, :, :, None]), False, "holds type 0x08 in 4 axes"),
    (GOOD[:10], False, "is truncated: 10 bytes, its header alone takes 16"),
    (GOOD[:-1], False, f"has {len(GOOD) - 1} bytes, its header (1000, 28, 28) says {len(GOOD)} (truncated)"),
    (GOOD[:-1], True, f"has {len(GOOD) - 1} bytes, its header (1000, 28, 28) says {len(GOOD)} (truncated)"),
    (GOOD + b"\0", False, f"has {len(GOOD) + 1} bytes, its header (1000, 28, 28) says {len(GOOD)}"),
])
def test_a_bad_file_is_named_with_what_is_wrong(tmp_path, content, gz, message):
    paths = write_idx(tmp_path, ("x_train",) if gz else (), x_train=content)
    with pytest.raises(lenet.InputError) as error:
        lenet.load_mnist(tmp_path, sources=[])
    assert str(error.value).startswith(f"{paths['x_train']} {message}"), error.value


@pytest.mark.parametrize("changes, message", [
    (dict(y_train=idx_bytes(np.zeros(999, np.uint8))), "y_train is uint8 (999,), expected integers (1000,)"),
    (dict(x_test=idx_bytes(np.zeros((200, 32, 32), np.uint8))), "x_test is uint8 (200, 32, 32), expected uint8 (N, 28, 28)"),
    (dict(y_test=idx_bytes(np.full(200, 10, np.uint8))), "y_test has labels from 10 to 10, expected 0 to 9"),
])
def test_files_that_do_not_fit_together(tmp_path, changes, message):
    write_idx(tmp_path, **changes)
    with pytest.raises(lenet.InputError) as error:
        lenet.load_mnist(tmp_path, sources=[])
    assert str(error.value) == f"{tmp_path}: {message}"


def test_a_script_reads_them_and_names_a_bad_one(tmp_path, trained):
    folder, train_stdout = trained  # trained on the fixture's mnist.npz, its test digits counted at the end
    model = folder / "lenet_models_1"
    write_idx(tmp_path / "good", NAMES)
    result = run_script("lenet_eval.py", "--data-dir", tmp_path / "good", "--model-dir", model, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"MNIST's original files found in {tmp_path / 'good'}" in result.stdout
    accuracy = re.search(r"test accuracy ([0-9.]+%)", train_stdout.splitlines()[-2]).group(1)
    assert f"accuracy: {accuracy}" in result.stdout.splitlines()
    paths = write_idx(tmp_path / "bad", y_test=idx_bytes(fixture_arrays()["y_test"])[:-3])
    result = run_script("lenet_eval.py", "--data-dir", tmp_path / "bad", "--model-dir", model, cwd=tmp_path)
    assert_fails_cleanly(result, f"{paths['y_test']} has {8 + 200 - 3} bytes, its header (200,) says {8 + 200} (truncated)")
