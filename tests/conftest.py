"""Shared test helpers: the committed digit fixture, running the scripts, and one model trained on the fixture."""
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "data" / "mnist.npz"
# 6 epochs of 20 steps: accuracy still swings by several points from epoch to epoch before the fifth.
TRAIN_FLAGS = ["--epochs", 6, "--batch-size", 50]
# The environment of the processes the tests start: as pytest got it, before lenet's import sets OneFlow's
# variables in this process, so that the scripts make their own settings; on the CPU whatever this machine has.
CLEAN_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
sys.path.insert(0, str(ROOT))
import lenet  # noqa: E402  (from ROOT)


def run_script(script, *args, cwd, env=None):
    """Run one of the project's scripts as a user would; return the CompletedProcess (text, both streams)."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env={**CLEAN_ENV, **(env or {})},
                          capture_output=True, text=True, timeout=600)


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
