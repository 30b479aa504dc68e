"""lenet_export.py: the fixture-trained model exported to ONNX and read back in onnxruntime, against an independent
NumPy forward pass and against OneFlow, at batch sizes 1, 7 and 100; the convolutions' biases, which oneflow-onnx
0.6.2 drops where OneFlow fuses them (the CPU speed settings); the converter as released, refused by the check;
opsets; and each bad input: one line, exit 1, nothing written."""
import re
import shutil
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper
from PIL import Image

import lenet
import onnx_model
from conftest import ROOT, assert_fails_cleanly, fixture_arrays, in_mount_namespace, read_only_mounts, run, run_script, weights
from test_lenet_checkpoint import write_legacy
from test_lenet_network import numpy_lenet

CPU = lenet.flow.device("cpu")

# lenet_export.py with a part of onnx_model's fixes undone (argv[1]: "bias" or "batch"), the rest of argv its flags.
UNFIXED = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import lenet_export, onnx_model
undo = sys.argv.pop(1)
if undo == "bias":  # conv2d's inputs named as oneflow-onnx 0.6.2 names them
    fixed = onnx_model.import_converter
    def import_converter():
        export = fixed()
        from oneflow_onnx.oneflow2onnx import handler
        handler.flow_op._OP_TYPE_2_IBN["conv2d"] = ["in", "weight"]
        return export
    onnx_model.import_converter = import_converter
