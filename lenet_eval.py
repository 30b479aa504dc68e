"""Evaluate the saved LeNet on the MNIST test set.

    python lenet_eval.py            # prints e.g. "accuracy: 99.4%" as its last line
    python lenet_eval.py --per-class --confusion --errors-png errors.png --json report.json
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import lenet
import multi_node
import user_input
from lenet import flow

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder of the trained model (default: ./lenet_models_1)")
parser.add_argument("--data-dir", default=".", help="folder of mnist.npz, downloaded there if missing (default: .)")
parser.add_argument("--batch-size", type=user_input.positive_int, default=100, help="images per graph run (default: 100)")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the first GPU OneFlow 0.9 can run on, else cpu)")
parser.add_argument("--per-class", action="store_true", help="print each digit's accuracy and count (default: off)")
parser.add_argument("--confusion", action="store_true", help="print the 10x10 confusion matrix, rows true, columns predicted (default: off)")
parser.add_argument("--errors-png", metavar="FILE", default=None, help="draw the misclassified test images, most confident first, up to 100, to this PNG (default: none)")
parser.add_argument("--json", metavar="FILE", default=None, help="write accuracy, per-class figures and confusion matrix to this JSON file (default: none)")


# ---------------------------------------------------------------------------------------------
# The report behind --per-class, --confusion and --json: plain numbers from labels and logits.

def confusion_matrix(labels, logits):
    """Return the (10, 10) int64 counts of each true digit (row) predicted as each digit (column)."""
    predictions = np.asarray(logits).argmax(axis=1)
    return np.bincount(10 * np.asarray(labels, np.int64) + predictions, minlength=100).reshape(10, 10)


def per_class(confusion):
    """Return one dict per digit: digit, correct, count and accuracy in percent (None for a digit never seen)."""
    rows = []
    for digit, row in enumerate(confusion):
        correct, count = int(row[digit]), int(row.sum())
        rows.append(dict(digit=digit, correct=correct, count=count, accuracy=100.0 * correct / count if count else None))
    return rows


def make_report(labels, logits, model_dir, data_file):
    """Return the JSON report: accuracy (percent), per_class, confusion (rows true), count, model_dir, data_file."""
    confusion = confusion_matrix(labels, logits)
    return dict(accuracy=100.0 * float(np.trace(confusion)) / len(labels), per_class=per_class(confusion),
                confusion=confusion.tolist(), count=len(labels), model_dir=str(model_dir), data_file=str(data_file))


def report_json(report):
    """Return the report as JSON text, with each per_class entry and each confusion row on a line of its own."""
    items = []
    for key, value in report.items():
        if isinstance(value, list):
            value = "[\n" + ",\n".join(f"    {json.dumps(item)}" for item in value) + "\n  ]"
        else:
            value = json.dumps(value)
        items.append(f"  {json.dumps(key)}: {value}")
    return "{\n" + ",\n".join(items) + "\n}\n"


def format_per_class(rows):
    """Return the per-digit table as text: digit, correct, count, accuracy."""
    lines = ["digit  correct  count  accuracy"]
    for row in rows:
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.1f}%"
        lines.append(f"{row['digit']:>5}  {row['correct']:>7}  {row['count']:>5}  {accuracy:>8}")
    return "\n".join(lines)


def format_confusion(confusion):
    """Return the confusion matrix as an aligned text table, rows true digit, columns predicted digit."""
    width = max(4, len(str(int(np.max(confusion)))) + 1)
    corner = "true\\predicted"
    lines = [corner + "".join(f"{digit:>{width}}" for digit in range(10))]
    for digit, row in enumerate(confusion):
        lines.append(f"{digit:>{len(corner)}}" + "".join(f"{int(n):>{width}}" for n in row))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The picture behind --errors-png: a grid of tiles, one per mistake, left to right then top to bottom.

ERRORS_LIMIT = 100  # tiles at most
ERRORS_COLUMNS = 10  # tiles per row (fewer when there are fewer mistakes)
TILE_WIDTH, TILE_HEIGHT = 72, 92  # pixels: the digit at 2x (56x56) with a 8-pixel margin, two lines of text below
DIGIT_SCALE = 2


def confidence(logits):
    """Return the softmax probability (N,) of the predicted digit of each row of logits (N, 10)."""
    return lenet.softmax(logits).max(axis=1)


def mistakes(labels, logits, limit=ERRORS_LIMIT):
    """Return the indices of the misclassified items, most confident mistake first, at most limit of them."""
    wrong = np.flatnonzero(np.asarray(logits).argmax(axis=1) != labels)
    return wrong[np.argsort(-confidence(logits)[wrong], kind="stable")][:limit]


def errors_image(images, labels, logits, limit=ERRORS_LIMIT):
    """Return a PIL image of the mistakes among images (N, 1, 28, 28) in [0, 1], most confident first, up to limit.

    Each mistake is a TILE_WIDTH x TILE_HEIGHT tile, ERRORS_COLUMNS to a row: the digit as the network saw it,
    "true -> predicted" and the softmax probability of the predicted digit. With no mistakes: one blank tile.
    """
    chosen, sure = mistakes(labels, logits, limit), confidence(logits)
    predictions = np.asarray(logits).argmax(axis=1)
    columns = min(max(len(chosen), 1), ERRORS_COLUMNS)
    rows = max(-(-len(chosen) // ERRORS_COLUMNS), 1)
    sheet = Image.new("L", (columns * TILE_WIDTH, rows * TILE_HEIGHT), 255)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    margin = (TILE_WIDTH - 28 * DIGIT_SCALE) // 2
    for place, i in enumerate(chosen):
        left, top = (place % ERRORS_COLUMNS) * TILE_WIDTH, (place // ERRORS_COLUMNS) * TILE_HEIGHT
        pixels = np.clip(np.rint(images[i].reshape(28, 28) * 255), 0, 255).astype(np.uint8)
        digit = Image.fromarray(pixels).resize((28 * DIGIT_SCALE,) * 2, Image.Resampling.NEAREST)
        sheet.paste(digit, (left + margin, top + margin))
        text_top = top + margin + 28 * DIGIT_SCALE + 2
        draw.text((left + TILE_WIDTH // 2, text_top), f"{labels[i]} -> {predictions[i]}", fill=0, font=font, anchor="ma")
        draw.text((left + TILE_WIDTH // 2, text_top + 13), f"{100 * sure[i]:.0f}%", fill=110, font=font, anchor="ma")
    return sheet


def write(path, write_to):
    """Call write_to(file) on path opened to write bytes; an OSError (no such folder, no permission) becomes an InputError."""
    try:
        with open(path, "wb") as f:
            write_to(f)
    except OSError as e:
        raise lenet.InputError(f"cannot write {path} ({e.strerror or e})") from None


def main(argv=None):
    args = parser.parse_args(argv)
    if flow.env.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # under the launcher, the first process alone prints

    def check():
        """What this process will evaluate, read and checked before the first run (multi_node.agreed)."""
        device, description = lenet.choose_device(args.device)
        model = lenet.LeNet()
        lenet.CheckPoint(model).load(args.model_dir)  # placed once agreed: placing it on every process is a collective
        _, (test_images, test_labels), path, found = lenet.load_mnist(args.data_dir, progress=sys.stderr.isatty())
        read = {"device": device.type, "mnist.npz": multi_node.digest(test_images, test_labels),
                "model folder": multi_node.model_digest(model)}
        return (device, description, model, test_images, test_labels, path, found), read

    try:
        device, description, model, test_images, test_labels, path, found = multi_node.agreed(
            check, dict(batch_size=args.batch_size, device=args.device))
        print(f"device {description}")
        if found:
            print(found)
        logits = lenet.predict(lenet.EvalGraph(lenet.place(model, device)), test_images, args.batch_size, device)
        if flow.env.get_rank() != 0:
            return  # under the launcher, the first process alone reports
        report = make_report(test_labels, logits, args.model_dir, path)
        if args.per_class:
            print(format_per_class(report["per_class"]))
        if args.confusion:
            print(format_confusion(np.array(report["confusion"])))
        if args.errors_png:
            image = errors_image(test_images, test_labels, logits)
            write(args.errors_png, lambda f: image.save(f, format="PNG"))
            wrong = int(np.sum(logits.argmax(axis=1) != test_labels))
            print(f"errors {wrong} of {len(test_labels)}, the {min(wrong, ERRORS_LIMIT)} most confident drawn to {args.errors_png}")
        if args.json:
            write(args.json, lambda f: f.write(report_json(report).encode()))
            print(f"report written to {args.json}")
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    print(f"accuracy: {report['accuracy']:.1f}%")


if __name__ == "__main__":
    main()
