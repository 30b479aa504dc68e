"""OneFlow and PyTorch side by side on the project's LeNet: speed, memory and 5-epoch accuracy on this machine.

    .venv/bin/python benchmarks/bench.py --epochs 5     # about 15 minutes on 2 cores; without --epochs no 5-epoch row

The full-size rows train one epoch of Fashion-MNIST's 60,000 images (benchmarks/fashion_mnist.py writes them as
an mnist.npz from Debian's dataset-fashion-mnist); where that package is missing the table says so.

Prints a Markdown table and writes it into BENCHMARKS.md (between its bench markers, keeping the rest).
Every figure comes from a fresh process; the frameworks take turns within each round, so a busy machine slows
them alike: compare ratios from one run. PyTorch runs under --torch-python (a Python 3.11 venv with
torch==2.13.0, never a requirement of the project); without it the column says "not available".
"""
import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

import fashion_mnist

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", default=str(REPO / "data/mnist-5k/mnist.npz"),
                    help="mnist.npz to train and test on (default: data/mnist-5k/mnist.npz)")
parser.add_argument("--runs", type=int, default=3, help="rounds of each speed figure; the table gives the median and range (default: 3)")
parser.add_argument("--steps", type=int, default=30, help="timed training steps of batch 100 per run, after 5 of warm-up (default: 30)")
parser.add_argument("--epochs", type=int, default=0, help="also train this many epochs with lenet_train.py and PyTorch, once, and report time and accuracy (default: 0, skip)")
parser.add_argument("--full-size-epochs", type=int, default=1, help="also train this many epochs on Fashion-MNIST's 60,000 images (Debian's dataset-fashion-mnist), once each; 0 skips it (default: 1)")
parser.add_argument("--torch-python", default="/tmp/torchvenv/bin/python", help="a Python with torch (default: /tmp/torchvenv/bin/python)")
parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="Markdown file to write the table into (default: BENCHMARKS.md in the repo)")

# What OneFlow 0.9 does when lenet.py sets nothing: OpenBLAS detects the CPU (an empty name makes it), oneDNN
# element-wise kernels, cores - 2 kernel threads, the bias added after the convolution, its own OpenBLAS rather
# than MKL, the scheduler thread at the priority of the others.
ONEFLOW_DEFAULTS = {"OPENBLAS_CORETYPE": "", "ONEFLOW_ENABLE_ONEDNN_OPTS": "1", "OMP_NUM_THREADS": str((os.cpu_count() or 1) - 2),
                    "ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS": "0", "LENET_BLAS": "openblas", "LENET_SCHEDULER_NICE": "0"}


