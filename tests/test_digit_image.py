"""digit_image: any image of one digit made as MNIST made its digits, every mode and format, blank pages and
decompression bombs refused naming the file, and fuzzing (whatever the bytes, a result or one InputError)."""
import io
import re
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import digit_image
import lenet
from benchmarks.image_sets import drawn_digit
from conftest import fixture_arrays


def scaled_digit(index=0, factor=6):
    """The fixture's test digit `index` as a uint8 grey array, dark on light, `factor` times MNIST's size."""
    digit = fixture_arrays()["x_test"][index]
    return np.asarray(Image.fromarray(255 - digit).resize((28 * factor, 28 * factor), Image.Resampling.BICUBIC))


def difference(a, b):
    """Mean absolute difference of two (28, 28) images, the smaller over shifts of b by up to one pixel.

    Centring moves a digit by whole pixels, so a tiny change can shift it by one.
    """
    return min(np.abs(a - np.roll(b, (dy, dx), axis=(0, 1))).mean() for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def centre_of_mass(image):
    ys, xs = np.indices(image.shape)
    return (ys * image).sum() / image.sum(), (xs * image).sum() / image.sum()


def test_a_big_off_centre_digit_is_made_as_mnist_made_its_digits():
    page = np.full((400, 700), 230, np.uint8)
    page[30:30 + 168, 450:450 + 168] = scaled_digit(factor=6)  # dark on light, far from the centre
    image = digit_image.mnist_like(page.astype(np.float32))
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image.min() == 0 and image.max() == 1  # paper black, strokes white
    rows, cols = np.flatnonzero(image.max(axis=1) > 0), np.flatnonzero(image.max(axis=0) > 0)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (20, 21)  # 20 px, and a little anti-aliased edge
    assert np.allclose(centre_of_mass(image), (14, 14), atol=0.5)  # whole-pixel shifts, as MNIST's


def test_light_on_dark_and_dark_on_light_give_the_same_image():
    dark_on_light = scaled_digit(factor=5).astype(np.float32)
    a, b = digit_image.mnist_like(dark_on_light), digit_image.mnist_like(255 - dark_on_light)
    assert np.abs(a - b).max() < 1e-3  # the same but for rounding (observed 3e-4)


def test_the_size_of_the_digit_does_not_matter():
    small, large = (digit_image.mnist_like(scaled_digit(factor=f).astype(np.float32)) for f in (4, 10))
    assert difference(small, large) < 0.03  # observed 0.012 (of 1)


def test_uneven_paper_and_noise_are_not_ink():
    rng = np.random.default_rng(1)
    ink = 1 - scaled_digit(factor=5).astype(np.float32) / 255
    y, x = np.mgrid[0:1:140j, 0:1:140j]
    paper = 140 + 100 * x * (1 - 0.5 * y) + rng.normal(0, 5, x.shape)  # 140 to 240 across, grain of 5 levels
    image = digit_image.mnist_like((paper * (1 - 0.8 * ink)).astype(np.float32))
    clean = digit_image.mnist_like(255 * (1 - ink))
    assert difference(image, clean) < 0.03  # observed 0.01
    assert (image[clean == 0] > 0.25).sum() <= 3  # no strokes where there is paper (observed 0)


# Each mode in each format that stores it (16-bit grey only in PNG and TIFF; CMYK only in TIFF, JPEG and WebP).
MODES_AND_FORMATS = [(mode, suffix) for suffix in (".png", ".bmp", ".gif", ".tif", ".webp", ".jpg")
                     for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "CMYK")
                     if not (mode == "I;16" and suffix not in (".png", ".tif"))
                     and not (mode == "CMYK" and suffix in (".png", ".bmp", ".gif"))
                     and not (mode in ("LA", "P", "RGBA") and suffix == ".jpg") and (mode, suffix) != ("LA", ".bmp")]


@pytest.mark.parametrize("mode, suffix", MODES_AND_FORMATS)
def test_every_mode_and_format_reads_alike(tmp_path, mode, suffix):
    gray = scaled_digit(factor=4)
    image = Image.fromarray((gray.astype(np.uint16) * 257)) if mode == "I;16" else Image.fromarray(gray).convert(mode)
    path = tmp_path / f"digit{suffix}"
    image.save(path, lossless=True) if suffix == ".webp" else image.save(path)
    expected = digit_image.mnist_like(gray.astype(np.float32))
    # Mode 1 is dithered (Pillow's default), GIF has 256 colours, JPEG blurs a little.
    assert difference(digit_image.load_image(path)[0], expected) < (0.07 if mode == "1" else 0.02)  # observed 0.043, 0.005


