"""LeNet for MNIST, as in OneFlow's tutorial "Recognition of MNIST Handwritten Digits", on OneFlow 0.9.

The network first, then what the three scripts share: device choice, MNIST data, checkpoints and
image preprocessing. This module prints nothing and reads no command line; bad input raises InputError.
"""
import ctypes
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image


def _load_cuda_libraries():
    """Load cuDNN 8 (and through its RPATH cuBLAS 11) from the nvidia-* wheels, as `import oneflow` needs them."""
    spec = importlib.util.find_spec("nvidia.cudnn")
    if spec is None:
        return  # a system cuDNN may still be on the library path
    lib_dir = Path(list(spec.submodule_search_locations)[0]) / "lib"
    # Dependencies first: ops before cnn, infer before train.
    for name in ("ops_infer", "ops_train", "cnn_infer", "cnn_train"):
        ctypes.CDLL(str(lib_dir / f"libcudnn_{name}.so.8"), mode=ctypes.RTLD_GLOBAL)


def _has_avx2():
    """Whether this CPU has AVX2 and FMA (Linux only; False where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


_load_cuda_libraries()
# OneFlow's C++ log lines (glog) on a machine without a CUDA driver only say that there is none; errors still
# reach Python as exceptions. GLOG_minloglevel=0 shows them all.
os.environ.setdefault("GLOG_minloglevel", "3")
# CPU speed settings, each measured in BENCHMARKS.md; set your own value of any of them to override it.
# The OpenBLAS inside OneFlow 0.9 does not recognise recent CPUs (a Sapphire Rapids Xeon among them) and runs its
# SSE3 kernels there; Haswell's are its AVX2 ones.
if _has_avx2():
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
# OneFlow sends element-wise binary ops (bias add, ...) to oneDNN, which runs its slow reference kernel for them.
os.environ.setdefault("ONEFLOW_ENABLE_ONEDNN_OPTS", "0")
# OneFlow gives its CPU kernels cores - 2 threads unless told, 0 on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
# Add the convolutions' bias inside the convolution kernel (CPU and cuDNN alike) rather than in a separate pass.
os.environ.setdefault("ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS", "1")
import oneflow as flow  # noqa: E402  (needs the libraries above)
import oneflow.core.framework.variable_meta_info_pb2 as variable_meta_info_pb  # noqa: E402
from google.protobuf import text_format  # noqa: E402


class InputError(Exception):
    """A bad input from the user (file, folder, flag): the scripts print it on one line and exit 1."""


# ---------------------------------------------------------------------------------------------
# The network: the tutorial's lenet(), layer for layer.

class LeNet(flow.nn.Module):
    """conv5x5(32)-relu-pool2, conv5x5(64)-relu-pool2, dense 512-relu, dropout 0.5 (training only), dense 10."""

    def __init__(self):
        super().__init__()
        # "SAME" padding for a 5x5 kernel at stride 1 is 2 pixels on each side.
        self.conv1 = flow.nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = flow.nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.dense1 = flow.nn.Linear(64 * 7 * 7, 512)
        self.dense2 = flow.nn.Linear(512, 10)

    def forward(self, x, train=False):
        """Logits of x; dropout only with train=True, as the tutorial's lenet(data, train)."""
        # x: (N, 1, 28, 28) pixels in [0, 1]
        x = flow.nn.functional.max_pool2d(flow.relu(self.conv1(x)), kernel_size=2, stride=2)  # (N, 32, 14, 14)
        x = flow.nn.functional.max_pool2d(flow.relu(self.conv2(x)), kernel_size=2, stride=2)  # (N, 64, 7, 7)
        x = flow.relu(self.dense1(x.flatten(1)))  # (N, 3136) in C, H, W order -> (N, 512)
        x = flow.nn.functional.dropout(x, p=0.5, training=train)  # inverted: kept values are scaled by 2
        return self.dense2(x)  # (N, 10) logits


def truncated_normal(shape, std, rng):
    """Normal(0, std) samples with every value beyond 2 std drawn again, as flow.truncated_normal did.

    OneFlow 0.9's nn.init.trunc_normal_ clamps instead, which piles mass on the bounds.
    """
    values = rng.normal(0.0, std, size=shape)
    while True:
        outside = np.abs(values) > 2 * std
        if not outside.any():
            return values.astype(np.float32)
        values[outside] = rng.normal(0.0, std, size=int(outside.sum()))


# ---------------------------------------------------------------------------------------------
# Device