elif undo == "batch":  # what dynamic_batch_size=True does: the input's batch symbolic, and nothing else
    def any_batch_size(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx_model.any_batch_size = any_batch_size
lenet_export.main(sys.argv[1:])
"""


def run_unfixed(undo, *args, cwd, env=None):
    """Run lenet_export.py with one of onnx_model's fixes undone; return the CompletedProcess."""
    return run([sys.executable, "-c", UNFIXED, undo, *map(str, args)], cwd=cwd, env=env)


@pytest.fixture(scope="module")
def saved(trained):
    """(the trained model's weights {name: float64 array}, the fixture's test images (200, 1, 28, 28))."""
    folder, _ = trained
    (_, _), (images, _), _, _ = lenet.load_mnist(folder)
    return {name: value.astype(np.float64) for name, value in weights(folder / "lenet_models_1").items()}, images


def session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_in_batches(path, images, batch_size):
    """onnxruntime's logits of images, batch_size at a time (the last batch short), called as docs/export.md does."""
    s = session(path)
    return np.concatenate([s.run(["logits"], {"images": images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def test_export_prints_the_file_its_size_opset_and_largest_difference(exported):
    path, stdout = exported
    lines = stdout.splitlines()
    assert lines[-4:-1] == [f"file {path}", f"size {path.stat().st_size / 1e6:.1f} MB ({path.stat().st_size:,} bytes)", "opset 10"]
    match = re.fullmatch(r"largest difference (\S+) \(onnxruntime's logits against OneFlow's, 200 test digits in batches "
                         r"of 1, 7, 100; at most 1e-04\)", lines[-1])
    assert match and float(match[1]) < 1e-4  # observed 1.9e-06
    assert sorted(p.name for p in path.parent.iterdir()) == ["lenet.onnx"]  # no temporary file left
    model = onnx.load(str(path))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 10)] and model.ir_version == 5  # export.md


@pytest.mark.parametrize("batch_size", [1, 7, 100])
def test_the_file_computes_the_models_logits_at_any_batch_size(exported, saved, trained, batch_size):
    path, _ = exported
    weights_, images = saved
    logits = run_in_batches(path, images, batch_size)  # 200 = 28 x 7 + 4: a short last batch at 7
    assert logits.shape == (200, 10)
    assert np.abs(logits - numpy_lenet(images.astype(np.float64), weights_)).max() < 1e-4  # independent of OneFlow
    folder, _ = trained
    model = lenet.load_model(folder / "lenet_models_1", CPU)
    oneflow = lenet.predict(lenet.EvalGraph(model), images, 100, CPU)
    assert np.abs(logits - oneflow).max() < 1e-4
    assert np.array_equal(logits.argmax(axis=1), oneflow.argmax(axis=1))


def test_the_batch_dimension_is_symbolic_and_the_flatten_keeps_it(exported):
    path, _ = exported
    model = onnx.load(str(path))
    shapes = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)]
    assert [v.name for v in (*model.graph.input, *model.graph.output)] == ["images", "logits"]
    assert shapes == [["N", 1, 28, 28], ["N", 10]]
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    reshapes = [constants[node.input[1]].tolist() for node in model.graph.node if node.op_type == "Reshape"]
    assert reshapes == [[0, 3136]]  # 0: the input's own batch size; the converter wrote 100, the traced one


def test_each_convolution_keeps_its_bias(exported, saved):
    """The trap: with the speed settings on (the default), OneFlow's conv2d takes its bias as an input, which
    oneflow-onnx 0.6.2 left out of the ONNX Conv."""
    path, _ = exported
    weights_, _ = saved
    model = onnx.load(str(path))
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == 2 and all(len(node.input) == 3 for node in convs)  # X, W, B
    for node, layer in zip(convs, ("conv1", "conv2")):
        assert np.abs(weights_[f"{layer}.bias"]).max() > 0.01  # trained biases, so that leaving them out shows
        assert np.array_equal(constants[node.input[1]], weights_[f"{layer}.weight"].astype(np.float32))
        assert np.array_equal(constants[node.input[2]], weights_[f"{layer}.bias"].astype(np.float32))


def test_the_released_converter_drops_the_fused_bias_and_the_check_refuses_the_file(trained, tmp_path):
    folder, _ = trained
    output = tmp_path / "lenet.onnx"
    output.write_bytes(b"an older file")
    result = run_unfixed("bias", "--output", output, cwd=folder)  # the speed settings on: conv2d fused with its bias
    assert_fails_cleanly(result, "error: the exported model is wrong: onnxruntime's logits differ from OneFlow's by up to ")
    difference = float(re.search(r"by up to (\S+) \(more than 1e-04\); .* was not written", result.stderr)[1])
    assert difference > 0.1  # observed 0.42 on the fixture's model, 1.76 on mnist-5k's
    assert output.read_bytes() == b"an older file" and sorted(tmp_path.iterdir()) == [output]
    # Without the speed settings OneFlow adds the bias in an op of its own (bias_add), which the converter translates.
    result = run_unfixed("bias", "--output", output, cwd=folder, env={"LENET_SPEEDUPS": "0"})
    assert result.returncode == 0, result.stderr
    assert float(re.search(r"largest difference (\S+)", result.stdout)[1]) < 1e-4


def test_a_batch_size_fixed_in_the_flatten_is_refused(trained, tmp_path):
    folder, _ = trained
    result = run_unfixed("batch", "--output", tmp_path / "lenet.onnx", cwd=folder)
    assert_fails_cleanly(result, "error: the exported model ")
    assert not list(tmp_path.iterdir())


# (opset, IR version): 7 takes IR 3, in which every initializer must also be a graph input, which the converter
# does not write; 22, onnx 1.17's newest opset, takes IR 10.
@pytest.mark.parametrize("opset, ir_version", [(7, 4), (22, 10)])
def test_other_opsets(trained, saved, tmp_path, opset, ir_version):
    folder, _ = trained
    weights_, images = saved
    result = run_script("lenet_export.py", "--output", tmp_path / "lenet.onnx", "--opset", opset, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2] == f"opset {opset}"
    model = onnx.load(str(tmp_path / "lenet.onnx"))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    assert model.ir_version == ir_version
    logits = run_in_batches(tmp_path / "lenet.onnx", images, 7)
    assert np.abs(logits - numpy_lenet(images.astype(np.float64), weights_)).max() < 1e-4


def test_a_model_in_the_tutorials_layout_is_exported(trained, saved, tmp_path):
    folder, _ = trained
    weights_, images = saved
    model = lenet.load_model(folder / "lenet_models_1", CPU)
    write_legacy(tmp_path / "legacy", model, meta=True)
    shutil.copy(folder / "mnist.npz", tmp_path)
    result = run_script("lenet_export.py", "--model-dir", "legacy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logits = run_in_batches(tmp_path / "lenet.onnx", images, 100)
    assert np.abs(logits - numpy_lenet(images.astype(np.float64), weights_)).max() < 1e-4


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_broken_model_in_the_tutorials_layout(trained, tmp_path):
    folder, _ = trained
    write_legacy(tmp_path / "legacy", lenet.load_model(folder / "lenet_models_1", CPU), meta=False)
    (tmp_path / "legacy" / "conv2-bias" / "out").write_bytes(b"\0" * 100)  # 25 floats, not 64
    shutil.copy(folder / "mnist.npz", tmp_path)
    before = listing(tmp_path)
    result = run_script("lenet_export.py", "--model-dir", "legacy", cwd=tmp_path)
    assert_fails_cleanly(result, "error: cannot load the model at legacy: legacy/conv2-bias/out holds 25 floats, conv2-bias needs 64")
    assert listing(tmp_path) == before


def test_without_a_model(tmp_path):
    result = run_script("lenet_export.py", "--model-dir", "nowhere", cwd=tmp_path)
    assert_fails_cleanly(result, "error: no model at nowhere (run lenet_train.py first)")
    assert not list(tmp_path.iterdir())


def test_an_output_in_a_missing_folder_or_a_folder(trained, tmp_path):
    folder, _ = trained
    result = run_script("lenet_export.py", "--output", tmp_path / "missing" / "lenet.onnx", cwd=folder)
    assert_fails_cleanly(result, f"error: cannot write {tmp_path}/missing/lenet.onnx: there is no folder {tmp_path}/missing (create it first)")
    result = run_script("lenet_export.py", "--output", tmp_path, cwd=folder)
    assert_fails_cleanly(result, f"error: cannot write {tmp_path}: it is a folder (give a file name, such as {tmp_path}/lenet.onnx)")
    # Said before the model is read (or the data downloaded): the output's folder is checked first.
    result = run_script("lenet_export.py", "--model-dir", "nowhere", "--output", "missing/lenet.onnx", cwd=tmp_path)
    assert_fails_cleanly(result, "error: cannot write missing/lenet.onnx: there is no folder missing (create it first)")
    assert not list(tmp_path.iterdir())


def test_an_output_in_a_read_only_folder(trained, tmp_path):
    folder, _ = trained
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "lenet.onnx").write_bytes(b"an older file")
    command = [sys.executable, ROOT / "lenet_export.py", "--output", tmp_path / "out" / "lenet.onnx"]
    result = run(in_mount_namespace(read_only_mounts(tmp_path / "out"), command), cwd=folder)
    assert_fails_cleanly(result, f"error: cannot write {tmp_path}/out/lenet.onnx (Read-only file system)")
    assert listing(tmp_path) == ["out", "out/lenet.onnx"] and (tmp_path / "out" / "lenet.onnx").read_bytes() == b"an older file"


@pytest.mark.parametrize("flags, message", [
    (["--opset", "6"], "argument --opset: invalid opset value: '6'"),
    (["--check-images", "50"], "argument --check-images: at least 100 (a batch of 100 is checked), not 50"),
])
def test_bad_flags(tmp_path, flags, message):
    result = run_script("lenet_export.py", *flags, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == f"lenet_export.py: error: {message}"


def test_check_images_checks_that_many(trained, tmp_path):
    folder, _ = trained
    result = run_script("lenet_export.py", "--output", tmp_path / "lenet.onnx", "--check-images", 100, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "100 test digits in batches of 1, 7, 100" in result.stdout.splitlines()[-1]


def test_the_converter_imports_with_np_bool_as_numpy_1_23_had_it():
    """oneflow-onnx reads np.bool at its import (a dtype map): Python's bool up to NumPy 1.23, gone in 1.24 to 1.26,
    np.bool_ again from 2.0. The export gives it Python's bool only where this NumPy lacks it."""
    onnx_model.import_converter()
    from oneflow_onnx import util  # noqa: PLC0415

    assert np.bool is (bool if int(np.__version__.split(".")[0]) < 2 else np.bool_)
    assert np.dtype(util.Onnx2NumpyDtype(onnx.TensorProto.BOOL)) == np.dtype(np.bool_)


def test_the_lines_of_docs_export_md_read_a_digit_without_oneflow(exported, trained, tmp_path):
    path, _ = exported
    folder, _ = trained
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "export.md").read_text(), re.DOTALL)[1]
    raw = fixture_arrays()
    i = int(np.flatnonzero(raw["y_test"] == 9)[0])
    (tmp_path / "data").mkdir()
    Image.fromarray(raw["x_test"][i]).save(tmp_path / "data" / "9.png")
    shutil.copy(path, tmp_path / "lenet.onnx")
    check = '\nimport sys\nassert "oneflow" not in sys.modules\n'  # onnxruntime alone
    result = run([sys.executable, "-c", code + check], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    model = lenet.load_model(folder / "lenet_models_1", CPU)
    expected = lenet.predict(lenet.EvalGraph(model), raw["x_test"][i:i + 1, None].astype(np.float32) / 255, 1, CPU)
    assert result.stdout == f"prediction: {int(expected.argmax())}\n"
