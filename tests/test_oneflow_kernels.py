"""oneflow_native's CPU kernels (oneflow_kernels.cpp) against OneFlow's own: the same results on the same inputs,
each case run where the kernels claim it and left to OneFlow where they do not; training that follows the same
path; and one line, never a traceback, where the library is missing. Their speed is measured in
benchmarks/bench.py, never here."""
import importlib.machinery
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kernel_cases
import lenet
import oneflow_setup
from conftest import ROOT, fixture_arrays, run, run_script

CASES = Path(kernel_cases.__file__)

OPS = oneflow_setup.KERNEL_OPS  # the order of a case's run counts
# What each case must have run on the kernels (every other count 0): for a convolution its three ops, and the sum
# of its bias's gradient where it has a bias; for a pooling its two.
EXPECTED = {f"conv{i}": {"conv2d", "conv_data_grad", "conv_filter_grad"} | ({"reduce_sum"} if case[-1] else set())
            for i, case in enumerate(kernel_cases.CONVOLUTIONS)}
EXPECTED.update({f"pool{i}": {"max_pool_2d", "max_pool_2d_grad"} for i in range(len(kernel_cases.POOLS))})
# Left to OneFlow's own kernels: the same code ran in both processes, so the same bits came out.
LEFT_TO_ONEFLOW = {"conv_double", "conv_groups", "conv_1d", "conv_3d", "pool_double", "sum_other_axes"}
EXPECTED.update({f"infer_conv{i}": {"conv2d"} for i in range(len(kernel_cases.INFERENCE_CONVOLUTIONS))})
EXPECTED.update({f"infer_pool{i}": {"max_pool_2d"} for i in range(len(kernel_cases.INFERENCE_POOLS))})
EXPECTED.update({"sum_dense_bias": {"reduce_sum"}, "sum_conv_bias": {"reduce_sum"}})
EXPECTED.update({case: set() for case in LEFT_TO_ONEFLOW})


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """kernel_cases.py's results with the kernels and with OneFlow's own (LENET_KERNELS=0): (ours, OneFlow's)."""
    folder = tmp_path_factory.mktemp("kernel_cases")
    results = []
    for setting in ("1", "0"):
        output = folder / f"kernels_{setting}.npz"
        result = run([sys.executable, CASES, output], cwd=folder, env={"LENET_KERNELS": setting})
        assert result.returncode == 0, result.stderr
        with np.load(output) as npz:
            results.append({key: npz[key] for key in npz.files})
    return results


def values(results, case):
    """The arrays a case computed, in order."""
    return [results[key] for key in sorted(results) if key.startswith(f"{case}/") and not key.endswith("/runs")]


def test_inference_shares_the_cores_between_a_batchs_parts(cases):
    ours, oneflows = cases
    # Each inference case's one run, made before any kernel of a backward pass existed, on more than one core.
    inference = sum(case.startswith("infer_") for case in EXPECTED)
    assert ours["shared_runs"] == (inference if len(os.sched_getaffinity(0)) > 1 else 0)
    assert oneflows["shared_runs"] == 0


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_case_ran_on_the_kernels_it_is_theirs_and_on_oneflows_otherwise(cases, case):
    ours, oneflows = cases
    ran = {op for op, runs in zip(OPS, ours[f"{case}/runs"]) if runs > 0}
    assert ran == EXPECTED[case]
    assert not oneflows[f"{case}/runs"].any()  # LENET_KERNELS=0: OneFlow's kernels alone


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_the_kernels_compute_what_oneflows_own_compute(cases, case):
    ours, oneflows = cases
    for mine, reference in zip(values(ours, case), values(oneflows, case), strict=True):
        assert mine.shape == reference.shape and mine.dtype == reference.dtype
        if case.startswith("pool") or case in LEFT_TO_ONEFLOW:
            # Pooling is OneFlow's own arithmetic, indices and NaN included; other kernels are the same code.
            np.testing.assert_array_equal(mine, reference)
        else:
            # Sums in another order: within 1e-5 of the largest value, the scale of their rounding (1.8e-6 seen).
            scale = np.abs(reference).max()
            np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-5 * scale)


