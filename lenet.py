"""LeNet for MNIST, as in OneFlow's tutorial "Recognition of MNIST Handwritten Digits", on OneFlow 0.9.

The network first, then what the three scripts share: device choice, MNIST data, checkpoints and
image preprocessing. This module prints nothing and reads no command line; bad input raises InputError.
"""
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import urllib.request
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def _load_cuda_libraries():
    """Load cuDNN 8 (and through its RPATH cuBLAS 11) from the nvidia-* wheels, as `import oneflow` needs them."""
    spec = importlib.util.find_spec("nvidia.cudnn")
    if spec is None:
        return  # a system cuDNN may still be on the library path
    lib_dir = Path(list(spec.submodule_search_locations)[0]) / "lib"
    # Dependencies first: ops before cnn, infer before train.
    for name in ("ops_infer", "ops_train", "cnn_infer", "cnn_train"):
        ctypes.CDLL(str(lib_dir / f"libcudnn_{name}.so.8"), mode=ctypes.RTLD_GLOBAL)


def _load_mkl():
    """Load Intel MKL (the mkl wheel) for OneFlow's matrix products; return its path, or None where it is not installed.

    OneFlow 0.9 calls cblas_sgemm (convolutions and dense layers) through the dynamic linker, so a BLAS loaded
    globally before it takes those calls from the OpenBLAS inside OneFlow, which has no AVX-512 kernels.
    """
    if os.environ.get("LENET_BLAS", "mkl") != "mkl":
        return None
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    library = next((f.locate().resolve() for f in files if f.name.startswith("libmkl_rt.so")), None)
    if library is None:
        return None
    # OneFlow already runs independent ops on two threads; MKL's own threads only crowd them (BENCHMARKS.md).
    os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    return library


