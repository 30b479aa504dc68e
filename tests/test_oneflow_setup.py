"""oneflow_setup: OneFlow imports quietly, MKL serves its matrix products, its scheduler thread is niced on the CPU,
the training batch goes through in two halves, and LENET_SPEEDUPS=0 turns every speed setting off.
(Their speed is measured in benchmarks/bench.py, never here.)"""
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import lenet
import oneflow_setup
from conftest import CLEAN_ENV, ROOT, Lines, initialised, run, started
from lenet import flow

# Import lenet in a fresh process, choose the CPU, run one OneFlow matrix product, then print what was set.
PROBE = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import lenet, oneflow_setup
lenet.choose_device("cpu")
print("blas", oneflow_setup.BLAS)
print("scheduler", oneflow_setup.SCHEDULER_THREAD)
print("found", oneflow_setup.find_scheduler_thread())
base = os.getpriority(os.PRIO_PROCESS, 0)  # the main thread's: 0, or what `nice` started the tests with
print("niced", sorted((t, os.getpriority(os.PRIO_PROCESS, int(t)) - base) for t in os.listdir("/proc/self/task")
                      if os.getpriority(os.PRIO_PROCESS, int(t)) != base))
print("room", 19 - base)
print("product", float((lenet.flow.ones(3, 4) @ lenet.flow.ones(4, 5)).sum().numpy()))
print("omp", os.environ.get("OMP_NUM_THREADS"))
print("ready", flush=True)
sys.stdin.read()  # stays alive, for a debugger to look at its threads, until stdin closes
"""


def probe(**env):
    """Run PROBE with these environment variables added; return ({first word: the rest}, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as folder:  # not the repository: a run there would read and write its files
        result = run([sys.executable, "-c", PROBE], cwd=folder, env=env)
    assert result.returncode == 0, result.stderr
    lines = [line.split(" ", 1) for line in result.stdout.splitlines()]
    return {words[0]: words[1] if len(words) > 1 else "" for words in lines}, result.stdout, result.stderr


def niced_alone(values):
    """Whether the scheduler thread alone is nicer than the rest of the process, by 10 (or as much as there is room
    for under 19, where the tests were started with `nice`), as PROBE's values say."""
    room = int(values["room"])
    if room == 0:
        return values["scheduler"] == "None" and values["niced"] == "[]"
    return values["scheduler"] == values["found"] and values["niced"] == f"[('{values['found']}', {min(10, room)})]"


@pytest.mark.skipif(oneflow_setup.BLAS is None, reason="the mkl wheel is not installed (not an x86-64 machine)")
def test_mkl_computes_oneflows_matrix_products():
    values, stdout, _ = probe(MKL_VERBOSE="1")  # MKL prints a line for every call it serves
    assert values["blas"].endswith(".so.3") and "libmkl_rt" in values["blas"]
    assert "MKL_VERBOSE SGEMM(N,N,5,3,4," in stdout  # the 3x4 by 4x5 product above (column-major: 5, 3, 4)
    assert values["product"] == "60.0"


@pytest.mark.parametrize("switch", [{"LENET_BLAS": "openblas"}, {"LENET_SPEEDUPS": "0"}])
def test_oneflows_own_blas_when_mkl_is_turned_off(switch):
    values, stdout, _ = probe(MKL_VERBOSE="1", **switch)
    assert values["blas"] == "None"
    assert "MKL_VERBOSE" not in stdout
    assert values["product"] == "60.0"


def test_speedups_off_leaves_every_setting_as_oneflow_has_it():
    values, _, _ = probe(LENET_SPEEDUPS="0")
    assert values["omp"] == "None"  # OneFlow's own thread count
    assert values["scheduler"] == "None" and values["niced"] == "[]"


def test_import_prints_no_ibverbs_notice_but_keeps_oneflows_other_lines():
    _, _, quiet = probe()
    assert oneflow_setup.IBVERBS_NOTICE not in quiet
    assert quiet == ""  # nothing else is printed on a CPU machine either
    # With glog's INFO lines turned on, OneFlow's own lines from inside the import still get through.
    _, _, loud = probe(GLOG_minloglevel="0", GLOG_logtostderr="1")
    assert oneflow_setup.IBVERBS_NOTICE not in loud
    assert re.search(r"^I\d{8} ", loud, re.MULTILINE)  # a glog INFO line: I<mmdd> <time> ...


# Import lenet in a fresh process, choose the device (with a fake driver that shows an A100), then build the
# EvalGraph and print the graph settings in the environment and the convolutions' ops of the compiled graph.
# OneFlow picks those ops in its Conv2d functor, the same for every device, so a graph built on the CPU after a
# GPU was chosen shows what the GPU's graph gets; there is no GPU here to build it on.
GRAPH = f"""
import os, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
import gpu_probe, lenet
from fake_cuda import A100, FakeDriver
gpu_probe.load_library = lambda: FakeDriver([A100])
print("device", lenet.choose_device(sys.argv[1] or None)[0], file=sys.stderr)
for name in ("ONEFLOW_ENABLE_ONEDNN_OPTS", "ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS"):
    print(name, os.environ.get(name), file=sys.stderr)
graph = lenet.EvalGraph(lenet.LeNet())
graph(lenet.flow.zeros(2, 1, 28, 28))
ops = [op.user_conf for op in graph._full_job_proto.net.op if op.HasField("user_conf")]
print("ops", [(op.op_type_name, sorted(op.input)) for op in ops if op.op_type_name in ("conv2d", "bias_add")],
      file=sys.stderr)
"""
UNFUSED = str([("conv2d", ["in", "weight"]), ("bias_add", ["a", "b"])] * 2)  # OneFlow's default: a bias_add each
FUSED = str([("conv2d", ["bias", "in", "weight"])] * 2)


@pytest.mark.parametrize("device, env, expected", [
    ("", {}, ("cuda:0", "None", "None", UNFUSED, True)),  # the fake A100 chosen: nothing set, at import or after
    ("cpu", {}, ("cpu:0", "0", "1", FUSED, False)),  # set after the import, once the CPU is chosen: still read
    ("cpu", {"LENET_SPEEDUPS": "0"}, ("cpu:0", "None", "None", UNFUSED, True)),
    # The user's own setting kept: the bias adds are there again, and still not sent to oneDNN.
    ("cpu", {"ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS": "0"}, ("cpu:0", "0", "0", UNFUSED, False)),
])
def test_the_graph_settings_are_set_for_the_cpu_alone_and_read_when_a_graph_is_built(device, env, expected, tmp_path):
    """OneFlow reads ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS at the first convolution of a thread and
    ONEFLOW_ENABLE_ONEDNN_OPTS whenever it makes a CPU kernel, not at its import: set by on_cpu after the import,
    they still give the CPU's graph a conv2d with its bias inside and keep oneDNN from its binary ops, and a run
    on a GPU never has them."""
    clean = {name: value for name, value in CLEAN_ENV.items()
             if name not in ("ONEFLOW_ENABLE_ONEDNN_OPTS", "ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS")}
    # DNNL_VERBOSE=1: oneDNN prints a line on stdout for each primitive it runs, in blocks that can end mid-line,
    # so the script's own lines go to stderr, one whole line a write.
    result = run([sys.executable, "-c", GRAPH, device], cwd=tmp_path,
                 env={**clean, **env, "LENET_SCHEDULER_NICE": "0", "DNNL_VERBOSE": "1"})
    assert result.returncode == 0, result.stderr
    keys = ("device", "ONEFLOW_ENABLE_ONEDNN_OPTS", "ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS", "ops")
    values = dict(line.split(" ", 1) for line in result.stderr.splitlines() if line.split(" ", 1)[0] in keys)
    onednn_binary = any(line.startswith("dnnl_verbose,exec,cpu,binary,") for line in result.stdout.splitlines())
    assert (*(values[key] for key in keys), onednn_binary) == expected  # the bias adds sent to oneDNN


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads are found through Linux's /proc")
def test_the_scheduler_thread_alone_runs_at_nice_10():
    values, _, _ = probe()
    assert niced_alone(values), values


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads are found through Linux's /proc")
def test_the_scheduler_thread_is_found_while_other_processes_hold_every_core():
    with contextlib.ExitStack() as loops:
        for _ in range(os.cpu_count() or 1):  # a busy loop on each core, ended with the test
            loops.enter_context(started([sys.executable, "-c", "while True: pass"]))
        values, _, _ = probe()
    assert niced_alone(values), values


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is needed to read the threads' stacks")
def test_the_niced_thread_is_oneflows_vm_scheduler(tmp_path):
    with started([sys.executable, "-c", PROBE], cwd=tmp_path, env=CLEAN_ENV, text=True, stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        output = Lines(process.stdout)
        output.wait_for("ready")
        values = dict(line.rstrip("\n").partition(" ")[::2] for line in output.lines)
        stacks = run(["gdb", "-p", str(process.pid), "-batch", "-nx", "-ex", "thread apply all bt 12"], cwd=tmp_path).stdout
    # gdb prints each thread as "Thread N (Thread 0x... (LWP tid) ...):" followed by its stack.
    threads = {m[1]: m[2] for m in re.finditer(r"\(LWP (\d+)\)(.*?)(?=\nThread |\Z)", stacks, re.DOTALL)}
    schedulers = [tid for tid, stack in threads.items() if "oneflow::VirtualMachine::ScheduleLoop" in stack]
    assert len(schedulers) == 1, stacks[-3000:]
    assert values["found"] == schedulers[0]  # the thread that gets niced, as niced_alone checks


def test_scheduler_priority_left_alone_when_turned_off():
    values, _, _ = probe(LENET_SCHEDULER_NICE="0")
    assert values["scheduler"] == "None"
    assert values["niced"] == "[]"


def test_a_training_step_in_two_halves_equals_one_over_the_whole_batch(monkeypatch):
    from lenet_train import TrainGraph  # noqa: PLC0415  (a script's module: imported only here)

    rng = np.random.default_rng(0)
    batch = (rng.random((10, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 10).astype(np.int32),
             (np.arange(10) < 7).astype(np.float32), lenet.dropout_mask(rng, 10))  # 3 padding rows
    initial = {name: p.numpy() for name, p in initialised(0).state_dict().items()}
    results, parts, cat = [], [], flow.cat
    monkeypatch.setattr(flow, "cat", lambda tensors, *args, **kwargs: parts.append(len(tensors)) or cat(tensors, *args, **kwargs))
    for speedups in (True, False):
        monkeypatch.setattr(oneflow_setup, "SPEEDUPS", speedups)
        model = initialised(0)
        graph = TrainGraph(model, flow.optim.SGD(model.parameters(), lr=0.1))
        loss = graph(*map(flow.tensor, batch)).numpy()
        results.append((loss, {name: p.numpy() for name, p in model.state_dict().items()}))
    assert parts == [2]  # the halves were joined once, in the first graph only
    (loss_halves, halves), (loss_whole, whole) = results
    assert abs(loss_halves - loss_whole) < 1e-6 and loss_whole > 1.0  # an untrained model's loss: about ln 10
    for name in whole:
        assert np.allclose(halves[name], whole[name], rtol=0, atol=1e-6), name
        assert not np.array_equal(whole[name], initial[name]), name  # the step changed every parameter
