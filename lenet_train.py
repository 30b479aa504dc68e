"""Train LeNet on MNIST and save it to ./lenet_models_1, as in OneFlow's tutorial.

    python lenet_train.py                   # the tutorial: 20 epochs, batch 100, SGD lr 0.1
    python lenet_train.py --max-steps 20    # a seconds-long smoke run
"""
import argparse
import contextlib
import json
import sys
import time

import numpy as np
from tqdm import tqdm

import lenet
from lenet import flow
from lenet_eval import EvalGraph, evaluate

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=lenet.positive_int, default=20, help="passes over the training set (default: 20)")
parser.add_argument("--batch-size", type=lenet.positive_int, default=100, help="images per step (default: 100)")
parser.add_argument("--learning-rate", type=lenet.positive_float, default=0.1, help="SGD step size (default: 0.1)")
parser.add_argument("--log-interval", type=lenet.positive_int, default=20, help="print the loss every this many steps (default: 20)")
parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, shuffling and dropout (default: 0)")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:0 if OneFlow sees a GPU, else cpu)")
parser.add_argument("--data-dir", default=".", help="folder of mnist.npz, downloaded there if missing (default: .)")
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder to save the model to, replacing it (default: ./lenet_models_1)")
parser.add_argument("--max-steps", type=lenet.positive_int, default=None, help="stop after this many steps in all, for smoke runs (default: no limit)")
parser.add_argument("--metrics", metavar="FILE", default=None, help="write each epoch's loss, test accuracy (%%) and images/s to this file, one JSON line per epoch, replacing it (default: none)")


class TrainGraph(flow.nn.Graph):
    """The tutorial's train_job: forward with dropout, mean sparse softmax cross-entropy, backward, SGD, in one graph."""

    def __init__(self, model, learning_rate):
        super().__init__()
        self.model = model
        self.add_optimizer(flow.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.0))

    def build(self, images, labels, mask):
        logits = self.model(images, train=True)
        losses = flow.nn.functional.cross_entropy(logits, labels, reduction="none")  # (N,)
        loss = (losses * mask).sum() / mask.sum()  # mean over the real items; mask is 0 for padding
        loss.backward()
        return loss


def train(model, train_data, test_data, device, epochs, batch_size, learning_rate, log_interval, seed, max_steps=None,
          metrics=None):
    """Train model in place, printing the loss every log_interval steps and a line per epoch; return the per-epoch records.

    Each record is also written to the text file metrics, if given, as one JSON line when its epoch ends.
    """
    rng = np.random.default_rng(seed)
    graph, eval_graph = TrainGraph(model, learning_rate), EvalGraph(model)
    steps_per_epoch = -(-len(train_data[0]) // batch_size)
    history, step = [], 0
    for epoch in range(1, epochs + 1):
        start, images_seen, total_loss = time.perf_counter(), 0, 0.0
        batches = lenet.batches(batch_size, *train_data, rng=rng)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}", leave=False, disable=not sys.stdout.isatty())
        for count, images, labels in bar:
            mask = np.arange(batch_size) < count
            loss = graph(flow.tensor(images, device=device), flow.tensor(labels, device=device),
                         flow.tensor(mask.astype(np.float32), device=device))
            total_loss = total_loss + loss * count  # stays on the device: steps run asynchronously
            images_seen += count
            step += 1
            if step % log_interval == 0:
                bar.write(f"epoch {epoch} step {step} loss {loss.item():.4f}")
            if step == max_steps:
                break
        bar.close()
        mean_loss = float((total_loss / images_seen).item())
        seconds = time.perf_counter() - start
        accuracy = evaluate(eval_graph, *test_data, batch_size, device)
        history.append(dict(epoch=epoch, loss=mean_loss, accuracy=accuracy, images_per_second=images_seen / seconds))
        print(f"epoch {epoch} loss {mean_loss:.4f} test accuracy {accuracy:.1f}% images/s {images_seen / seconds:.0f}")
        if metrics is not None:
            print(json.dumps(history[-1]), file=metrics, flush=True)  # flushed: a crash keeps the epochs done
        if step == max_steps:
            break
    return history


def main(argv=None):
    args = parser.parse_args(argv)
    try:
        device, description = lenet.choose_device(args.device)
        print(f"device {description}")
        train_data, test_data, path, found = lenet.load_mnist(args.data_dir, progress=sys.stderr.isatty())
        if found:
            print(f"File mnist.npz already exist, path: {path}")
        flow.manual_seed(args.seed)  # dropout
        model = lenet.LeNet().to(device)
        check_point = lenet.CheckPoint(model)
        check_point.init(args.seed)
        metrics_file = contextlib.nullcontext()  # gives None: no metrics written
        if args.metrics:
            try:
                metrics_file = open(args.metrics, "w")
            except OSError as e:
                raise lenet.InputError(f"cannot write {args.metrics} ({e.strerror or e})") from None
        with metrics_file as metrics:
            train(model, train_data, test_data, device, args.epochs, args.batch_size, args.learning_rate,
                  args.log_interval, args.seed, args.max_steps, metrics)
        check_point.save(args.model_dir)
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    print(f"model saved to {args.model_dir}")


if __name__ == "__main__":
    main()
