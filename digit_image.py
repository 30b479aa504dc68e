"""Reading a user's digit: any picture of one digit (a photo, a scan, a drawing) made to look like an MNIST digit.

MNIST's digits are white on black, their longer side scaled to 20 pixels (anti-aliased), placed in a 28x28
frame with their centre of mass at pixel (14, 14). Photos, scans and drawings are none of that, so
load_image() makes them so, in steps: read, paper and ink, threshold, crop, widen, scale and centre
(docs/your-digits.md walks through them). A 28x28 image with a dark border is taken as an MNIST digit already.
"""
import warnings

import numpy as np
from PIL import Image, ImageOps

from user_input import InputError, one_line

MAX_SIDE = 1024  # pixels; larger images are box-shrunk to this first (a digit of 2% of the side still has 20 px)
MIN_CONTRAST = 24  # grey levels (of 255) between paper and ink, below which the page counts as blank


def load_image(path):
    """Return a float32 (1, 28, 28) image in [0, 1] of the digit in an image file, white on black as in MNIST."""
    return mnist_like(read_gray(path), name=str(path))[None]


def read_gray(path):
    """Return any image file Pillow reads as float32 (H, W) grey levels in [0, 255], transparency turned to white paper."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both are refused here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # a GIF, TIFF or WebP opens on its first frame
                image = ImageOps.exif_transpose(image)  # a phone photo taken sideways
                return _gray(image)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{path}: too many pixels, refused as a possible decompression bomb ({e})") from None
    except Exception as e:  # a broken file makes Pillow raise many kinds (OSError, SyntaxError, struct.error, ...)
        raise InputError(f"{path}: not a readable image ({one_line(e)})") from None


def _gray(image):
    """float32 (H, W) grey levels in [0, 255] of an open Pillow image of any mode, shrunk to at most MAX_SIDE."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16- and 32-bit grey
        if image.mode.startswith("I;16"):
            image = image.convert("I")
        image = image.reduce(max(1, -(-max(image.size) // MAX_SIDE)))
        gray = np.asarray(image, dtype=np.float32)
        if image.mode == "I" and gray.max() > 255:
            gray = gray / 257  # 16-bit levels 0-65535
        elif image.mode == "F" and gray.max() <= 1:
            gray = gray * 255  # levels 0-1
        return np.clip(gray, 0, 255)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
    image = image.convert("L")
    image = image.reduce(max(1, -(-max(image.size) // MAX_SIDE)))
    return np.asarray(image, dtype=np.float32)


def _border(gray):
    """The pixels of the outer frame of gray (5% of the shorter side wide, at least 1 pixel), flat."""
    width = max(1, min(gray.shape) // 20)
    inner = np.ones(gray.shape, bool)
    inner[:width], inner[-width:], inner[:, :width], inner[:, -width:] = False, False, False, False
    return gray[~inner]


def mnist_like(gray, name="image"):
    """Return float32 (28, 28) in [0, 1]: the digit in gray (H, W) levels 0-255 made as MNIST's digits were made.

    A 28x28 image with a dark border is used as it is (pixel / 255, as in training), so that it reads
    as lenet_eval.py reads the same digit. Raises InputError naming `name` if no digit is found.
    """
    if gray.shape == (28, 28) and np.median(_border(gray)) < 32:
        if gray.max() < MIN_CONTRAST:
            raise InputError(f"{name}: no digit found (the image is blank)")
        return gray / 255.0
    return centre_in_frame(scale_to_20(thicken_thin_strokes(crop_to_ink(ink_strength(gray, name)))), name)


def ink_strength(gray, name="image"):
    """Return float32 (H, W) in [0, 1]: how much ink each pixel of gray (H, W) levels 0-255 holds, 0 being paper.

    The paper is the border's level; it is darker than the ink's (light on dark) if the border is below the middle
    of the image's range of levels. Its tone may vary across the page: a smooth surface is fitted to the paper.
    Ink is what stands above the paper by Otsu's threshold and well above the paper's noise (JPEG, grain).
    """
    dark_ink = np.median(_border(gray)) > (gray.min() + gray.max()) / 2  # ink may be 0.1% of the pixels
    surface = _paper_surface(gray, dark_ink)
    # Dark ink takes away a share of the light the paper reflects, so under uneven light it is measured as that
    # share (in grey levels of white paper); light ink (chalk, screens) adds light.
    ink = 255 * (surface - gray) / np.maximum(surface, 1) if dark_ink else gray - surface
    threshold = _otsu(ink)
    paper = ink[ink <= threshold] if (ink <= threshold).any() else np.zeros(1)
    noise = 1.4826 * np.median(np.abs(paper - np.median(paper)))  # the paper's standard deviation, robustly
    level = np.median(ink[ink > threshold]) if (ink > threshold).any() else 0.0  # the strokes' usual strength
    if level < max(MIN_CONTRAST, 6 * noise):
        raise InputError(f"{name}: no digit found (the image is blank: ink and paper differ by {level:.0f} "
                         f"grey levels, noise {noise:.0f})")
    # Ramp from just above the noise to the strokes' level: anti-aliased edges stay grey, strokes become 1.
    floor = max(3 * noise, 0.2 * level)
    return np.clip((ink - floor) / (level - floor), 0, 1).astype(np.float32)


def _paper_surface(gray, dark_ink):
    """float32 (H, W): a quadratic surface fitted to gray where there is paper, refitted without the ink up to 4 times."""
    height, width = gray.shape
    small_size = (min(width, 32), min(height, 32))  # enough points for 6 coefficients
    small = np.asarray(Image.fromarray(gray).resize(small_size, Image.Resampling.BOX), dtype=np.float64).ravel()

    y, x = np.meshgrid(np.linspace(-1, 1, small_size[1]), np.linspace(-1, 1, small_size[0]), indexing="ij")
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)  # the quadratic's terms
    coefficients = np.array([np.median(_border(gray)), 0, 0, 0, 0, 0])  # flat paper, if too few pixels to fit
    # Start from the pixels on the paper's side of Otsu's threshold, which holds for an even tone.
    paper = small > _otsu(small) if dark_ink else small <= _otsu(small)
    for _ in range(4):
        if paper.sum() < 24:
            break
        coefficients = np.linalg.lstsq(basis[paper], small[paper], rcond=None)[0]
        ink = (basis @ coefficients - small) * (1 if dark_ink else -1)
        spread = 1.4826 * np.median(np.abs(ink[paper])) + 1.0
        paper = ink < 3 * spread
    c, y, x = coefficients, np.linspace(-1, 1, height)[:, None], np.linspace(-1, 1, width)[None, :]
    return (c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y).astype(np.float32)


def _otsu(values):
    """Otsu's threshold of values in grey levels: the cut that best splits their 256-bin histogram in two."""
    counts, edges = np.histogram(np.clip(values, 0, 255), bins=256, range=(0, 256))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    below, above = weight[:-1], weight[-1] - weight[:-1]  # pixels at or below each cut, and above it
    valid = (below > 0) & (above > 0)
    if not valid.any():
        return 0.0  # a single level: nothing to split
    between = np.where(valid, (mean[-1] * below - mean[:-1] * weight[-1]) ** 2 / np.where(valid, below * above, 1), -1)
    return float(edges[1:][int(np.argmax(between))])


def crop_to_ink(ink):
    """The smallest box of ink (H, W) in [0, 1] holding every pixel of at least half strength."""
    rows, cols = np.flatnonzero(ink.max(axis=1) >= 0.5), np.flatnonzero(ink.max(axis=0) >= 0.5)
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


MNIST_STROKE = 2.2  # pixels: the median stroke width of MNIST's digits (20 pixels tall), as 2 * area / boundary
THIN_STROKE = 1.5  # pixels at that scale: thinner strokes (a fine pen on a big digit) are widened to MNIST_STROKE


def thicken_thin_strokes(ink):
    """ink (H, W) cropped to the digit, with strokes that would be thinner than THIN_STROKE at 20 pixels widened.

    Scaled down, a 1-pixel line on a 400-pixel digit would be a faint 0.05-pixel trace; MNIST's strokes are
    about 2 pixels wide. The ink grows by a square max filter, and the box by as much on each side.
    """
    mask = _square_filter(ink, 3, np.mean) >= 0.5  # averaged over 3x3 first, so that dithered edges are smooth
    boundary = mask & _square_filter(~mask, 3, np.max)  # ink pixels next to paper
    width = 2 * mask.sum() / max(1, boundary.sum())  # a stroke's area over half its outline, in pixels
    scale = 20 / max(ink.shape)
    grow = int(round(MNIST_STROKE / scale - width)) // 2  # pixels to add on each side of a stroke
    if width * scale >= THIN_STROKE or grow < 1:
        return ink
    return _square_filter(np.pad(ink, grow), 2 * grow + 1, np.max)


def _square_filter(values, size, reduce):
    """reduce (np.max, np.mean) over a size x size square (size odd) around each pixel of values (H, W), edge padded."""
    half = size // 2
    padded = np.pad(values, half, mode="edge")
    rows = reduce(np.lib.stride_tricks.sliding_window_view(padded, size, axis=0), axis=-1)  # (H, W + 2 * half)
    return reduce(np.lib.stride_tricks.sliding_window_view(rows, size, axis=1), axis=-1)


def scale_to_20(ink):
    """ink (H, W) in [0, 1] scaled, anti-aliased, so that its longer side is 20 pixels, keeping the aspect ratio."""
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    return np.clip(digit, 0, 1)  # Lanczos overshoots at sharp edges


def centre_in_frame(digit, name="image"):
    """float32 (28, 28): digit (h, w) of at most 20x20 placed with its centre of mass on pixel (14, 14), as MNIST's.

    (14, 14) is where the centres of mass of MNIST's digits lie, by whole-pixel shifts.
    """
    mass = digit.sum()
    if mass <= 0:
        raise InputError(f"{name}: no digit found (the ink vanished when scaled to 20 pixels)")
    ys, xs = np.indices(digit.shape)
    top = int(np.clip(round(14 - (ys * digit).sum() / mass), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - (xs * digit).sum() / mass), 0, 28 - digit.shape[1]))
    frame = np.zeros((28, 28), np.float32)
    frame[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return frame
