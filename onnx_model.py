"""The trained LeNet as an ONNX file: written from an EvalGraph by OneFlow's converter (oneflow-onnx 0.6.2), and read
with onnxruntime. lenet_export.py writes the file, `lenet_test.py --onnx` reads digits with it.

A reader of the tutorial can skip this file. oneflow-onnx 0.6.2, the converter's last release, needs three fixes
here, each explained where it is made (docs/export.md sums them up):
- it uses `np.bool`, which NumPy 1.24 to 1.26 no longer have (import_converter);
- it drops the bias of a convolution that carries it as an input, as OneFlow builds it on the CPU with
  ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS=1, one of oneflow_setup.py's speed settings (import_converter);
- its file takes only the batch size the graph was traced with, whatever dynamic_batch_size says (any_batch_size).
"""
import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

import lenet
from lenet import flow

DEFAULT_OPSET = 10  # the converter's own choice (oneflow_onnx.constants.PREFERRED_OPSET); 7 and up all export LeNet
INPUT, OUTPUT, BATCH = "images", "logits", "N"  # the file's names: images (N, 1, 28, 28) -> logits (N, 10)
DOC = ("LeNet from OneFlow's tutorial 'Recognition of MNIST Handwritten Digits'. Input `images`: float32 (N, 1, 28, 28), "
       "pixel / 255 in [0, 1], a white digit on black as in MNIST. Output `logits`: float32 (N, 10), one per digit 0-9.")


class CheckFailed(Exception):
    """The exported file does not compute what OneFlow computes."""


# ---------------------------------------------------------------------------------------------
# Writing the file (OneFlow and oneflow-onnx)

def import_converter():
    """Import oneflow-onnx's export function, with the two fixes that have to be made around its import; return it."""
    if "bool" not in vars(np):  # gone in NumPy 1.24 to 1.26; 1.20 to 1.23 gave it with a DeprecationWarning; 2.0 has it
        # Up to NumPy 1.23 np.bool was Python's bool itself, which is what oneflow-onnx means by it (a dtype map).
        # Only this process, which exports, gets it; training, evaluation and the app keep NumPy as it is.
        np.bool = bool
    from oneflow_onnx.oneflow2onnx import handler  # noqa: PLC0415  (only for an export, after np.bool)
    from oneflow_onnx.oneflow2onnx.flow2onnx import Export  # noqa: PLC0415

    # The converter takes the inputs of an op from flow_ibns when its handler names them, and conv2d's names
    # only "in" and "weight". Where OneFlow fuses the bias into the convolution (conv2d with a third input, "bias",
    # built by nn_functor.cpp's ConvBaseFunctor when ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS is set at the thread's
    # first convolution, as on the CPU here), the bias was silently left out: an ONNX Conv without B, logits off
    # by up to 2. Without the names the converter takes every input in the op's own order (in, weight[, bias]),
    # which ONNX's Conv(X, W[, B]) takes as it is. Unfused (a GPU, LENET_SPEEDUPS=0), conv2d has only "in" and
    # "weight", and the bias_add after it becomes an ONNX Add, as before.
    handler.flow_op._OP_TYPE_2_IBN.pop("conv2d", None)
    return Export


def export(graph, path, opset=DEFAULT_OPSET):
    """Write graph, an EvalGraph already run (an nn.Graph is traced at its first call), as an ONNX file to path.

    The file takes images (N, 1, 28, 28) for any N and gives logits (N, 10); its IR version is the lowest the
    file allows, for older runtimes. CheckFailed if onnx's checker refuses it.
    """
    import onnx  # noqa: PLC0415  (only for an export)

    converter = import_converter()
    with tempfile.TemporaryDirectory(prefix="lenet-onnx-") as tmp:
        weights, converted = Path(tmp) / "weights", Path(tmp) / "model.onnx"
        flow.save(graph.state_dict(), str(weights))  # the converter reads the variables from a saved model
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
            converter(graph, str(weights), str(converted), opset=opset)
        model = onnx.load(str(converted))
    rename(model, model.graph.input[0].name, INPUT)
    rename(model, model.graph.output[0].name, OUTPUT)
    any_batch_size(model)
    # The converter stamps onnx's newest IR version, which older runtimes refuse; the opset's own is enough, but not
    # below 4, the first in which constants (initializers) need not be listed among the graph's inputs.
    model.ir_version = max(4, onnx.helper.find_min_ir_version_for(list(model.opset_import)))
    model.doc_string = DOC
    try:
        onnx.checker.check_model(model, full_check=True)  # with every shape inferred
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise CheckFailed(f"the exported model is not valid ONNX ({lenet.one_line(e)})") from None
    onnx.save(model, str(path))


