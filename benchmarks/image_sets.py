"""Accuracy of a saved LeNet on MNIST test digits made to look like users' images (the README's table).

    python benchmarks/image_sets.py --model-dir /tmp/run5/lenet_models_1 --data-dir data/mnist-5k

Each test digit is written as an image file of each kind below, read back through lenet_test.py's functions
(digit_image.load_image, then one EvalGraph in batches), and the answers are compared with the labels.
tests/test_images.py builds the same kinds from the committed fixture.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lenet  # noqa: E402
from lenet_test import classify, load_images  # noqa: E402

KINDS = {
    "mnist-png": "the MNIST digit as a 28x28 grey PNG, white on black (read as it is)",
    "inverted": "dark on light, 28x28 grey PNG",
    "scaled": "dark on light, scaled up 4-10x (bicubic), grey PNG",
    "page": "scaled 4-10x, off-centre on a larger page, paper tone 150-240 graded across it, noise, grey PNG",
    "rgb": "as page, blue ink on cream paper, RGB PNG",
    "rgba": "scaled 4-10x, off-centre, black ink on transparent paper, RGBA PNG",
    "jpeg": "as rgb, JPEG quality 70",
    "drawn": "digits drawn with Pillow lines and arcs, 40-400 px tall, pen 1.5-14% of that, jittered, grey PNG",
}


def _scaled(digit, rng):
    """The ink (0-255, white on black) of a 28x28 digit scaled up 4 to 10 times, as an (H, W) float array in [0, 1]."""
    factor = rng.uniform(4, 10)
    size = round(28 * factor)
    return np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255


def _page(ink, rng):
    """(paper (H, W) in [0, 1] graded across the page, ink (H, W) placed off-centre on it) for an ink array."""
    h, w = ink.shape
    height, width = round(h * rng.uniform(1.3, 2.5)), round(w * rng.uniform(1.3, 2.5))
    top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    placed = np.zeros((height, width), np.float32)
    placed[top:top + h, left:left + w] = ink
    y, x = np.linspace(0, 1, height, dtype=np.float32)[:, None], np.linspace(0, 1, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y + 1.5) / 3  # in [0.1, 0.9] or so
    bright = rng.uniform(200, 240) / 255
    paper = bright - rng.uniform(0.05, 0.2) * ramp  # graded tone, down to about 150
    return paper.astype(np.float32), placed


def make_image(kind, digit, rng):
    """A Pillow image of kind (one of KINDS but drawn) for a uint8 (28, 28) MNIST digit, white on black."""
    if kind == "mnist-png":
        return Image.fromarray(digit)
    if kind == "inverted":
        return Image.fromarray(255 - digit)
    ink = _scaled(digit, rng)
    if kind == "scaled":
        return Image.fromarray(np.round(255 * (1 - ink)).astype(np.uint8))
    if kind == "rgba":
        _, placed = _page(ink, rng)
        alpha = np.round(255 * placed).astype(np.uint8)
        return Image.fromarray(np.dstack([np.zeros_like(alpha)] * 3 + [alpha]), "RGBA")
    paper, placed = _page(ink, rng)
    noise = rng.normal(0, 4 / 255, paper.shape).astype(np.float32)
    if kind == "page":
        gray = paper * (1 - 0.85 * placed) + noise  # ink takes away 85% of the light
        return Image.fromarray(np.round(255 * np.clip(gray, 0, 1)).astype(np.uint8))
    tint, pen = np.float32([1.0, 0.97, 0.88]), np.float32([0.15, 0.2, 0.6])  # cream paper, blue ballpoint
    rgb = paper[..., None] * tint * (1 - placed[..., None] * (1 - pen)) + noise[..., None]
    image = Image.fromarray(np.round(255 * np.clip(rgb, 0, 1)).astype(np.uint8), "RGB")
    assert kind in ("rgb", "jpeg"), kind
    return image


# Strokes of each digit in a unit box, (x, y) from the top left: polylines, and ellipse arcs (box, start, end) in degrees.
STROKES = {
    0: {"arcs": [((0.15, 0.0, 0.85, 1.0), 0, 360)]},
    1: {"lines": [[(0.3, 0.2), (0.55, 0.0), (0.55, 1.0)]]},
    2: {"arcs": [((0.15, 0.0, 0.85, 0.55), 180, 20)], "lines": [[(0.82, 0.35), (0.15, 1.0), (0.9, 1.0)]]},
    3: {"arcs": [((0.2, 0.0, 0.8, 0.5), 200, 90), ((0.15, 0.5, 0.85, 1.0), 270, 160)]},
    4: {"lines": [[(0.6, 1.0), (0.6, 0.0), (0.1, 0.65), (0.9, 0.65)]]},
    5: {"lines": [[(0.85, 0.0), (0.25, 0.0), (0.2, 0.45)]], "arcs": [((0.15, 0.3, 0.85, 1.0), 220, 150)]},
    6: {"arcs": [((0.15, 0.45, 0.85, 1.0), 0, 360)], "lines": [[(0.7, 0.0), (0.4, 0.2), (0.2, 0.5), (0.17, 0.72)]]},
    7: {"lines": [[(0.1, 0.0), (0.9, 0.0), (0.4, 1.0)]]},
    8: {"arcs": [((0.22, 0.0, 0.78, 0.48), 0, 360), ((0.15, 0.48, 0.85, 1.0), 0, 360)]},
    9: {"arcs": [((0.15, 0.0, 0.85, 0.55), 0, 360)], "lines": [[(0.84, 0.28), (0.8, 0.6), (0.65, 1.0)]]},
}


def drawn_digit(label, size, pen, rng):
    """A grey image of digit `label` drawn black on white with Pillow: size pixels tall, pen as a fraction of size."""
    width = round(size * 0.8)
    image = Image.new("L", (width + size, 2 * size), 255)  # margins around the digit, which sits off-centre
    draw = ImageDraw.Draw(image)
    left, top, pen_px = rng.uniform(0.1, 0.9) * size, rng.uniform(0.2, 0.8) * size, max(1, round(pen * size))

    def at(x, y):  # unit box -> page, with a little hand shake
        shake = rng.normal(0, 0.02, 2)
        return left + (x + shake[0]) * width, top + (y + shake[1]) * size

    for points in STROKES[label].get("lines", []):
        draw.line([at(x, y) for x, y in points], fill=0, width=pen_px, joint="curve")
    for (x0, y0, x1, y1), start, end in STROKES[label].get("arcs", []):
        box = [*at(x0, y0), *at(x1, y1)]
        box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        draw.arc(box, start, end, fill=0, width=pen_px)
    return image


def drawn_set(rng, repeats=1):
    """[(image, label)]: each digit at 3 sizes (40, 120, 400 px) and 4 pen widths (1.5%, 4%, 8%, 14% of the size)."""
    return [(drawn_digit(label, size, pen, rng), label) for _ in range(repeats) for label in range(10)
            for size in (40, 120, 400) for pen in (0.015, 0.04, 0.08, 0.14)]


def write_set(kind, digits, labels, folder, rng):
    """Write each digit (N, 28, 28) uint8 as an image file of kind into folder; return (paths, labels)."""
    folder = Path(folder) / kind
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "drawn":
        pairs = drawn_set(rng)
    else:
        pairs = [(make_image(kind, digit, rng), int(label)) for digit, label in zip(digits, labels)]
    suffix = ".jpg" if kind == "jpeg" else ".png"
    paths = []
    for i, (image, _) in enumerate(pairs):
        path = folder / f"{i:05d}{suffix}"
        image.save(path, quality=70) if kind == "jpeg" else image.save(path, compress_level=1)  # fast, not small
        paths.append(path)
    return paths, np.array([label for _, label in pairs])


def accuracy(model, paths, labels, device, batch_size=100):
    """Percent of the image files read as their label by lenet_test.py's functions (an unreadable file counts wrong)."""
    images, read, errors = load_images(paths)
    assert not errors, errors[:3]
    predictions = classify(model, images, batch_size, device).argmax(axis=1)
    return 100.0 * float(np.mean(predictions == labels))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="./lenet_models_1", help="folder of the trained model (default: ./lenet_models_1)")
    parser.add_argument("--data-dir", default=".", help="folder of mnist.npz; its test split is used (default: .)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sizes, places and tones (default: 0)")
    args = parser.parse_args()
    try:
        device, _ = lenet.choose_device("cpu")
        model = lenet.LeNet().to(device)
        lenet.CheckPoint(model).load(args.model_dir)
        path = Path(args.data_dir) / "mnist.npz"
        with np.load(path) as npz:
            digits, labels = npz["x_test"], npz["y_test"]
    except (lenet.InputError, OSError) as e:
        sys.exit(f"error: {e}")
    rng = np.random.default_rng(args.seed)
    print("| kind | images | accuracy |\n| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for kind in KINDS:
            paths, kind_labels = write_set(kind, digits, labels, folder, rng)
            print(f"| {kind}: {KINDS[kind]} | {len(paths)} | {accuracy(model, paths, kind_labels, device):.1f}% |",
                  flush=True)


if __name__ == "__main__":
    main()
