"""watchdog.py and oneflow_node_watch.c's deadlines: a LENET_NODE_TIMEOUT that is not a finite number of seconds
above 0 ends a script at once with one line, and the C library refuses such a deadline rather than keep one it
cannot (a negative or infinite wait made pthread_cond_timedwait fail at once, for ever)."""
import sys
import time

import pytest

import watchdog
from conftest import ROOT, run, run_script


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "-0.9", "0", "abc", ""])
def test_a_timeout_that_is_no_time_above_0_is_one_line_and_status_2(value, tmp_path):
    started = time.monotonic()
    result = run_script("lenet_train.py", "--max-steps", 1, "--data-dir", ROOT / "data/mnist-5k", cwd=tmp_path,
                        env={"LENET_NODE_TIMEOUT": value})
    assert result.returncode == 2
    assert result.stderr == f"error: LENET_NODE_TIMEOUT={value} is not a number of seconds above 0 (default: 60)\n"
    assert result.stdout == "" and not (tmp_path / "lenet_models_1").exists()
    assert time.monotonic() - started < 30  # at once: before OneFlow is imported (about 3 s)


# The library alone, in a fresh process: it refuses what is not a time above 0, then keeps a short deadline.
DEADLINES = f"""
import ctypes, importlib.util, time
library = ctypes.CDLL(importlib.util.find_spec("oneflow_node_watch").origin)
library.oneflow_deadline_start.argtypes = [ctypes.c_double, ctypes.c_char_p]
refused = [library.oneflow_deadline_start(s, b"not this one\\n") for s in
           (float("inf"), float("-inf"), float("nan"), 0.0, -1.0, -0.9)]
print(refused, flush=True)
assert library.oneflow_deadline_start(1e300, b"not this one either\\n") == 0  # taken as 31 years: ended at once
library.oneflow_deadline_end()
assert library.oneflow_deadline_start(0.25, b"the deadline passed\\n") == 0
time.sleep({60})
"""


def test_the_library_refuses_a_wait_that_is_no_time_and_keeps_a_short_one(tmp_path):
    started = time.monotonic()
    result = run([sys.executable, "-c", DEADLINES], cwd=tmp_path)
    assert result.stdout == "[-1, -1, -1, -1, -1, -1]\n"
    assert result.returncode == 1 and result.stderr == "the deadline passed\n"
    assert time.monotonic() - started < 30  # the 0.25 s deadline ended the 60 s sleep


# A process with a connection to 127.0.0.1 whose other end has gone, Python's faulthandler installed before the
# line is set (as PYTHONFAULTHANDLER=1 does), then an abort, as OneFlow's glog FATAL ends a process.
ABORT = """
import ctypes, faulthandler, importlib.util, os, socket
watch = ctypes.CDLL(importlib.util.find_spec("oneflow_node_watch").origin)
server = socket.create_server(("127.0.0.1", 0))
mine = socket.create_connection(server.getsockname())
theirs, _ = server.accept()
faulthandler.enable()
assert watch.oneflow_lost_node_line(b"127.0.0.1", b"error: lost node 1 (127.0.0.1)\\n", 0) == 0
theirs.close()
os.abort()
"""


def test_the_lost_node_line_comes_before_the_abort_handler_that_was_there(tmp_path):
    result = run([sys.executable, "-c", ABORT], cwd=tmp_path)
    assert result.returncode == -6  # SIGABRT, its default action in the end
    lines = result.stderr.splitlines()
    assert lines[0] == "error: lost node 1 (127.0.0.1)"  # once
    assert lines[1] == "Fatal Python error: Aborted" and lines.count(lines[0]) == 1  # then faulthandler's report


# Connections to three addresses, as to this node's other process, node 1 and node 2; then node 2's connection
# closed and its descriptor numbers taken by a new connection whose other end is gone too (not recorded).
ORDER = """
import ctypes, faulthandler, importlib.util, os, socket
watch = ctypes.CDLL(importlib.util.find_spec("oneflow_node_watch").origin)
def pair(address):
    server = socket.create_server((address, 0))
    mine = socket.create_connection(server.getsockname())
    return [server, mine, server.accept()[0]]
own, node1, node2 = pair("127.0.0.1"), pair("127.0.0.2"), pair("127.0.0.3")
faulthandler.enable()
watch.oneflow_lost_node_line(b"127.0.0.1", b"error: lost a process of this node\\n", 1)
watch.oneflow_lost_node_line(b"127.0.0.2", b"error: lost node 1 (127.0.0.2)\\n", 0)
watch.oneflow_lost_node_line(b"127.0.0.3", b"error: lost node 2 (127.0.0.3)\\n", 0)
for s in node2:
    s.close()
reused = pair("127.0.0.1")  # on the descriptor numbers node 2's connection had
reused[2].close()
own[2].close()  # this node's other process, gone second
node1[2].close()
os.abort()
"""


def test_the_lost_node_lines_name_other_nodes_first_and_no_reused_descriptor(tmp_path):
    result = run([sys.executable, "-c", ORDER], cwd=tmp_path)
    assert result.returncode == -6
    lines = result.stderr.splitlines()
    assert lines[:3] == ["error: lost node 1 (127.0.0.2)", "error: lost a process of this node",
                         "Fatal Python error: Aborted"], result.stderr


def test_the_wait_is_60_s_unless_lenet_node_timeout_says_otherwise(monkeypatch):
    monkeypatch.delenv("LENET_NODE_TIMEOUT", raising=False)
    assert watchdog.seconds_from_environment() == 60  # the default docs/distributed.md states
    monkeypatch.setenv("LENET_NODE_TIMEOUT", "2.5")
    assert watchdog.seconds_from_environment() == 2.5
