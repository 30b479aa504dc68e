"""OneFlow 0.9.0's nn.Graph race, reproduced: how many fresh processes die or hang, with and without oneflow_graph_fix.

    .venv/bin/python benchmarks/graph_crash.py                  # about 25 minutes on 2 cores; on an idle machine
    .venv/bin/python benchmarks/graph_crash.py --only "batch 1" --runs 3

A graph run that ends before OneFlow has recorded it in its queue of runs in flight makes OneFlow pop an empty
queue (oneflow_native/oneflow_graph_fix.c says where). Short runs (a batch of 1 or 2, a few ms) are exposed, and
only while both cores are free: load hides it, so run this on an idle machine. Each configuration runs --runs times
with the fix left out (LENET_GRAPH_FIX=0) and, where the table has a "fixed" row, with it; the column "overtaken"
counts, with the fix, the runs that ended before they were recorded (each one of them a crash without it).

Prints a Markdown table and writes it into BENCHMARKS.md between its graph-crash markers.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import cpu_model, one_epoch_model, publish

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARK_START, MARK_END = "<!-- graph-crash:start -->", "<!-- graph-crash:end -->"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data-dir", default=str(REPO / "data/mnist-5k"),
                    help="folder of the mnist.npz to train the model on and evaluate (default: data/mnist-5k)")
parser.add_argument("--runs", type=int, default=None, help="processes per row, instead of each row's own number (default: the row's)")
parser.add_argument("--only", default=None, help="run only the configurations whose name contains this text (default: all)")
parser.add_argument("--timeout", type=float, default=600, help="seconds after which a process counts as hung and is killed (default: 600)")
parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="Markdown file to write the table into (default: BENCHMARKS.md)")

# A loop of graph (or eager) runs on one batch, in the main thread, as lenet_app.py runs its EvalGraph: it prints
# the milliseconds a call and, with the fix, the runs that overtook their record (oneflow_setup.graph_runs()).
LOOP = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
import numpy as np
import lenet, oneflow_setup
mode, batch_size, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
device = lenet.choose_device("cpu")[0]
model = lenet.LeNet()
lenet.CheckPoint(model).init(0)
images = np.random.default_rng(0).random((batch_size, 1, 28, 28)).astype(np.float32)
graph = lenet.EvalGraph(model)
model.eval()
run = {{"graph": lambda: lenet.predict(graph, images, batch_size, device),
       "eager": lambda: model(lenet.flow.tensor(images)).numpy()}}[mode]
run()  # compiles the graph
start = time.perf_counter()
for _ in range(calls):
    run()
print("ms", 1000 * (time.perf_counter() - start) / calls)
print("runs", *(oneflow_setup.graph_runs() or ()))
"""

# A script run as a user runs it, which prints at its exit the runs that overtook their record.
SCRIPT = f"""
import atexit, runpy, sys
sys.path.insert(0, {str(REPO)!r})
import oneflow_setup
atexit.register(lambda: print("runs", *(oneflow_setup.graph_runs() or ()), file=sys.stderr))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

OFF = {"LENET_GRAPH_FIX": "0"}
ONEFLOW_THREADS = {"ONEFLOW_ACTOR_ENABLE_LIGHT_ACTOR": "0", "ONEFLOW_THREAD_ENABLE_LOCAL_MESSAGE_QUEUE": "0",
                   "ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD": "0"}


def configurations(model_dir, data_dir, images):
    """[(name, command, environment, runs, with the fix too)]: the issue's cases, then the settings that might matter."""
    loop = [sys.executable, "-c", LOOP]
    script = [sys.executable, "-c", SCRIPT]
    model = ["--model-dir", str(model_dir)]
    return [
        ("`EvalGraph`, batch 1, 1,000 calls", loop + ["graph", "1", "1000"], {}, 6, True),
        ("the same, `LENET_SPEEDUPS=0`, 2,000 calls", loop + ["graph", "1", "2000"], {"LENET_SPEEDUPS": "0"}, 6, True),
        ("the same, `ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS=0`", loop + ["graph", "1", "1000"],
         {"ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS": "0"}, 6, False),
        ("the same, OneFlow's light actors, local message queues and worker-thread compute off", loop + ["graph", "1", "1000"],
         ONEFLOW_THREADS, 6, False),
        ("the same, the scheduler not niced (`LENET_SCHEDULER_NICE=0`)", loop + ["graph", "1", "1000"],
         {"LENET_SCHEDULER_NICE": "0"}, 6, False),
        ("the same, OneFlow's OpenBLAS instead of MKL (`LENET_BLAS=openblas`)", loop + ["graph", "1", "1000"],
         {"LENET_BLAS": "openblas"}, 6, False),
        ("`EvalGraph`, batch 2, 3,000 calls", loop + ["graph", "2", "3000"], {}, 3, True),
        ("`EvalGraph`, batch 10, 3,000 calls", loop + ["graph", "10", "3000"], {}, 3, True),
        ("`EvalGraph`, batch 100, 300 calls", loop + ["graph", "100", "300"], {}, 2, False),
        ("eager `model(x)`, batch 1, 3,000 calls", loop + ["eager", "1", "3000"], {}, 3, False),
        ("`lenet_eval.py --batch-size 1` (1,000 test digits)",
         script + [str(REPO / "lenet_eval.py"), "--batch-size", "1", "--data-dir", str(data_dir), *model], {}, 5, True),
        ("`lenet_test.py --batch-size 1` on 2,000 PNG files",
         script + [str(REPO / "lenet_test.py"), "--batch-size", "1", *model, *map(str, images)], {}, 5, True),
        ("`lenet_train.py --batch-size 1 --max-steps 2000`",
         script + [str(REPO / "lenet_train.py"), "--batch-size", "1", "--max-steps", "2000", "--data-dir", str(data_dir),
                   "--model-dir", "{tmp}"], {}, 5, True),
    ]


