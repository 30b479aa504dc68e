"""Two nodes under OneFlow's launcher (--nnodes 2), each in a network namespace of its own standing in for a machine:
a veth pair between them, one address each, and each node's files in a folder of its own."""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import lenet
import multi_node
from conftest import CLEAN_ENV, ROOT, Lines, launch, left, numpy_accuracy_line, run_script, started, weights

SUBNET = "10.201.7"  # a private /24, seen only inside the two namespaces
PORT = 29500  # free: each namespace has ports of its own
STATED = 60  # seconds within which every process ends after a fault (docs/distributed.md says so)
FLAGS = ["--batch-size", 50, "--seed", 5, "--device", "cpu"]  # 20 steps an epoch on the fixture


def ip(*args):
    """Run `ip args`; return its CompletedProcess (text)."""
    return subprocess.run(["ip", *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def network():
    """Two network namespaces joined by a veth pair, node 0 at SUBNET.1 and node 1 at SUBNET.2: [(namespace,
    address)] for node 0 and 1. Made by the test and removed after it; skips where this machine cannot make them."""
    names = [f"lenet{os.getpid()}n{node}" for node in (0, 1)]
    links = [f"lv{os.getpid()}n{node}" for node in (0, 1)]  # unique too, in case the kernel makes them here first
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) to make network namespaces with")
    made = ip("netns", "add", names[0])
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace here (needs root or CAP_NET_ADMIN): {made.stderr.strip()}")
    try:
        entered = ip("netns", "exec", names[0], "true")  # it also mounts its own /sys, which a sandbox may refuse
        if entered.returncode != 0:
            pytest.skip(f"cannot run a process in a network namespace here: {entered.stderr.strip()}")
        steps = [("netns", "add", names[1]),
                 ("link", "add", links[0], "netns", names[0], "type", "veth", "peer", "name", links[1], "netns", names[1])]
        for node, name in enumerate(names):
            steps += [("-n", name, "addr", "add", f"{SUBNET}.{node + 1}/24", "dev", links[node]),
                      ("-n", name, "link", "set", links[node], "up"), ("-n", name, "link", "set", "lo", "up")]
        for step in steps:
            done = ip(*step)
            assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr}"
        yield [(name, f"{SUBNET}.{node + 1}") for node, name in enumerate(names)]
    finally:
        for name in names:  # removing a namespace removes its end of the veth pair, and so the pair
            ip("netns", "del", name)


@pytest.fixture
def folders(tmp_path):
    """Node 0's and node 1's working folders, each with the fixture as mnist.npz."""
    made = []
    for node in (0, 1):
        made.append(tmp_path / f"node{node}")
        made[-1].mkdir()
        shutil.copy(ROOT / "tests" / "data" / "mnist.npz", made[-1] / "mnist.npz")
    return made


def node_command(network, node, script, args, master=None, processes=1, fake_gpu=False):
    """The launcher's command for node (0 or 1) of two, processes each, run in that node's namespace; with fake_gpu,
    its processes see an A100 (tests/fake_gpu.py)."""
    return ["ip", "netns", "exec", network[node][0], sys.executable, "-m", "oneflow.distributed.launch", "--nnodes", "2",
            "--node_rank", str(node), "--nproc_per_node", str(processes), "--master_addr", master or network[0][1],
            "--master_port", str(PORT), *([str(ROOT / "tests" / "fake_gpu.py")] if fake_gpu else []), str(ROOT / script),
            *map(str, args)]


def hex_address(address):
    """An IPv4 address as /proc/net/tcp prints it (also the end of a v4-mapped IPv6 one in tcp6)."""
    return socket.inet_aton(address)[::-1].hex().upper()


def wait_for_socket(process, wanted, what):
    """Wait until the network namespace of node 0's launcher (process) has a TCP socket for which wanted(local,
    remote, state) is true (addresses and states as /proc/net/tcp gives them), or the launcher has ended."""
    seconds = left()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        sockets = []
        try:
            for table in ("tcp", "tcp6"):  # OneFlow's gRPC listens on IPv6's "any" where it can, else IPv4's
                with open(f"/proc/{process.pid}/net/{table}") as f:  # the sockets of the launcher's namespace
                    sockets += [line.split()[1:4] for line in f.readlines()[1:]]
        except FileNotFoundError:  # the launcher has just ended: a zombie has no namespace to read
            return
        if any(wanted(*socket_) for socket_ in sockets):
            return
        time.sleep(0.1)
    if process.poll() is None:
        pytest.fail(f"{what} after {seconds:.0f} s")


