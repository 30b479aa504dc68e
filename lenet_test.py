"""Read the digit in each image with the saved LeNet: a photo, scan or drawing of a digit, or an MNIST-style PNG.

    python lenet_test.py data/9.png                          # prints "prediction: 9 (probability 0.981)"
    python lenet_test.py digits/*.jpg --top-k 3 --save-input seen/    # a line per file; what the network saw
    python lenet_test.py data/9.png --onnx lenet.onnx        # the same with onnxruntime, from lenet_export.py's file

Each image is made to look like an MNIST digit first (digit_image.load_image: white on black, 20 pixels in a 28x28
frame, centred on its centre of mass); a 28x28 image with a dark border is read as it is.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import digit_image
import lenet
import onnx_model
import user_input

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("image", nargs="+", help="image files of one digit each: any format Pillow reads, any size, "
                                             "dark on light or light on dark")
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder of the trained model (default: ./lenet_models_1)")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the first GPU OneFlow 0.9 can run on, else cpu)")
parser.add_argument("--top-k", type=user_input.positive_int, default=1, help="show the K likeliest digits, 1 to 10, "
                                                                        "with their probabilities (default: 1)")
parser.add_argument("--batch-size", type=user_input.positive_int, default=100, help="images per run of the graph (or of onnxruntime) (default: 100)")
parser.add_argument("--onnx", metavar="FILE", default=None, help="read the digits with onnxruntime from this ONNX file "
                                                                "(lenet_export.py writes it) instead of with OneFlow "
                                                                "from --model-dir (default: none, OneFlow)")
parser.add_argument("--save-input", metavar="DIR", default=None, help="write the 28x28 image the network saw for "
                                                                      "each IMAGE to DIR/NAME-28x28.png (default: none)")


def load_images(paths):
    """Return (images float32 (N, 1, 28, 28), the N paths read, [(path, message)] for the paths that could not be)."""
    images, read, errors = [], [], []
    for path in paths:
        try:
            images.append(digit_image.load_image(path))
            read.append(path)
        except lenet.InputError as e:
            errors.append((path, str(e)))
    return np.stack(images) if images else np.zeros((0, 1, 28, 28), np.float32), read, errors


def classify(model, images, batch_size, device):
    """Return the softmax probabilities (N, 10) of images (N, 1, 28, 28), batch_size images per run of one EvalGraph."""
    return lenet.softmax(lenet.predict(lenet.EvalGraph(model), images, min(batch_size, len(images)), device))


def classify_onnx(session, images, batch_size):
    """Return the softmax probabilities (N, 10) of images (N, 1, 28, 28), batch_size images per run of the onnxruntime session."""
    return lenet.softmax(onnx_model.predict(session, images, batch_size))


def describe(probabilities, top_k=1):
    """The prediction for one image's probabilities (10,): "prediction: 9 (probability 0.981)", then the top k."""
    order = np.argsort(-probabilities, kind="stable")
    line = f"prediction: {order[0]} (probability {probabilities[order[0]]:.3f})"
    if top_k > 1:
        line += f" top {top_k}: " + ", ".join(f"{d} {probabilities[d]:.3f}" for d in order[:top_k])
    return line


def save_inputs(images, paths, folder):
    """Write each image (N, 1, 28, 28) in [0, 1] as folder/NAME-28x28.png (8-bit grey); return the files written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for image, path in zip(images, paths):
            name = f"{Path(path).stem}-28x28"
            target, n = folder / f"{name}.png", 1
            while target in written:  # the same name from two folders
                n += 1
                target = folder / f"{name}-{n}.png"
            Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(target)
            written.append(target)
        return written
    except OSError as e:
        raise lenet.InputError(f"cannot write the 28x28 images to {folder} ({e.strerror or e})") from None


def main(argv=None):
    args = parser.parse_args(argv)
    if args.top_k > 10:
        parser.error(f"argument --top-k: at most 10 digits, not {args.top_k}")
    if args.onnx is not None and args.device is not None:
        parser.error("argument --device: OneFlow's device; with --onnx, onnxruntime reads the digits on the CPU")
    try:
        if args.onnx is not None:
            session = onnx_model.load(args.onnx)
            print(f"device cpu (onnxruntime {onnx_model.runtime_version()}, {args.onnx})")
        else:
            device, description = lenet.choose_device(args.device)
            print(f"device {description}")
            model = lenet.load_model(args.model_dir, device)
        images, paths, errors = load_images(args.image)
        for _, message in errors:
            print(f"error: {message}", file=sys.stderr)
        if args.save_input is not None:
            save_inputs(images, paths, args.save_input)
        if not len(images):
            probabilities = []
        elif args.onnx is not None:
            probabilities = classify_onnx(session, images, args.batch_size)
        else:
            probabilities = classify(model, images, args.batch_size, device)
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    for path, p in zip(paths, probabilities):
        print(describe(p, args.top_k) if len(args.image) == 1 else f"{path}: {describe(p, args.top_k)}")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