def _has_avx2():
    """Whether this CPU has AVX2 and FMA (Linux only; False where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


_load_cuda_libraries()
BLAS = _load_mkl()
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
# Linux lists a process's threads here; OneFlow's scheduler is one of those its import starts.
_threads_before_oneflow = set(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
import oneflow as flow  # noqa: E402  (needs the libraries above)
import oneflow.core.framework.variable_meta_info_pb2 as variable_meta_info_pb  # noqa: E402
from google.protobuf import text_format  # noqa: E402


def _thread_states(threads):
    """{thread id: its state letter in /proc (R running or runnable, S sleeping, ...)} of those threads still alive."""
    states = {}
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                states[tid] = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            pass
    return states


def _lower_scheduler_priority(nice):
    """Give OneFlow's VM scheduler thread this nice value; return its thread id, or None where it was not found.

    The scheduler spins (sched_yield) for as long as any op is unfinished, which is a whole nn.Graph step, and so
    takes a core from the kernels (BENCHMARKS.md); at a lower priority it runs when a core is free. It is found as
    the one thread that `import oneflow` started that keeps running while ops it was given are unfinished.
    """
    if _threads_before_oneflow is None or nice == 0:
        return None
    started = set(os.listdir("/proc/self/task")) - _threads_before_oneflow
    x = flow.ones(256, 256) / 256
    pending = x
    for _ in range(40):  # a few ms of matrix products, queued without waiting for them
        pending = pending @ x
    running = set(started)
    for _ in range(5):
        running &= {tid for tid, state in _thread_states(started).items() if state == "R"}
    pending.numpy()
    if len(running) != 1:
        return None
    tid = int(running.pop())
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # a sandbox may forbid it; training is then only slower
        return None
    return tid


# 10, not 19: as fast on an idle machine, and not slower than 0 when other jobs hold every core (BENCHMARKS.md).
SCHEDULER_THREAD = _lower_scheduler_priority(int(os.environ.get("LENET_SCHEDULER_NICE", "10")))


class InputError(Exception):
    """A bad input from the user (file, folder, flag): the scripts print it on one line and exit 1."""


def _one_line(error):
    """An exception's message on one line, or its type's name where it has none."""
    return " ".join(str(error).split()) or type(error).__name__


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

    def forward(self, x, dropout_mask=None):
        """Logits of x; in training, dropout_mask (N, 512) from dropout_mask() is applied after dense1."""
        # x: (N, 1, 28, 28) pixels in [0, 1]
        x = flow.nn.functional.max_pool2d(flow.relu(self.conv1(x)), kernel_size=2, stride=2)  # (N, 32, 14, 14)
        x = flow.nn.functional.max_pool2d(flow.relu(self.conv2(x)), kernel_size=2, stride=2)  # (N, 64, 7, 7)
        x = flow.relu(self.dense1(x.flatten(1)))  # (N, 3136) in C, H, W order -> (N, 512)
        if dropout_mask is not None:
            x = x * dropout_mask
        return self.dense2(x)  # (N, 10) logits


def dropout_mask(rng, batch_size, rate=0.5):
    """The tutorial's dropout (rate 0.5) as a float32 (batch_size, 512) mask: 0 with probability rate, else 1 / (1 - rate).

    Made with NumPy rather than OneFlow's dropout op: inside an nn.Graph, OneFlow 0.9 draws that op's masks from
    a fixed seed of its own, which ignores --seed and starts over in every new graph, so a resumed run could
    not repeat them.
    """
    return (rng.random((batch_size, 512)) >= rate).astype(np.float32) / np.float32(1 - rate)


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
    """Return (device, description): `name` if given ("cpu", "cuda", "cuda:N"), else cuda:0 when OneFlow sees a GPU.

    Under OneFlow's launcher (python -m oneflow.distributed.launch) the device is a flow.placement over every
    process, each on its own GPU or CPU, for data-parallel training.
    """
    gpus = flow.cuda.device_count() if flow.cuda.is_available() else 0
    automatic = name is None
    if automatic:
        name = "cuda" if gpus else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise InputError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
    if kind == "cuda" and int(index or 0) >= gpus:
        raise InputError(f"device {name!r} is not available: OneFlow sees {gpus} GPU(s) (use --device cpu)")
    processes = flow.env.get_world_size()
    if processes > 1:
        return flow.placement(kind, ranks=list(range(processes))), f"{kind} x {processes} processes (data-parallel)"
    if kind == "cuda":
        return flow.device(f"cuda:{index or 0}"), f"cuda:{index or 0}"
    return flow.device("cpu"), "cpu (no GPU found)" if automatic else "cpu"


def place(model, device):
    """Return model on device: moved to a flow.device, or copied to every process of a flow.placement."""
    if isinstance(device, flow.placement):
        return model.to_global(placement=device, sbp=flow.sbp.broadcast)
    return model.to(device)


def to_tensor(array, device):
    """A tensor of array on device; on a flow.placement, array is the whole batch and each process keeps its slice."""
    if not isinstance(device, flow.placement):
        return flow.tensor(array, device=device)
    processes, rank = flow.env.get_world_size(), flow.env.get_rank()
    if len(array) % processes:
        raise InputError(f"a batch of {len(array)} does not split over {processes} processes: "
                         f"use a --batch-size that is a multiple of {processes}")
    local = "cpu" if device.type == "cpu" else f"cuda:{flow.env.get_local_rank()}"
    shard = np.array_split(array, processes)[rank]
    # check_meta=False: every process passes the same placement, sbp and shard shape (checked above), so OneFlow's
    # check of that, a round trip between the processes for each tensor, is skipped.
    return flow.tensor(shard, device=local).to_global(placement=device, sbp=flow.sbp.split(0), check_meta=False)


def to_numpy(tensor):
    """The whole value of tensor as a NumPy array, gathered from every process if it is global."""
    if tensor.is_global:
        tensor = tensor.to_global(sbp=flow.sbp.broadcast).to_local()
    return tensor.numpy()


# ---------------------------------------------------------------------------------------------
# MNIST data: what the tutorial's flow.data.load_mnist did, checked.

MNIST_URL = "https://oneflow-public.oss-cn-beijing.aliyuncs.com/datasets/mnist.npz"
MNIST_SHA256 = "63d4344077849053dc3036b247fa012b2b381de53fd055a66b539dffd76cf08e"


def download(url, path, sha256, progress=False):
    """Download url to path through a temporary file beside it; the file appears only whole and with the right hash."""
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder or ".")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            from tqdm import tqdm  # noqa: PLC0415  (only needed here)

            total, size = int(response.headers.get("Content-Length") or 0) or None, 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
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


def load_mnist(data_dir=".", url=None, sha256=MNIST_SHA256, progress=False):
    """Return ((x_train, y_train), (x_test, y_test), path, found) from data_dir/mnist.npz, downloading it if missing.

    Images come as float32 (N, 1, 28, 28) in [0, 1] (pixel / 255, as the tutorial trained), labels as int32 (N,).
    `found` says whether the file was already there. url None means MNIST_URL, looked up at the call.
    """
    path = os.path.join(data_dir, "mnist.npz")  # a str, so that it prints as ./mnist.npz
    found = os.path.isfile(path)
    if not found:
        download(url or MNIST_URL, path, sha256, progress)
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


TRAINING_STATE = "training_state"  # the subfolder that lets lenet_train.py --resume


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

    def save(self, path, training_state=None):
        """Write the weights with flow.save to path (and training_state, if given, to path/training_state), atomically.

        The new folder is written whole beside the old one, flushed to disk, then swapped in: a crash at any
        moment leaves either the old model or the new one at path. Under the launcher the first process writes
        and every process raises the same InputError if it could not.
        """
        path = Path(path)
        # Gathered in every process (global tensors need all of them), written by the first alone.
        state = {name: flow.tensor(to_numpy(value)) for name, value in self.model.state_dict().items()}
        error = None
        if flow.env.get_rank() == 0:
            try:
                if path.exists() and not path.is_dir():
                    error = f"cannot save the model to {path}: it is a file, not a folder"
                else:
                    _write_atomically(path, state, training_state)
            except OSError as e:
                error = f"cannot save the model to {path} ({e.strerror or e})"
        if flow.env.get_world_size() > 1 and _in_any_process(error is not None):
            # Every process stops: the others would otherwise go on to a step that waits for the first forever.
            error = error or f"cannot save the model to {path}: the first process could not write it"
        if error is not None:
            raise InputError(error)

    def load(self, path):
        """Load weights saved by save(), or the tutorial's checkpoint folder; return the training state saved with them, or None.

        The tutorial's OneFlow wrote snapshot_done and one folder per variable (conv1-weight/out, ...).
        """
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"no model at {path} (run lenet_train.py first)")
        try:
            _check_variables(path)
            if (path / "pickled_data").exists():
                state = flow.load(str(path))
            elif (path / "snapshot_done").exists():
                state = {name.replace("-", "."): flow.tensor(value) for name, value in _read_legacy(path).items()}
            else:
                raise InputError(f"no model at {path}: the folder has neither pickled_data nor snapshot_done")
            self.model.load_state_dict(state)
            if (path / TRAINING_STATE).exists():
                return flow.load(str(path / TRAINING_STATE))
            return None
        except InputError:
            raise
        except Exception as e:  # flow.load and load_state_dict raise many kinds for a broken folder
            raise InputError(f"cannot load the model at {path} ({_one_line(e)})") from None


def _write_atomically(path, state, training_state):
    """CheckPoint.save's writing: flow.save into a sibling folder, fsync, then swap it in; OSError on failure."""
    tmp = path.with_name(f".{path.name}.saving")
    try:
        shutil.rmtree(tmp, ignore_errors=True)  # left over from a save that died
        flow.save(state, str(tmp))
        if training_state is not None:
            flow.save(training_state, str(tmp / TRAINING_STATE))
        _fsync_tree(tmp)
        if path.exists():
            _exchange(tmp, path)
            shutil.rmtree(tmp)  # now the old model
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _in_any_process(flag):
    """Whether flag is true in any process under the launcher; every process must call it (a collective)."""
    processes = flow.env.get_world_size()
    flags = np.zeros(processes, np.float32)
    flags[flow.env.get_rank()] = flag
    return bool(to_numpy(to_tensor(flags, flow.placement("cpu", ranks=list(range(processes))))).any())


