"""lenet_train.py: the log, the model it saves, its flags, padding left out of the loss, --metrics, resuming,
signals and a diverging loss."""
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

import lenet
from conftest import (CLEAN_ENV, FIXTURE, ROOT, Lines, assert_fails_cleanly, fixture_arrays, initialised,
                      left, numpy_lenet, run_script, started, wait, weights)
from lenet import flow
import lenet_train
from lenet_train import TrainGraph


def test_train_prints_the_log_and_saves(trained):
    folder, stdout = trained
    lines = stdout.splitlines()
    assert lines[0].startswith("device cpu (")  # the reason is this machine's: test_lenet_device.py tests each one
    assert lines[1] == "File mnist.npz already exist, path: ./mnist.npz"
    # 1,000 digits in batches of 50: 20 steps an epoch, the loss printed every 20 steps.
    assert [line.split(" loss ")[0] for line in lines if " step " in line] == [
        f"epoch {e} step {20 * e}" for e in range(1, 13)]
    epochs = [re.fullmatch(r"epoch (\d+) loss ([\d.]+) test accuracy ([\d.]+)% images/s (\d+)", line)
              for line in lines if "test accuracy" in line]
    assert all(epochs) and [int(m[1]) for m in epochs] == list(range(1, 13))
    losses = [float(m[2]) for m in epochs]
    assert losses[-1] < losses[0] / 4  # the last epoch: 0.06-0.19 over seeds 0 to 5; the first: about 2.6 (seed 0)
    assert lines[-1] == "model saved to ./lenet_models_1"
    assert (folder / "lenet_models_1" / "pickled_data").is_file()


def test_smoke_run_with_max_steps(data_dir):
    result = run_script("lenet_train.py", "--data-dir", data_dir, "--max-steps", 3, "--log-interval", 1,
                        "--batch-size", 64, "--model-dir", data_dir / "model", cwd=data_dir)
    assert result.returncode == 0, result.stderr
    assert [line.split(" loss")[0] for line in result.stdout.splitlines() if " step " in line] == [
        "epoch 1 step 1", "epoch 1 step 2", "epoch 1 step 3"]
    assert result.stdout.splitlines()[-1] == f"model saved to {data_dir / 'model'}"


