"""MNIST's four original files, read as they are: LeCun's IDX format, gzipped or not, as torchvision (MNIST/raw) and
the mirrors keep them.

An IDX file is a magic number (two zero bytes, a type byte, 0x08 for unsigned bytes, and the number of axes), each
axis's size as a big-endian 32-bit integer, then the values in C order: images (N, 28, 28), labels (N,).
"""
import gzip
import os

import numpy as np

# The arrays of mnist.npz and the file each comes from: (name, axes).
FILES = {"x_train": ("train-images-idx3-ubyte", 3), "y_train": ("train-labels-idx1-ubyte", 1),
         "x_test": ("t10k-images-idx3-ubyte", 3), "y_test": ("t10k-labels-idx1-ubyte", 1)}
UNSIGNED_BYTE = 0x08


class BadFile(ValueError):
    """A missing, unreadable or malformed IDX file; the message names it."""


def find(folder):
    """Return {array: path} for the IDX files in folder, plain or .gz (the plain one where both are there)."""
    found = {}
    for key, (name, _) in FILES.items():
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                found[key] = path
                break
    return found


def read(path, axes):
    """Return the array in the IDX file at path, which must have `axes` axes of unsigned bytes.

    Raises ValueError saying what is wrong: not IDX, another type or number of axes, truncated, or too long.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip's magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut-off stream an EOFError
            raise ValueError(f"is not a readable gzip file ({type(e).__name__}: {e})") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError("is not an IDX file (its first two bytes are not zero)")
    if data[2] != UNSIGNED_BYTE or data[3] != axes:
        raise ValueError(f"holds type 0x{data[2]:02x} in {data[3]} axes, expected unsigned bytes (0x08) in {axes}")
    header = 4 + 4 * axes
    if len(data) < header:
        raise ValueError(f"is truncated: {len(data)} bytes, its header alone takes {header}")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", axes, 4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"has {len(data)} bytes, its header {shape} says {expected}"
                         + (" (truncated)" if len(data) < expected else ""))
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def load(found):
    """Return {array: values} for the four files of find(); raises BadFile naming the file that is wrong."""
    missing = [FILES[key][0] for key in FILES if key not in found]
    if missing:
        raise BadFile(f"{os.path.dirname(next(iter(found.values())))} lacks {', '.join(missing)} (or .gz) "
                         "of MNIST's four files")
    arrays = {}
    for key, path in found.items():
        try:
            arrays[key] = read(path, FILES[key][1])
        except OSError as e:
            raise BadFile(f"{path} cannot be read ({e.strerror or e})") from None
        except ValueError as e:
            raise BadFile(f"{path} {e}") from None
    return arrays
