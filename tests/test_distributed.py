"""Data-parallel training with OneFlow's own launcher: 2 CPU processes, as on a machine without GPUs."""
import json
import os
import re
import shlex
import signal
import subprocess

import numpy as np

from conftest import (CLEAN_ENV, ROOT, Lines, in_mount_namespace, launch, launcher, run, run_script, started,
                      wait, weights)


def test_two_processes_train_as_one_does_and_one_process_evaluates_their_model(data_dir):
    flags = ["--epochs", 2, "--batch-size", 50, "--metrics", "metrics.jsonl"]
    one_process = data_dir / "one"
    one_process.mkdir()
    one = run_script("lenet_train.py", *flags, "--data-dir", data_dir, cwd=one_process)
    assert one.returncode == 0, one.stderr
    result = launch("lenet_train.py", *flags, cwd=data_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    devices = [line for line in lines if line.startswith("device ")]
    # Once, after the launcher's own banner, with this machine's reason for the CPU (no driver, no GPU visible).
    assert len(devices) == 1 and devices[0].startswith("device cpu x 2 processes (data-parallel; "), devices
    assert lines.count("model saved to ./lenet_models_1") == 1  # the second process prints nothing
    assert sorted(os.listdir(data_dir)) == ["lenet_models_1", "metrics.jsonl", "mnist.npz", "one"]  # nor writes
    # The same global batches, dropout masks and learning rate; only the order of float sums may differ (the
    # weights came out bit for bit the same here, the second epoch's mean loss 2.4e-7 apart).
    losses = [[json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
              for folder in (data_dir, one_process)]
    assert len(losses[0]) == 2
    np.testing.assert_allclose(*losses, rtol=1e-5)
    a, b = weights(data_dir / "lenet_models_1"), weights(one_process / "lenet_models_1")
    for name in a:
        assert np.abs(a[name] - b[name]).max() < 1e-6, name

    single = run_script("lenet_eval.py", cwd=data_dir)
    assert single.returncode == 0, single.stderr
    accuracy = float(re.fullmatch(r"accuracy: ([\d.]+)%", single.stdout.splitlines()[-1])[1])
    assert f"test accuracy {accuracy:.1f}%" in lines[-2]  # the model saved is the one trained
    assert f"test accuracy {accuracy:.1f}%" in one.stdout.splitlines()[-2]

    both = launch("lenet_eval.py", cwd=data_dir)
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines()[-1] == single.stdout.splitlines()[-1]


def test_a_batch_that_does_not_split_over_the_processes(data_dir):
    result = launch("lenet_train.py", "--max-steps", 1, "--batch-size", 25, cwd=data_dir)
    assert result.returncode == 1  # the launcher's CalledProcessError, below
    assert "error: a batch of 25 does not split over 2 processes: use a --batch-size that is a multiple of 2" in result.stderr
    # The only traceback is the launcher's own, reporting that its processes exited with status 1.
    assert "subprocess.CalledProcessError" in result.stderr and "returned non-zero exit status 1" in result.stderr
    assert "lenet_train.py\", line" not in result.stderr and "lenet.py\", line" not in result.stderr


def test_a_save_the_first_process_cannot_write_stops_every_process(data_dir):
    disk = data_dir / "disk"
    disk.mkdir()
    command = launcher(ROOT / "lenet_train.py", "--max-steps", 1, "--batch-size", 50, "--model-dir", disk / "model")
    # 5 MB, where the model takes 6.7; after the run, what the disk holds: the half-written folder must be gone.
    command = ["sh", "-c", f'{shlex.join(command)}; status=$?; echo "disk holds: $(ls -A {disk})"; exit $status']
    result = run(in_mount_namespace([["-t", "tmpfs", "-o", "size=5m", "tmpfs", disk]], command), cwd=data_dir)
    assert result.returncode == 1, result.stderr  # the launcher's, when a process of its exits 1
    assert result.stdout.splitlines()[-1] == "disk holds: "
    for rank in (0, 1):  # each process says why it stopped
        assert (f"error: cannot save the model to {disk / 'model'} (No space left on device)" if rank == 0 else
                f"error: cannot save the model to {disk / 'model'}: the first process could not write it") in result.stderr
    # Both processes exit with status 1 and a line: none aborts, none waits for the other.
    assert "returned non-zero exit status 1" in result.stderr and "SIGABRT" not in result.stderr
    assert "lenet_train.py\", line" not in result.stderr and "lenet.py\", line" not in result.stderr


# lenet_train.main(argv[4:]) held at the count-th call of lenet.<argv[1]>: it prints "paused" (the first process
# alone prints) and waits until the file argv[3] exists.
PAUSED = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import lenet, lenet_train
name, count, go = sys.argv[2], int(sys.argv[3]), sys.argv[4]
function, calls = getattr(lenet, name), []
def paused(*args, **kwargs):
    calls.append(name)
    if len(calls) == count:
        print("paused", flush=True)
        while not os.path.exists(go):
            time.sleep(0.01)
    return function(*args, **kwargs)
setattr(lenet, name, paused)
lenet_train.main(sys.argv[5:])
"""


def test_ctrl_c_under_the_launcher_keeps_the_last_epoch_and_resume_finishes_the_run(data_dir):
    flags = ["--epochs", 2, "--batch-size", 100, "--seed", 4]  # 10 steps an epoch
    whole = launch("lenet_train.py", *flags, "--model-dir", "whole", cwd=data_dir)
    assert whole.returncode == 0, whole.stderr
    (data_dir / "paused.py").write_text(PAUSED)
    # Held in the first step of epoch 2 (the 11th dropout mask), after epoch 1 was saved.
    command = launcher(data_dir / "paused.py", ROOT, "dropout_mask", 11, data_dir / "never", *flags, "--model-dir", "stopped")
    with started(command, cwd=data_dir, env=CLEAN_ENV, text=True, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE) as process:
        stdout, stderr = Lines(process.stdout), Lines(process.stderr)
        stdout.wait_for("paused")
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the launcher and its processes
        assert wait(process) != 0
        stderr = stderr.text()
    assert "lenet_train.py\", line" not in stderr and "paused.py\", line" not in stderr  # no traceback of ours
    assert (data_dir / "stopped" / "training_state").is_dir()
    assert not [name for name in os.listdir(data_dir) if name.endswith(".saving")]
    resumed = launch("lenet_train.py", *flags, "--model-dir", "stopped", "--resume", cwd=data_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert [line.split(" loss")[0] for line in resumed.stdout.splitlines() if "test accuracy" in line] == ["epoch 2"]
    a, b = weights(data_dir / "whole"), weights(data_dir / "stopped")
    for name in a:
        assert np.array_equal(a[name], b[name]), name  # bit for bit, as in one process