def run_rss(command, env=None, cwd=REPO):
    """Run command in cwd; return (wall seconds, peak resident MiB of that process, stdout)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                               env={**os.environ, **(env or {})})
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)  # the child's own peak resident set, in KiB on Linux
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def torch_version(python):
    """Return torch's version under python, or None when that Python or torch is missing."""
    try:
        out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, timeout=120)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now, for the launcher's master."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model():
    """The CPU's model name and its vector instructions, as lscpu gives them: "AMD EPYC (AVX2, no AVX-512)"."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"
    vectors = ", ".join(["AVX2" if "avx2" in flags else "no AVX2", "AVX-512" if "avx512f" in flags else "no AVX-512"])
    return f"{name} ({vectors})"


def epoch_line(stdout):
    """(images/s, test accuracy %) of the last epoch line lenet_train.py printed."""
    words = next(line for line in reversed(stdout.splitlines()) if "test accuracy" in line).split()
    return float(words[words.index("images/s") + 1]), float(words[words.index("accuracy") + 1].rstrip("%"))


def summary(values, digits=0):
    """'median (min-max)' of values, or '-' when there are none."""
    if not values:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main():
    args = parser.parse_args()
    data = Path(args.data).resolve()
    if not data.is_file():
        sys.exit(f"error: no {data} (give --data PATH/mnist.npz)")
    py, tpy = sys.executable, args.torch_python
    tversion = torch_version(tpy)
    oneflow_job = [py, str(HERE / "oneflow_lenet.py")]
    torch_job = [tpy, str(HERE / "torch_lenet.py")]
    common = ["--data", str(data)]
    # figure -> column -> list of values; columns: "ours" (lenet.py's settings), "defaults", "torch"
    figures = {}

    def add(figure, column, value):
        figures.setdefault(figure, {}).setdefault(column, []).append(value)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with np.load(data) as npz:  # 100 test digits as PNGs, for the cold-start predictions
            digits = [tmp / f"digit{i}.png" for i in range(100)]
            for digit, image in zip(digits, npz["x_test"]):
                Image.fromarray(image).save(digit)
        run_rss(oneflow_job + ["save", "--model", str(tmp / "lenet_models_1")])
        if tversion:
            run_rss(torch_job + ["save", "--model", str(tmp / "lenet.pt")])
        for round_ in range(args.runs):
            print(f"round {round_ + 1} of {args.runs}", file=sys.stderr)
            for mode in ("graph", "eager"):
                for column, env in (("ours", None), ("defaults", ONEFLOW_DEFAULTS)):
                    _, rss, out = run_rss(oneflow_job + ["train", "--mode", mode, "--steps", str(args.steps)] + common, env)
                    add(f"train_{mode}", column, json.loads(out)["images_per_second"])
                    if mode == "graph" and column == "ours":
                        add("rss_train", column, rss)
            # Data-parallel: 2 processes under OneFlow's launcher, each on half of every batch of 100.
            launch = [py, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2", "--master_port", str(free_port())]
            out = run_rss(launch + [str(HERE / "oneflow_lenet.py"), "train", "--steps", str(args.steps)] + common)[2]
            add("train_2proc", "ours", json.loads(next(line for line in out.splitlines() if line.startswith("{")))["images_per_second"])
            for column, env in (("ours", None), ("defaults", ONEFLOW_DEFAULTS)):
                add("eval", column, json.loads(run_rss(oneflow_job + ["eval"] + common, env)[2])["images_per_second"])
            for count in (1, 100):
                seconds, rss, out = run_rss([py, "lenet_test.py", *map(str, digits[:count]), "--model-dir", str(tmp / "lenet_models_1")])
                add(f"predict_seconds_{count}", "ours", seconds)
                if count == 1:
                    add("rss_predict", "ours", rss)
            if tversion:
                # PyTorch's 2 OpenMP threads wait for each other by spinning: when other work holds a core they
                # lose most of their speed, which 1 thread does not.
                for column, env in (("torch", None), ("torch1", {"OMP_NUM_THREADS": "1"})):
                    _, rss, out = run_rss(torch_job + ["train", "--steps", str(args.steps)] + common, env)
                    add("train_graph", column, json.loads(out)["images_per_second"])
                    add("train_eager", column, json.loads(out)["images_per_second"])
                    if column == "torch":
                        add("rss_train", column, rss)
                    add("eval", column, json.loads(run_rss(torch_job + ["eval"] + common, env)[2])["images_per_second"])
                for count in (1, 100):
                    seconds, rss, _ = run_rss(torch_job + ["predict", "--model", str(tmp / "lenet.pt"), "--image", *map(str, digits[:count])])
                    add(f"predict_seconds_{count}", "torch", seconds)
                    if count == 1:
                        add("rss_predict", "torch", rss)
        if args.epochs:
            print(f"{args.epochs} epochs", file=sys.stderr)
            seconds, rss, out = run_rss([py, "lenet_train.py", "--epochs", str(args.epochs), "--data-dir", str(data.parent),
                                         "--model-dir", str(tmp / "trained")])
            _, accuracy = epoch_line(out)
            add("epochs_seconds", "ours", seconds)
            add("epochs_accuracy", "ours", accuracy)
            if tversion:
                seconds, _, out = run_rss(torch_job + ["epochs", "--epochs", str(args.epochs)] + common)
                add("epochs_seconds", "torch", seconds)
                add("epochs_accuracy", "torch", json.loads(out)["accuracy"])
        full_size = None
        if args.full_size_epochs and os.path.isdir(fashion_mnist.DEBIAN):
            full_size = fashion_mnist.write_npz(fashion_mnist.DEBIAN, tmp / "fashion")
            print(f"{args.full_size_epochs} epochs of Fashion-MNIST", file=sys.stderr)
            seconds, rss, out = run_rss([py, "lenet_train.py", "--epochs", str(args.full_size_epochs), "--data-dir",
                                         str(tmp / "fashion"), "--model-dir", str(tmp / "fashion-model")])
            for key, value in zip(("full_seconds", "full_rss", "full_images", "full_accuracy"), (seconds, rss, *epoch_line(out))):
                add(key, "ours", value)
            if tversion:
                seconds, rss, out = run_rss(torch_job + ["epochs", "--epochs", str(args.full_size_epochs), "--data", full_size])
                for key, value in zip(("full_seconds", "full_rss"), (seconds, rss)):
                    add(key, "torch", value)
                add("full_images", "torch", json.loads(out)["images_per_second"])
                add("full_accuracy", "torch", json.loads(out)["accuracy"])
    load_after = os.getloadavg()

    rows = [
        ("train_graph", "training images/s, nn.Graph (as lenet_train.py; PyTorch eager)", 0),
        ("train_eager", "training images/s, eager", 0),
        ("train_2proc", "training images/s, nn.Graph, 2 processes under OneFlow's launcher", 0),
        ("eval", "evaluation images/s (EvalGraph; PyTorch no_grad)", 0),
        ("predict_seconds_1", "`lenet_test.py` one image, wall s, cold start", 1),
        ("predict_seconds_100", "`lenet_test.py` 100 images, wall s, cold start", 1),
        ("rss_train", "peak resident memory, training, MiB", 0),
        ("rss_predict", "peak resident memory, prediction of one image, MiB", 0),
    ]
    if args.epochs:
        rows += [("epochs_seconds", f"{args.epochs} epochs on {data.parent.name}, wall s (one run)", 0),
                 ("epochs_accuracy", f"{args.epochs} epochs on {data.parent.name}, test accuracy %", 1)]
    if args.full_size_epochs and full_size:
        what = f"{args.full_size_epochs} epoch{'s' * (args.full_size_epochs > 1)} of Fashion-MNIST (60,000 images)"
        rows += [("full_seconds", f"{what}, wall s (one run)", 0), ("full_images", f"{what}, training images/s", 0),
                 ("full_rss", f"{what}, peak resident memory, MiB", 0), ("full_accuracy", f"{what}, test accuracy %", 1)]
    elif args.full_size_epochs:
        rows += [("full_seconds", "Fashion-MNIST (60,000 images): skipped, Debian's dataset-fashion-mnist is not "
                                  "installed (apt-get install dataset-fashion-mnist)", 0)]
    torch_name = f"PyTorch {tversion}" if tversion else "PyTorch"
    lines = [f"| figure | OneFlow {metadata.version('oneflow')} (this project) | OneFlow, its own CPU defaults "
             f"| {torch_name} | PyTorch, 1 thread | PyTorch / OneFlow | PyTorch 1 thread / OneFlow |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def ratio(values, ours):
        return f"{statistics.median(values) / statistics.median(ours):.2f}" if values and ours else "-"

    for key, name, digits in rows:
        cells = figures.get(key, {})
        ours = cells.get("ours", [])
        torch_cells = [summary(cells.get(c, []), digits) if tversion else "not available" for c in ("torch", "torch1")]
        lines.append(f"| {name} | {summary(ours, digits)} | {summary(cells.get('defaults', []), digits)} "
                     f"| {' | '.join(torch_cells)} | {ratio(cells.get('torch'), ours)} | {ratio(cells.get('torch1'), ours)} |")
    publish(args.output, MARK_START, MARK_END,
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu_model()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, oneflow {metadata.version('oneflow')}, "
        f"numpy {np.__version__}; PyTorch: {tversion or 'not available'} (CPU build, under {tpy}). "
        f"Batch 100, SGD lr 0.1, data {data.parent.name}/mnist.npz. Speed figures: median (min-max) of {args.runs} runs "
        f"of {args.steps} steps each after 5 of warm-up, a fresh process per run. "
        f"Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other work was sharing the cores).",
        lines)


def one_epoch_model(data_dir, model_dir):
    """Train lenet_train.py for one epoch of data_dir/mnist.npz at the tutorial's settings (batch 100, whose graph runs
    are long enough to be safe from OneFlow's race) into model_dir; exit with a line if there is no such file."""
    if not (Path(data_dir) / "mnist.npz").is_file():
        sys.exit(f"error: no {Path(data_dir) / 'mnist.npz'} (give --data-dir)")
    subprocess.run([sys.executable, str(REPO / "lenet_train.py"), "--epochs", "1", "--data-dir", str(data_dir),
                    "--model-dir", str(model_dir)], check=True, capture_output=True)


def publish(path, start, end, about, table):
    """Print a benchmark's table, with `about` (when, where, how) and the command that ran it, and write it into the
    Markdown file at path between the markers start and end (write_section)."""
    script = Path(sys.argv[0]).name
    text = "\n".join([start, about, "", f"Command: `{shlex.join(['python', f'benchmarks/{script}', *sys.argv[1:]])}`", "",
                      *table, end])
    print(text)
    write_section(path, text)
    print(f"written to {path}", file=sys.stderr)


def write_section(path, text):
    """Put text, whose first and last lines are its markers, in place of the section they mark in the file at path.

    The rest of the file is kept; a file without the markers gets text appended, a missing file is created.
    """
    path = Path(path)
    start, end = text.splitlines()[0], text.splitlines()[-1]
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in old and end in old:
        new = old[:old.index(start)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


if __name__ == "__main__":
    main()