def load_model(model_dir, device):
    """Return the LeNet saved in model_dir, placed on device (a flow.device or, under the launcher, a placement)."""
    model = LeNet()
    CheckPoint(model).load(model_dir)
    return place(model, device)


def _read_meta(meta):
    """Return (shape, oneflow dtype) from a variable's `meta` file, written by flow.save and the tutorial's OneFlow."""
    info = text_format.Parse(meta.read_text(), variable_meta_info_pb.VariableMetaInfo())
    return tuple(info.shape.dim), flow.framework.dtype.convert_proto_dtype_to_oneflow_dtype(info.data_type)


def _check_variables(path):
    """Raise InputError naming the file where a variable's `out` does not hold what its `meta` says (truncated, mixed up)."""
    for meta in sorted(path.glob("**/meta")):
        shape, dtype = _read_meta(meta)
        itemsize = np.dtype(flow.framework.dtype.convert_oneflow_dtype_to_numpy_dtype(dtype)).itemsize
        expected = int(np.prod(shape)) * itemsize
        out = meta.with_name("out")
        size = out.stat().st_size if out.is_file() else 0
        if size != expected:
            raise InputError(f"cannot load the model at {path}: {out} holds {size} bytes, but {meta} says "
                             f"{dtype} {shape} ({expected} bytes)")