def choose_device(name=None):
    """Return (device, description): `name` if given ("cpu", "cuda", "cuda:N"), else cuda:0 when OneFlow sees a GPU."""
    gpus = flow.cuda.device_count() if flow.cuda.is_available() else 0
    if name is None:
        return (flow.device("cuda:0"), "cuda:0") if gpus else (flow.device("cpu"), "cpu (no GPU found)")
    kind, _, index = name.partition(":")
    if kind == "cpu" and not index:
        return flow.device("cpu"), "cpu"
    if kind != "cuda" or (index and not index.isdigit()):
        raise InputError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
    index = int(index or 0)
    if index >= gpus:
        raise InputError(f"device {name!r} is not available: OneFlow sees {gpus} GPU(s) (use --device cpu)")
    return flow.device(f"cuda:{index}"), f"cuda:{index}"


# ---------------------------------------------------------------------------------------------
# MNIST data: what the tutorial's flow.data.load_mnist did, checked.

MNIST_URL = "https://oneflow-public.oss-cn-beijing.aliyuncs.com/datasets/mnist.npz"
MNIST_SHA256 = "63d4344077849053dc3036b247fa012b2b381de53fd055a66b539dffd76cf08e"


def download(url, path, sha256, progress=False):
    """Download url to path through a temporary file beside it; the file appears only whole and with the right hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            from tqdm import tqdm  # noqa: PLC0415  (only needed here)

            total, size = int(response.headers.get("Content-Length") or 0) or None, 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            if total is not None and size != total:
                raise OSError(f"got {size} of {total} bytes")
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != sha256:
            raise OSError(f"SHA-256 {digest.hexdigest()} is not the expected {sha256}")
        os.replace(tmp, path)
    except (OSError, ValueError) as e:  # URLError, HTTPError and timeouts are OSErrors
        os.remove(tmp)
        raise InputError(f"could not download {url} ({e}); download it by hand and put it at {path}") from None


def load_mnist(data_dir=".", url=MNIST_URL, sha256=MNIST_SHA256, progress=False):
    """Return ((x_train, y_train), (x_test, y_test), path, found) from data_dir/mnist.npz, downloading it if missing.

    Images come as float32 (N, 1, 28, 28) in [0, 1] (pixel / 255, as the tutorial trained), labels as int32 (N,).
    `found` says whether the file was already there.
    """
    path = os.path.join(data_dir, "mnist.npz")  # a str, so that it prints as ./mnist.npz
    found = os.path.isfile(path)
    if not found:
        download(url, path, sha256, progress)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # np.load raises many kinds for a corrupt zip
        raise InputError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
    if missing:
        raise InputError(f"{path} lacks the arrays {', '.join(sorted(missing))}")
    splits = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) == 0:
            raise InputError(f"{path}: x_{split} is {x.dtype} {x.shape}, expected uint8 (N, 28, 28)")
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
            raise InputError(f"{path}: y_{split} is {y.dtype} {y.shape}, expected integers ({len(x)},)")
        if y.min() < 0 or y.max() > 9:
            raise InputError(f"{path}: y_{split} has labels from {y.min()} to {y.max()}, expected 0 to 9")
        splits.append((x[:, None].astype(np.float32) / 255.0, y.astype(np.int32)))
    return splits[0], splits[1], path, found


def batches(batch_size, *arrays, rng=None):
    """Yield (count, *batch) with batch_size items of each array, in an order shuffled by rng if given.

    An nn.Graph runs one input shape only, so a short last batch is filled up by repeating its items;
    `count` says how many are real.
    """
    order = rng.permutation(len(arrays[0])) if rng is not None else np.arange(len(arrays[0]))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        count = len(index)
        index = np.resize(index, batch_size)  # repeats the real items cyclically
        yield (count, *(array[index] for array in arrays))


def positive_int(text):
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text):
    """argparse type: a finite number above 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


# ---------------------------------------------------------------------------------------------
# Checkpoints: the tutorial's flow.train.CheckPoint, kept on OneFlow's own flow.save format.

# The tutorial's variable names (conv1-weight, ...) with their shapes, for its published checkpoint folders.
LEGACY_SHAPES = {
    "conv1-weight": (32, 1, 5, 5), "conv1-bias": (32,),
    "conv2-weight": (64, 32, 5, 5), "conv2-bias": (64,),
    "dense1-weight": (512, 3136), "dense1-bias": (512,),
    "dense2-weight": (10, 512), "dense2-bias": (10,),
}


