"""lenet_plot.py: the training curves of a --metrics file as a PNG, and a broken file refused."""
import pytest
from PIL import Image

import lenet
from conftest import run_script
from lenet_plot import PLOT_HEIGHT, PLOT_WIDTH, nice_ticks, plot_metrics, read_metrics


def test_plot_metrics_draws_both_curves():
    records = [dict(epoch=e, loss=2.0 / e, accuracy=80 + 3 * e, images_per_second=160.0) for e in range(1, 6)]
    image = plot_metrics(records)
    assert image.size == (PLOT_WIDTH, PLOT_HEIGHT)
    colors = {color for _, color in image.getcolors(PLOT_WIDTH * PLOT_HEIGHT)}
    assert (31, 119, 180) in colors and (214, 39, 40) in colors  # the loss line (blue) and the accuracy line (red)
    assert plot_metrics(records[:1]).size == (PLOT_WIDTH, PLOT_HEIGHT)  # one epoch: a point, no line

@pytest.mark.parametrize("low, high, integer, expected", [
    (0.18, 1.79, False, [0.0, 0.5, 1.0, 1.5, 2.0]),
    (84.8, 95.4, False, [80, 85, 90, 95, 100]),
    (1, 20, True, [0, 5, 10, 15, 20]),
    (1, 1, True, [0, 1, 2]),
])
def test_nice_ticks(low, high, integer, expected):
    assert nice_ticks(low, high, count=4 if low == high else 5, integer=integer) == pytest.approx(expected)

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
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: cannot read missing.jsonl (No such file or directory)"
