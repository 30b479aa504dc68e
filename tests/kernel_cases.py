"""Run every case of tests/test_oneflow_kernels.py in this process and save the results: python kernel_cases.py OUT.npz

Run twice, with oneflow_native's kernels (the default) and with OneFlow's own (LENET_KERNELS=0), on the same inputs
(drawn from fixed seeds); the test compares the two files. Also saves the kernels' run counts before and after each
case, so that the test can tell which kernels ran.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lenet  # noqa: E402
import oneflow_setup  # noqa: E402
from lenet import flow  # noqa: E402

F = flow.nn.functional

# (N, C, H, W), (O, KH, KW), stride, padding, dilation, bias: LeNet's two layers, then odd sizes, batch 1,
# strides whose last step falls short of the edge (a negative right padding), dilations, 1x1.
CONVOLUTIONS = [
    ((10, 1, 28, 28), (32, 5, 5), (1, 1), (2, 2), (1, 1), True),
    ((10, 32, 14, 14), (64, 5, 5), (1, 1), (2, 2), (1, 1), True),
    ((1, 3, 7, 9), (4, 3, 3), (1, 1), (1, 1), (1, 1), True),
    ((3, 5, 11, 9), (6, 3, 3), (2, 2), (1, 0), (1, 1), False),
    ((2, 4, 13, 10), (3, 3, 2), (3, 2), (0, 1), (1, 1), True),
    ((2, 9, 12, 12), (5, 3, 3), (1, 1), (2, 2), (2, 2), True),
    ((4, 8, 10, 15), (8, 3, 5), (1, 2), (1, 2), (2, 1), False),
    ((3, 16, 6, 6), (8, 1, 1), (1, 1), (0, 0), (1, 1), True),
]

# (N, C, H, W), kernel, stride, padding, dilation, ceil_mode: LeNet's, then overlapping windows (the gradient adds
# up), padding, dilation and ceil_mode.
POOLS = [
    ((4, 3, 28, 28), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 1, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1), False),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((2, 2, 10, 11), (3, 2), (2, 3), (1, 1), (2, 1), False),
]


# Forward alone, first in the process, before any kernel of a backward pass exists: the kernels then share the cores
# between a batch's parts (LeNet's two layers at batches that split into several runs with a shorter last one,
# pooling over planes); (N, C, H, W), (O, KH, KW) for a convolution as above, kernel and stride for a pooling.
INFERENCE_CONVOLUTIONS = [((37, 1, 28, 28), (32, 5, 5)), ((23, 32, 14, 14), (64, 5, 5))]
INFERENCE_POOLS = [((37, 32, 28, 28), (2, 2), (2, 2)), ((5, 3, 9, 11), (3, 2), (2, 1))]


def tensor(rng, *shape):
    """A float32 tensor of standard normal samples."""
    return flow.tensor(rng.standard_normal(shape).astype(np.float32))


def counts():
    """The kernels' run counts, as an array (zeros where the kernels are not loaded)."""
    runs = oneflow_setup.kernel_runs()
    return np.array([runs[op] for op in oneflow_setup.KERNEL_OPS] if runs else [0] * len(oneflow_setup.KERNEL_OPS))


def convolution(rng, shape, filters, stride, padding, dilation, bias, dtype=np.float32, groups=1):
    """y, and the gradients for x, the weight and the bias of one convolution given a random gradient for y."""
    out_channels, kh, kw = filters
    x = flow.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
    w = flow.tensor(rng.standard_normal((out_channels, shape[1] // groups, kh, kw)).astype(dtype), requires_grad=True)
    b = flow.tensor(rng.standard_normal(out_channels).astype(dtype), requires_grad=True) if bias else None
    y = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    y.backward(flow.tensor(rng.standard_normal(tuple(y.shape)).astype(dtype)))
    return [y.numpy(), x.grad.numpy(), w.grad.numpy()] + ([b.grad.numpy()] if bias else [])


def pool(rng, shape, kernel, stride, padding, dilation, ceil_mode, dtype=np.float32):
    """y, its indices, and the gradient for x given a random one for y, of one max-pooling; x holds ties, NaN and
    -inf."""
    values = rng.integers(-3, 4, size=shape).astype(dtype)  # few values: ties in most windows
    values.flat[rng.choice(values.size, size=values.size // 20, replace=False)] = np.nan
    values.flat[rng.choice(values.size, size=values.size // 20, replace=False)] = -np.inf
    x = flow.tensor(values, requires_grad=True)
    y, indices = F.max_pool2d(x, kernel, stride, padding, dilation, return_indices=True, ceil_mode=ceil_mode)
    y.backward(flow.tensor(rng.standard_normal(tuple(y.shape)).astype(dtype)))
    return [y.numpy(), indices.numpy(), x.grad.numpy()]


def main(output):
    lenet.choose_device("cpu")  # the CPU settings (oneflow_setup.on_cpu), and the kernels unless LENET_KERNELS=0
    rng = np.random.default_rng(0)
    results = {}

    def record(name, compute, *args, **kwargs):
        before = counts()
        for i, value in enumerate(compute(rng, *args, **kwargs)):
            results[f"{name}/{i}"] = value
        results[f"{name}/runs"] = counts() - before

    for i, (shape, filters) in enumerate(INFERENCE_CONVOLUTIONS):
        record(f"infer_conv{i}", lambda rng: [F.conv2d(tensor(rng, *shape), tensor(rng, filters[0], shape[1], *filters[1:]),
                                                       tensor(rng, filters[0]), padding=2).numpy()])
    for i, (shape, kernel, stride) in enumerate(INFERENCE_POOLS):
        record(f"infer_pool{i}", lambda rng: [a.numpy() for a in F.max_pool2d(tensor(rng, *shape), kernel, stride,
                                                                              return_indices=True)])
    library = oneflow_setup.load_kernels()
    results["shared_runs"] = np.array(library.oneflow_kernels_shared_runs() if library else 0)
    for i, case in enumerate(CONVOLUTIONS):
        record(f"conv{i}", convolution, *case)
    for i, case in enumerate(POOLS):
        record(f"pool{i}", pool, *case)
    # What the kernels leave to OneFlow's own, by the registry's conditions: double, groups, 1-D and 3-D.
    record("conv_double", convolution, *CONVOLUTIONS[2], dtype=np.float64)
    record("conv_groups", convolution, (2, 4, 8, 8), (6, 3, 3), (1, 1), (1, 1), (1, 1), False, groups=2)
    record("conv_1d", lambda rng: [F.conv1d(tensor(rng, 2, 3, 9), tensor(rng, 4, 3, 3)).numpy()])
    record("conv_3d", lambda rng: [F.conv3d(tensor(rng, 1, 2, 5, 5, 5), tensor(rng, 3, 2, 3, 3, 3)).numpy()])
    record("pool_double", pool, *POOLS[2], dtype=np.float64)
    # Sums over every axis but 1 (a bias's gradient) run on the kernels; others on OneFlow's.
    record("sum_dense_bias", lambda rng: [tensor(rng, 100, 512).sum(0).numpy()])
    record("sum_conv_bias", lambda rng: [tensor(rng, 7, 5, 3, 4).sum([0, 2, 3]).numpy()])
    record("sum_other_axes", lambda rng: [tensor(rng, 7, 5, 3).sum([0, 1]).numpy(), tensor(rng, 7, 5).sum(1).numpy()])
    np.savez(output, **results)


if __name__ == "__main__":
    main(sys.argv[1])
