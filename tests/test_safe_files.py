"""safe_files: a folder replaced atomically (SIGKILL at each step of a save leaves the old model or the new one), a
stale half-written folder removed by the next save, the fallback without renameat2, a file replaced whole or not at
all, and downloads that appear whole or not at all."""
import contextlib
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest

import lenet
import safe_files
from conftest import CLEAN_ENV, FIXTURE, ROOT, Lines, initialised, logits, started, wait
from lenet import flow

CPU = flow.device("cpu")

# Saves the model of seed 2 (with a training state) over the folder argv[1], stopping before and after each step
# of the save: it prints "at STEP" and goes on only when a line arrives on stdin.
PAUSED_SAVE = """
import os, sys, lenet, safe_files

def pause(step, function, after=False, when=lambda *args: True):
    def paused(*args):
        if not after and when(*args):
            print("at", step, flush=True); sys.stdin.readline()
        result = function(*args)
        if after and when(*args):
            print("at", step, flush=True); sys.stdin.readline()
        return result
    return paused

model = lenet.LeNet()
lenet.CheckPoint(model).init(2)
lenet.flow.save = pause("flow.save", lenet.flow.save)
safe_files.fsync_tree = pause("fsync_tree", safe_files.fsync_tree)
safe_files.exchange = pause("exchange", safe_files.exchange)
safe_files.exchange = pause("exchanged", safe_files.exchange, after=True)
parent = os.path.dirname(sys.argv[1])  # the last flush, of the folder that holds the model
safe_files.fsync_dir = pause("fsync_dir", safe_files.fsync_dir, when=lambda folder: str(folder) == parent)
print("at start", flush=True); sys.stdin.readline()
lenet.CheckPoint(model).save(sys.argv[1], dict(epoch=1))
print("at saved", flush=True); sys.stdin.readline()
"""
# The steps in order, (step, how many times it has been reached), and what the folder holds when the save is
# killed there: the new model is in place from "exchanged" on, its half-written folder from the second flow.save
# (the first creates it) to the removal of the old model after the exchange.
STEPS = [("start", 1, ["model"]), ("flow.save", 1, ["model"]), ("flow.save", 2, [".model.saving", "model"]),
         ("fsync_tree", 1, [".model.saving", "model"]), ("exchange", 1, [".model.saving", "model"]),
         ("exchanged", 1, [".model.saving", "model"]), ("fsync_dir", 1, ["model"]), ("saved", 1, ["model"])]


def kill_at(folder, step, count):
    """Run PAUSED_SAVE onto folder/model and SIGKILL it when it reaches step for the count-th time; return the steps
    it reached."""
    with started([sys.executable, "-c", PAUSED_SAVE, str(folder / "model")], cwd=folder, text=True,
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**CLEAN_ENV, "PYTHONPATH": str(ROOT)}) as process:
        output, reached = Lines(process.stdout), []
        while reached.count(step) < count:
            reached.append(output.line(len(reached)).split()[1])
            if reached.count(step) < count:
                process.stdin.write("go\n")
                process.stdin.flush()
        process.kill()
        wait(process)
    return reached


def test_sigkill_at_each_step_of_a_save_leaves_the_old_model_or_the_new_one(tmp_path):
    old, new = logits(initialised(1)), logits(initialised(2))
    for number, (step, count, listing) in enumerate(STEPS):
        lenet.CheckPoint(initialised(1)).save(tmp_path / "model")  # with no training state; the new one has one
        reached = kill_at(tmp_path, step, count)
        assert reached == [name for name, _, _ in STEPS[:number + 1]]  # every step ran in this order, up to the kill
        assert sorted(os.listdir(tmp_path)) == listing, step
        model = lenet.LeNet()
        state = lenet.CheckPoint(model).load(tmp_path / "model")
        exchanged = number >= [name for name, _, _ in STEPS].index("exchanged")
        assert np.array_equal(logits(model), new if exchanged else old), step
        assert state == (dict(epoch=1) if exchanged else None), step  # the weights and their training state together


def test_the_next_save_removes_a_half_written_folder(tmp_path):
    lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
    kill_at(tmp_path, "exchange", 1)  # killed with the new model and its training state written beside the old one
    assert sorted(os.listdir(tmp_path)) == [".model.saving", "model"]
    assert (tmp_path / ".model.saving" / lenet.TRAINING_STATE).is_dir()
    model = initialised(3)
    lenet.CheckPoint(model).save(tmp_path / "model")  # no training state
    assert os.listdir(tmp_path) == ["model"]
    loaded = lenet.LeNet()
    assert lenet.CheckPoint(loaded).load(tmp_path / "model") is None  # nothing of the half-written folder came along
    assert np.array_equal(logits(loaded), logits(model))


def test_without_renameat2_the_folders_are_swapped_by_three_renames(tmp_path, monkeypatch):
    renames = []
    monkeypatch.setattr(safe_files, "renameat2_exchange", lambda a, b: False)  # an old kernel or file system
    monkeypatch.setattr(os, "rename", lambda a, b, rename=os.rename: renames.append((a, b)) or rename(a, b))
    lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
    lenet.CheckPoint(initialised(2)).save(tmp_path / "model")
    model, new, aside = tmp_path / "model", tmp_path / ".model.saving", tmp_path / "model.old"
    assert renames == [(new, model), (model, aside), (new, model), (aside, new)]  # the first save, then the swap
    assert os.listdir(tmp_path) == ["model"]
    assert np.array_equal(logits(lenet.load_model(model, CPU)), logits(initialised(2)))


