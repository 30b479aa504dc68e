"""Draw the loss and the test accuracy of each epoch, as lenet_train.py --metrics wrote them, to a PNG (Pillow only).

    python lenet_train.py --epochs 5 --metrics metrics.jsonl
    python lenet_plot.py metrics.jsonl metrics.png
"""
import argparse
import json
import math
import sys

from PIL import Image, ImageDraw, ImageFont

import lenet

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("metrics", help="JSON lines of lenet_train.py --metrics: epoch, loss, accuracy (%%), images_per_second")
parser.add_argument("out", help="PNG file to write, replacing it: 800x320 pixels, loss left, test accuracy right")

PLOT_WIDTH, PLOT_HEIGHT = 800, 320  # pixels: two panels side by side, loss on the left, test accuracy on the right
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


def nice_ticks(low, high, count=5, integer=False):
    """Return about count evenly spaced round values (steps of 1, 2 or 5 times a power of ten) covering low..high."""
    if high <= low:  # one value: widen around it
        low, high = low - max(abs(low) * 0.1, 1.0), high + max(abs(high) * 0.1, 1.0)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, round(step))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [i * step for i in range(first, last + 1)]


def _tick_label(value, step):
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _draw_panel(draw, box, xs, ys, title, color, font):
    """Draw one line chart in box (left, top, right, bottom pixels): title, y grid and ticks, x axis "epoch", the line."""
    left, top, right, bottom = box
    area = (left + 56, top + 30, right - 18, bottom - 42)  # the plot area inside the tick labels and titles
    x_ticks = nice_ticks(min(xs), max(xs), count=min(max(len(xs), 4), 8), integer=True)
    y_ticks = nice_ticks(min(ys), max(ys), count=5)

    def to_pixel(x, y):
        pad = 8  # keeps the first and last points off the axes
        px = area[0] + pad + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (area[2] - area[0] - 2 * pad)
        py = area[3] - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (area[3] - area[1])
        return px, py

    draw.text(((left + right) / 2, top + 8), title, fill="black", font=font, anchor="ma")
    for y in y_ticks:
        _, py = to_pixel(x_ticks[0], y)
        draw.line([(area[0], py), (area[2], py)], fill=(225, 225, 225))
        draw.text((area[0] - 6, py), _tick_label(y, y_ticks[1] - y_ticks[0]), fill="black", font=font, anchor="rm")
    for x in x_ticks:
        px, _ = to_pixel(x, y_ticks[0])
        draw.line([(px, area[3]), (px, area[3] + 4)], fill="black")
        draw.text((px, area[3] + 7), str(x), fill="black", font=font, anchor="ma")
    draw.line([(area[0], area[1]), (area[0], area[3]), (area[2], area[3])], fill="black")
    draw.text(((area[0] + area[2]) / 2, area[3] + 24), "epoch", fill="black", font=font, anchor="ma")
    points = [to_pixel(x, y) for x, y in zip(xs, ys)]
    if len(points) > 1:
        draw.line(points, fill=color, width=2, joint="curve")
    for px, py in points:
        draw.ellipse([(px - 3, py - 3), (px + 3, py + 3)], fill=color)


def plot_metrics(records):
    """Return a PLOT_WIDTH x PLOT_HEIGHT RGB image: mean training loss and test accuracy (%) against the epoch."""
    image = Image.new("RGB", (PLOT_WIDTH, PLOT_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    epochs = [record["epoch"] for record in records]
    last = records[-1]
    half = PLOT_WIDTH // 2
    _draw_panel(draw, (0, 0, half, PLOT_HEIGHT), epochs, [record["loss"] for record in records],
                f"training loss (mean cross-entropy), last {last['loss']:.4f}", (31, 119, 180), font)
    _draw_panel(draw, (half, 0, PLOT_WIDTH, PLOT_HEIGHT), epochs, [record["accuracy"] for record in records],
                f"test accuracy (%), last {last['accuracy']:.1f}%", (214, 39, 40), font)
    return image


def main(argv=None):
    args = parser.parse_args(argv)
    try:
        records = read_metrics(args.metrics)
        image = plot_metrics(records)
        try:
            image.save(args.out, format="PNG")
        except OSError as e:
            raise lenet.InputError(f"cannot write {args.out} ({e.strerror or e})") from None
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    print(f"epochs {len(records)} drawn to {args.out}")


if __name__ == "__main__":
    main()
