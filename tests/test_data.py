"""MNIST loading: the file, each kind of bad file, the download (served from this machine), and batching."""
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import lenet
from conftest import FIXTURE, fixture_arrays


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


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 that serves the fixture at /mnist.npz (and 404 elsewhere); yields its base URL."""
    body = FIXTURE.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/mnist.npz":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/cut.npz":  # announces the whole file, then hangs up midway
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2])
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


FIXTURE_SHA256 = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
FIXTURE_SIZE = FIXTURE.stat().st_size


def test_downloads_a_missing_file(tmp_path, server):
    train, _, path, found = lenet.load_mnist(tmp_path / "new", sources=[(f"{server}/mnist.npz", FIXTURE_SHA256)])
    assert not found and len(train[0]) == 1000
    assert Path(path).read_bytes() == FIXTURE.read_bytes()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["mnist.npz"]


@pytest.mark.parametrize("name, sha256, reason", [
    ("mnist.npz", "0" * 64, f"SHA-256 {FIXTURE_SHA256} is not the expected {'0' * 64}"),
    ("missing.npz", FIXTURE_SHA256, "404"),
    ("cut.npz", FIXTURE_SHA256, f"got {FIXTURE_SIZE // 2} of {FIXTURE_SIZE} bytes"),
])
def test_failed_download_leaves_nothing(tmp_path, server, name, sha256, reason):
    url = f"{server}/{name}"
    with pytest.raises(lenet.InputError) as error:
        lenet.load_mnist(tmp_path, sources=[(url, sha256)])
    assert str(error.value).startswith(f"could not download {url} (")
    assert reason in str(error.value)
    assert str(error.value).endswith(f"download it by hand and put it at {tmp_path / 'mnist.npz'}")
    assert list(tmp_path.iterdir()) == []


def test_offline(tmp_path):
    closed_port = "http://127.0.0.1:9/mnist.npz"  # the discard port: nothing listens here
    with pytest.raises(lenet.InputError, match="could not download http://127.0.0.1:9/mnist.npz .*Connection refused"):
        lenet.load_mnist(tmp_path, sources=[(closed_port, "0" * 64)])
    assert list(tmp_path.iterdir()) == []


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
