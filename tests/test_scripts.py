"""End to end through the real scripts: train on the committed digits, evaluate, read PNGs, and refuse bad input."""
import re

import numpy as np
import pytest
from PIL import Image

import lenet
from conftest import fixture_arrays, run_script



def test_train_prints_the_log_and_saves(trained):
    folder, stdout = trained
    lines = stdout.splitlines()
    assert lines[:2] == ["device cpu (no GPU found)", "File mnist.npz already exist, path: ./mnist.npz"]
    # 1,000 digits in batches of 50: 20 steps an epoch, the loss printed every 20 steps.
    assert [line.split(" loss ")[0] for line in lines if " step " in line] == [
        f"epoch {e} step {20 * e}" for e in range(1, 7)]
    epochs = [re.fullmatch(r"epoch (\d) loss ([\d.]+) test accuracy ([\d.]+)% images/s (\d+)", line)
              for line in lines if "test accuracy" in line]
    assert all(epochs) and [int(m[1]) for m in epochs] == [1, 2, 3, 4, 5, 6]
    losses = [float(m[2]) for m in epochs]
    assert losses[-1] < losses[0] / 2  # observed 2.63 -> 0.34
    assert lines[-1] == "model saved to ./lenet_models_1"
    assert (folder / "lenet_models_1" / "pickled_data").is_file()


def test_eval_reports_the_accuracy_recounted_by_hand(trained):
    folder, train_stdout = trained
    result = run_script("lenet_eval.py", cwd=folder)
    assert result.returncode == 0, result.stderr
    accuracy = float(re.fullmatch(r"accuracy: ([\d.]+)%", result.stdout.splitlines()[-1])[1])
    assert accuracy > 80  # observed 88.5% after 6 epochs on the 1,000 fixture digits
    assert f"test accuracy {accuracy:.1f}%" in train_stdout.splitlines()[-2]  # the model trained is the one saved

    # Recount: the saved model's logits in batches of 7 (200 is no multiple of 7), argmax against the labels.
    model = lenet.LeNet()
    lenet.CheckPoint(model).load(folder / "lenet_models_1")
    (_, _), (images, labels), _, _ = lenet.load_mnist(folder)
    logits = lenet.predict(lenet.EvalGraph(model), images, 7, lenet.flow.device("cpu"))
    assert logits.shape == (200, 10)
    assert f"{100 * np.mean(logits.argmax(1) == labels):.1f}" == f"{accuracy:.1f}"


def test_predicts_a_png_as_evaluation_does(trained, tmp_path):
    folder, _ = trained
    raw = fixture_arrays()
    chosen = [int(np.flatnonzero(raw["y_test"] == digit)[0]) for digit in range(10)]  # one of each digit
    model = lenet.LeNet()
    lenet.CheckPoint(model).load(folder / "lenet_models_1")
    (_, _), (images, _), _, _ = lenet.load_mnist(folder)
    expected = lenet.predict(lenet.EvalGraph(model), images[chosen], 10, lenet.flow.device("cpu")).argmax(1)
    predictions = []
    for i in chosen:
        Image.fromarray(raw["x_test"][i]).save(tmp_path / f"{i}.png")
        result = run_script("lenet_test.py", tmp_path / f"{i}.png", cwd=folder)
        assert result.returncode == 0, result.stderr
        predictions.append(int(re.fullmatch(r"prediction: (\d) \(probability [\d.]+\)", result.stdout.splitlines()[-1])[1]))
    assert predictions == expected.tolist()
    assert np.mean(np.array(predictions) == np.arange(10)) >= 0.7  # observed 10 of 10


def assert_one_line_error(result, message):
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in result.stderr


def test_eval_and_test_without_a_model(tmp_path):
    assert_one_line_error(run_script("lenet_eval.py", cwd=tmp_path), "no model at lenet_models_1 (run lenet_train.py first)")
    Image.new("L", (28, 28)).save(tmp_path / "blank.png")
    assert_one_line_error(run_script("lenet_test.py", "blank.png", "--model-dir", "nowhere", cwd=tmp_path),
                          "no model at nowhere (run lenet_train.py first)")


def test_test_with_a_file_that_is_no_image(trained, tmp_path):
    folder, _ = trained
    (tmp_path / "notes.txt").write_text("not a picture")
    assert_one_line_error(run_script("lenet_test.py", tmp_path / "missing.png", cwd=folder),
                          f"{tmp_path / 'missing.png'}: no such file")
    result = run_script("lenet_test.py", tmp_path / "notes.txt", cwd=folder)
    assert_one_line_error(result, result.stderr.splitlines()[-1][len("error: "):])
    assert result.stderr.splitlines()[-1].startswith(f"error: {tmp_path / 'notes.txt'}: not a readable image")


def test_test_without_an_argument_prints_usage(tmp_path):
    result = run_script("lenet_test.py", cwd=tmp_path)
    assert result.returncode == 2 and "usage: lenet_test.py" in result.stderr
    assert result.stderr.splitlines()[-1] == "lenet_test.py: error: the following arguments are required: image"


@pytest.mark.parametrize("device, message", [
    ("cuda", "device 'cuda' is not available: OneFlow sees 0 GPU(s) (use --device cpu)"),
    ("cuda:1", "device 'cuda:1' is not available: OneFlow sees 0 GPU(s) (use --device cpu)"),
    ("tpu", "unknown device 'tpu' (use cpu, cuda or cuda:N)"),
])
def test_unavailable_device(tmp_path, device, message):
    assert_one_line_error(run_script("lenet_train.py", "--device", device, cwd=tmp_path), message)


@pytest.mark.parametrize("flag", ["--epochs=0", "--batch-size=-5", "--learning-rate=0", "--learning-rate=nan"])
def test_train_refuses_bad_flags(tmp_path, flag):
    result = run_script("lenet_train.py", flag, cwd=tmp_path)
    assert result.returncode == 2 and f"argument {flag.split('=')[0]}: invalid" in result.stderr


def test_smoke_run_with_max_steps(data_dir):
    result = run_script("lenet_train.py", "--data-dir", data_dir, "--max-steps", 3, "--log-interval", 1,
                        "--batch-size", 64, "--model-dir", data_dir / "model", cwd=data_dir)
    assert result.returncode == 0, result.stderr
    assert [line.split(" loss")[0] for line in result.stdout.splitlines() if " step " in line] == [
        "epoch 1 step 1", "epoch 1 step 2", "epoch 1 step 3"]
    assert result.stdout.splitlines()[-1] == f"model saved to {data_dir / 'model'}"
