"""lenet_eval.py: the accuracy recounted by hand, and the report (per-digit accuracy, confusion matrix, JSON, the
mistakes as a PNG)."""
import json
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

import lenet
from conftest import MNIST_ACCURACY, assert_fails_cleanly, fixture_arrays, numpy_accuracy_line, run_script
from lenet_eval import (ERRORS_COLUMNS, TILE_HEIGHT, TILE_WIDTH, confusion_matrix, errors_image, format_confusion,
                        format_per_class, make_report, mistakes, report_json)


def test_eval_reports_the_accuracy_recounted_by_hand(trained):
    folder, train_stdout = trained
    result = run_script("lenet_eval.py", cwd=folder)
    assert result.returncode == 0, result.stderr
    accuracy = float(re.fullmatch(r"accuracy: ([\d.]+)%", result.stdout.splitlines()[-1])[1])
    assert accuracy > MNIST_ACCURACY
    assert f"test accuracy {accuracy:.1f}%" in train_stdout.splitlines()[-2]  # the model trained is the one saved

    assert result.stdout.splitlines()[-1] == numpy_accuracy_line(folder / "lenet_models_1")  # recounted with NumPy


def test_eval_without_a_model(tmp_path):
    assert_fails_cleanly(run_script("lenet_eval.py", cwd=tmp_path), "no model at ./lenet_models_1 (run lenet_train.py first)")


REPORT_KEYS = {"accuracy", "per_class", "confusion", "count", "model_dir", "data_file"}


