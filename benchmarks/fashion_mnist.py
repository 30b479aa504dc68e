"""Write Fashion-MNIST (60,000 training and 10,000 test images) as an mnist.npz, for the benchmark's full-size row.

    apt-get install dataset-fashion-mnist          # Debian's package: the four IDX files, about 30 MB
    python benchmarks/fashion_mnist.py /tmp/fashion     # writes /tmp/fashion/mnist.npz

The arrays have the keys, dtypes and shapes of the tutorial's mnist.npz (x_train (60000, 28, 28) uint8, ...),
so lenet_train.py --data-dir /tmp/fashion trains on them as it trains on MNIST.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mnist_idx  # noqa: E402

DEBIAN = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts its files

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("out", help="folder to write mnist.npz into (created if missing)")
parser.add_argument("--source", default=DEBIAN, help=f"folder of the four .gz IDX files (default: {DEBIAN})")


def write_npz(source, out):
    """Write out/mnist.npz from the four IDX files in source (mnist_idx reads and checks them); return its path."""
    found = mnist_idx.find(source)
    if not found:
        raise mnist_idx.BadFile(f"{source} holds none of MNIST's four files")
    arrays = mnist_idx.load(found)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "mnist.npz")
    np.savez(path, **arrays)
    return path


def main():
    args = parser.parse_args()
    if not os.path.isdir(args.source):
        sys.exit(f"error: no {args.source} (apt-get install dataset-fashion-mnist, or give --source)")
    try:
        print(f"written {write_npz(args.source, args.out)}")
    except mnist_idx.BadFile as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