def wait_until_listening(process):
    """Wait until node 0's first process listens on PORT (or its launcher has ended). Node 1 is started then: OneFlow's
    processes that find no one listening try again only 10 s later."""
    wait_for_socket(process, lambda local, remote, state: local.endswith(f":{PORT:04X}") and state == "0A",
                    f"nothing listens on port {PORT} in node 0's namespace")


def wait_until_met(process, network):
    """Wait until a process of node 1 is connected to one of node 0 (or node 0's launcher has ended): the processes
    have met, and the checks before the first step begin."""
    node1 = hex_address(network[1][1])
    wait_for_socket(process, lambda local, remote, state: remote.split(":")[0].endswith(node1) and state == "01",
                    "no process of node 1 connected to node 0")


@contextlib.contextmanager
def nodes_started(network, folders, args, script="lenet_train.py", env=None, master=None, processes=1, fake_gpu=()):
    """Both nodes' launchers started, node i with args[i], node 1 once node 0 listens, processes a node, the nodes in
    fake_gpu seeing an A100: yields [(process, stdout Lines, stderr Lines)] for node 0 and 1; both are killed (with
    their processes) when the block ends."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for node in (0, 1):
            process = stack.enter_context(started(
                node_command(network, node, script, args[node], master if node == 1 else None, processes,
                             node in fake_gpu), cwd=folders[node],
                env={**CLEAN_ENV, **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True))
            nodes.append((process, Lines(process.stdout), Lines(process.stderr)))
            if node == 0:
                wait_until_listening(process)
        yield nodes


def ended_by(nodes, deadline):
    """Wait until each node's launcher and every process it started have ended, and fail unless all have by deadline
    (time.monotonic()); return [(status, stdout, stderr)] for node 0 and 1."""
    left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
    for node, (process, _, _) in enumerate(nodes):
        try:
            process.wait(timeout=left())
        except subprocess.TimeoutExpired:
            pytest.fail(f"node {node}'s launcher was still running at the deadline:\n{''.join(nodes[node][2].lines)}")
    # A stream ends when every process that holds it has ended: the launcher's processes write to the same two.
    return [(process.returncode, stdout.text(left()), stderr.text(left())) for process, stdout, stderr in nodes]


def run_nodes(network, folders, args, **kwargs):
    """Run both nodes to their end; return [(status, stdout, stderr)] for node 0 and 1."""
    with nodes_started(network, folders, args, **kwargs) as nodes:
        return ended_by(nodes, time.monotonic() + 600)


def errors(stderr):
    """Our one-line reasons in a node's stderr: its lines that start with "error: "."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def epoch_losses(metrics):
    """The mean loss of each epoch in a --metrics file."""
    return [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]


def report(local_rank, error=None, data="digest", device="cpu", **flags):
    """One process's report to multi_node.agreed's collective."""
    return dict(local_rank=local_rank, address="10.0.0.1", error=error, flags=dict(dict(batch_size=50, resume=False),
                **flags), read={"device": device, "mnist.npz": data})


def test_the_reasons_to_stop_name_each_node_once_with_two_processes_a_node():
    # Ranks 0 and 1 are node 0, ranks 2 and 3 node 1 (--nproc_per_node 2).
    assert multi_node.problems([report(0), report(1), report(0, "no model at m"), report(1, "no model at m")]) == [
        "node 1: no model at m"]
    assert multi_node.problems([report(0), report(1), report(0), report(1, resume=True, batch_size=10)]) == [
        "node 1 was given --batch-size 10 --resume, node 0 --batch-size 50 no --resume: give every node the same"]
    assert multi_node.problems([report(0), report(1, "no data"), report(0, data="other"), report(1)]) == [
        "node 0: no data", "node 1's mnist.npz differs from node 0's: copy node 0's to every node"]
    assert multi_node.problems([report(0, "no data"), report(1), report(0, batch_size=10), report(1)]) == [
        "node 0: no data"]  # nothing to compare the others with
    assert multi_node.problems([report(0), report(1), report(0, device="cuda"), report(1, device="cuda")]) == [
        "node 1 chose cuda, node 0 cpu: pass the same --device to every node (--device cpu runs on any)"]
    assert multi_node.problems([report(0), report(1), report(0), report(1)]) == []


