"""The benchmarks' bookkeeping: the median-and-range cells, the rewrite of BENCHMARKS.md's tables, the full-size
data (Fashion-MNIST written as an mnist.npz), and the full MNIST's checks and table.

The benchmarks themselves (benchmarks/bench.py, benchmarks/full_mnist.py) are run by hand; no test times anything.
"""
import gzip
import hashlib
import sys

import numpy as np

import lenet
from conftest import ROOT, run
from test_mnist_idx import idx_bytes

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402
import fashion_mnist  # noqa: E402
import full_mnist  # noqa: E402


def test_summary_gives_the_median_and_the_range():
    assert bench.summary([300.0, 250.4, 410.0]) == "300 (250-410)"
    assert bench.summary([1.25], digits=1) == "1.2"  # one value: no range
    assert bench.summary([]) == "-"


def test_write_section_replaces_only_the_marked_table(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Title\n\nbefore\n\n{bench.MARK_START}\nold table\n{bench.MARK_END}\n\nafter\n")
    bench.write_section(path, f"{bench.MARK_START}\nnew table\n{bench.MARK_END}")
    assert path.read_text() == f"# Title\n\nbefore\n\n{bench.MARK_START}\nnew table\n{bench.MARK_END}\n\nafter\n"


def test_write_section_creates_or_appends(tmp_path):
    section = f"{bench.MARK_START}\ntable\n{bench.MARK_END}"
    bench.write_section(tmp_path / "new.md", section)
    assert (tmp_path / "new.md").read_text() == f"# Benchmarks\n\n{section}\n"
    (tmp_path / "notes.md").write_text("# Notes\n")
    bench.write_section(tmp_path / "notes.md", section)
    assert (tmp_path / "notes.md").read_text() == f"# Notes\n\n{section}\n"


def write_idx(path, array):
    """A gzipped IDX file of array's values as uint8 (test_mnist_idx.idx_bytes, written from the format)."""
    path.write_bytes(gzip.compress(idx_bytes(array.astype(np.uint8))))


def test_fashion_mnist_is_written_as_the_tutorials_mnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"train": (rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 10, 30)),
              "t10k": (rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12))}
    for prefix, (images, labels) in arrays.items():
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    fashion_mnist.write_npz(tmp_path, tmp_path / "out")
    (x_train, y_train), (x_test, y_test), _, found = lenet.load_mnist(tmp_path / "out")  # its checks pass
    assert found and np.array_equal(x_train[:, 0] * 255, arrays["train"][0]) and np.array_equal(y_test, arrays["t10k"][1])
    assert x_test.shape == (12, 1, 28, 28) and np.array_equal(y_train, arrays["train"][1])


def test_the_epoch_line_gives_images_per_second_and_accuracy():
    stdout = "device cpu\nepoch 1 loss 0.6012 test accuracy 85.8% images/s 454\nmodel saved to m\n"
    assert bench.epoch_line(stdout) == (454.0, 85.8)


def test_write_section_keeps_the_other_sections(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    bench.write_section(path, f"{bench.MARK_START}\nspeed\n{bench.MARK_END}")
    bench.write_section(path, "<!-- other:start -->\ncrashes\n<!-- other:end -->")
    bench.write_section(path, "<!-- other:start -->\nno crashes\n<!-- other:end -->")
    assert path.read_text() == (f"# Benchmarks\n\n{bench.MARK_START}\nspeed\n{bench.MARK_END}\n\n"
                                "<!-- other:start -->\nno crashes\n<!-- other:end -->\n")


def test_full_mnist_refuses_files_that_are_not_mnists(tmp_path):
    for name in full_mnist.MD5:
        write_idx(tmp_path / name, np.zeros(3, np.uint8))
    result = run([sys.executable, ROOT / "benchmarks/full_mnist.py", "--idx", tmp_path, "--work", tmp_path / "work"],
                 cwd=tmp_path)
    assert result.returncode == 1
    first = tmp_path / next(iter(full_mnist.MD5))
    assert result.stderr.strip() == (f"error: {first} has MD5 {hashlib.md5(first.read_bytes()).hexdigest()}, "
                                     f"not MNIST's {full_mnist.MD5[first.name]}")


def test_full_mnist_table_has_a_column_a_run_and_a_dash_where_none_ran():
    run_ = dict(accuracies=[98.0, 99.25], seconds=90, rss=600.4, images=1000.0, load=0.1, cpu="AMD EPYC (AVX2, AVX-512)",
                date="2026-12-02 10:00 UTC")
    lines = full_mnist.table({("oneflow", 1): run_}, epochs=2, seeds=[0, 1])
    assert lines[0] == "| | OneFlow, seed 0 | OneFlow, seed 1 | PyTorch, seed 0 | PyTorch, seed 1 |"
    assert lines[2] == "| test accuracy after epoch 1, % | - | 98.00 | - | - |"
    assert lines[4] == "| **test accuracy after 2 epochs, %** | - | **99.25** | - | - |"
    assert "| wall time, min | - | 1.5 | - | - |" in lines and "| peak resident memory, MiB | - | 600 | - | - |" in lines
    assert "| best epoch's, % | - | 99.25 | - | - |" in lines
    assert "| mean of epochs 1-2, % | - | 98.62 | - | - |" in lines and "| CPU | - | AMD EPYC (AVX2, AVX-512) | - | - |" in lines