def _read_legacy(path):
    """Return {name: float32 array} from the tutorial's checkpoint folder, checking each `out` against the known shapes."""
    arrays = {}
    for name, shape in LEGACY_SHAPES.items():
        out = path / name / "out"
        if not out.is_file():
            raise InputError(f"cannot load the model at {path}: {out} is missing")
        meta = path / name / "meta"
        meta_shape, dtype = _read_meta(meta) if meta.exists() else (shape, flow.float32)
        if (meta_shape, dtype) != (shape, flow.float32):
            raise InputError(f"cannot load the model at {path}: {meta} says {dtype} {meta_shape}, "
                             f"LeNet's {name} is oneflow.float32 {shape}")
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
# Images: any picture of one digit, made to look like an MNIST digit.
#
# MNIST's digits are white on black, their longer side scaled to 20 pixels (anti-aliased), placed in a
# 28x28 frame with their centre of mass at pixel (14, 14). Photos, scans and drawings are none of that,
# so load_image() makes them so; a 28x28 image with a dark border is taken as an MNIST digit already.

MAX_SIDE = 1024  # pixels; larger images are box-shrunk to this first (a digit of 2% of the side still has 20 px)
MIN_CONTRAST = 24  # grey levels (of 255) between paper and ink, below which the page counts as blank


def load_image(path):
    """Return a float32 (1, 28, 28) image in [0, 1] of the digit in an image file, white on black as in MNIST."""
    return mnist_like(read_gray(path), name=str(path))[None]