def test_two_nodes_train_as_two_processes_of_one_machine_do(network, folders, tmp_path):
    flags = [*FLAGS, "--epochs", 2, "--metrics", "metrics.jsonl"]
    one_machine = tmp_path / "one"
    one_machine.mkdir()
    shutil.copy(folders[0] / "mnist.npz", one_machine)
    alone = launch("lenet_train.py", *flags, cwd=one_machine)
    assert alone.returncode == 0, alone.stderr

    (status0, out0, err0), (status1, out1, err1) = run_nodes(network, folders, [flags, flags])
    assert status0 == 0 and status1 == 0, err0 + err1
    assert out0.splitlines()[0] == "device cpu x 2 processes (data-parallel)"
    assert out0.splitlines()[-1] == "model saved to ./lenet_models_1" and out1 == ""
    # Node 0 alone writes; node 1 reads its own mnist.npz and writes nothing.
    assert sorted(os.listdir(folders[0])) == ["lenet_models_1", "metrics.jsonl", "mnist.npz"]
    assert os.listdir(folders[1]) == ["mnist.npz"]
    two_nodes, two_processes = epoch_losses(folders[0] / "metrics.jsonl"), epoch_losses(one_machine / "metrics.jsonl")
    assert len(two_nodes) == 2 and np.abs(np.subtract(two_nodes, two_processes)).max() < 1e-6, (two_nodes, two_processes)
    a, b = weights(folders[0] / "lenet_models_1"), weights(one_machine / "lenet_models_1")  # loads in this process
    for name in a:
        assert np.abs(a[name] - b[name]).max() < 1e-6, name

    # Evaluated across both nodes, each with its own copy of the model, as one process evaluates it.
    shutil.copytree(folders[0] / "lenet_models_1", folders[1] / "lenet_models_1")
    single = run_script("lenet_eval.py", cwd=folders[0])
    assert single.returncode == 0, single.stderr
    (status0, out0, err0), (status1, out1, err1) = run_nodes(network, folders, [["--device", "cpu"]] * 2,
                                                             script="lenet_eval.py")
    assert status0 == 0 and status1 == 0, err0 + err1
    assert out0.splitlines()[-1] == single.stdout.splitlines()[-1] and out1 == ""
    assert out0.splitlines()[-1] == numpy_accuracy_line(folders[1] / "lenet_models_1")  # recounted with NumPy


def trained_one_epoch(folder):
    """Train one epoch in folder (lenet_models_1, with its training state) in one process."""
    result = run_script("lenet_train.py", *FLAGS, "--epochs", 1, cwd=folder)
    assert result.returncode == 0, result.stderr


def no_data(folders):
    os.remove(folders[1] / "mnist.npz")  # and the namespace has no way out to download it


def no_model_to_resume(folders):
    trained_one_epoch(folders[0])


def other_data(folders):
    with np.load(folders[1] / "mnist.npz") as npz:
        arrays = dict(npz)
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % 10  # one label of 1,200 changed
    np.savez(folders[1] / "mnist.npz", **arrays)


@pytest.mark.parametrize("fault, flags, line", [
    (no_data, ([], []), "error: node 1: could not download "),
    (no_model_to_resume, (["--resume"], ["--resume"]), "error: node 1: no model at ./lenet_models_1 (run lenet_train.py first)"),
    (other_data, ([], []), "error: node 1's mnist.npz differs from node 0's: copy node 0's to every node"),
    (None, ([], ["--batch-size", 100]), "error: node 1 was given --batch-size 100, node 0 --batch-size 50: give every node the same"),
])
def test_a_problem_on_one_node_found_before_the_first_step_ends_every_node_with_its_line(network, folders, fault,
                                                                                         flags, line):
    if fault is not None:
        fault(folders)
    saved = weights(folders[0] / "lenet_models_1") if fault is no_model_to_resume else None
    args = [[*FLAGS, "--epochs", 2, *node_flags] for node_flags in flags]  # a flag given twice: the last counts
    with nodes_started(network, folders, args) as nodes:
        wait_until_met(nodes[0][0], network)  # the fault shows once the processes meet
        results = ended_by(nodes, time.monotonic() + STATED)
    for status, stdout, stderr in results:
        assert status == 1, stderr  # the launcher's status when its process exits 1
        assert len(errors(stderr)) == 1 and errors(stderr)[0].startswith(line), stderr
        assert "Traceback" not in stderr.split("error: ")[0]  # no traceback of ours before the line (the launcher's follows)
        assert "lenet_train.py\", line" not in stderr and "multi_node.py\", line" not in stderr
        assert "epoch 1" not in stdout  # stopped before the first step
    if saved is not None:  # node 0's model is untouched and still resumes
        after = weights(folders[0] / "lenet_models_1")
        assert all(np.array_equal(saved[name], after[name]) for name in saved)
        resumed = run_script("lenet_train.py", *FLAGS, "--epochs", 2, "--resume", cwd=folders[0])
        assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("script", ["lenet_train.py", "lenet_eval.py"])
