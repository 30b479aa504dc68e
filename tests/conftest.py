"""Shared test helpers: the committed digit fixture, running the scripts and waiting for them within bounds, and
one model trained on the fixture."""
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "data" / "mnist.npz"
# 12 epochs of 20 steps. Over seeds 0 to 5 the test accuracy came to 88.0-93.0% (seed 0, the tests': 88.5%);
# after 6 epochs it was still 78.0-91.5%. The tests' thresholds come from that spread, which stands in for
# another CPU's rounding as well: a different rounding sends training on another path, as a different seed does.
TRAIN_FLAGS = ["--epochs", 12, "--batch-size", 50]
MNIST_ACCURACY = 83  # percent the fixture model must pass on the fixture's test digits: the lowest seen, 88.0, less 5
# Seconds that all the waits of one test (its fixtures' included) may take together: less than pytest.ini's
# timeout for a whole test, so that a wait that runs out fails the test and still ends what it started.
BUDGET = 840
_test_began = [time.monotonic()]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Each test's budget starts before its fixtures are made."""
    _test_began[0] = time.monotonic()


def left(timeout=None):
    """Seconds a wait may take: what is left of the running test's BUDGET (at least 1), or timeout if that is less."""
    remaining = max(1.0, BUDGET - (time.monotonic() - _test_began[0]))
    return remaining if timeout is None else min(timeout, remaining)


# What a developer may have exported that changes how OneFlow or the scripts run: the tests run the scripts as a
# user who set nothing does. Taken out of this process's environment before `import lenet` (which reads some of
# them), so out of the processes it starts too. A proxy too: it would carry the tests' requests to their own servers
# (127.0.0.1) and the download tests' elsewhere.
SETTINGS = ("LENET_", "ONEFLOW_", "GLOG_", "MKL_", "OMP_", "KMP_", "OPENBLAS_", "GRADIO_", "PYTHONFAULTHANDLER")
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
for name in [name for name in os.environ if name.startswith(SETTINGS) or name.lower() in PROXIES]:
    del os.environ[name]
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio_client's telemetry, on unless this says "False"
# The environment of the processes the tests start: this one as cleaned above, before lenet's import sets
# OneFlow's variables in this process, so that the scripts make their own settings; on the CPU on any machine.
CLEAN_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
sys.path.insert(0, str(ROOT))
import lenet  # noqa: E402  (from ROOT)

pytest_plugins = ["no_skips"]  # a skip fails the run


@contextlib.contextmanager
def started(command, **popen_kwargs):
    """subprocess.Popen(command, **popen_kwargs) in a session of its own; when the block ends, however it ends, the
    whole session is killed (its children too: the launcher's processes, the scripts' helpers) and reaped."""
    process = subprocess.Popen(command, start_new_session=True, **popen_kwargs)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class Lines:
    """The lines of a process's stream, read by a thread of their own as they come, so that every wait for one is
    bounded: wait_for() a line, or text() once the stream has ended."""

    def __init__(self, stream):
        self.lines, self.ended, self.changed = [], False, threading.Condition()
        threading.Thread(target=self.read, args=(stream,), daemon=True).start()

    def read(self, stream):
        for line in stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def until(self, find, what, timeout=None):
        """find()'s value once it is not None (find is called under the lock); fails, saying there was no `what`, if
        the stream ends first or time runs out."""
        timeout = left(timeout)
        with self.changed:
            self.changed.wait_for(lambda: find() is not None or self.ended, timeout)
            found = find()
            if found is None:
                pytest.fail(f"no {what} ({'the stream ended' if self.ended else f'{timeout:.0f} s passed'}):\n"
                            f"{''.join(self.lines)}")
            return found

    def wait_for(self, line, count=1, timeout=None):
        """Wait until the whole line `line` has come count times; fail if the stream ends first or time runs out."""
        self.until(lambda: True if self.lines.count(line + "\n") >= count else None, repr(line), timeout)

    def line(self, index, timeout=None):
        """The index-th line (from 0, without its newline), once read; fails if the stream ends first or time runs out."""
        return self.until(lambda: self.lines[index].rstrip("\n") if len(self.lines) > index else None,
                          f"line {index + 1}", timeout)

    def starting(self, prefix, timeout=None):
        """The first line that starts with prefix (without its newline), once read; fails if the stream ends first or
        time runs out."""
        return self.until(lambda: next((line.rstrip("\n") for line in self.lines if line.startswith(prefix)), None),
                          f"line starting {prefix!r}", timeout)

    def text(self, timeout=None):
        """Everything read, once the stream has ended (its process has exited)."""
        timeout = left(timeout)
        with self.changed:
            if not self.changed.wait_for(lambda: self.ended, timeout):
                pytest.fail(f"the stream did not end in {timeout:.0f} s:\n{''.join(self.lines)}")
            return "".join(self.lines)


