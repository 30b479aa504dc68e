"""Write Fashion-MNIST (60,000 training and 10,000 test images) as an mnist.npz, for the benchmark's full-size row.

    apt-get install dataset-fashion-mnist          # Debian's package: the four IDX files, about 30 MB
    python benchmarks/fashion_mnist.py /tmp/fashion     # writes /tmp/fashion/mnist.npz

The arrays have the keys, dtypes and shapes of the tutorial's mnist.npz (x_train (60000, 28, 28) uint8, ...),
so lenet_train.py --data-dir /tmp/fashion trains on them as it trains on MNIST.
"""
import argparse
import gzip
import os
import sys

import numpy as np

DEBIAN = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts its files

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("out", help="folder to write mnist.npz into (created if missing)")
parser.add_argument("--source", default=DEBIAN, help=f"folder of the four .gz IDX files (default: {DEBIAN})")


def read_idx(path):
    """The array in a gzipped IDX file (the MNIST format): a big-endian header of dimensions, then uint8 values."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]  # bytes 0-1 are zero, byte 2 the type (8: uint8), byte 3 the number of dimensions
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_npz(source, out):
    """Write out/mnist.npz from the IDX files in source; return its path."""
    arrays = {f"{x}_{split}": read_idx(os.path.join(source, f"{prefix}-{kind}-idx{3 if x == 'x' else 1}-ubyte.gz"))
              for split, prefix in (("train", "train"), ("test", "t10k")) for x, kind in (("x", "images"), ("y", "labels"))}
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "mnist.npz")
    np.savez(path, **arrays)
    return path


def main():
    args = parser.parse_args()
    if not os.path.isdir(args.source):
        sys.exit(f"error: no {args.source} (apt-get install dataset-fashion-mnist, or give --source)")
    print(f"written {write_npz(args.source, args.out)}")


if __name__ == "__main__":
    main()