def test_save_target_is_a_file(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    (tmp_path / "model").write_text("precious")
    result = run_script("lenet_train.py", "--max-steps", 1, "--model-dir", "model", cwd=tmp_path)
    assert_fails_cleanly(result, "cannot save the model to model: it is a file, not a folder")
    assert (tmp_path / "model").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["mnist.npz", "model"]


def train_step(batch, real):
    """One TrainGraph step from the seed-0 model on batch (images, labels, dropout masks) with the first `real` rows
    weighted 1 and the rest 0; return (loss, {name: weights after the step})."""
    model = initialised(0)
    graph = TrainGraph(model, flow.optim.SGD(model.parameters(), lr=0.1))
    images, labels, masks = batch
    weights = (np.arange(len(images)) < real).astype(np.float32)
    loss = graph(*map(flow.tensor, (images, labels, weights, masks))).numpy()
    return loss, {name: p.numpy() for name, p in model.state_dict().items()}


def test_padding_rows_are_left_out_of_the_loss_and_the_step():
    rng = np.random.default_rng(0)
    images, labels = rng.random((10, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 10).astype(np.int32)
    masks = lenet.dropout_mask(rng, 10)
    loss_real, real = train_step((images[:7], labels[:7], masks[:7]), 7)  # the 7 real rows alone
    loss_padded, padded = train_step((images, labels, masks), 7)  # the same 7, then 3 rows of padding
    # The same sum but for rounding: on oneDNN's convolutions the halves of 7 and of 10 rows are blocked
    # differently (1.4e-6 apart seen, on a loss of 3.55).
    assert abs(loss_padded - loss_real) < 1e-6 * abs(loss_real)
    for name in real:
        assert np.allclose(padded[name], real[name], rtol=0, atol=1e-6), name
    loss_counted, _ = train_step((images, labels, masks), 10)  # were the 3 rows counted, it would differ
    assert abs(loss_counted - loss_real) > 1e-3


TUTORIAL_LEARNING_RATE = 0.1  # the tutorial's PiecewiseConstantScheduler([], [0.1]): written here, not read from the code


def numpy_loss(w, images, labels, masks):
    """The tutorial's loss by its definition, in float64: the mean over the rows of the softmax cross-entropy of the
    logits of a NumPy forward pass."""
    logits = numpy_lenet(images.astype(np.float64), w, masks)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


def test_a_training_step_is_sgd_at_the_tutorials_rate_on_the_numpy_loss(tmp_path):
    """lenet_train.train's first step, at the script's default rate, against NumPy: its loss is numpy_loss of the
    batch and dropout masks the seed gives, and for each weight tensor the step, divided by the tutorial's rate, is
    the loss's gradient there: its length is the loss's slope along it, by central differences."""
    raw, seed, n = fixture_arrays(), 3, 20
    # Off zero by 0.01: on MNIST's black background a first convolution gives its bias, 0 at the start, exactly where
    # ReLU bends, and the loss has no derivative along the biases there.
    images = (raw["x_train"][:n, None] / np.float32(255) + np.float32(0.01)).astype(np.float32)
    labels = raw["y_train"][:n].astype(np.int32)
    before = {name: p.numpy().astype(np.float64) for name, p in initialised(seed).state_dict().items()}
    # The seeded generator's draws in the order lenet_train.py makes them: the shuffle, then the dropout mask,
    # which by the tutorial's definition keeps each value with probability 0.5 and scales it by 1 / 0.5.
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    masks = (rng.random((n, 512)) >= 0.5) / 0.5
    check_point = lenet.CheckPoint(lenet.LeNet())
    history = lenet_train.train(check_point, (images, labels), (images[:10], labels[:10]), flow.device("cpu"), 1, n,
                                lenet_train.parser.parse_args([]).learning_rate, 1, seed, tmp_path / "model",
                                max_steps=1)
    expected = numpy_loss(before, images[order], labels[order], masks)
    assert abs(history[0]["loss"] - expected) < 1e-5 * expected
    after = {name: p.numpy() for name, p in check_point.model.state_dict().items()}
    loss = lambda w: numpy_loss(w, images[order], labels[order], masks)  # noqa: E731
    for name in before:
        gradient = (before[name] - after[name]) / TUTORIAL_LEARNING_RATE
        length = np.linalg.norm(gradient)
        direction = gradient / length
        eps = 1e-5
        slope = (loss({**before, name: before[name] + eps * direction}) -
                 loss({**before, name: before[name] - eps * direction})) / (2 * eps)
        assert abs(slope - length) < 1e-3 * length, (name, slope, length)


# ---------------------------------------------------------------------------------------------
# --metrics

def test_train_writes_one_metrics_line_per_epoch(tmp_path):
    raw = fixture_arrays()  # sorted by digit: every 10th is 10 training and 2 test digits of each class
    np.savez(tmp_path / "mnist.npz", x_train=raw["x_train"][::10], y_train=raw["y_train"][::10],
             x_test=raw["x_test"][::10], y_test=raw["y_test"][::10])
    result = run_script("lenet_train.py", "--epochs", 3, "--batch-size", 50, "--metrics", "metrics.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert all(set(record) == {"epoch", "loss", "accuracy", "images_per_second"} for record in records)
    printed = [line for line in result.stdout.splitlines() if "test accuracy" in line]
    assert printed == [f"epoch {r['epoch']} loss {r['loss']:.4f} test accuracy {r['accuracy']:.1f}% "
                       f"images/s {r['images_per_second']:.0f}" for r in records]


def test_a_killed_run_keeps_the_metrics_of_the_epochs_it_finished(small_data, start_paused):
    paused = start_paused(small_data, "evaluate:2", *TRAIN, "--metrics", "killed.jsonl", "--model-dir", "killed")
    paused.process.kill()  # held at the end of epoch 2, before its line: as a crash or a power cut would stop it
    wait(paused.process)
    assert [json.loads(line)["epoch"] for line in (small_data / "killed.jsonl").read_text().splitlines()] == [1]


def test_a_terminal_shows_a_progress_bar_and_a_pipe_does_not(data_dir):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows of 100: tqdm fits to it
    with started([sys.executable, str(ROOT / "lenet_train.py"), "--max-steps", "5", "--log-interval", "50"],
                 cwd=data_dir, env=CLEAN_ENV, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal) as process:
        os.close(terminal)
        shown, deadline = b"", time.monotonic() + left()
        while True:  # what the terminal shows, until the run ends and closes it
            assert time.monotonic() < deadline, shown.decode(errors="replace")
            if select.select([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: no process holds the terminal any more
                    break
                if not chunk:
                    break
                shown += chunk
        assert wait(process) == 0
    os.close(controller)
    text = shown.decode()
    # tqdm draws its line after a carriage return: "epoch 1:  10%|█████▍      | 1/10 [00:00<00:04,  1.91it/s]"
    assert re.search(r"\repoch 1: +\d+%\|.*\| \d+/10 \[", text), text  # 1,000 digits: 10 steps of 100
    assert "model saved to ./lenet_models_1" in text
    piped = run_script("lenet_train.py", "--max-steps", 5, "--log-interval", 50, "--model-dir", "piped", cwd=data_dir)
    assert piped.returncode == 0 and "%|" not in piped.stdout + piped.stderr


def test_train_cannot_write_the_metrics(data_dir):
    result = run_script("lenet_train.py", "--metrics", "missing/metrics.jsonl", "--max-steps", 1, cwd=data_dir)
    assert_fails_cleanly(result, "cannot write missing/metrics.jsonl (No such file or directory)")
    assert not (data_dir / "lenet_models_1").exists()


# ---------------------------------------------------------------------------------------------
# Resuming, signals and a diverging loss

# 300 training digits in batches of 40: 8 steps an epoch, the last of 20 digits and 20 rows of padding.
TRAIN = ["--epochs", 4, "--batch-size", 40, "--log-interval", 2]


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """An mnist.npz of 300 training and 100 test digits from the fixture, for the tests to copy."""
    path = tmp_path_factory.mktemp("small") / "mnist.npz"
    raw = fixture_arrays()
    train, test = np.arange(0, 1000, 10)[:, None] + np.arange(3), np.arange(0, 200, 2)  # 30 and 10 of each digit
    np.savez(path, x_train=raw["x_train"][train.ravel()], y_train=raw["y_train"][train.ravel()],
             x_test=raw["x_test"][test], y_test=raw["y_test"][test])
    return path


@pytest.fixture
def small_data(small_npz, tmp_path):
    """The test's own folder, with small_npz as its mnist.npz: what a test writes there no other test reads."""
    shutil.copy(small_npz, tmp_path / "mnist.npz")
    return tmp_path


@pytest.fixture(scope="module")
def uninterrupted(small_npz, tmp_path_factory):
    """The weights after 4 epochs in one run, and the folder of that run (its model "whole", its "whole.jsonl"),
    which the tests only read: a test that trains on from it copies it first."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    shutil.copy(small_npz, folder / "mnist.npz")
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "whole", "--metrics", "whole.jsonl", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert [line.split(" loss")[0] for line in result.stdout.splitlines() if " step " in line][:4] == [
        "epoch 1 step 2", "epoch 1 step 4", "epoch 1 step 6", "epoch 1 step 8"]  # 8 steps: the last one short
    return weights(folder / "whole"), folder


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name  # CPU kernels are deterministic: bit for bit


def test_resume_after_two_epochs_equals_an_uninterrupted_run(small_data, uninterrupted):
    flags = [*TRAIN, "--model-dir", "halves", "--metrics", "halves.jsonl"]
    first = run_script("lenet_train.py", *flags[:1], 2, *flags[2:], cwd=small_data)
    assert first.returncode == 0, first.stderr
    second = run_script("lenet_train.py", *flags, "--resume", cwd=small_data)
    assert second.returncode == 0, second.stderr
    assert [line.split(" loss")[0] for line in second.stdout.splitlines() if "test accuracy" in line] == [
        "epoch 3", "epoch 4"]
    assert_same_weights(weights(small_data / "halves"), uninterrupted[0])
    # --metrics is appended to on --resume: the four epochs, with the uninterrupted run's losses and accuracies.
    records = [json.loads(line) for line in (small_data / "halves.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (uninterrupted[1] / "whole.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["loss"], r["accuracy"]) for r in records] == [
        (r["epoch"], r["loss"], r["accuracy"]) for r in expected] and len(records) == 4
    again = run_script("lenet_train.py", *flags, "--resume", cwd=small_data)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "halves is already trained for 4 epochs"


# Runs lenet_train.main(argv[2:]) with a pause: when `lenet.<name>` is called for the count-th time (argv[1] is
# "name" or "name:count"), it prints "paused" and waits for a line on stdin, so that a test can send a signal at a
# known moment of training; from then on it prints "handled" when lenet_train's signal handler has run and
# returned. With LENET_HOLD=native it waits instead inside a native call that never returns, signals or not, as
# OneFlow's own waits would if they hung (the second lock of a mutex it holds, with the GIL released).
PAUSED_TRAINING = """
import ctypes, os, signal, sys, lenet, lenet_train
name, _, count = sys.argv[1].partition(":")
function, calls = getattr(lenet, name), []
def paused(*args, **kwargs):
    calls.append(name)
    if len(calls) < int(count or 1):
        return function(*args, **kwargs)
    setattr(lenet, name, function)
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        signal.signal(signum, lambda *a, handler=handler: (handler(*a), print("handled", flush=True)))
    print("paused", flush=True)
    if os.environ.get("LENET_HOLD") == "native":
        mutex = ctypes.create_string_buffer(64)  # zeros: glibc's unlocked default mutex
        ctypes.CDLL(None).pthread_mutex_lock(mutex)
        ctypes.CDLL(None).pthread_mutex_lock(mutex)
    sys.stdin.readline()
    return function(*args, **kwargs)
setattr(lenet, name, paused)
lenet_train.main(sys.argv[2:])
"""


class Paused:
    """lenet_train.py held by PAUSED_TRAINING: its process, and its stdout and stderr read as they come."""

    def __init__(self, process):
        self.process, self.stdout, self.stderr = process, Lines(process.stdout), Lines(process.stderr)

    def go(self):
        """Let a pause in Python go on."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def end(self):
        """(exit status, stdout, stderr), once the process has exited."""
        return wait(self.process), self.stdout.text(), self.stderr.text()


@pytest.fixture
def start_paused():
    """start(folder, pause_at, *flags, hold="python" or "native"): lenet_train.py with flags, paused at the first call
    of lenet.<pause_at>; returns it (a Paused) once paused. What is still running when the test ends is killed."""
    with contextlib.ExitStack() as processes:
        def start(folder, pause_at, *flags, hold="python"):
            process = processes.enter_context(started(
                [sys.executable, "-c", PAUSED_TRAINING, pause_at, *map(str, flags)], cwd=folder, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**CLEAN_ENV, "PYTHONPATH": str(ROOT), "LENET_HOLD": hold}))
            paused = Paused(process)
            paused.stdout.wait_for("paused")
            return paused

        yield start


SIGNALS = pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])


@SIGNALS
def test_a_signal_keeps_the_last_epoch_and_resume_finishes_the_run(small_data, uninterrupted, start_paused, signum, status):
    model_dir = f"stopped-{signum}"
    # lenet.evaluate runs at the end of epoch 1: the signal arrives there, and training stops in epoch 2.
    paused = start_paused(small_data, "evaluate", *TRAIN, "--model-dir", model_dir)
    paused.process.send_signal(signum)
    paused.go()
    returncode, _, stderr = paused.end()
    assert returncode == status, stderr
    assert stderr.splitlines()[-1] == (f"interrupted by {signal.Signals(signum).name} at epoch 2 step 9; epoch 1, the "
                                       f"last complete one, is saved in {model_dir}; continue with the same command "
                                       f"and --resume")
    assert "Traceback" not in stderr
    assert (small_data / model_dir / "training_state").is_dir()
    assert not [name for name in os.listdir(small_data) if name.endswith(".saving")]
    resumed = run_script("lenet_train.py", *TRAIN, "--model-dir", model_dir, "--resume", cwd=small_data)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(small_data / model_dir), uninterrupted[0])


def test_a_signal_in_the_first_epoch_says_that_nothing_is_saved(small_data, start_paused):
    paused = start_paused(small_data, "dropout_mask", *TRAIN, "--model-dir", "first")  # in the first step
    paused.process.send_signal(signal.SIGINT)
    paused.go()
    returncode, _, stderr = paused.end()
    assert returncode == 130
    assert stderr.splitlines()[-1] == ("interrupted by SIGINT at epoch 1 step 1; nothing is saved yet, as no epoch "
                                       "was complete; run the command again")
    assert not (small_data / "first").exists()


@SIGNALS
def test_a_second_signal_exits_at_once(small_data, start_paused, signum, status):
    paused = start_paused(small_data, "dropout_mask", *TRAIN, "--model-dir", "twice")  # in the first step
    paused.process.send_signal(signum)
    paused.stdout.wait_for("handled")
    paused.process.send_signal(signum)
    # Still paused inside the step (its stdin stays open and empty): only an exit at once can end it.
    returncode, _, stderr = paused.end()
    assert returncode == status
    assert "interrupted by" not in stderr and "Traceback" not in stderr
    assert not (small_data / "twice").exists()


def delivered(process):
    """A condition for wait_for(): no signal is pending for process any more (Linux has run its handler)."""
    def check():
        with open(f"/proc/{process.pid}/status") as f:
            return all(int(line.split()[1], 16) == 0 for line in f if line.startswith(("SigPnd:", "ShdPnd:")))
    return check


def wait_for(condition, what):
    """Wait until condition() is true, bounded by what is left of the test's budget."""
    seconds = left()
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {seconds:.0f} s"
        time.sleep(0.01)  # between looks at the state


@SIGNALS
def test_a_second_signal_exits_at_once_while_oneflow_does_not_return(small_data, start_paused, signum, status):
    paused = start_paused(small_data, "dropout_mask", *TRAIN, "--model-dir", "native", hold="native")
    paused.process.send_signal(signum)  # the handler cannot run: the main thread is inside the native call
    wait_for(delivered(paused.process), "delivery of the first signal")
    paused.process.send_signal(signum)
    returncode, _, stderr = paused.end()
    assert returncode == status
    assert "interrupted by" not in stderr and "Traceback" not in stderr  # at once: not after the grace, with its line


@SIGNALS
def test_one_signal_ends_a_run_that_oneflow_does_not_return_to(small_data, start_paused, signum, status):
    paused = start_paused(small_data, "dropout_mask", *TRAIN, "--model-dir", "native", hold="native")
    sent = time.monotonic()
    paused.process.send_signal(signum)
    returncode, _, stderr = paused.end()
    assert returncode == status and time.monotonic() - sent >= 10  # after the 10 s docs/failures.md gives, not at once
    assert stderr.splitlines()[-1] == (f"interrupted by {signal.Signals(signum).name}: training was inside OneFlow and "
                                       f"did not come back within 10 s; stopped at once")


def test_resume_refuses_other_flags_or_no_state(small_data, uninterrupted):
    shutil.copytree(uninterrupted[1] / "whole", small_data / "whole")
    for flag, value, saved in [("--batch-size", 30, 40), ("--learning-rate", 0.05, 0.1), ("--seed", 7, 0)]:
        result = run_script("lenet_train.py", *TRAIN, "--model-dir", "whole", "--resume", flag, value, cwd=small_data)
        assert_fails_cleanly(result, f"{flag} {value} differs from the {saved} that whole was trained with")
    lenet.CheckPoint(lenet.LeNet()).save(small_data / "bare")
    result = run_script("lenet_train.py", "--model-dir", "bare", "--resume", cwd=small_data)
    assert_fails_cleanly(result, "bare holds no training state to resume from")


def test_resume_after_a_max_steps_run(small_data, uninterrupted):
    # Stopped within epoch 2: the model is saved, but not as a complete epoch to resume from.
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "partial", "--max-steps", 11, cwd=small_data)
    assert result.returncode == 0, result.stderr
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "partial", "--resume", cwd=small_data)
    assert_fails_cleanly(result, "partial holds no training state to resume from")
    # Stopped at the end of epoch 2: resumable, and the run finishes as an uninterrupted one.
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "two", "--max-steps", 16, cwd=small_data)
    assert result.returncode == 0, result.stderr
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "two", "--resume", cwd=small_data)
    assert result.returncode == 0, result.stderr
    assert_same_weights(weights(small_data / "two"), uninterrupted[0])


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf")])
def test_a_loss_that_is_not_finite_is_refused_with_its_value(loss):
    with pytest.raises(lenet.InputError, match=rf"^the loss became {loss} at epoch 3 step 7: training diverged; try a "
                                               rf"lower --learning-rate than 0.5 \(the last good model, if any, is "
                                               rf"still at out\)$"):
        lenet_train.check_finite(loss, 3, 7, 0.5, "out")
    lenet_train.check_finite(3.4e38, 3, 7, 0.5, "out")  # large, but a number: training goes on


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_model(small_data, uninterrupted):
    shutil.copytree(uninterrupted[1] / "whole", small_data / "whole")
    before = (small_data / "whole" / "pickled_data").read_bytes()
    result = run_script("lenet_train.py", *TRAIN, "--model-dir", "whole", "--learning-rate", 1e9, cwd=small_data)
    assert result.returncode == 1
    message = result.stderr.splitlines()[-1]
    assert re.match(r"error: the loss became (nan|inf) at epoch 1 step 2: training diverged", message)  # observed inf
    assert "try a lower --learning-rate than 1000000000.0" in message and "Traceback" not in result.stderr
    assert before == (small_data / "whole" / "pickled_data").read_bytes()
    assert_same_weights(weights(small_data / "whole"), uninterrupted[0])