def made_up(count, seed=0):
    """Random labels (count,) and logits (count, 10) that are right about 70% of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    logits = rng.normal(size=(count, 10)).astype(np.float32)
    right = rng.random(count) < 0.7
    logits[right, labels[right]] += 10.0
    return labels, logits


def filled_tiles(image):
    """Count the grid places of an errors image that hold anything but the white background."""
    columns, rows = image.width // TILE_WIDTH, image.height // TILE_HEIGHT
    assert (image.width, image.height) == (columns * TILE_WIDTH, rows * TILE_HEIGHT)
    return sum(image.crop((c * TILE_WIDTH, r * TILE_HEIGHT, (c + 1) * TILE_WIDTH, (r + 1) * TILE_HEIGHT)).getextrema()
               != (255, 255) for r in range(rows) for c in range(columns))


def test_confusion_matrix_by_hand():
    labels = np.array([0, 0, 1, 2, 2, 2])
    logits = np.eye(10)[[0, 1, 1, 0, 2, 2]]  # predicts 0, 1, 1, 0, 2, 2
    expected = np.zeros((10, 10), int)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[2, 0] = 1
    expected[2, 2] = 2
    assert (confusion_matrix(labels, logits) == expected).all()


def test_confusion_rows_sum_to_the_class_counts_and_its_trace_is_the_accuracy():
    labels, logits = made_up(500)
    confusion = confusion_matrix(labels, logits)
    assert (confusion.sum(axis=1) == np.bincount(labels, minlength=10)).all()
    assert (confusion.sum(axis=0) == np.bincount(logits.argmax(1), minlength=10)).all()
    report = make_report(labels, logits, "model", "data/mnist.npz")
    assert report["accuracy"] == pytest.approx(100 * np.mean(logits.argmax(1) == labels))
    assert report["accuracy"] == pytest.approx(100 * np.trace(confusion) / 500)
    for row in report["per_class"]:
        digit = row["digit"]
        assert row["count"] == np.sum(labels == digit)
        assert row["correct"] == np.sum((labels == digit) & (logits.argmax(1) == digit))
        assert row["accuracy"] == pytest.approx(100 * row["correct"] / row["count"])


def test_report_json_round_trips():
    labels, logits = made_up(50)
    labels[labels == 3] = 4  # a digit with no test image has no accuracy
    report = make_report(labels, logits, "lenet_models_1", "./mnist.npz")
    loaded = json.loads(report_json(report))
    assert loaded == report and set(loaded) == REPORT_KEYS
    assert loaded["count"] == 50 and loaded["per_class"][3] == {"digit": 3, "correct": 0, "count": 0, "accuracy": None}
    assert np.array(loaded["confusion"]).shape == (10, 10)


def test_text_tables():
    labels, logits = made_up(300)
    report = make_report(labels, logits, "m", "d")
    per_class = format_per_class(report["per_class"]).splitlines()
    assert per_class[0] == "digit  correct  count  accuracy" and len(per_class) == 11
    first = report["per_class"][0]
    assert per_class[1].split() == ["0", str(first["correct"]), str(first["count"]), f"{first['accuracy']:.1f}%"]
    confusion = format_confusion(np.array(report["confusion"])).splitlines()
    assert len(confusion) == 11 and len({len(line) for line in confusion}) == 1  # aligned columns
    assert [int(n) for n in confusion[3].split()] == [2, *report["confusion"][2]]


def test_mistakes_come_most_confident_first():
    labels = np.array([0, 0, 0, 0, 1])
    logits = np.zeros((5, 10))
    logits[[0, 1, 2, 3, 4], [1, 2, 0, 3, 1]] = [1.0, 5.0, 9.0, 3.0, 2.0]  # item 2 and 4 are right
    assert mistakes(labels, logits).tolist() == [1, 3, 0]
    assert mistakes(labels, logits, limit=2).tolist() == [1, 3]


@pytest.mark.parametrize("count, limit", [(60, 100), (200, 12)])  # about 18 mistakes, all drawn; about 60, capped
def test_errors_image_has_one_tile_per_mistake(count, limit):
    labels, logits = made_up(count)
    images = np.random.default_rng(1).random((count, 1, 28, 28)).astype(np.float32)
    tiles = min(int(np.sum(logits.argmax(1) != labels)), limit)
    assert tiles > ERRORS_COLUMNS  # more than one row
    image = errors_image(images, labels, logits, limit=limit)
    assert image.size == (ERRORS_COLUMNS * TILE_WIDTH, -(-tiles // ERRORS_COLUMNS) * TILE_HEIGHT)
    assert filled_tiles(image) == tiles
    # The first tile is the most confident mistake, drawn at 2x with a margin: every other pixel gives it back.
    margin = (TILE_WIDTH - 56) // 2
    digit = np.asarray(image.crop((margin, margin, margin + 56, margin + 56)))[::2, ::2]
    assert (digit == np.rint(images[mistakes(labels, logits)[0], 0] * 255)).all()


def test_errors_image_labels_each_tile_true_predicted_and_probability_up_to_100_tiles(monkeypatch):
    labels, logits = made_up(500)  # about 150 mistakes: more than the cap
    texts = []
    draw = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text",
                        lambda self, xy, words, *args, **kwargs: texts.append(words) or draw(self, xy, words, *args, **kwargs))
    image = errors_image(np.zeros((500, 1, 28, 28), np.float32), labels, logits)  # the default cap
    predicted = logits.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    probability = np.exp(logits - logits.max(1, keepdims=True))
    probability = (probability / probability.sum(1, keepdims=True)).max(1)  # of the predicted digit
    shown = wrong[np.argsort(-probability[wrong], kind="stable")][:100]  # most confident first, 100 at most
    assert len(wrong) > 100 and image.size == (10 * TILE_WIDTH, 10 * TILE_HEIGHT)
    assert texts == [line for i in shown for line in (f"{labels[i]} -> {predicted[i]}", f"{100 * probability[i]:.0f}%")]


def test_errors_image_of_a_few_mistakes_is_one_short_row():
    labels, logits = made_up(10, seed=3)
    tiles = int(np.sum(logits.argmax(1) != labels))
    assert 0 < tiles < ERRORS_COLUMNS
    image = errors_image(np.ones((10, 1, 28, 28), np.float32), labels, logits)
    assert image.size == (tiles * TILE_WIDTH, TILE_HEIGHT) and filled_tiles(image) == tiles


def test_errors_image_without_mistakes_is_one_blank_tile():
    _, logits = made_up(20)
    image = errors_image(np.zeros((20, 1, 28, 28), np.float32), logits.argmax(1), logits)  # every label right
    assert image.size == (TILE_WIDTH, TILE_HEIGHT) and filled_tiles(image) == 0


def test_eval_report_through_the_script(trained, tmp_path):
    folder, _ = trained
    result = run_script("lenet_eval.py", "--per-class", "--confusion", "--errors-png", tmp_path / "errors.png",
                        "--json", tmp_path / "report.json", cwd=folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    accuracy = re.fullmatch(r"accuracy: ([\d.]+)%", lines[-1])[1]  # still the last line
    assert float(accuracy) > MNIST_ACCURACY

    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) == REPORT_KEYS
    assert (report["count"], report["model_dir"], report["data_file"]) == (200, "./lenet_models_1", "./mnist.npz")
    confusion = np.array(report["confusion"])
    y_test = fixture_arrays()["y_test"]
    assert (confusion.sum(axis=1) == np.bincount(y_test, minlength=10)).all()  # 20 of each digit
    assert f"{100 * np.trace(confusion) / confusion.sum():.1f}" == accuracy == f"{report['accuracy']:.1f}"

    table_start = lines.index("digit  correct  count  accuracy")
    assert lines[table_start + 1:table_start + 11] == format_per_class(report["per_class"]).splitlines()[1:]
    assert format_confusion(confusion) in result.stdout

    wrong = int(confusion.sum() - np.trace(confusion))
    assert f"errors {wrong} of 200, the {wrong} most confident drawn to {tmp_path / 'errors.png'}" in lines
    with Image.open(tmp_path / "errors.png") as image:
        assert image.format == "PNG"
        assert filled_tiles(image.convert("L")) == wrong  # observed 21


def test_eval_cannot_write_the_report(trained, tmp_path):
    folder, _ = trained
    result = run_script("lenet_eval.py", "--json", tmp_path / "missing" / "report.json", cwd=folder)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"error: cannot write {tmp_path / 'missing' / 'report.json'} (No such file or directory)"
