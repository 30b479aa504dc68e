"""The OneFlow side of benchmarks/bench.py: training and evaluation speed of the project's LeNet, one job a process.

    .venv/bin/python benchmarks/oneflow_lenet.py train --mode graph --data data/mnist-5k/mnist.npz

prints one JSON line (from the first process only, under OneFlow's launcher). Training feeds batches as
lenet_train.py does (a shuffled batch of NumPy arrays a step).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lenet  # noqa: E402
from lenet import flow  # noqa: E402

from lenet_train import TrainGraph  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("job", choices=["train", "eval", "save"], help="what to run")
parser.add_argument("--mode", choices=["graph", "eager"], default="graph", help="nn.Graph or eager training (default: graph)")
parser.add_argument("--data", default=None, help="path of mnist.npz (default: none)")
parser.add_argument("--steps", type=int, default=30, help="timed training steps after 5 of warm-up (default: 30)")
parser.add_argument("--batch-size", type=int, default=100, help="images per step (default: 100)")
parser.add_argument("--passes", type=int, default=1, help="timed passes over the test digits for eval (default: 1)")
parser.add_argument("--model", default=None, help="model folder for save (default: none)")


def eager_step(model, optimizer):
    """Return a function (images, labels, weights, dropout_mask) -> loss doing TrainGraph's step in eager mode."""
    def step(images, labels, weights, dropout_mask):
        losses = flow.nn.functional.cross_entropy(model(images, dropout_mask), labels, reduction="none")
        loss = (losses * weights).sum() / weights.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss
    return step


def main():
    args = parser.parse_args()
    device, _ = lenet.choose_device("cpu")  # under the launcher: a placement over its processes
    result, model = {}, lenet.LeNet()
    lenet.CheckPoint(model).init(0)
    model = lenet.place(model, device)
    if args.job in ("train", "eval"):
        (x_train, y_train), (x_test, y_test), _, _ = lenet.load_mnist(os.path.dirname(args.data))
    if args.job == "train":
        optimizer = flow.optim.SGD(model.parameters(), lr=0.1)
        step = TrainGraph(model, optimizer) if args.mode == "graph" else eager_step(model, optimizer)
        rng = np.random.default_rng(0)
        batches = lenet.batches(args.batch_size, x_train, y_train, rng=rng)

        def run(steps):
            for _ in range(steps):
                count, images, labels = next(batches)
                weights = (np.arange(args.batch_size) < count).astype(np.float32)
                loss = step(*(lenet.to_tensor(a, device) for a in
                              (images, labels, weights, lenet.dropout_mask(rng, args.batch_size))))
            lenet.to_numpy(loss)  # waits for the steps queued on the device

        assert args.steps + 5 <= len(x_train) // args.batch_size, "one epoch of steps only"
        run(5)  # warm-up (and the graph's compilation)
        start = time.perf_counter()
        run(args.steps)
        result["images_per_second"] = args.steps * args.batch_size / (time.perf_counter() - start)
    elif args.job == "eval":
        graph = lenet.EvalGraph(model)
        lenet.predict(graph, x_test[:args.batch_size], args.batch_size, device)  # warm-up
        start = time.perf_counter()
        for _ in range(args.passes):
            lenet.predict(graph, x_test, args.batch_size, device).argmax(axis=1)
        result["images_per_second"] = args.passes * len(x_test) / (time.perf_counter() - start)
    elif args.job == "save":
        lenet.CheckPoint(model).save(args.model)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if flow.env.get_rank() == 0:  # two processes printing at once could mix their lines
        print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
