"""LeNet for MNIST, as in OneFlow's tutorial "Recognition of MNIST Handwritten Digits", on OneFlow 0.9.

The network first, then what the scripts share: its initialisation and checkpoints, the MNIST data, the
device, and the evaluation job. This module prints nothing and reads no command line; bad input raises
InputError, which the scripts print on one line.
"""
import os
from pathlib import Path

import numpy as np

import oneflow_setup  # first: the libraries and CPU settings that OneFlow needs before its import
import oneflow as flow
import oneflow.sysconfig  # flow.sysconfig.with_cuda(): whether this OneFlow is a CUDA build

import gpu_probe
import mnist_idx
import model_folder
import safe_files
from user_input import InputError, one_line  # a bad input, which the scripts print on one line


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


# ---------------------------------------------------------------------------------------------
# Initialisation and checkpoints: the tutorial's flow.train.CheckPoint, on OneFlow's own flow.save format.

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

        A crash at any moment leaves either the old model or the new one at path (safe_files.replace_folder).
        Under the launcher the first process writes, and every process raises the same InputError if it could not.
        """
        shown, path = os.fspath(path), Path(path)  # shown as the user wrote it: ./lenet_models_1
        # Gathered in every process (global tensors need all of them), written by the first alone.
        state = {name: flow.tensor(to_numpy(value)) for name, value in self.model.state_dict().items()}

        def write(folder):
            flow.save(state, str(folder))
            if training_state is not None:
                flow.save(training_state, str(folder / TRAINING_STATE))

        error = None
        if flow.env.get_rank() == 0:
            try:
                if path.exists() and not path.is_dir():
                    error = f"cannot save the model to {shown}: it is a file, not a folder"
                else:
                    safe_files.replace_folder(path, write)
            except OSError as e:
                error = f"cannot save the model to {shown} ({e.strerror or e})"
        if flow.env.get_world_size() > 1 and in_any_process(error is not None):
            # Every process stops: the others would otherwise go on to a step that waits for the first forever.
            error = error or f"cannot save the model to {shown}: the first process could not write it"
        if error is not None:
            raise InputError(error)

    def load(self, path):
        """Load weights saved by save(), or the tutorial's checkpoint folder; return the training state saved with them, or None."""
        shown, path = os.fspath(path), Path(path)  # shown as the user wrote it: ./lenet_models_1
        safe_files.recover_folder(path)  # a save that died in its last step may have left the model beside path
        if not path.is_dir():
            raise InputError(f"no model at {shown} (run lenet_train.py first)")
        if not (path / "pickled_data").exists() and not (path / "snapshot_done").exists():
            raise InputError(f"no model at {shown}: the folder has neither pickled_data nor snapshot_done")
        try:
            model_folder.check_variables(path)
            if (path / "pickled_data").exists():
                state = flow.load(str(path))
            else:  # the tutorial's OneFlow wrote snapshot_done and a folder per variable
                state = {name: flow.tensor(value) for name, value in model_folder.read_tutorials(path).items()}
            self.model.load_state_dict(state)
            return flow.load(str(path / TRAINING_STATE)) if (path / TRAINING_STATE).exists() else None
        except model_folder.Broken as e:
            raise InputError(f"cannot load the model at {shown}: {e}") from None
        except Exception as e:  # flow.load and load_state_dict raise many kinds for a broken folder
            raise InputError(f"cannot load the model at {shown} ({one_line(e)})") from None


def load_model(model_dir, device):
    """Return the LeNet saved in model_dir, placed on device (a flow.device or, under the launcher, a placement)."""
    model = LeNet()
    CheckPoint(model).load(model_dir)
    return place(model, device)


# ---------------------------------------------------------------------------------------------
# MNIST data: what the tutorial's flow.data.load_mnist did, checked.

# (url, SHA-256), tried in turn: the tutorial's file, then Keras's copy of the same data. Each hash is the one its
# own loader checks: the tutorial's flow.data.load_mnist(hash_check=...), Keras's mnist.load_data (file_hash).
MNIST_SOURCES = [
    ("https://oneflow-public.oss-cn-beijing.aliyuncs.com/datasets/mnist.npz",
     "63d4344077849053dc3036b247fa012b2b381de53fd055a66b539dffd76cf08e"),
    ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
     "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"),
]


def download_mnist(path, sources, progress=False):
    """Download mnist.npz to path from the first of sources [(url, sha256)] that gives the right file."""
    failures = []
    for url, sha256 in sources:
        try:
            return safe_files.download(url, path, sha256, progress)
        except (OSError, ValueError) as e:  # URLError, HTTPError and timeouts are OSErrors
            failures.append(f"{url} ({e})")
    raise InputError(f"could not download {' or '.join(failures)}; download it by hand and put it at {path}")


