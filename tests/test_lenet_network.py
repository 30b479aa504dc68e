"""lenet.py's network: shapes, parameter count, initialisation, dropout, and a NumPy forward pass of the same weights."""
import math

import numpy as np
import pytest

import lenet
from conftest import initialised, numpy_lenet
from lenet import flow


@pytest.fixture
def model():
    return initialised(seed=0)


def test_shapes_and_parameter_count(model):
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "conv1.weight": (32, 1, 5, 5), "conv1.bias": (32,),
        "conv2.weight": (64, 32, 5, 5), "conv2.bias": (64,),
        "dense1.weight": (512, 3136), "dense1.bias": (512,),
        "dense2.weight": (10, 512), "dense2.bias": (10,),
    }
    # conv1 32*25+32, conv2 64*32*25+64, dense1 3136*512+512, dense2 512*10+10
    assert sum(p.numel() for p in model.parameters()) == 832 + 51264 + 1606144 + 5130 == 1663370
    assert tuple(model(flow.zeros(3, 1, 28, 28)).shape) == (3, 10)


def test_init_is_truncated_normal_redrawn_beyond_two_std_with_zero_biases(model):
    weights = []
    for name, p in model.named_parameters():
        value = p.numpy()
        if name.endswith("bias"):
            assert not value.any(), name
        else:
            assert np.abs(value).max() < 0.2, name  # nothing beyond 2 std
            # Values beyond 2 std are drawn again, not clamped: clamping would put 4.6% of them on +-0.2.
            assert np.mean(np.abs(value) > 0.199) < 0.005, name  # redrawn: about 0.1%
            weights.append(value.ravel())
    weights = np.concatenate(weights)  # 1.66 million values
    # A normal of std 0.1 cut at 2 std has std 0.0880 (clamped at 2 std it would be 0.0959); this sample's
    # standard error is below 0.0001.
    assert abs(weights.std() - 0.0880) < 0.0005
    assert abs(weights.mean()) < 0.0005


def truncated_normal_cdf(x, std=0.1):
    """The CDF of Normal(0, std) cut at 2 std and renormalised, from the definition (math.erf)."""
    phi = np.vectorize(lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))))
    return (phi(np.clip(x / std, -2, 2)) - phi(-2.0)) / (phi(2.0) - phi(-2.0))


def test_each_weight_tensor_passes_a_kolmogorov_smirnov_test_for_the_truncated_normal(model):
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            values = np.sort(p.numpy().ravel().astype(np.float64))
            n = len(values)
            cdf = truncated_normal_cdf(values)
            distance = max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())
            # 1.95 / sqrt(n): the distance a true sample passes with probability 0.999 (Kolmogorov's limit).
            assert distance < 1.95 / math.sqrt(n), (name, distance)


def test_init_is_seeded():
    a, b, c = lenet.LeNet(), lenet.LeNet(), lenet.LeNet()
    lenet.CheckPoint(a).init(seed=1)
    lenet.CheckPoint(b).init(seed=1)
    lenet.CheckPoint(c).init(seed=2)
    assert np.array_equal(a.conv1.weight.numpy(), b.conv1.weight.numpy())
    assert not np.array_equal(a.conv1.weight.numpy(), c.conv1.weight.numpy())


def test_dropout_mask_is_the_tutorials_inverted_dropout():
    masks = lenet.dropout_mask(np.random.default_rng(0), 100)
    assert masks.shape == (100, 512) and masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, 2.0}  # kept values are scaled by 1 / (1 - 0.5)
    assert abs((masks == 0).mean() - 0.5) < 0.01  # 51,200 draws: standard error 0.002
    assert np.array_equal(masks, lenet.dropout_mask(np.random.default_rng(0), 100))


def test_dropout_only_in_training(model):
    x = flow.rand(4, 1, 28, 28)
    assert np.array_equal(model(x).numpy(), model(x).numpy())
    mask = lenet.dropout_mask(np.random.default_rng(0), 4)
    assert not np.allclose(model(x, flow.tensor(mask)).numpy(), model(x).numpy())
    assert np.array_equal(model(x, flow.ones(4, 512)).numpy(), model(x).numpy())


def test_matches_numpy_forward_pass(model):
    rng = np.random.default_rng(0)
    with flow.no_grad():  # non-zero biases, so that they are checked too
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(flow.tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))
    x = rng.random((5, 1, 28, 28)).astype(np.float32)
    weights = {name: p.numpy().astype(np.float64) for name, p in model.named_parameters()}
    expected = numpy_lenet(x.astype(np.float64), weights)
    assert np.abs(model(flow.tensor(x)).numpy() - expected).max() < 1e-4
    mask = lenet.dropout_mask(rng, 5)
    expected = numpy_lenet(x.astype(np.float64), weights, mask)
    assert np.abs(model(flow.tensor(x), flow.tensor(mask)).numpy() - expected).max() < 1e-4
