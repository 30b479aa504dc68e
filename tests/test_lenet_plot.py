"""lenet_plot.py: the training curves of a --metrics file drawn with matplotlib to a PNG, and a broken file refused."""
import io
import json

import numpy as np
import pytest
from PIL import Image

import lenet
from conftest import assert_fails_cleanly, run_script
from lenet_plot import plot_metrics, read_metrics

PLOT_WIDTH, PLOT_HEIGHT = 800, 320  # the size docs/report.md and --help state, in pixels

BLUE, RED = (31, 119, 180), (214, 39, 40)  # matplotlib's tab:blue (the loss) and tab:red (the accuracy)


def records(epochs):
    return [dict(epoch=e, loss=2.0 / e, accuracy=80 + 3 * e, images_per_second=160.0) for e in range(1, epochs + 1)]


def pixels(figure):
    """The figure as an RGB array (H, W, 3), as savefig writes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_plot_draws_the_loss_left_and_the_accuracy_right():
    figure = plot_metrics(records(5))
    image = pixels(figure)
    assert image.shape == (PLOT_HEIGHT, PLOT_WIDTH, 3)
    left, right = image[:, :PLOT_WIDTH // 2].reshape(-1, 3), image[:, PLOT_WIDTH // 2:].reshape(-1, 3)
    assert (left == BLUE).all(axis=1).sum() > 100 and not (left == RED).all(axis=1).any()
    assert (right == RED).all(axis=1).sum() > 100 and not (right == BLUE).all(axis=1).any()
    loss, accuracy = figure.axes
    assert loss.get_title() == "training loss (mean cross-entropy), last 0.4000"
    assert accuracy.get_title() == "test accuracy (%), last 95.0%"
    assert list(loss.get_lines()[0].get_ydata()) == [2.0, 1.0, 2.0 / 3, 0.5, 0.4]
    for axes in figure.axes:
        assert axes.get_xlabel() == "epoch"
        assert all(float(tick).is_integer() for tick in axes.get_xticks())  # whole epochs


def test_one_epoch_is_a_point():
    image = pixels(plot_metrics(records(1)))
    assert image.shape == (PLOT_HEIGHT, PLOT_WIDTH, 3) and (image == BLUE).all(axis=2).any()


def test_the_script_draws_a_metrics_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records(3)))
    result = run_script("lenet_plot.py", "metrics.jsonl", "curves.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "epochs 3 drawn to curves.png"
    with Image.open(tmp_path / "curves.png") as image:
        assert (image.format, image.size) == ("PNG", (PLOT_WIDTH, PLOT_HEIGHT))
    result = run_script("lenet_plot.py", "metrics.jsonl", "missing/curves.png", cwd=tmp_path)
    assert_fails_cleanly(result, "cannot write missing/curves.png (No such file or directory)")


def test_read_metrics_refuses_a_broken_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 1.5, "accuracy": 80.0, "images_per_second": 150.0}\n{"epoch": 2, "lo\n')
    with pytest.raises(lenet.InputError, match=r"metrics.jsonl line 2 is not JSON"):
        read_metrics(path)
    path.write_text('{"epoch": 1, "loss": 1.5}\n')
    with pytest.raises(lenet.InputError, match=r"line 1 lacks a number among epoch, loss, accuracy, images_per_second"):
        read_metrics(path)
    path.write_text("\n")
    with pytest.raises(lenet.InputError, match=r"holds no epochs"):
        read_metrics(path)
    result = run_script("lenet_plot.py", "missing.jsonl", "out.png", cwd=tmp_path)
    assert_fails_cleanly(result, "error: cannot read missing.jsonl (No such file or directory)")