class CheckPoint:
    """init(), save(path) and load(path) for a model's weights, as the tutorial's scripts called them."""

    def __init__(self, model):
        self.model = model

    def init(self, seed=None):
        """Set fresh weights: truncated normal (std 0.1) for every weight, 0 for every bias."""
        rng = np.random.default_rng(seed)
        with flow.no_grad():
            for name, parameter in self.model.named_parameters():
                value = np.zeros(parameter.shape, np.float32)
                if name.endswith("weight"):
                    value = truncated_normal(parameter.shape, 0.1, rng)
                parameter.copy_(flow.tensor(value))

    def save(self, path):
        """Write the weights with flow.save to path, replacing what was there atomically.

        The new folder is written whole beside the old one, flushed to disk, then swapped in: a crash at any
        moment leaves either the old model or the new one at path.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.saving")
        try:
            if path.exists() and not path.is_dir():
                raise InputError(f"cannot save the model to {path}: it is a file, not a folder")
            shutil.rmtree(tmp, ignore_errors=True)  # left over from a save that died
            state = {name: value.to("cpu") for name, value in self.model.state_dict().items()}
            flow.save(state, str(tmp))
            _fsync_tree(tmp)
            if path.exists():
                _exchange(tmp, path)
                shutil.rmtree(tmp)  # now the old model
            else:
                os.rename(tmp, path)
            _fsync_dir(path.parent)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"cannot save the model to {path} ({e.strerror or e})") from None

    def load(self, path):
        """Load weights saved by save(), or a checkpoint folder of the tutorial's OneFlow (snapshot_done, conv1-weight/out, ...)."""
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"no model at {path} (run lenet_train.py first)")
        try:
            if (path / "pickled_data").exists():
                state = flow.load(str(path))
            elif (path / "snapshot_done").exists():
                state = {name.replace("-", "."): flow.tensor(value) for name, value in _read_legacy(path).items()}
            else:
                raise InputError(f"no model at {path}: the folder has neither pickled_data nor snapshot_done")
            self.model.load_state_dict(state)
        except InputError:
            raise
        except Exception as e:  # flow.load and load_state_dict raise many kinds for a broken folder
            message = " ".join(str(e).split()) or type(e).__name__  # on one line
            raise InputError(f"cannot load the model at {path} ({message})") from None


def _read_legacy(path):
    """Return {name: float32 array} from the tutorial's checkpoint folder, checking each `out` against the known shapes."""
    arrays = {}
    for name, shape in LEGACY_SHAPES.items():
        out = path / name / "out"
        if not out.is_file():
            raise InputError(f"cannot load the model at {path}: {out} is missing")
        meta = path / name / "meta"
        if meta.exists():
            info = text_format.Parse(meta.read_text(), variable_meta_info_pb.VariableMetaInfo())
            meta_shape = tuple(info.shape.dim)
            dtype = flow.framework.dtype.convert_proto_dtype_to_oneflow_dtype(info.data_type)
            if meta_shape != shape or dtype != flow.float32:
                raise InputError(f"cannot load the model at {path}: {meta} says {dtype} {meta_shape}, "
                                 f"LeNet needs oneflow.float32 {shape}")
        value = np.fromfile(out, dtype="<f4")
        if value.size != np.prod(shape):
            raise InputError(f"cannot load the model at {path}: {out} holds {value.size} floats, "
                             f"{name} needs {int(np.prod(shape))}")
        arrays[name] = value.reshape(shape)
    return arrays


def _fsync_tree(root):
    """Flush every file and folder below root to disk, so the rename that publishes it cannot outrun its data."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(folder)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a, b):
    """Swap two folders in one step with renameat2(RENAME_EXCHANGE); two renames where that is not supported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2 is not None and renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return
    # Not supported here (old kernel or file system): a crash between the first two renames leaves
    # the old model at b.old.
    aside = Path(b).with_name(Path(b).name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


# ---------------------------------------------------------------------------------------------
# Images: a PNG read as the network was trained.

def load_image(path):
    """Return a float32 (1, 28, 28) image in [0, 1] from an image file, preprocessed as in training (pixel / 255).

    The tutorial's lenet_test.py used (pixel - 128) / 255 here, unlike its training data; this uses the same scaling.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("L")
            if image.size != (28, 28):
                image = image.resize((28, 28), Image.Resampling.LANCZOS)  # what Image.ANTIALIAS was
            return np.asarray(image, dtype=np.float32)[None] / 255.0
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
