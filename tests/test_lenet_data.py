"""lenet's MNIST data: the file, each kind of bad file, the download from either address, and batching."""
import os
import socket

import numpy as np
import pytest

import lenet
import safe_files
from conftest import FIXTURE, assert_fails_cleanly, fixture_arrays, run_script
from test_safe_files import FIXTURE_SHA256, FIXTURE_SIZE, server, serving  # noqa: F401  (server: a fixture)


def test_loads_scaled_images_and_labels(data_dir):
    (x_train, y_train), (x_test, y_test), path, found = lenet.load_mnist(data_dir)
    raw = fixture_arrays()
    assert found and path == str(data_dir / "mnist.npz")
    assert x_train.shape == (1000, 1, 28, 28) and x_train.dtype == np.float32
    assert x_test.shape == (200, 1, 28, 28) and y_test.dtype == np.int32
    assert np.array_equal(x_train[:, 0] * 255, raw["x_train"])  # exactly pixel / 255
    assert x_train.min() == 0 and x_train.max() == 1
    assert np.array_equal(y_train, raw["y_train"])
    assert np.bincount(y_test).tolist() == [20] * 10


def write_npz(folder, **changes):
    """Write folder/mnist.npz: the fixture's arrays with some replaced (None removes one)."""
    arrays = {**fixture_arrays(), **changes}
    np.savez(folder / "mnist.npz", **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize("changes, message", [
    (dict(y_test=None), "lacks the arrays y_test"),
    (dict(x_train=np.zeros((10, 28, 28), np.float32)), "x_train is float32 (10, 28, 28), expected uint8 (N, 28, 28)"),
    (dict(x_test=np.zeros((200, 32, 32), np.uint8)), "x_test is uint8 (200, 32, 32)"),
    (dict(y_train=np.zeros(999, np.uint8)), "y_train is uint8 (999,), expected integers (1000,)"),
    (dict(y_train=np.zeros(1000, np.float32)), "y_train is float32 (1000,)"),
    (dict(y_test=np.full(200, 10, np.int64)), "y_test has labels from 10 to 10, expected 0 to 9"),
    (dict(y_test=np.full(200, -1, np.int64)), "y_test has labels from -1 to -1"),
])
def test_names_what_is_wrong_in_a_bad_file(tmp_path, changes, message):
    write_npz(tmp_path, **changes)
    with pytest.raises(lenet.InputError, match=str(tmp_path / "mnist.npz")) as error:
        lenet.load_mnist(tmp_path)
    assert message in str(error.value)


@pytest.mark.parametrize("content", [b"", b"not a zip file", FIXTURE.read_bytes()[:5000]])
def test_corrupt_or_truncated_file(tmp_path, content):
    (tmp_path / "mnist.npz").write_bytes(content)
    with pytest.raises(lenet.InputError, match="is not a readable .npz file"):
        lenet.load_mnist(tmp_path)


def test_downloads_a_missing_file(tmp_path, server):
    train, _, path, found = lenet.load_mnist(tmp_path / "new", sources=[(f"{server}/mnist.npz", FIXTURE_SHA256)])
    assert not found and len(train[0]) == 1000
    assert path == str(tmp_path / "new" / "mnist.npz") and os.listdir(tmp_path / "new") == ["mnist.npz"]


@pytest.fixture
def servers():
    """Two servers on 127.0.0.1, for the two addresses; yields their base URLs."""
    with serving() as first, serving() as second:
        yield first, second


def test_the_second_address_serves_when_the_first_fails(tmp_path, servers):
    sources = [(f"{servers[0]}/missing.npz", FIXTURE_SHA256), (f"{servers[1]}/mnist.npz", FIXTURE_SHA256)]
    train, _, _, found = lenet.load_mnist(tmp_path, sources=sources)
    assert not found and len(train[0]) == 1000
    assert os.listdir(tmp_path) == ["mnist.npz"]


def test_each_file_is_checked_against_its_own_hash(tmp_path, servers):
    # The first address serves a file that is not its own (the hash differs): refused, then the second is used.
    sources = [(f"{servers[0]}/mnist.npz", "0" * 64), (f"{servers[1]}/mnist.npz", FIXTURE_SHA256)]
    lenet.load_mnist(tmp_path, sources=sources)
    assert os.listdir(tmp_path) == ["mnist.npz"]
    with pytest.raises(lenet.InputError, match=f"could not download {servers[0]}/mnist.npz .SHA-256"):
        lenet.load_mnist(tmp_path / "other", sources=sources[:1])


def test_when_both_addresses_fail_the_error_names_both(tmp_path, servers):
    first, second = f"{servers[0]}/missing.npz", f"{servers[1]}/cut.npz"
    with pytest.raises(lenet.InputError) as error:
        lenet.load_mnist(tmp_path, sources=[(first, FIXTURE_SHA256), (second, FIXTURE_SHA256)])
    assert str(error.value) == (f"could not download {first} (HTTP Error 404: Not Found) or {second} (got "
                                f"{FIXTURE_SIZE // 2} of {FIXTURE_SIZE} bytes); download it by hand and put it "
                                f"at {tmp_path / 'mnist.npz'}")
    assert list(tmp_path.iterdir()) == []


TUTORIAL = "https://oneflow-public.oss-cn-beijing.aliyuncs.com/datasets/mnist.npz"
KERAS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"


def test_by_default_the_tutorials_file_is_tried_first_then_keras_each_against_its_own_hash(tmp_path, servers, monkeypatch):
    # The two real addresses answered by the local servers, with the fixture: a file that is neither of theirs.
    # Their hashes are the ones their own loaders check (OneFlow's old flow.data.load_mnist, Keras's load_data).
    local = {TUTORIAL: f"{servers[0]}/mnist.npz", KERAS: f"{servers[1]}/mnist.npz"}
    urlopen, asked = safe_files.urllib.request.urlopen, []
    monkeypatch.setattr(safe_files.urllib.request, "urlopen",
                        lambda url, timeout: asked.append(url) or urlopen(local[url], timeout=timeout))
    with pytest.raises(lenet.InputError) as error:
        lenet.load_mnist(tmp_path)
    assert asked == [TUTORIAL, KERAS]
    assert str(error.value) == (
        f"could not download {TUTORIAL} (SHA-256 {FIXTURE_SHA256} is not the expected "
        f"63d4344077849053dc3036b247fa012b2b381de53fd055a66b539dffd76cf08e) or {KERAS} (SHA-256 {FIXTURE_SHA256} is "
        f"not the expected 731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1); download it by hand and "
        f"put it at {tmp_path / 'mnist.npz'}")
    assert list(tmp_path.iterdir()) == []


def test_no_data_and_no_network_ends_training_with_one_line_naming_both_addresses(tmp_path):
    # No network: every connection refused, through a proxy address where nothing listens (a socket bound, not
    # listening, for the test's length), which urllib takes from the environment.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result = run_script("lenet_train.py", cwd=tmp_path, env={"https_proxy": proxy, "http_proxy": proxy})
    refused = "<urlopen error [Errno 111] Connection refused>"
    assert_fails_cleanly(result, f"could not download {TUTORIAL} ({refused}) or {KERAS} ({refused}); download it "
                                 f"by hand and put it at ./mnist.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (FIXTURE.read_bytes()[:3000], "./mnist.npz is not a readable .npz file"),
    (b"\x00" * 4000, "./mnist.npz is not a readable .npz file"),
    ("y_train", "./mnist.npz lacks the arrays y_train"),
    ("x_test", "./mnist.npz: x_test is float64 (200, 28, 28), expected uint8 (N, 28, 28)"),
    ("y_test", "./mnist.npz: y_test has labels from 1 to 10, expected 0 to 9"),
])
def test_bad_data_file(tmp_path, content, message):
    if isinstance(content, bytes):
        (tmp_path / "mnist.npz").write_bytes(content)
    else:
        arrays = fixture_arrays()
        changes = {"y_train": None, "x_test": arrays["x_test"] / 255.0, "y_test": arrays["y_test"] + 1}
        arrays[content] = changes[content]
        np.savez(tmp_path / "mnist.npz", **{k: v for k, v in arrays.items() if v is not None})
    before = (tmp_path / "mnist.npz").read_bytes()
    assert_fails_cleanly(run_script("lenet_train.py", "--epochs", 1, cwd=tmp_path), message)
    assert os.listdir(tmp_path) == ["mnist.npz"] and (tmp_path / "mnist.npz").read_bytes() == before


def test_batches_of_a_size_that_does_not_divide_the_set():
    images, labels = np.arange(10) * 10, np.arange(10)
    batches = list(lenet.batches(4, images, labels))
    assert [count for count, _, _ in batches] == [4, 4, 2]
    assert all(len(x) == 4 and len(y) == 4 for _, x, y in batches)
    assert batches[2][2].tolist() == [8, 9, 8, 9]  # padded by repeating the real items
    real = np.concatenate([y[:count] for count, _, y in batches])
    assert real.tolist() == list(range(10))  # each item once, test order kept
    assert all(np.array_equal(x, y * 10) for _, x, y in batches)


def test_shuffles_each_epoch_from_the_seed():
    labels = np.arange(100)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    epoch = lambda rng: np.concatenate([y for _, y in lenet.batches(30, labels, rng=rng)])  # noqa: E731
    first, second = epoch(rng_a), epoch(rng_a)
    assert np.array_equal(first, epoch(rng_b)) and not np.array_equal(first, second)
    assert sorted(first[:100]) == list(range(100))