def train(folder, setting, *flags):
    """lenet_train.py on data/mnist-5k in folder with LENET_KERNELS=setting: (its epochs' records, its model)."""
    folder.mkdir()
    result = run_script("lenet_train.py", *flags, "--data-dir", ROOT / "data/mnist-5k", "--metrics", "metrics.jsonl",
                        cwd=folder, env={"LENET_KERNELS": setting})
    assert result.returncode == 0, result.stderr
    model = lenet.LeNet()
    lenet.CheckPoint(model).load(folder / "lenet_models_1")
    return ([json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()],
            {name: value.numpy() for name, value in model.state_dict().items()})


def test_training_steps_on_the_kernels_are_oneflows_own(tmp_path):
    """The first 5 steps of lenet_train.py: the same mean loss and weights as on OneFlow's own kernels, to 1e-5 (a
    convolution's sums in another order: 1.0e-7 of the loss and 2e-7 of the largest weight seen).

    Longer runs cannot be compared so: training at the tutorial's learning rate amplifies any rounding difference.
    On data/mnist-5k, after 9 equal steps a near tie in a ReLU or a pooling window goes the other way and the runs
    part as two seeds would: two epochs on the kernels ended 2.1e-2 from OneFlow's own in loss and 0.8 points in
    test accuracy, and OneFlow's own kernels with OpenBLAS for MKL 3.5e-3 and 0.1 points. What a longer run reaches
    on the kernels is the fixture model's accuracy, which every test of a trained model checks."""
    (ours, our_model), (oneflows, oneflows_model) = (
        train(tmp_path / setting, setting, "--epochs", 1, "--max-steps", 5) for setting in ("1", "0"))
    assert abs(ours[0]["loss"] - oneflows[0]["loss"]) < 1e-5 * oneflows[0]["loss"]
    for name, weights in oneflows_model.items():
        np.testing.assert_allclose(our_model[name], weights, rtol=0, atol=1e-5 * np.abs(weights).max(), err_msg=name)


# lenet_test.py in a Python that finds no oneflow_kernels, as where pip could not build it.
NOT_BUILT = f"""
import importlib.util, runpy, sys
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *args: None if name == "oneflow_kernels" else find_spec(name, *args)
sys.path.insert(0, {str(ROOT)!r})
sys.argv = [{str(ROOT / "lenet_test.py")!r}] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture
def digit(tmp_path):
    """A PNG of the fixture's first test digit."""
    path = tmp_path / "digit.png"
    Image.fromarray(fixture_arrays()["x_test"][0]).save(path)
    return path


def assert_one_note(result, words):
    """lenet_test.py read the digit, and said on one line of stderr, with words in it, that the kernels are out."""
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("prediction: ")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and words in notes[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_library_that_was_not_built_is_one_line_and_the_scripts_run_on(trained, digit, tmp_path):
    folder, _ = trained
    no_compiler = tmp_path / "bin"  # a PATH without c++
    no_compiler.mkdir()
    result = run([sys.executable, "-c", NOT_BUILT, digit], cwd=folder, env={"PATH": str(no_compiler), "CXX": "c++"})
    assert_one_note(result, "no C++ compiler (c++)")


def test_a_library_that_cannot_be_loaded_is_one_line_and_the_scripts_run_on(trained, digit, tmp_path):
    folder, _ = trained
    shadow = tmp_path / "shadow"  # an oneflow_kernels found before the installed one, which is no library
    shadow.mkdir()
    (shadow / f"oneflow_kernels{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_text("not a library\n")
    result = run_script("lenet_test.py", digit, cwd=folder, env={"PYTHONPATH": str(shadow)})
    assert_one_note(result, "could not be loaded")


@pytest.mark.parametrize("setting", ["LENET_KERNELS", "LENET_SPEEDUPS"])
def test_either_switch_leaves_the_kernels_out(setting, tmp_path):
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import lenet, oneflow_setup; lenet.choose_device('cpu');"
             "print(oneflow_setup.load_kernels())")
    result = run([sys.executable, "-c", check, ROOT], cwd=tmp_path, env={setting: "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "None\n" and "note:" not in result.stderr
