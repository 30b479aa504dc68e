"""Resumable training: a checkpoint every epoch, --resume equal to an uninterrupted run, signals, a diverging loss."""
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import lenet
from conftest import ROOT, fixture_arrays, run_script, weights

TRAIN = ["--epochs", 4, "--batch-size", 50, "--log-interval", 2]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A folder with an mnist.npz of 300 training and 100 test digits from the fixture: 6 steps an epoch."""
    folder = tmp_path_factory.mktemp("small")
    raw = fixture_arrays()
    train, test = np.arange(0, 1000, 10)[:, None] + np.arange(3), np.arange(0, 200, 2)  # 30 and 10 of each digit
    np.savez(folder / "mnist.npz", x_train=raw["x_train"][train.ravel()], y_train=raw["y_train"][train.ravel()],
             x_test=raw["x_test"][test], y_test=raw["y_test"][test])
    return folder


@pytest.fixture(scope="module")
def uninterrupted(small_data):
    """The weights after 4 epochs in one run."""
    result = run_script("lenet_train.py", *TRAIN, "--data-dir", small_data, "--model-dir", "whole", cwd=small_data)
    assert result.returncode == 0, result.stderr
    return weights(small_data / "whole")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name  # CPU kernels are deterministic: bit for bit


def test_resume_after_two_epochs_equals_an_uninterrupted_run(small_data, uninterrupted):
    flags = [*TRAIN, "--data-dir", small_data, "--model-dir", "halves"]
    first = run_script("lenet_train.py", *flags[:1], 2, *flags[2:], cwd=small_data)
    assert first.returncode == 0, first.stderr
    second = run_script("lenet_train.py", *flags, "--resume", cwd=small_data)
    assert second.returncode == 0, second.stderr
    assert [line.split(" loss")[0] for line in second.stdout.splitlines() if "test accuracy" in line] == [
        "epoch 3", "epoch 4"]
    assert_same_weights(weights(small_data / "halves"), uninterrupted)
    again = run_script("lenet_train.py", *flags, "--resume", cwd=small_data)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "halves is already trained for 4 epochs"


def start_training(folder, model_dir):
    """Start lenet_train.py unbuffered; return the process once it has printed the end of epoch 1."""
    process = subprocess.Popen([sys.executable, "-u", str(ROOT / "lenet_train.py"), *map(str, TRAIN),
                                "--model-dir", model_dir], cwd=folder, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in process.stdout:
        if line.startswith("epoch 1 loss"):
            return process
    raise AssertionError(process.stderr.read())


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_keeps_the_last_epoch_and_resume_finishes_the_run(small_data, uninterrupted, signum, status):
    model_dir = f"stopped-{signum}"
    process = start_training(small_data, model_dir)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status
    message = stderr.splitlines()[-1]
    assert message.startswith(f"interrupted by {signal.Signals(signum).name} at epoch ")
    assert message.endswith(f"the last complete epoch is saved in {model_dir}; continue with the same command and --resume")
    assert "Traceback" not in stderr
    assert (small_data / model_dir / "training_state").is_dir()
    assert not [name for name in os.listdir(small_data) if name.endswith(".saving")]
    resumed = run_script("lenet_train.py", *TRAIN, "--model-dir", model_dir, "--resume", cwd=small_data)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(small_data / model_dir), uninterrupted)


def test_a_second_ctrl_c_exits_at_once_and_leaves_a_model_that_loads(small_data):
    process = start_training(small_data, "twice")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    weights(small_data / "twice")  # loads: epoch 1 or later


def test_resume_refuses_other_flags_or_no_state(small_data, uninterrupted):
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "whole", "--resume", "--batch-size", 30, cwd=small_data)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: --batch-size 30 differs from the 50 that whole was trained with"
    model = lenet.LeNet()
    lenet.CheckPoint(model).save(small_data / "bare")
    result = run_script("lenet_train.py", "--model-dir", "bare", "--resume", cwd=small_data)
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith(
        "error: bare holds no training state to resume from")


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_model(small_data, uninterrupted):
    before = (small_data / "whole" / "pickled_data").read_bytes()
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "whole", "--learning-rate", 1e9, cwd=small_data)
    assert result.returncode == 1
    message = result.stderr.splitlines()[-1]
    assert re.match(r"error: the loss became (nan|inf) at epoch 1 step 2: training diverged", message)  # observed inf
    assert "try a lower --learning-rate than 1000000000.0" in message and "Traceback" not in result.stderr
    assert before == (small_data / "whole" / "pickled_data").read_bytes()
    assert_same_weights(weights(small_data / "whole"), uninterrupted)