def rename(model, old, new):
    """Call the tensor `old` of the ONNX model `new`, wherever it appears."""
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def any_batch_size(model):
    """Make the batch dimension of the ONNX model symbolic (N): its input, its output and its reshapes.

    An nn.Graph is traced at one input shape, and OneFlow writes each reshape with that whole shape: LeNet's
    flatten, x.flatten(1), is a reshape to (100, 3136) in a graph traced at 100 (array_functor.cpp's
    FlattenFunctor). The converter copies it into a constant of the ONNX Reshape, and its dynamic_batch_size
    makes the input alone symbolic, so a batch of 1 failed. A reshape's first dimension 0 means "as in the
    input" (ONNX Reshape, allowzero 0).
    """
    from onnx import numpy_helper  # noqa: PLC0415

    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value  # the traced batch size
    assert batch > 0, "the converter wrote the traced batch size"
    for value in [model.graph.input[0], model.graph.output[0]]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH  # replaces dim_value (a oneof)
    del model.graph.value_info[:]  # the shapes the converter inferred at the traced batch size
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        shape = constants[node.input[1]]
        value = numpy_helper.to_array(shape).copy()
        if value[0] == batch:
            value[0] = 0
            shape.CopyFrom(numpy_helper.from_array(value, shape.name))


# ---------------------------------------------------------------------------------------------
# Reading it (onnxruntime alone)

def load(path):
    """Return an onnxruntime session (on the CPU) of the ONNX file at path, checked to take images (N, 1, 28, 28) of
    any N and to give (N, 10); InputError otherwise."""
    import onnxruntime  # noqa: PLC0415  (not needed where OneFlow reads the digits)

    if os.path.isdir(path):
        raise lenet.InputError(f"{path} is a folder, not an ONNX file")
    if not os.path.exists(path):
        raise lenet.InputError(f"no ONNX file at {path} (run lenet_export.py first)")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # its errors come back as exceptions, said in one line; its warnings are not ours
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises kinds of its own (InvalidProtobuf, Fail, ...) for a bad file
        raise lenet.InputError(f"{path} is not an ONNX model that onnxruntime can read ({lenet.one_line(e)})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    wanted = "one input, float (N, 1, 28, 28) with any N, and a first output float (N, 10) (lenet_export.py writes it)"
    if len(inputs) != 1 or not outputs:
        raise lenet.InputError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; LeNet's file has {wanted}")
    for role, value, shape in (("input", inputs[0], [1, 28, 28]), ("output", outputs[0], [10])):
        if value.type != "tensor(float)" or len(value.shape) != 1 + len(shape) or value.shape[1:] != shape \
                or isinstance(value.shape[0], int):
            dims = ", ".join(str(dim) for dim in value.shape)
            raise lenet.InputError(f"{path} has the {role} {value.name}: {value.type} ({dims}); LeNet's file has {wanted}")
    return session


def runtime_version():
    """onnxruntime's version."""
    import onnxruntime  # noqa: PLC0415

    return onnxruntime.__version__


def predict(session, images, batch_size):
    """Return the logits (N, 10) of images (N, 1, 28, 28) in [0, 1], batch_size images per run of the session."""
    name, logits = session.get_inputs()[0].name, []
    for start in range(0, len(images), batch_size):  # a short last batch as it is: the file takes any batch size
        batch = images[start:start + batch_size]
        try:
            logits.append(session.run(None, {name: batch})[0])
        except Exception as e:  # onnxruntime's own kinds (RuntimeException, Fail, ...)
            raise lenet.InputError(f"onnxruntime cannot run the model on a batch of {len(batch)} ({lenet.one_line(e)})") from None
    return np.concatenate(logits) if logits else np.zeros((0, 10), np.float32)