def load_mnist(data_dir=".", sources=None, progress=False):
    """Return ((x_train, y_train), (x_test, y_test), path, found) from data_dir/mnist.npz, or else from MNIST's four
    original files there (mnist_idx), downloading mnist.npz where there are neither.

    Images come as float32 (N, 1, 28, 28) in [0, 1] (pixel / 255, as the tutorial trained), labels as int32 (N,).
    `found` is the line saying where the data was, None where it was downloaded. sources None means MNIST_SOURCES.
    """
    path = os.path.join(data_dir, "mnist.npz")  # a str, so that it prints as ./mnist.npz
    found = f"File mnist.npz already exist, path: {path}" if os.path.isfile(path) else None
    idx = None if found else mnist_idx.find(data_dir)
    if idx:
        path, found = data_dir, f"MNIST's original files found in {data_dir}"
    elif not found:
        download_mnist(path, sources or MNIST_SOURCES, progress)
    try:
        if idx:
            arrays = mnist_idx.load(idx)
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
    except mnist_idx.BadFile as e:  # naming the file
        raise InputError(str(e)) from None
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


# ---------------------------------------------------------------------------------------------
# Device: one GPU, the CPU, or under OneFlow's launcher every process's own.

def choose_device(name=None):
    """Return (device, description): `name` if given ("cpu", "cuda", "cuda:N"), else the first GPU OneFlow can use, else the CPU.

    Under OneFlow's launcher (python -m oneflow.distributed.launch) the device is a flow.placement over every
    process, each on the GPU of its local rank or on its CPU, for data-parallel training. With "cpu" the driver
    is asked nothing (OneFlow's import has counted the GPUs already).
    """
    kind, _, index = (name or "").partition(":")
    if name is not None and (kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit()))):
        raise InputError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
    processes = flow.env.get_world_size()
    if processes > 1 and index:
        raise InputError(f"under the launcher each process takes the GPU of its local rank: use --device cuda, not {name}")
    number, note = None, ""
    if name != "cpu":
        try:
            number, note = gpu_probe.choose(name, processes, flow.env.get_local_rank(), flow.sysconfig.with_cuda())
        except gpu_probe.Unavailable as e:
            raise InputError(str(e)) from None
    kind = "cpu" if number is None else "cuda"
    if kind == "cpu":
        oneflow_setup.on_cpu()
    if processes > 1:
        return (flow.placement(kind, ranks=list(range(processes))),
                f"{kind} x {processes} processes (data-parallel{'; ' + note if note else ''})")
    device = "cpu" if number is None else f"cuda:{number}"
    return flow.device(device), device + (f" ({note})" if note else "")


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


def gather(row):
    """Every process's row (a 1-D array of the same size and dtype in each) under the launcher, stacked in rank order;
    every process must call it (a collective)."""
    processes = flow.env.get_world_size()
    rows = np.zeros((processes, len(row)), row.dtype)
    rows[flow.env.get_rank()] = row
    return to_numpy(to_tensor(rows, flow.placement("cpu", ranks=list(range(processes)))))


def in_any_process(flag):
    """Whether flag is true in any process under the launcher; every process must call it (a collective)."""
    return bool(gather(np.float32([flag])).any())


# ---------------------------------------------------------------------------------------------
# The evaluation job, which lenet_train.py, lenet_eval.py and lenet_test.py run

class EvalGraph(flow.nn.Graph):
    """The tutorial's eval_job: the network's forward pass (no dropout), logits out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def build(self, images):
        return self.model(images)


def predict(graph, images, batch_size, device):
    """Return the logits (N, 10) of images (N, 1, 28, 28), batch_size images per run of the EvalGraph."""
    logits = []
    for count, batch in batches(batch_size, images):
        logits.append(to_numpy(graph(to_tensor(batch, device)))[:count])  # the padding dropped
    return np.concatenate(logits)


def evaluate(graph, images, labels, batch_size, device):
    """Return the accuracy in percent of the EvalGraph's model on (images, labels)."""
    predictions = predict(graph, images, batch_size, device).argmax(axis=1)
    return round(100.0 * float(np.mean(predictions == labels)), 6)  # 95.4, not 95.39999999999999


def softmax(logits):
    """Return the probabilities (N, 10), float64, of logits (N, 10)."""
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))  # shifted so that no exp overflows
    return exp / exp.sum(axis=1, keepdims=True)
