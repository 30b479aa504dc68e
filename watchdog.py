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
import os
import sys

# Seconds a process waits for the others to join or to agree, from LENET_NODE_TIMEOUT (default 60).
try:
    SECONDS = float(os.environ.get("LENET_NODE_TIMEOUT", "60"))
except ValueError:
    sys.exit(f"error: LENET_NODE_TIMEOUT={os.environ['LENET_NODE_TIMEOUT']} is not a number of seconds")

_spec = importlib.util.find_spec("oneflow_node_watch")  # found, not imported: it is loaded as a plain library
if _spec is None:
    sys.exit("error: oneflow_node_watch is not installed; pip install -r requirements.txt builds it (with a C compiler)")
NODE_WATCH = ctypes.CDLL(_spec.origin)
NODE_WATCH.oneflow_deadline_start.argtypes = [ctypes.c_double, ctypes.c_char_p]


@contextlib.contextmanager
def deadline(line, seconds=None):
    """Run the block; if it has not ended after seconds (SECONDS if None), print line on stderr and exit 1 at once."""
    if NODE_WATCH.oneflow_deadline_start(SECONDS if seconds is None else seconds, (line + "\n").encode()) != 0:
        raise RuntimeError("a deadline is running already")
    try:
        yield
    finally:
        NODE_WATCH.oneflow_deadline_end()
