"""Several nodes (machines) under OneFlow's launcher: the checks every process agrees on before the first step, and
the line that names a lost node. docs/distributed.md says what each node needs; tests/test_multi_node.py runs two.

Each process reads its own mnist.npz and, with --resume, its own model folder, and a process that stops on its own
leaves the others waiting for it for ever. So agreed() runs each process's checks, gathers what every process found
in one collective (lenet.gather), and gives all of them the same answer: go on, or stop, each with one line naming
the node and the reason.
"""
import hashlib
import json
import os
import socket
import sys

import numpy as np

import lenet
import watchdog
from lenet import flow

ROW = 4096  # bytes of each process's report in the collective
NODES = {}  # {address: {node, ...}}: the nodes at each address, for the lost-node lines
NODE = None  # this process's node, once agreed(): the lost-node lines are set from then on


def digest(*arrays):
    """SHA-256 of arrays' shapes and bytes: what two processes compare to know they read the same data or model."""
    sha = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        sha.update(f"{array.dtype}{array.shape}".encode())
        sha.update(array.data)
    return sha.hexdigest()


def model_digest(model):
    """digest() of a model's weights."""
    return digest(*(value.numpy() for value in model.state_dict().values()))


def own_address():
    """The IPv4 address by which this process reaches the first node (MASTER_ADDR): the one the other nodes see; None
    where there is none (an IPv6 network)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((os.environ.get("MASTER_ADDR", "127.0.0.1"), 9))  # a UDP connect sends nothing
            return s.getsockname()[0]
    except OSError:
        return None


def node_of(rank, reports):
    """The launcher's node number of rank: ranks are numbered node by node, --nproc_per_node to a node."""
    return rank // (max(report["local_rank"] for report in reports) + 1)


def problems(reports):
    """The reasons to stop, one per node at most, from every process's report (rank order): a failed check, or
    flags or data that differ from the first process's."""
    first, found = reports[0], {}
    for rank, report in enumerate(reports):
        node = node_of(rank, reports)
        if node in found:
            continue
        if report["error"] is not None:
            found[node] = f"node {node}: {report['error']}"
        elif rank > 0 and first["error"] is None:
            given = [name for name in report["flags"] if report["flags"][name] != first["flags"][name]]
            if given:
                found[node] = (f"node {node} was given {flags_text(report['flags'], given)}, node 0 "
                               f"{flags_text(first['flags'], given)}: give every node the same")
            for what in report["read"]:
                if node in found or report["read"][what] == first["read"].get(what):
                    continue
                if what == "device":  # nodes on different kinds of device would build mismatched placements, and hang
                    found[node] = (f"node {node} chose {report['read'][what]}, node 0 {first['read'][what]}: "
                                   f"pass the same --device to every node (--device cpu runs on any)")
                else:
                    found[node] = f"node {node}'s {what} differs from node 0's: copy node 0's to every node"
    return list(found.values())


def flags_text(flags, names):
    """The flags names (argparse dests) as given on a command line: --batch-size 100 --resume, or no --resume."""
    return " ".join({True: f"--{name.replace('_', '-')}", False: f"no --{name.replace('_', '-')}"}.get(
        flags[name], f"--{name.replace('_', '-')} {flags[name]}") for name in names)


def agreed(check, flags):
    """Return check()'s result once every process under the launcher has passed its checks, and they agree.

    check() returns (result, read), read being {what: digest(...)} of each thing it read (mnist.npz, a model folder),
    and "device": the kind of device it chose ("cpu", "cuda"), which must be the same in every process; so must
    flags ({argparse dest: value}). If a check fails anywhere (an InputError) or something differs, every process
    stops: the first process of each node raises InputError with one line naming the node and the reason, the
    others exit 1 without a word (their node's first says it). In one process, check() alone runs.
    """
    global NODE
    if flow.env.get_world_size() == 1:
        return check()[0]
    result, read, error = None, {}, None
    try:
        result, read = check()
    except lenet.InputError as e:
        error = str(e)[:ROW // 2]
    mine = json.dumps(dict(local_rank=flow.env.get_local_rank(), address=own_address(), error=error, flags=flags,
                           read=read)).encode()
    rank = flow.env.get_rank()
    with watchdog.deadline(f"error: rank {rank}: the other processes did not reach their checks within "
                           f"{watchdog.SECONDS:g} s (LENET_NODE_TIMEOUT sets the wait)"):
        rows = lenet.gather(np.frombuffer(mine.ljust(ROW, b"\0"), np.uint8))
    if len(rows) != flow.env.get_world_size() or not rows.any(axis=1).all():  # seen with two nodes on one machine
        raise lenet.InputError(f"rank {rank}: OneFlow passed on the checks of {int(rows.any(axis=1).sum())} of the "
                               f"{flow.env.get_world_size()} processes; give each node a machine (an address) of its own")
    reports = [json.loads(bytes(row).rstrip(b"\0")) for row in rows]
    found = problems(reports)
    if found:
        if flow.env.get_local_rank() != 0:
            sys.exit(1)
        raise lenet.InputError("; ".join(found))
    NODE = node_of(rank, reports)
    for other, report in enumerate(reports):
        if report["address"] is not None:
            NODES.setdefault(report["address"], set()).add(node_of(other, reports))
    lost_node_hint("run the same command again on every node")
    return result


def lost_node_hint(hint):
    """Set what this process prints if OneFlow aborts because a process of another node is gone: which node, and
    hint (how to go on; "run the same command again on every node" until set). oneflow_node_watch.c writes it;
    nothing to do in one process."""
    if NODE is None:
        return
    for address, nodes in NODES.items():
        lost = ("a process of this node" if nodes == {NODE} else
                "node " + " or ".join(map(str, sorted(nodes))) + f" ({address})")
        line = f"error: node {NODE} (rank {flow.env.get_rank()}): lost {lost}; {hint}\n"
        watchdog.NODE_WATCH.oneflow_lost_node_line(address.encode(), line.encode(), nodes == {NODE})
