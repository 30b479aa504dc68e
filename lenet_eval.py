"""Evaluate the saved LeNet on the MNIST test set.

    python lenet_eval.py            # prints e.g. "accuracy: 99.4%" as its last line
"""
import argparse
import sys

import numpy as np

import lenet
from lenet import flow

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder of the trained model (default: ./lenet_models_1)")
parser.add_argument("--data-dir", default=".", help="folder of mnist.npz, downloaded there if missing (default: .)")
parser.add_argument("--batch-size", type=lenet.positive_int, default=100, help="images per graph run (default: 100)")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:0 if OneFlow sees a GPU, else cpu)")


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
    for count, batch in lenet.batches(batch_size, images):
        logits.append(lenet.to_numpy(graph(lenet.to_tensor(batch, device)))[:count])
    return np.concatenate(logits)


def evaluate(graph, images, labels, batch_size, device):
    """Return the accuracy in percent of the EvalGraph's model on (images, labels)."""
    predictions = predict(graph, images, batch_size, device).argmax(axis=1)
    return 100.0 * float(np.mean(predictions == labels))


def main(argv=None):
    args = parser.parse_args(argv)
    try:
        device, description = lenet.choose_device(args.device)
        print(f"device {description}")
        model = lenet.LeNet()
        lenet.CheckPoint(model).load(args.model_dir)
        model = lenet.place(model, device)
        _, (test_images, test_labels), path, found = lenet.load_mnist(args.data_dir, progress=sys.stderr.isatty())
        if found:
            print(f"File mnist.npz already exist, path: {path}")
        accuracy = evaluate(EvalGraph(model), test_images, test_labels, args.batch_size, device)
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    print(f"accuracy: {accuracy:.1f}%")


if __name__ == "__main__":
    main()
