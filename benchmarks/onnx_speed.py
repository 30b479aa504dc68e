"""OneFlow and onnxruntime side by side reading digits: cold start, time per image and memory on this machine.

    .venv/bin/python benchmarks/onnx_speed.py            # about 4 minutes on 2 cores; on an idle machine

Trains the model as `lenet_train.py --epochs 1 --data-dir data/mnist-5k` does, exports it with
`lenet_export.py`, writes 100 of its test digits as PNG files, then runs each figure in fresh processes, the
readers taking turns within each round:
- cold start: `lenet_test.py` on 1 and on 100 of the files, with OneFlow and with `--onnx`, and docs/export.md's
  lines of Python (onnxruntime alone, OneFlow not even imported) on one; wall time and peak resident memory;
- warm: milliseconds per image of OneFlow's EvalGraph and of the onnxruntime session over the 1,000 test digits,
  at batch 1 and batch 100, after a first run of each (which traces the graph).

Prints a Markdown table and writes it into BENCHMARKS.md between its onnx markers.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from bench import cpu_model, one_epoch_model, publish, run_rss, summary

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARK_START, MARK_END = "<!-- onnx:start -->", "<!-- onnx:end -->"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data-dir", default=str(REPO / "data/mnist-5k"),
                    help="folder of the mnist.npz to train on and read (default: data/mnist-5k)")
parser.add_argument("--runs", type=int, default=5, help="rounds of each figure; the table gives the median and range (default: 5)")
parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="Markdown file to write the table into (default: BENCHMARKS.md)")

# Milliseconds per image of one reader, warm: argv is reader ("oneflow" or "onnx"), model folder, ONNX file, data
# folder, batch size. It reads the digits as lenet_test.py does (lenet.predict, onnx_model.predict).
WARM = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
import lenet, onnx_model
reader, model_dir, onnx_file, data_dir, batch_size = sys.argv[1:]
batch_size = int(batch_size)
_, (images, _), _, _ = lenet.load_mnist(data_dir)
if reader == "oneflow":
    device, _ = lenet.choose_device("cpu")
    graph = lenet.EvalGraph(lenet.load_model(model_dir, device))
    run = lambda x: lenet.predict(graph, x, batch_size, device)
else:
    session = onnx_model.load(onnx_file)
    run = lambda x: onnx_model.predict(session, x, batch_size)
run(images[:batch_size])  # the graph traced, the session's first run
start = time.perf_counter()
run(images)
print(json.dumps(dict(ms_per_image=1000 * (time.perf_counter() - start) / len(images))))
"""


def deployment_lines():
    """The Python lines of docs/export.md that run lenet.onnx with onnxruntime alone."""
    text = (REPO / "docs" / "export.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.DOTALL)[1]


def lscpu():
    """lscpu's model name and CPU count, "AMD EPYC, 2 CPUs", or None without lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def priority():
    """A sentence for the table's header where this process runs at another priority than a user's ("Run at nice 10,
    with LENET_SCHEDULER_NICE=19."), else ""."""
    niceness, scheduler = os.nice(0), os.environ.get("LENET_SCHEDULER_NICE")
    if niceness == 0 and scheduler is None:
        return ""
    return f" Run at nice {niceness}" + (f", with LENET_SCHEDULER_NICE={scheduler}." if scheduler is not None else ".")


def main():
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    py = sys.executable
    figures = {}  # figure -> column -> values; columns "oneflow", "onnx" (lenet_test.py --onnx), "alone"

    def add(figure, column, value):
        figures.setdefault(figure, {}).setdefault(column, []).append(value)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, onnx_file = tmp / "lenet_models_1", tmp / "lenet.onnx"
        print("training 1 epoch", file=sys.stderr)
        one_epoch_model(data_dir, model_dir)
        seconds, _, out = run_rss([py, "lenet_export.py", "--model-dir", str(model_dir), "--data-dir", str(data_dir),
                                   "--output", str(onnx_file)])
        export_line = out.splitlines()[-1]
        with np.load(data_dir / "mnist.npz") as npz:
            digits = []
            for i, pixels in enumerate(npz["x_test"][:100]):
                digits.append(tmp / f"{i}.png")
                Image.fromarray(pixels).save(digits[-1])
        (tmp / "data").mkdir()
        shutil.copy(digits[0], tmp / "data" / "9.png")  # the name docs/export.md's lines read
        (tmp / "deploy.py").write_text(deployment_lines())
        for round_ in range(args.runs):
            print(f"round {round_ + 1} of {args.runs}", file=sys.stderr)
            for count in (1, 100):
                for column, flags in (("oneflow", ["--model-dir", str(model_dir)]), ("onnx", ["--onnx", str(onnx_file)])):
                    seconds_, rss, _ = run_rss([py, "lenet_test.py", *map(str, digits[:count]), *flags])
                    add(f"cold_{count}", column, seconds_)
                    if count == 1:
                        add("rss", column, rss)
            seconds_, rss, _ = run_rss([py, str(tmp / "deploy.py")], cwd=tmp)
            add("cold_1", "alone", seconds_)
            add("rss", "alone", rss)
            for batch_size in (1, 100):
                for column in ("oneflow", "onnx"):
                    out = run_rss([py, "-c", WARM, column, str(model_dir), str(onnx_file), str(data_dir), str(batch_size)])[2]
                    add(f"warm_{batch_size}", column, json.loads(out.splitlines()[-1])["ms_per_image"])
    load_after = os.getloadavg()

    rows = [("cold_1", "one image, cold start (the whole process), wall s", 2),
            ("cold_100", "100 images, cold start, wall s", 2),
            ("rss", "one image, cold start, peak resident memory, MiB", 0),
            ("warm_1", "per image, warm, batch 1, ms", 3),
            ("warm_100", "per image, warm, batch 100, ms", 3)]
    versions = f"OneFlow {metadata.version('oneflow')}", f"onnxruntime {metadata.version('onnxruntime')}"
    lines = [f"| figure | {versions[0]}: `lenet_test.py` | {versions[1]}: `lenet_test.py --onnx` "
             f"| onnxruntime alone: docs/export.md's lines | OneFlow / `--onnx` |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for key, name, digits_ in rows:
        cells = figures.get(key, {})
        ratio = "-"
        if cells.get("oneflow") and cells.get("onnx"):
            ratio = f"{np.median(cells['oneflow']) / np.median(cells['onnx']):.1f}"
        lines.append(f"| {name} | {summary(cells.get('oneflow', []), digits_)} | {summary(cells.get('onnx', []), digits_)} "
                     f"| {summary(cells.get('alone', []), digits_)} | {ratio} |")
    publish(args.output, MARK_START, MARK_END,
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {lscpu() or 'an unknown CPU'} "
        f"(lscpu; {cpu_model()}); Python {sys.version.split()[0]}, {versions[0]}, {versions[1]}, numpy {np.__version__}. "
        f"Model: `lenet_train.py --epochs 1 --data-dir {os.path.relpath(data_dir, REPO)}`; `lenet_export.py` took "
        f"{seconds:.1f} s and printed `{export_line}`. Median (min-max) of {args.runs} runs, a fresh process each. "
        f"Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.{priority()}",
            lines)


if __name__ == "__main__":
    main()
