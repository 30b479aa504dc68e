"""Read the digit in an image with the saved LeNet.

    python lenet_test.py ./9.png    # prints "prediction: 9"
"""
import argparse
import sys

import numpy as np

import lenet
from lenet_eval import EvalGraph, predict

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("image", help="image file of one digit, white on black as in MNIST (28x28 or resized to it)")
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder of the trained model (default: ./lenet_models_1)")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:0 if OneFlow sees a GPU, else cpu)")


def predict_digit(model, path, device):
    """Return the digit the model reads in the image file at path."""
    image = lenet.load_image(path)[None]  # (1, 1, 28, 28)
    return int(np.argmax(predict(EvalGraph(model), image, 1, device)[0]))


def main(argv=None):
    args = parser.parse_args(argv)
    try:
        device, description = lenet.choose_device(args.device)
        print(f"device {description}")
        model = lenet.LeNet()
        lenet.CheckPoint(model).load(args.model_dir)
        model = lenet.place(model, device)
        digit = predict_digit(model, args.image, device)
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    print(f"prediction: {digit}")


if __name__ == "__main__":
    main()
