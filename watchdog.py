"""A bound on the waits for other nodes that OneFlow 0.9 would wait out for ever.

Under OneFlow's launcher, `import oneflow` waits until every process of every node has joined the first node at
--master_addr, and OneFlow has no timeout of its own there: the first node waits for ever, the others retry for
10 minutes (60 tries, 10 s apart; control/rpc_client.cpp) and then abort. A collective in which some process never
takes part waits for ever too. deadline() bounds such a wait: past it, the process prints its line and exits 1.
OneFlow holds Python's GIL while it waits, so the deadline is kept by a thread of oneflow_node_watch.c.
"""
import contextlib
import ctypes
import importlib.util
import math
import os
import sys


def seconds_from_environment():
    """Seconds a process waits for the others to join or to agree: LENET_NODE_TIMEOUT, 60 by default; a value that
    is not a finite number above 0 (inf, nan, 0, -1, text) ends the process with one line and status 2."""
    text = os.environ.get("LENET_NODE_TIMEOUT", "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        print(f"error: LENET_NODE_TIMEOUT={text} is not a number of seconds above 0 (default: 60)", file=sys.stderr)
        sys.exit(2)  # as for a bad flag
    return seconds


SECONDS = seconds_from_environment()

_spec = importlib.util.find_spec("oneflow_node_watch")  # found, not imported: it is loaded as a plain library
if _spec is None:
    sys.exit("error: oneflow_node_watch is not installed; pip install -r requirements.txt builds it (with a C compiler)")
NODE_WATCH = ctypes.CDLL(_spec.origin)
NODE_WATCH.oneflow_deadline_start.argtypes = [ctypes.c_double, ctypes.c_char_p]


@contextlib.contextmanager
def deadline(line, seconds=None):
    """Run the block; if it has not ended after seconds (SECONDS if None), print line on stderr and exit 1 at once."""
    seconds = SECONDS if seconds is None else seconds
    if NODE_WATCH.oneflow_deadline_start(seconds, (line + "\n").encode()) != 0:
        raise RuntimeError(f"no deadline of {seconds} s could be started (one is running, or it is not above 0)")
    try:
        yield
    finally:
        NODE_WATCH.oneflow_deadline_end()