def test_nodes_that_choose_different_devices_stop_before_the_first_step(network, folders, trained, script):
    # Node 1's driver shows an A100 and no --device is given: it chooses cuda, node 0 the CPU. Placements that differ
    # would hang the first collective of the job; the agreement stops both nodes first.
    for folder in folders:
        shutil.copytree(trained[0] / "lenet_models_1", folder / "lenet_models_1")  # lenet_eval.py's to read
    with nodes_started(network, folders, [["--batch-size", 50]] * 2, script=script, fake_gpu=[1]) as nodes:
        wait_until_met(nodes[0][0], network)
        results = ended_by(nodes, time.monotonic() + STATED)
    for status, stdout, stderr in results:
        assert status == 1, stderr
        assert errors(stderr) == ["error: node 1 chose cuda, node 0 cpu: pass the same --device to every node "
                                  "(--device cpu runs on any)"], stderr
        assert "epoch 1" not in stdout and "accuracy" not in stdout


def test_a_node_that_never_joins_ends_every_node_after_the_timeout(network, folders):
    wrong = f"{SUBNET}.9"  # node 1 looks for the first node where there is none
    with nodes_started(network, folders, [[*FLAGS, "--epochs", 2]] * 2, env={"LENET_NODE_TIMEOUT": "10"},
                       master=wrong) as nodes:  # node 0 listens, waiting for node 1 for ever: the fault shows
        results = ended_by(nodes, time.monotonic() + STATED)
    for node, (status, stdout, stderr) in enumerate(results):
        master = wrong if node == 1 else network[0][1]
        assert status == 1, stderr
        assert errors(stderr) == [f"error: rank {node}: not all 2 processes met at {master}:{PORT} within 10 s; start the "
                                  f"launcher on every node with the same --nnodes, --nproc_per_node, --master_addr and "
                                  f"--master_port (LENET_NODE_TIMEOUT sets the wait)"], stderr
        assert "epoch 1" not in stdout


def training_process(launcher, local_rank=0):
    """The pid of the training process of local_rank that the launcher (a Popen) started."""
    with open(f"/proc/{launcher.pid}/task/{launcher.pid}/children") as f:
        children = [int(pid) for pid in f.read().split()]
    for pid in children:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"LOCAL_RANK={local_rank}".encode() in f.read().split(b"\0"):
                return pid
    pytest.fail(f"no process of local rank {local_rank} among the launcher's {children}")