def wait(process, timeout=None):
    """process's exit status, once it has exited; fails if that takes more than timeout seconds."""
    timeout = left(timeout)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args[:3]}... still running after {timeout:.0f} s")


def run(command, cwd, env=None, timeout=None):
    """Run command (its parts made str) to its end, killed with its children after timeout seconds; return the
    CompletedProcess."""
    command, timeout = [str(part) for part in command], left(timeout)
    with started(command, cwd=cwd, env={**CLEAN_ENV, **(env or {})}, stdin=subprocess.DEVNULL,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(map(str, command[:4]))}... still running after {timeout:.0f} s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_script(script, *args, cwd, env=None):
    """Run one of the project's scripts as a user would; return the CompletedProcess (text, both streams)."""
    return run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env)


def launcher(script, *args, processes=2):
    """The command that runs script (a path) with args under `python -m oneflow.distributed.launch`, on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", str(processes), "--master_port",
            str(port), str(script), *map(str, args)]


def launch(script, *args, cwd, processes=2):
    """Run the project's script under OneFlow's launcher; return the CompletedProcess. Its processes are ended
    with the launcher, whatever happens."""
    for _ in range(5):  # a free port is only free when asked: another run of the tests may take it first
        result = run(launcher(ROOT / script, *args, processes=processes), cwd=cwd)
        if "Address already in use" not in result.stderr:
            return result
    return result


@pytest.fixture
def data_dir(tmp_path):
    """A folder holding a copy of the 1,200-digit fixture as mnist.npz."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "mnist.npz")
    return folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Train through lenet_train.py on the fixture once: (folder with mnist.npz and lenet_models_1, its output)."""
    folder = tmp_path_factory.mktemp("trained")
    shutil.copy(FIXTURE, folder / "mnist.npz")
    result = run_script("lenet_train.py", *TRAIN_FLAGS, cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result.stdout


# Fixtures that many tests share a folder of, and where in their value that folder is: tests run in them and read
# them, and none may write there, or what the next test reads would depend on the order the tests ran in.
SHARED_FOLDERS = {"trained": 0, "uninterrupted": 1}


@contextlib.contextmanager
def unchanged(folder):
    """Fail (AssertionError) if anything under folder is added, removed or written while the block runs."""
    def tree():
        return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}
    before = tree()
    yield
    after = tree()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test changed {folder}, which other tests read: {', '.join(changed)}"


@pytest.fixture(autouse=True)
def shared_folders_unchanged(request):
    """Each test leaves the shared folders (SHARED_FOLDERS) it has as it found them, and the repository's top folder
    with the same names (pytest's and hypothesis's caches aside): a test that writes there errors."""
    def top():
        return set(os.listdir(ROOT)) - {".pytest_cache", ".hypothesis"}
    before = top()
    with contextlib.ExitStack() as stack:
        for name, index in SHARED_FOLDERS.items():
            if name in request.fixturenames:
                stack.enter_context(unchanged(request.getfixturevalue(name)[index]))
        yield
    assert top() == before, f"a test made or removed in the repository: {', '.join(sorted(top() ^ before))}"


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """Export the model of `trained` through lenet_export.py once: (the ONNX file, its output)."""
    folder, _ = trained
    output = tmp_path_factory.mktemp("exported") / "lenet.onnx"
    result = run_script("lenet_export.py", "--output", output, cwd=folder)
    assert result.returncode == 0, result.stderr
    return output, result.stdout


def fixture_arrays():
    """The fixture's arrays as stored: uint8 images, uint8 labels."""
    with np.load(FIXTURE) as npz:
        return {key: npz[key] for key in npz.files}