@pytest.mark.parametrize("renames_done, kept", [(1, 1), (2, 2)])
def test_a_crash_within_the_three_renames_is_mended_by_the_next_load_or_save(tmp_path, monkeypatch, renames_done, kept):
    # Killed after the first rename (the old model aside, none in place) or after the second (the new one in place,
    # a copy of the old aside): a load finds a whole model, seed 1 or 2, and the next save does its swap.
    monkeypatch.setattr(safe_files, "renameat2_exchange", lambda a, b: False)
    lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
    rename, calls = os.rename, []

    def crash(a, b):
        if len(calls) == renames_done:
            raise KeyboardInterrupt  # no cleanup runs for it (replace_folder catches OSError alone): as a crash
        calls.append((a, b))
        rename(a, b)

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        lenet.CheckPoint(initialised(2)).save(tmp_path / "model")
    monkeypatch.setattr(os, "rename", rename)
    assert "model.old" in os.listdir(tmp_path)
    assert np.array_equal(logits(lenet.load_model(tmp_path / "model", CPU)), logits(initialised(kept)))
    lenet.CheckPoint(initialised(3)).save(tmp_path / "model")
    assert os.listdir(tmp_path) == ["model"]
    assert np.array_equal(logits(lenet.load_model(tmp_path / "model", CPU)), logits(initialised(3)))


# ---------------------------------------------------------------------------------------------
# A file (lenet_export.py's ONNX file)

def test_replace_file_puts_the_new_file_in_place_with_the_usual_permissions(tmp_path):
    (tmp_path / "lenet.onnx").write_bytes(b"old")
    seen = []

    def write(tmp):
        seen.append(os.listdir(tmp_path))
        with open(tmp, "wb") as f:
            f.write(b"new")

    umask = os.umask(0o027)
    try:
        safe_files.replace_file(tmp_path / "lenet.onnx", write)
    finally:
        os.umask(umask)
    (new,) = set(seen[0]) - {"lenet.onnx"}  # while write runs: the old file and the new one beside it
    assert new.startswith(".lenet.onnx.") and new.endswith(".part")
    assert os.listdir(tmp_path) == ["lenet.onnx"] and (tmp_path / "lenet.onnx").read_bytes() == b"new"
    assert (tmp_path / "lenet.onnx").stat().st_mode & 0o777 == 0o640  # 0666 less the umask, as open() makes files


def test_replace_file_keeps_the_old_file_when_write_fails(tmp_path):
    (tmp_path / "lenet.onnx").write_bytes(b"old")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise ValueError("the check failed")

    with pytest.raises(ValueError, match="the check failed"):
        safe_files.replace_file(tmp_path / "lenet.onnx", write)
    assert os.listdir(tmp_path) == ["lenet.onnx"] and (tmp_path / "lenet.onnx").read_bytes() == b"old"


def test_replace_file_into_a_missing_folder_writes_nothing(tmp_path):
    called = []
    with pytest.raises(FileNotFoundError):
        safe_files.replace_file(tmp_path / "missing" / "lenet.onnx", called.append)
    assert not called and os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Downloads

@contextlib.contextmanager
def serving():
    """An HTTP server on 127.0.0.1 serving the fixture at /mnist.npz, 404 elsewhere; yields its base URL.

    /cut.npz announces the whole file and hangs up midway; /silent.npz answers its headers, then sends nothing
    until the test ends.
    """
    body, done = FIXTURE.read_bytes(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in ("/mnist.npz", "/cut.npz", "/silent.npz"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path == "/silent.npz":
                done.wait()
            self.wfile.write(body if self.path == "/mnist.npz" else body[:len(body) // 2])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    done.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server():
    with serving() as url:
        yield url


FIXTURE_SHA256 = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
FIXTURE_SIZE = FIXTURE.stat().st_size


def test_a_download_appears_whole(tmp_path, server):
    safe_files.download(f"{server}/mnist.npz", tmp_path / "new" / "mnist.npz", FIXTURE_SHA256)
    assert (tmp_path / "new" / "mnist.npz").read_bytes() == FIXTURE.read_bytes()
    assert os.listdir(tmp_path / "new") == ["mnist.npz"]


@pytest.mark.parametrize("name, sha256, reason", [
    ("mnist.npz", "0" * 64, f"SHA-256 {FIXTURE_SHA256} is not the expected {'0' * 64}"),
    ("missing.npz", FIXTURE_SHA256, "HTTP Error 404"),
    ("cut.npz", FIXTURE_SHA256, f"got {FIXTURE_SIZE // 2} of {FIXTURE_SIZE} bytes"),
    ("silent.npz", FIXTURE_SHA256, "timed out"),
])
def test_a_failed_download_leaves_nothing(tmp_path, server, monkeypatch, name, sha256, reason):
    if name == "silent.npz":  # the others keep the product's wait: a busy machine must not turn them into time-outs
        monkeypatch.setattr(safe_files, "TIMEOUT", 0.5)  # seconds without a byte from the server
    with pytest.raises(OSError, match=reason):
        safe_files.download(f"{server}/{name}", tmp_path / "mnist.npz", sha256)
    assert list(tmp_path.iterdir()) == []


def test_a_download_waits_60_s_for_a_silent_server(tmp_path, server, monkeypatch):
    # docs/failures.md's figure: the wait for each answer or block is urlopen's socket timeout.
    given, urlopen = [], urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: given.append(timeout) or urlopen(url, timeout=timeout))
    safe_files.download(f"{server}/mnist.npz", tmp_path / "mnist.npz", FIXTURE_SHA256)
    assert given == [60]


def test_offline(tmp_path):
    with socket.socket() as closed:  # bound, never listening, for the test's length: connections are refused
        closed.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="Connection refused"):
            safe_files.download(f"http://127.0.0.1:{closed.getsockname()[1]}/mnist.npz", tmp_path / "mnist.npz",
                                FIXTURE_SHA256)
    assert list(tmp_path.iterdir()) == []