def run_once(command, env, timeout):
    """Run command in a session of its own; return (outcome, seconds, stdout, stderr): outcome "ok", "exit N",
    a signal's name, or "hung" (killed with its children after timeout seconds)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        command = [part.replace("{tmp}", str(Path(tmp) / "model")) for part in command]
        process = subprocess.Popen(command, cwd=tmp, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return "hung", time.perf_counter() - start, stdout, stderr
    seconds = time.perf_counter() - start
    if process.returncode < 0:
        return signal.Signals(-process.returncode).name, seconds, stdout, stderr
    return ("ok" if process.returncode == 0 else f"exit {process.returncode}"), seconds, stdout, stderr


def overtaken(stdout, stderr):
    """The runs that ended before they were recorded, as the process printed them; None where it printed none."""
    for line in (stdout + stderr).splitlines():
        words = line.split()
        if words[:1] == ["runs"] and len(words) == 4:
            return int(words[3])
    return None


def outcomes(results):
    """'0', or the deaths and hangs counted by kind: '4 (3 SIGSEGV, 1 SIGABRT)'."""
    bad = [outcome for outcome, *_ in results if outcome != "ok"]
    if not bad:
        return "0"
    kinds = ", ".join(f"{bad.count(kind)} {kind}" for kind in sorted(set(bad), key=bad.index))
    return f"{len(bad)} ({kinds})"


def main():
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one_epoch_model(data_dir, tmp / "model")
        with np.load(data_dir / "mnist.npz") as npz:
            images = [tmp / "png" / f"{i:04d}.png" for i in range(2000)]
            images[0].parent.mkdir()
            for path, pixels in zip(images, np.resize(npz["x_test"], (2000, 28, 28))):
                Image.fromarray(pixels).save(path)
        for name, command, env, runs, with_fix in configurations(tmp / "model", data_dir, images):
            if args.only and args.only not in name:
                continue
            runs = args.runs or runs
            for fix, fix_env in [("off", OFF)] + ([("on", {})] if with_fix else []):
                results = []
                for run in range(runs):
                    results.append(run_once(command, {**env, **fix_env}, args.timeout))
                    print(f"{name}, fix {fix}, run {run + 1} of {runs}: {results[-1][0]} in {results[-1][1]:.0f} s",
                          file=sys.stderr)
                milliseconds = [float(out.split()[1]) for outcome, _, out, _ in results if out.startswith("ms ")]
                counts = [count for *_, out, err in results if (count := overtaken(out, err)) is not None]
                rows.append((name, fix, runs, f"{statistics.median(milliseconds):.1f}" if milliseconds else "-",
                             f"{statistics.median(seconds for _, seconds, *_ in results):.0f}", outcomes(results),
                             f"{min(counts)}-{max(counts)}" if counts else "-"))
    load_after = os.getloadavg()
    lines = ["| what runs, per process | fix | processes | ms a call | s a process | died or hung | overtaken (min-max) |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    lines += [f"| {' | '.join(map(str, row))} |" for row in rows]
    publish(args.output, MARK_START, MARK_END,
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu_model()}, {os.cpu_count()} cores; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
            lines)


if __name__ == "__main__":
    main()