def test_an_animated_gif_is_read_on_its_first_frame(tmp_path):
    first, second = scaled_digit(index=0, factor=4), scaled_digit(index=25, factor=4)  # a 0, then a 1
    frames = [Image.fromarray(frame).convert("P") for frame in (first, second)]
    frames[0].save(tmp_path / "digits.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / "digits.gif").n_frames == 2
    read = digit_image.load_image(tmp_path / "digits.gif")[0]
    assert difference(read, digit_image.mnist_like(first.astype(np.float32))) < 0.02  # GIF has 256 colours
    assert difference(read, digit_image.mnist_like(second.astype(np.float32))) > 0.1


def test_transparent_paper_is_white(tmp_path):
    ink = 255 - scaled_digit(factor=4)  # the digit as opacity, over fully transparent black paper
    Image.fromarray(np.dstack([np.zeros_like(ink)] * 3 + [ink]), "RGBA").save(tmp_path / "digit.png")
    expected = digit_image.mnist_like(scaled_digit(factor=4).astype(np.float32))
    assert np.abs(digit_image.load_image(tmp_path / "digit.png")[0] - expected).max() < 0.02


def test_a_palette_image_with_a_transparent_paper_colour(tmp_path):
    ink = scaled_digit(factor=4) < 128  # the digit's strokes
    image = Image.fromarray(ink.astype(np.uint8), "P")  # index 0 paper, 1 ink
    image.putpalette([0, 0, 0, 40, 40, 40])  # black paper, made transparent below; dark grey ink
    image.save(tmp_path / "digit.png", transparency=0)
    expected = digit_image.mnist_like(np.where(ink, 40.0, 255.0).astype(np.float32))  # on white paper
    assert difference(digit_image.load_image(tmp_path / "digit.png")[0], expected) < 1e-6


@pytest.mark.parametrize("mode, scale", [
    ("F", 1 / 255),  # floats 0-1
    ("F", 1),  # floats 0-255
    ("I", 257),  # 32-bit integers holding 16-bit levels
    ("I", 1),  # 32-bit integers 0-255
    ("I;16", 1),  # a 16-bit image whose levels stay at or below 255: 8-bit levels, not 16-bit ones
])
def test_float_and_32_bit_images_read_as_their_levels(tmp_path, mode, scale):
    gray = scaled_digit(factor=4)
    values = gray.astype(np.float32 if mode == "F" else np.uint16 if mode == "I;16" else np.int32) * scale
    image = Image.fromarray(values.astype(np.float32) if mode == "F" else values)  # mode F, I or I;16
    image.save(tmp_path / "digit.tif" if mode != "I;16" else tmp_path / "digit.png")
    expected = digit_image.mnist_like(gray.astype(np.float32))
    path = tmp_path / ("digit.tif" if mode != "I;16" else "digit.png")
    assert difference(digit_image.load_image(path)[0], expected) < 1e-3


def test_an_image_larger_than_1024_pixels_is_shrunk_first(tmp_path):
    page = np.full((2400, 3000), 235, np.uint8)
    page[800:800 + 28 * 30, 1000:1000 + 28 * 30] = scaled_digit(factor=30)  # 840 pixels tall
    Image.fromarray(page).save(tmp_path / "big.png")
    # docs/your-digits.md: larger than 1024 pixels a side, box-shrunk to that: by 3, the least whole factor that fits.
    assert digit_image.read_gray(tmp_path / "big.png").shape == (800, 1000)
    expected = digit_image.mnist_like(scaled_digit(factor=4).astype(np.float32))
    assert difference(digit_image.load_image(tmp_path / "big.png")[0], expected) < 0.03  # observed 0.01


def test_a_photo_taken_sideways_is_turned_upright(tmp_path):
    upright = Image.fromarray(scaled_digit(factor=4))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels need turning 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png", exif=exif)
    expected = digit_image.mnist_like(np.asarray(upright, np.float32))
    assert difference(digit_image.load_image(tmp_path / "sideways.png")[0], expected) < 1e-6  # 0.19 if left sideways


def test_a_fine_pen_on_a_big_digit_gets_strokes_as_wide_as_mnist():
    rng = np.random.default_rng(5)
    fine, medium = (digit_image.mnist_like(np.asarray(drawn_digit(4, 400, pen, rng), np.float32)) for pen in (0.005, 0.1))
    # A 2-pixel line on a 400-pixel digit would be 0.1 pixel wide at 20 pixels: nothing left at half strength.
    assert fine.max() == 1 and 0.6 < (fine >= 0.5).sum() / (medium >= 0.5).sum() < 1.6  # observed 97 / 78 = 1.24
    ink = digit_image.crop_to_ink(digit_image.ink_strength(np.asarray(drawn_digit(4, 400, 0.005, rng), np.float32)))
    assert (digit_image.scale_to_20(ink) >= 0.5).sum() == 0  # unwidened, the line fades (observed 0 pixels)


@pytest.mark.parametrize("name, make", [
    ("white.png", lambda: Image.new("L", (300, 200), 255)),
    ("black-28x28.png", lambda: Image.new("L", (28, 28), 0)),
    ("grey-gradient.png", lambda: Image.fromarray(np.linspace(120, 240, 400).astype(np.uint8)[None].repeat(300, 0))),
    ("noisy-paper.jpg", lambda: Image.fromarray(
        np.random.default_rng(0).normal(210, 6, (240, 320)).clip(0, 255).astype(np.uint8)).convert("RGB")),
    ("transparent.png", lambda: Image.new("RGBA", (64, 64), (0, 0, 0, 0))),
    ("one-pixel.png", lambda: Image.new("L", (1, 1), 0)),
])
def test_a_blank_page_is_refused_naming_the_file(tmp_path, name, make):
    make().save(tmp_path / name)
    with pytest.raises(lenet.InputError, match=rf"^{re.escape(str(tmp_path / name))}: no digit found"):
        digit_image.load_image(tmp_path / name)


@pytest.mark.parametrize("contrast, blank", [(23, True), (25, False)])
def test_a_page_counts_as_blank_below_24_grey_levels_of_contrast(tmp_path, contrast, blank):
    """docs/your-digits.md's threshold: ink and paper 24 grey levels apart, on a clean page, is the least read."""
    page = np.full((120, 120), 255, np.uint8)
    page[30:90, 50:70] = 255 - contrast  # a bar of ink on white paper, no noise
    Image.fromarray(page).save(tmp_path / "faint.png")
    if blank:
        with pytest.raises(lenet.InputError, match=f"ink and paper differ by {contrast} grey levels"):
            digit_image.load_image(tmp_path / "faint.png")
    else:
        assert digit_image.load_image(tmp_path / "faint.png").max() == 1.0


def png_header(width, height):
    """A PNG file's bytes that claim width x height 8-bit grey pixels (and hold none)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 30_000])  # above Pillow's warning limit (89 Mpixels), above its error limit
def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_header(side, side))
    with pytest.raises(lenet.InputError, match=rf"^{re.escape(str(tmp_path / 'bomb.png'))}: too many pixels"):
        digit_image.load_image(tmp_path / "bomb.png")


def encoded_digits():
    """A scaled digit encoded in each format Pillow reads here: [bytes]."""
    image = Image.fromarray(scaled_digit(factor=2))
    encoded = []
    for format, mode in [("PNG", "L"), ("JPEG", "L"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "L"), ("WEBP", "RGB"),
                         ("PNG", "RGBA"), ("PNG", "I;16")]:
        buffer = io.BytesIO()
        (image.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(image).astype(np.uint16))).save(
            buffer, format)
        encoded.append(buffer.getvalue())
    return encoded


ENCODED = encoded_digits()


def read_bytes(folder, data):
    """digit_image.load_image on a file holding data: the image (1, 28, 28) or the InputError's message."""
    path = folder / "fuzzed"
    path.write_bytes(data)
    try:
        image = digit_image.load_image(path)
    except lenet.InputError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return str(e)
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    return image


# Derandomized, so a run is repeatable; no deadline, as the machine's speed varies.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_random_bytes(tmp_path, data):
    read_bytes(tmp_path, data)


@FUZZ
@given(which=st.integers(0, len(ENCODED) - 1), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6))
def test_fuzz_truncated_and_damaged_images(tmp_path, which, cut, flips):
    data = bytearray(ENCODED[which][:max(1, int(len(ENCODED[which]) * cut))])
    for where, value in flips:
        data[int(where * len(data))] = value
    read_bytes(tmp_path, bytes(data))


@FUZZ
@given(height=st.integers(1, 60), width=st.integers(1, 60), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["uniform", "binary", "constant"]))
def test_fuzz_pixel_arrays(height, width, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        gray = rng.uniform(0, 255, (height, width))
    elif kind == "binary":
        gray = 255.0 * (rng.random((height, width)) < rng.random())
    else:
        gray = np.full((height, width), rng.uniform(0, 255))
    try:
        image = digit_image.mnist_like(gray.astype(np.float32))
    except lenet.InputError as e:
        assert str(e).startswith("image: no digit found")
        return
    assert image.shape == (28, 28) and np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1
