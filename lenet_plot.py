"""Draw the loss and the test accuracy of each epoch, as lenet_train.py --metrics wrote them, to a PNG.

    python lenet_train.py --epochs 5 --metrics metrics.jsonl
    python lenet_plot.py metrics.jsonl metrics.png
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")  # drawn to files, with no screen needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import lenet  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("metrics", help="JSON lines of lenet_train.py --metrics: epoch, loss, accuracy (%%), images_per_second")
parser.add_argument("out", help="PNG file to write, replacing it: 800x320 pixels, loss left, test accuracy right")

PLOT_WIDTH, PLOT_HEIGHT, DPI = 800, 320, 100  # pixels, and pixels per inch (matplotlib sizes figures in inches)
METRIC_KEYS = ("epoch", "loss", "accuracy", "images_per_second")


def read_metrics(path):
    """Return the records (dicts of METRIC_KEYS) of a --metrics file, in order; blank lines are skipped."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise lenet.InputError(f"cannot read {path} ({e.strerror or e})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise lenet.InputError(f"{path} line {number} is not JSON: {line[:60]!r}") from None
        if not isinstance(record, dict) or not all(isinstance(record.get(key), (int, float)) for key in METRIC_KEYS):
            raise lenet.InputError(f"{path} line {number} lacks a number among {', '.join(METRIC_KEYS)} "
                                   "(write it with lenet_train.py --metrics)")
        records.append(record)
    if not records:
        raise lenet.InputError(f"{path} holds no epochs (write it with lenet_train.py --metrics)")
    return records


def plot_metrics(records):
    """Return a matplotlib figure of PLOT_WIDTH x PLOT_HEIGHT pixels: mean training loss and test accuracy (%) per epoch."""
    epochs, last = [record["epoch"] for record in records], records[-1]
    figure, panels = plt.subplots(1, 2, figsize=(PLOT_WIDTH / DPI, PLOT_HEIGHT / DPI), dpi=DPI, layout="constrained")
    for axes, key, color, title in [
            (panels[0], "loss", "tab:blue", f"training loss (mean cross-entropy), last {last['loss']:.4f}"),
            (panels[1], "accuracy", "tab:red", f"test accuracy (%), last {last['accuracy']:.1f}%")]:
        axes.plot(epochs, [record[key] for record in records], color=color, marker="o", linewidth=2)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        axes.grid(axis="y", color="0.9")
    return figure


def main(argv=None):
    args = parser.parse_args(argv)
    try:
        records = read_metrics(args.metrics)
        try:
            plot_metrics(records).savefig(args.out, format="png")
        except OSError as e:
            raise lenet.InputError(f"cannot write {args.out} ({e.strerror or e})") from None
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    print(f"epochs {len(records)} drawn to {args.out}")


if __name__ == "__main__":
    main()