@pytest.mark.parametrize("killed", [0, 1])
def test_a_training_process_killed_mid_epoch_ends_every_node_and_the_last_epoch_resumes(network, folders, killed):
    survivor = 1 - killed
    # 20 steps an epoch. Step 21's loss takes both processes' gradients: once node 0 prints it, both have passed the
    # end of epoch 1, where each learns that epoch 1 is saved.
    with nodes_started(network, folders, [[*FLAGS, "--epochs", 20, "--log-interval", 21]] * 2) as nodes:
        nodes[0][1].starting("epoch 2 step 21 loss ")
        os.kill(training_process(nodes[killed][0]), signal.SIGKILL)
        results = ended_by(nodes, time.monotonic() + STATED)
    assert results[killed][0] == 1 and "died with <Signals.SIGKILL: 9>" in results[killed][2]
    status, _, stderr = results[survivor]
    assert status == 1
    # OneFlow aborts (a glog FATAL and its stack); the line after them says which node was lost and how to go on.
    assert len(errors(stderr)) == 1, stderr
    prefix = f"error: node {survivor} (rank {survivor}): lost node {killed} ({network[killed][1]}); epoch "
    line = errors(stderr)[0]
    assert line.startswith(prefix), stderr
    epoch = int(line[len(prefix):].split(",")[0])
    assert line == (f"{prefix}{epoch}, the last complete one, is saved in ./lenet_models_1 on node 0: copy it to every "
                    f"node and run the same command there with --resume")
    assert epoch >= 1
    assert lenet.CheckPoint(lenet.LeNet()).load(folders[0] / "lenet_models_1")["epoch"] == epoch  # loads, at that epoch

    # As the line says: node 0's model copied to node 1, and the same command with --resume.
    shutil.copytree(folders[0] / "lenet_models_1", folders[1] / "lenet_models_1")
    resumed = run_nodes(network, folders, [[*FLAGS, "--epochs", epoch + 1, "--resume"]] * 2)
    assert [status for status, _, _ in resumed] == [0, 0], resumed[0][2] + resumed[1][2]
    assert [line.split(" loss")[0] for line in resumed[0][1].splitlines() if "test accuracy" in line] == [f"epoch {epoch + 1}"]




def ended(pid):
    """Whether process pid has ended: gone, or a zombie its parent has not yet waited for."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_with_two_processes_a_node_every_process_names_the_node_that_was_lost(network, folders):
    # Ranks 0 and 1 are node 0, ranks 2 and 3 node 1; rank 3 is killed. Each launcher would end its other processes
    # (SIGTERM, at once) a second or less after one of them ends, maybe before they write their line: both launchers
    # are held (SIGSTOP) until each process has ended on its own.
    # 100 splits into 4 processes' 25; 10 steps an epoch. Step 11's loss takes every process's gradients: once node 0
    # prints it, each process has passed the end of epoch 1, where it learns that epoch 1 is saved.
    flags = [*FLAGS, "--batch-size", 100, "--epochs", 20, "--log-interval", 11]
    with nodes_started(network, folders, [flags] * 2, processes=2) as nodes:
        nodes[0][1].starting("epoch 2 step 11 loss ")
        ranks = [training_process(nodes[rank // 2][0], rank % 2) for rank in range(4)]
        for process, _, _ in nodes:
            os.kill(process.pid, signal.SIGSTOP)
        os.kill(ranks[3], signal.SIGKILL)
        deadline = time.monotonic() + STATED
        while not all(ended(pid) for pid in ranks[:3]):
            assert time.monotonic() < deadline, [pid for pid in ranks[:3] if not ended(pid)]
            time.sleep(0.1)
        for process, _, _ in nodes:
            os.kill(process.pid, signal.SIGCONT)
        results = ended_by(nodes, deadline)
    assert [status for status, _, _ in results] == [1, 1]
    lines = {rank: [line for line in errors(results[rank // 2][2])
                    if line.startswith(f"error: node {rank // 2} (rank {rank}): lost ")] for rank in range(4)}
    assert sum(map(len, lines.values())) == len(errors(results[0][2])) + len(errors(results[1][2]))  # no other line
    epoch = lines[0][0].split("; epoch ")[1].split(",")[0]  # the last complete epoch: 1, or a later one
    hint = (f"epoch {epoch}, the last complete one, is saved in ./lenet_models_1 on node 0: copy it to every node and "
            f"run the same command there with --resume")
    own = {rank: f"error: node {rank // 2} (rank {rank}): lost a process of this node; {hint}" for rank in range(3)}
    for rank in (0, 1):  # node 1 first, then maybe a sibling that died of the loss too
        assert lines[rank][0] == f"error: node 0 (rank {rank}): lost node 1 ({network[1][1]}); {hint}", lines
        assert set(lines[rank][1:]) <= {own[rank]}, lines
    # Node 1's survivor: a process of its own node, and maybe node 0 first, if node 0's processes were gone by then.
    assert own[2] in lines[2], lines
    assert set(lines[2]) <= {own[2], f"error: node 1 (rank 2): lost node 0 ({network[0][1]}); {hint}"}, lines
    assert lines[3] == []
