"""The project's LeNet and its training recipe in PyTorch, for benchmarks/bench.py's PyTorch column.

Runs under a separate Python with torch (never a requirement of the project); bench.py calls it as
    /tmp/torchvenv/bin/python benchmarks/torch_lenet.py JOB --data mnist.npz ...
and reads one JSON line from its stdout. Same layers, initialisation, dropout, loss, batch and data as lenet.py.
"""
import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("job", choices=["train", "eval", "epochs", "save", "predict"], help="what to run")
parser.add_argument("--data", default=None, help="path of mnist.npz (default: none)")
parser.add_argument("--steps", type=int, default=30, help="timed training steps after 5 of warm-up (default: 30)")
parser.add_argument("--epochs", type=int, default=5, help="epochs for the epochs job (default: 5)")
parser.add_argument("--batch-size", type=int, default=100, help="images per step (default: 100)")
parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the shuffling and the dropout (default: 0)")
parser.add_argument("--model", default=None, help="weights file for save and predict (default: none)")
parser.add_argument("--image", nargs="+", default=[], help="PNGs for predict (default: none)")


class LeNet(torch.nn.Module):
    """conv5x5(32)-relu-pool2, conv5x5(64)-relu-pool2, dense 512-relu, dropout 0.5 (training only), dense 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = torch.nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.dense1 = torch.nn.Linear(64 * 7 * 7, 512)
        self.dense2 = torch.nn.Linear(512, 10)

    def forward(self, x, train=False):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)  # (N, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)  # (N, 64, 7, 7)
        x = F.relu(self.dense1(x.flatten(1)))
        x = F.dropout(x, p=0.5, training=train)
        return self.dense2(x)


def init(model, seed=0):
    """Truncated normal (std 0.1, values beyond 2 std drawn again) for weights, 0 for biases, as lenet.CheckPoint.init."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            value = np.zeros(parameter.shape, np.float32)
            if name.endswith("weight"):
                value = rng.normal(0.0, 0.1, size=parameter.shape)
                while (outside := np.abs(value) > 0.2).any():
                    value[outside] = rng.normal(0.0, 0.1, size=int(outside.sum()))
            parameter.copy_(torch.from_numpy(value.astype(np.float32)))


def load(path):
    """Return (x_train, y_train, x_test, y_test) from mnist.npz: float32 (N, 1, 28, 28) pixel / 255, int64 labels."""
    with np.load(path) as npz:
        return [torch.from_numpy(npz[f"x_{s}"][:, None].astype(np.float32) / 255.0) if k == "x"
                else torch.from_numpy(npz[f"y_{s}"].astype(np.int64)) for s in ("train", "test") for k in ("x", "y")]


def train_step(model, optimizer, images, labels):
    loss = F.cross_entropy(model(images, train=True), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def main():
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model, result = LeNet(), {}
    init(model, args.seed)
    b = args.batch_size
    if args.job in ("train", "eval", "epochs"):
        x_train, y_train, x_test, y_test = load(args.data)
    if args.job == "train":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        n = len(x_train) // b
        for i in range(5):  # warm-up
            train_step(model, optimizer, x_train[i % n * b:][:b], y_train[i % n * b:][:b])
        start = time.perf_counter()
        for i in range(args.steps):
            train_step(model, optimizer, x_train[i % n * b:][:b], y_train[i % n * b:][:b])
        result["images_per_second"] = args.steps * b / (time.perf_counter() - start)
    elif args.job == "eval":
        model.eval()
        with torch.no_grad():
            model(x_test[:b])  # warm-up
            start = time.perf_counter()
            for i in range(0, len(x_test), b):
                model(x_test[i:i + b]).argmax(1)
            result["images_per_second"] = len(x_test) / (time.perf_counter() - start)
    elif args.job == "epochs":
        rng = np.random.default_rng(args.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        training_seconds = 0.0
        for _ in range(args.epochs):  # as lenet_train.py: shuffled batches, then the test accuracy
            order = torch.from_numpy(rng.permutation(len(x_train)))
            start = time.perf_counter()
            for i in range(0, len(order), b):
                index = order[i:i + b]
                train_step(model, optimizer, x_train[index], y_train[index])
            training_seconds += time.perf_counter() - start
            with torch.no_grad():
                predictions = torch.cat([model(x_test[i:i + b]).argmax(1) for i in range(0, len(x_test), b)])
            result.setdefault("accuracies", []).append(100.0 * float((predictions == y_test).float().mean()))
        result["accuracy"] = result["accuracies"][-1]  # after the last epoch
        result["images_per_second"] = args.epochs * len(x_train) / training_seconds
    elif args.job == "save":
        torch.save(model.state_dict(), args.model)
    elif args.job == "predict":  # what lenet_test.py does: load the weights, read the PNGs, print the digits
        from PIL import Image  # noqa: PLC0415

        model.load_state_dict(torch.load(args.model))
        model.eval()
        images = []
        for path in args.image:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
        with torch.no_grad():
            result["predictions"] = model(torch.from_numpy(np.stack(images)[:, None])).argmax(1).tolist()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
