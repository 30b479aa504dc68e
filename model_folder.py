"""What a model folder holds, checked before OneFlow reads it: flow.save's variables against their `meta` files,
and the checkpoint layout of the tutorial's OneFlow (snapshot_done, conv1-weight/out, ...)."""
import numpy as np
from google.protobuf import text_format

import oneflow_setup  # noqa: F401  (before oneflow)
import oneflow as flow
from oneflow.core.framework import variable_meta_info_pb2


class Broken(ValueError):
    """A model folder whose files do not hold what they say (truncated, mixed up, missing)."""


# The tutorial's OneFlow wrote snapshot_done and a folder per variable, NAME/out (raw float32) and NAME/meta.
TUTORIAL_SHAPES = {
    "conv1-weight": (32, 1, 5, 5), "conv1-bias": (32,),
    "conv2-weight": (64, 32, 5, 5), "conv2-bias": (64,),
    "dense1-weight": (512, 3136), "dense1-bias": (512,),
    "dense2-weight": (10, 512), "dense2-bias": (10,),
}


def _read_meta(meta):
    """Return (shape, oneflow dtype) from a variable's `meta` file, written by flow.save and the tutorial's OneFlow."""
    info = text_format.Parse(meta.read_text(), variable_meta_info_pb2.VariableMetaInfo())
    return tuple(info.shape.dim), flow.framework.dtype.convert_proto_dtype_to_oneflow_dtype(info.data_type)


def check_variables(path):
    """Raise Broken naming the file where a variable's `out` does not hold what its `meta` says (truncated, mixed up)."""
    for meta in sorted(path.glob("**/meta")):
        shape, dtype = _read_meta(meta)
        itemsize = np.dtype(flow.framework.dtype.convert_oneflow_dtype_to_numpy_dtype(dtype)).itemsize
        expected = int(np.prod(shape)) * itemsize
        out = meta.with_name("out")
        size = out.stat().st_size if out.is_file() else 0
        if size != expected:
            raise Broken(f"{out} holds {size} bytes, but {meta} says {dtype} {shape} ({expected} bytes)")


def read_tutorials(path):
    """Return {name: float32 array} (conv1.weight, ...) from the tutorial's checkpoint folder, checked against TUTORIAL_SHAPES."""
    arrays = {}
    for name, shape in TUTORIAL_SHAPES.items():
        out, meta = path / name / "out", path / name / "meta"
        if not out.is_file():
            raise Broken(f"{out} is missing")
        meta_shape, dtype = _read_meta(meta) if meta.exists() else (shape, flow.float32)
        if (meta_shape, dtype) != (shape, flow.float32):
            raise Broken(f"{meta} says {dtype} {meta_shape}, LeNet's {name} is oneflow.float32 {shape}")
        value = np.fromfile(out, dtype="<f4")
        if value.size != np.prod(shape):
            raise Broken(f"{out} holds {value.size} floats, {name} needs {int(np.prod(shape))}")
        arrays[name.replace("-", ".")] = value.reshape(shape)
    return arrays
