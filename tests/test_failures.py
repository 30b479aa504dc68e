"""The table of failures (README "When things go wrong"): each bad input gives exit status 1, one line naming it,
no traceback, and nothing on disk lost or left half-written."""
import contextlib
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lenet
from conftest import CLEAN_ENV, FIXTURE, ROOT, fixture_arrays, initialised, logits, run_script
from lenet import flow

CPU = flow.device("cpu")

def assert_fails_cleanly(result, message):
    """Exit status 1, the last stderr line `error: ...` containing message, and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert message in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


@pytest.fixture
def saved(tmp_path):
    """A folder with the fixture's data and a model (seed 1) saved at ./model; returns the folder."""
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
    return tmp_path


def first_tensor_dir(model_dir):
    return sorted(p for p in model_dir.iterdir() if p.name.startswith("tensor_"))[0]


# Model folder rows: lenet_eval.py on a broken ./model.

def empty(folder):
    (folder / "model").mkdir()


def from_another_network(folder):
    other = flow.nn.Linear(3, 4)
    flow.save({"conv1.weight": other.weight, "fc.bias": other.bias}, str(folder / "model"))


def truncated_out(folder):
    out = first_tensor_dir(folder / "model") / "out"
    out.write_bytes(out.read_bytes()[:100])


def meta_contradicts_out(folder):
    meta = first_tensor_dir(folder / "model") / "meta"
    meta.write_text(meta.read_text().replace("dim: 32", "dim: 64"))


def legacy_without_an_out(folder):
    (folder / "model").mkdir()
    (folder / "model" / "snapshot_done").touch()


@pytest.mark.parametrize("breaks, message", [
    (None, "no model at model (run lenet_train.py first)"),
    (empty, "no model at model: the folder has neither pickled_data nor snapshot_done"),
    (from_another_network, "cannot load the model at model (Error(s) in loading state_dict for LeNet:"),
    (truncated_out, "out holds 100 bytes, but"),
    (meta_contradicts_out, "/meta says oneflow.float32 (64"),
    (legacy_without_an_out, "cannot load the model at model: model/conv1-weight/out is missing"),
])
def test_broken_model_folder(tmp_path, breaks, message):
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    if breaks is not None:
        if breaks not in (empty, from_another_network, legacy_without_an_out):
            lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
        breaks(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert_fails_cleanly(run_script("lenet_eval.py", "--model-dir", "model", cwd=tmp_path), message)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_unreadable_model(saved, monkeypatch):
    pickled = saved / "model" / "pickled_data"
    if os.geteuid() != 0:
        pickled.chmod(0)
    else:  # root reads any file: refuse it the way the kernel would
        read_bytes = Path.read_bytes
        monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(
            PermissionError(errno.EACCES, "Permission denied", str(self))) if self == pickled else read_bytes(self))
    with pytest.raises(lenet.InputError, match=f"cannot load the model at {saved / 'model'} .*Permission denied"):
        lenet.CheckPoint(lenet.LeNet()).load(saved / "model")


# Data rows: lenet_train.py with a bad mnist.npz, or none and the download failing.

def run_train_offline(url, *args, cwd):
    """lenet_train.main() with MNIST_SOURCES pointed at url (tests never reach the real ones)."""
    code = "import sys, lenet, lenet_train; lenet.MNIST_SOURCES = [(sys.argv[1], '0' * 64)]; lenet_train.main(sys.argv[2:])"
    return subprocess.run([sys.executable, "-c", code, url, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**CLEAN_ENV, "PYTHONPATH": str(ROOT)})


def test_missing_data_offline(tmp_path):
    result = run_train_offline("http://127.0.0.1:9/mnist.npz", "--epochs", 1, cwd=tmp_path)
    assert_fails_cleanly(result, "could not download http://127.0.0.1:9/mnist.npz (<urlopen error [Errno 111] "
                                 "Connection refused>); download it by hand and put it at ./mnist.npz")
    assert os.listdir(tmp_path) == []


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


# Save rows: the target is a file, its parent is read-only, the disk is full.

def test_save_target_is_a_file(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    (tmp_path / "model").write_text("precious")
    result = run_script("lenet_train.py", "--max-steps", 1, "--model-dir", "model", cwd=tmp_path)
    assert_fails_cleanly(result, "cannot save the model to model: it is a file, not a folder")
    assert (tmp_path / "model").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["mnist.npz", "model"]


@contextlib.contextmanager
def mounted(*commands):
    """Run mount commands (root only), yield, and unmount; skip where this machine refuses to mount."""
    target = commands[0][-1]
    try:
        for command in commands:
            subprocess.run(["mount", *command], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount here ({e})")
    try:
        yield
    finally:
        subprocess.run(["umount", target], check=True)


@contextlib.contextmanager
def read_only(folder):
    """Make folder read-only for this process, as root too (a read-only bind mount)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield
        folder.chmod(0o755)
        return
    with mounted(["--bind", str(folder), str(folder)], ["-o", "remount,ro,bind", str(folder)]):
        yield


def test_save_into_a_read_only_folder(saved):
    before = logits(lenet.load_model(saved / "model", CPU))
    with read_only(saved):
        with pytest.raises(lenet.InputError, match=f"cannot save the model to {saved / 'model'} \\(Read-only file system|Permission denied"):
            lenet.CheckPoint(initialised(2)).save(saved / "model")
    assert np.array_equal(logits(lenet.load_model(saved / "model", CPU)), before)
    assert sorted(os.listdir(saved)) == ["mnist.npz", "model"]


def test_save_onto_a_full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    with mounted(["-t", "tmpfs", "-o", "size=10m", "tmpfs", str(disk)]):
        lenet.CheckPoint(initialised(1)).save(disk / "model")  # 6.7 MB: a second one does not fit
        before = logits(lenet.load_model(disk / "model", CPU))
        with pytest.raises(lenet.InputError, match=f"cannot save the model to {disk / 'model'} \\(No space left on device\\)"):
            lenet.CheckPoint(initialised(2)).save(disk / "model")
        assert np.array_equal(logits(lenet.load_model(disk / "model", CPU)), before)
        assert os.listdir(disk) == ["model"]  # the half-written new folder is gone


SAVE_LOOP = """
import sys, lenet
models = [lenet.LeNet(), lenet.LeNet()]
for seed, model in enumerate(models, 1):
    lenet.CheckPoint(model).init(seed)
print("ready", flush=True)
for i in range(10 ** 6):
    lenet.CheckPoint(models[i % 2]).save(sys.argv[1])
"""


def test_sigkill_while_saving_leaves_a_model_that_loads(tmp_path):
    expected = [logits(initialised(seed)) for seed in (1, 2)]
    lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
    outcomes = set()
    for delay in np.linspace(0.0, 0.6, 12):  # one save takes roughly 0.1 s here: kills land all through it
        process = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(tmp_path / "model")], cwd=tmp_path,
                                   stdout=subprocess.PIPE, env={**CLEAN_ENV, "PYTHONPATH": str(ROOT)})
        assert process.stdout.readline() == b"ready\n"
        time.sleep(delay)
        process.kill()
        process.wait()
        found = logits(lenet.load_model(tmp_path / "model", CPU))
        outcomes.add(next(i for i, e in enumerate(expected) if np.array_equal(found, e)))
    assert outcomes == {0, 1}  # both the old and the new model were seen: the kills did land mid-loop