IMAGES = np.random.default_rng(0).random((8, 1, 28, 28)).astype(np.float32)  # inputs for comparing models


def initialised(seed):
    """A LeNet with fresh weights from seed."""
    model = lenet.LeNet()
    lenet.CheckPoint(model).init(seed)
    return model


def logits(model):
    """The model's logits (8, 10) of IMAGES."""
    return model(lenet.flow.tensor(IMAGES)).numpy()


def weights(model_dir):
    """{name: array} of the model saved in model_dir."""
    model = lenet.load_model(model_dir, lenet.flow.device("cpu"))
    return {name: p.numpy() for name, p in model.state_dict().items()}


def assert_fails_cleanly(result, message):
    """Exit status 1, the last stderr line `error: ...` containing message, and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert message in result.stderr.splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr


def in_mount_namespace(mounts, command):
    """command (a list) made to run in a mount namespace of its own, after the mounts (each a list of mount's
    arguments): the mounts are seen by it and its children alone, and end with them, however they end. As root,
    or in a user namespace of its own where this is not root; skips the test where this machine allows neither."""
    prefix = ["unshare", "--mount", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--user", "--map-root-user"])
    try:
        refused = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=left()).returncode
    except OSError as e:
        refused = e
    if refused:
        pytest.skip(f"unshare cannot make a mount namespace here ({refused})")
    script = " && ".join(shlex.join(["mount", *map(str, mount)]) for mount in mounts) + ' && exec "$@"'
    return [*prefix, "sh", "-c", script, "sh", *map(str, command)]


def read_only_mounts(folder):
    """The mounts that make folder read-only, for in_mount_namespace: a bind mount of itself, remounted read-only."""
    return [["--bind", folder, folder], ["-o", "remount,ro,bind", folder]]


def numpy_lenet(x, w, dropout_mask=1.0):
    """An independent NumPy forward pass of the tutorial's LeNet; x (N, 1, 28, 28), w a dict of arrays."""
    def conv_same(x, weight, bias):  # 5x5, stride 1, 2 pixels of zero padding
        n, c, h, wd = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        patches = np.stack([padded[:, :, i:i + h, j:j + wd] for i in range(5) for j in range(5)], axis=2)
        # patches (N, C, 25, H, W); weight (O, C, 5, 5) -> (O, C, 25)
        out = np.einsum("ncphw,ocp->nohw", patches, weight.reshape(weight.shape[0], c, 25))
        return out + bias[None, :, None, None]

    def pool(x):  # 2x2, stride 2
        n, c, h, wd = x.shape
        return x.reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = pool(relu(conv_same(x, w["conv1.weight"], w["conv1.bias"])))
    x = pool(relu(conv_same(x, w["conv2.weight"], w["conv2.bias"])))
    x = relu(x.reshape(len(x), -1) @ w["dense1.weight"].T + w["dense1.bias"]) * dropout_mask
    return x @ w["dense2.weight"].T + w["dense2.bias"]


def numpy_weights(model_dir):
    """{name: float64 array} of the model saved in model_dir, as OneFlow's own flow.load reads it (not lenet's code)."""
    return {name: value.numpy().astype(np.float64) for name, value in lenet.flow.load(str(model_dir)).items()}


def numpy_probabilities(x, w):
    """The softmax (N, 10) of numpy_lenet(x, w)'s logits, by its definition."""
    logits = numpy_lenet(np.asarray(x, np.float64), w)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def numpy_accuracy_line(model_dir):
    """The line lenet_eval.py must print for the model in model_dir on the fixture, recounted with NumPy alone: the
    raw test digits scaled as the tutorial did (pixel / 255), numpy_lenet on numpy_weights, argmax against the labels."""
    raw = fixture_arrays()
    logits = numpy_lenet(raw["x_test"][:, None] / 255.0, numpy_weights(model_dir))
    assert logits.shape == (200, 10)
    return f"accuracy: {100 * np.mean(logits.argmax(1) == raw['y_test']):.1f}%"
