"""Draw docs/preprocessing.png: each step of digit_image.load_image on a photo-like digit and on chalk on a dark board.

    python docs/make_figure.py
"""
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import digit_image  # noqa: E402
import lenet  # noqa: E402
from benchmarks.image_sets import drawn_digit, make_image  # noqa: E402

PANEL = 150  # pixels per panel side


def panel(image, label, font):
    """A PANEL-wide tile: image (Pillow or array in [0, 1]) fitted in a square, label below."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.round(255 * image).astype(np.uint8))
    scale = PANEL / max(image.size)
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BOX  # small ones show their pixels
    image = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                        resample)
    tile = Image.new("RGB", (PANEL, PANEL + 24), "white")
    tile.paste(image, ((PANEL - image.width) // 2, (PANEL - image.height) // 2))
    ImageDraw.Draw(tile).text((PANEL // 2, PANEL + 12), label, fill="black", font=font, anchor="mm")
    return tile


def steps(image):
    """[(image, label)] of each step of digit_image.load_image on a Pillow image."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    gray = digit_image.read_gray(buffer)
    ink = digit_image.ink_strength(gray)
    cropped = digit_image.crop_to_ink(ink)
    digit = digit_image.scale_to_20(cropped)
    return [(image, f"input {image.width}x{image.height}"), (gray / 255, "1. grey, alpha on white"),
            (ink, "2. ink, paper removed"), (cropped, "3. cropped to the ink"),
            (digit, f"4. scaled to {digit.shape[1]}x{digit.shape[0]}"), (digit_image.centre_in_frame(digit), "5. 28x28, centred")]


def main():
    rng = np.random.default_rng(4)
    digit = np.load(ROOT / "tests" / "data" / "mnist.npz")["x_test"][45]  # a 2
    buffer = io.BytesIO()
    make_image("jpeg", digit, rng).save(buffer, "JPEG", quality=70)  # blue ink on graded cream paper, JPEG
    photo = Image.open(buffer)
    chalk = Image.fromarray(230 - np.asarray(drawn_digit(7, 120, 0.06, rng)) * 0.7).convert("L")  # light on dark
    font = ImageFont.load_default(size=13)
    rows = [steps(photo), steps(chalk)]
    figure = Image.new("RGB", (PANEL * 6 + 50, (PANEL + 24) * 2 + 30), "white")
    for r, row in enumerate(rows):
        for c, (image, label) in enumerate(row):
            figure.paste(panel(image, label, font), (10 + c * (PANEL + 6), 10 + r * (PANEL + 34)))
    figure.save(ROOT / "docs" / "preprocessing.png", optimize=True)


if __name__ == "__main__":
    main()