def read_gray(path):
    """Return any image file Pillow reads as float32 (H, W) grey levels in [0, 255], transparency turned to white paper."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both are refused here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # a GIF, TIFF or WebP opens on its first frame
                image = ImageOps.exif_transpose(image)  # a phone photo taken sideways
                return _gray(image)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{path}: too many pixels, refused as a possible decompression bomb ({e})") from None
    except Exception as e:  # a broken file makes Pillow raise many kinds (OSError, SyntaxError, struct.error, ...)
        raise InputError(f"{path}: not a readable image ({_one_line(e)})") from None


def _gray(image):
    """float32 (H, W) grey levels in [0, 255] of an open Pillow image of any mode, shrunk to at most MAX_SIDE."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):  # 16- and 32-bit grey
        if image.mode.startswith("I;16"):
            image = image.convert("I")
        image = image.reduce(max(1, -(-max(image.size) // MAX_SIDE)))
        gray = np.asarray(image, dtype=np.float32)
        if image.mode == "I" and gray.max() > 255:
            gray = gray / 257  # 16-bit levels 0-65535
        elif image.mode == "F" and gray.max() <= 1:
            gray = gray * 255  # levels 0-1
        return np.clip(gray, 0, 255)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
    image = image.convert("L")
    image = image.reduce(max(1, -(-max(image.size) // MAX_SIDE)))
    return np.asarray(image, dtype=np.float32)


def _border(gray):
    """The pixels of the outer frame of gray (5% of the shorter side wide, at least 1 pixel), flat."""
    width = max(1, min(gray.shape) // 20)
    inner = np.ones(gray.shape, bool)
    inner[:width], inner[-width:], inner[:, :width], inner[:, -width:] = False, False, False, False
    return gray[~inner]


def mnist_like(gray, name="image"):
    """Return float32 (28, 28) in [0, 1]: the digit in gray (H, W) levels 0-255 made as MNIST's digits were made.

    A 28x28 image with a dark border is used as it is (pixel / 255, as in training), so that it reads
    as lenet_eval.py reads the same digit. Raises InputError naming `name` if no digit is found.
    """
    if gray.shape == (28, 28) and np.median(_border(gray)) < 32:
        if gray.max() < MIN_CONTRAST:
            raise InputError(f"{name}: no digit found (the image is blank)")
        return gray / 255.0
    return centre_in_frame(scale_to_20(thicken_thin_strokes(crop_to_ink(ink_strength(gray, name)))), name)


def ink_strength(gray, name="image"):
    """Return float32 (H, W) in [0, 1]: how much ink each pixel of gray (H, W) levels 0-255 holds, 0 being paper.

    The paper is the border's level; it is darker than the ink's (light on dark) if the border is below the middle
    of the image's range of levels. Its tone may vary across the page: a smooth surface is fitted to the paper.
    Ink is what stands above the paper by Otsu's threshold and well above the paper's noise (JPEG, grain).
    """
    dark_ink = np.median(_border(gray)) > (gray.min() + gray.max()) / 2  # ink may be 0.1% of the pixels
    surface = _paper_surface(gray, dark_ink)
    # Dark ink takes away a share of the light the paper reflects, so under uneven light it is measured as that
    # share (in grey levels of white paper); light ink (chalk, screens) adds light.
    ink = 255 * (surface - gray) / np.maximum(surface, 1) if dark_ink else gray - surface
    threshold = _otsu(ink)
    paper = ink[ink <= threshold] if (ink <= threshold).any() else np.zeros(1)
    noise = 1.4826 * np.median(np.abs(paper - np.median(paper)))  # the paper's standard deviation, robustly
    level = np.median(ink[ink > threshold]) if (ink > threshold).any() else 0.0  # the strokes' usual strength
    if level < max(MIN_CONTRAST, 6 * noise):
        raise InputError(f"{name}: no digit found (the image is blank: ink and paper differ by {level:.0f} "
                         f"grey levels, noise {noise:.0f})")
    # Ramp from just above the noise to the strokes' level: anti-aliased edges stay grey, strokes become 1.
    floor = max(3 * noise, 0.2 * level)
    return np.clip((ink - floor) / (level - floor), 0, 1).astype(np.float32)


def _paper_surface(gray, dark_ink):
    """float32 (H, W): a quadratic surface fitted to gray where there is paper, refitted without the ink up to 4 times."""
    height, width = gray.shape
    small_size = (min(width, 32), min(height, 32))  # enough points for 6 coefficients
    small = np.asarray(Image.fromarray(gray).resize(small_size, Image.Resampling.BOX), dtype=np.float64).ravel()

    y, x = np.meshgrid(np.linspace(-1, 1, small_size[1]), np.linspace(-1, 1, small_size[0]), indexing="ij")
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)  # the quadratic's terms
    coefficients = np.array([np.median(_border(gray)), 0, 0, 0, 0, 0])  # flat paper, if too few pixels to fit
    # Start from the pixels on the paper's side of Otsu's threshold, which holds for an even tone.
    paper = small > _otsu(small) if dark_ink else small <= _otsu(small)
    for _ in range(4):
        if paper.sum() < 24:
            break
        coefficients = np.linalg.lstsq(basis[paper], small[paper], rcond=None)[0]
        ink = (basis @ coefficients - small) * (1 if dark_ink else -1)
        spread = 1.4826 * np.median(np.abs(ink[paper])) + 1.0
        paper = ink < 3 * spread
    c, y, x = coefficients, np.linspace(-1, 1, height)[:, None], np.linspace(-1, 1, width)[None, :]
    return (c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y).astype(np.float32)


def _otsu(values):
    """Otsu's threshold of values in grey levels: the cut that best splits their 256-bin histogram in two."""
    counts, edges = np.histogram(np.clip(values, 0, 255), bins=256, range=(0, 256))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    below, above = weight[:-1], weight[-1] - weight[:-1]  # pixels at or below each cut, and above it
    valid = (below > 0) & (above > 0)
    if not valid.any():
        return 0.0  # a single level: nothing to split
    between = np.where(valid, (mean[-1] * below - mean[:-1] * weight[-1]) ** 2 / np.where(valid, below * above, 1), -1)
    return float(edges[1:][int(np.argmax(between))])


def crop_to_ink(ink):
    """The smallest box of ink (H, W) in [0, 1] holding every pixel of at least half strength."""
    rows, cols = np.flatnonzero(ink.max(axis=1) >= 0.5), np.flatnonzero(ink.max(axis=0) >= 0.5)
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


MNIST_STROKE = 2.2  # pixels: the median stroke width of MNIST's digits (20 pixels tall), as 2 * area / boundary
THIN_STROKE = 1.5  # pixels at that scale: thinner strokes (a fine pen on a big digit) are widened to MNIST_STROKE


def thicken_thin_strokes(ink):
    """ink (H, W) cropped to the digit, with strokes that would be thinner than THIN_STROKE at 20 pixels widened.

    Scaled down, a 1-pixel line on a 400-pixel digit would be a faint 0.05-pixel trace; MNIST's strokes are
    about 2 pixels wide. The ink grows by a square max filter, and the box by as much on each side.
    """
    mask = _square_filter(ink, 3, np.mean) >= 0.5  # averaged over 3x3 first, so that dithered edges are smooth
    boundary = mask & _square_filter(~mask, 3, np.max)  # ink pixels next to paper
    width = 2 * mask.sum() / max(1, boundary.sum())  # a stroke's area over half its outline, in pixels
    scale = 20 / max(ink.shape)
    grow = int(round(MNIST_STROKE / scale - width)) // 2  # pixels to add on each side of a stroke
    if width * scale >= THIN_STROKE or grow < 1:
        return ink
    return _square_filter(np.pad(ink, grow), 2 * grow + 1, np.max)


def _square_filter(values, size, reduce):
    """reduce (np.max, np.mean) over a size x size square (size odd) around each pixel of values (H, W), edge padded."""
    half = size // 2
    padded = np.pad(values, half, mode="edge")
    rows = reduce(np.lib.stride_tricks.sliding_window_view(padded, size, axis=0), axis=-1)  # (H, W + 2 * half)
    return reduce(np.lib.stride_tricks.sliding_window_view(rows, size, axis=1), axis=-1)


def scale_to_20(ink):
    """ink (H, W) in [0, 1] scaled, anti-aliased, so that its longer side is 20 pixels, keeping the aspect ratio."""
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    return np.clip(digit, 0, 1)  # Lanczos overshoots at sharp edges


def centre_in_frame(digit, name="image"):
    """float32 (28, 28): digit (h, w) of at most 20x20 placed with its centre of mass on pixel (14, 14), as MNIST's.

    (14, 14) is where the centres of mass of MNIST's digits lie, by whole-pixel shifts.
    """
    mass = digit.sum()
    if mass <= 0:
        raise InputError(f"{name}: no digit found (the ink vanished when scaled to 20 pixels)")
    ys, xs = np.indices(digit.shape)
    top = int(np.clip(round(14 - (ys * digit).sum() / mass), 0, 28 - digit.shape[0]))
    left = int(np.clip(round(14 - (xs * digit).sum() / mass), 0, 28 - digit.shape[1]))
    frame = np.zeros((28, 28), np.float32)
    frame[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return frame
