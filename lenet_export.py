"""Export the saved LeNet's evaluation job to an ONNX file, checked in onnxruntime against OneFlow before it is kept.

    python lenet_export.py                        # writes lenet.onnx; last line "largest difference 3.8e-06 ..."
    python lenet_export.py --output deploy/lenet.onnx --opset 13

The file takes images (N, 1, 28, 28), pixel / 255 in [0, 1], for any N, and gives logits (N, 10); any ONNX runtime
runs it without OneFlow (docs/export.md). OneFlow's converter (oneflow-onnx) writes it; then onnxruntime's logits of
the MNIST test digits, read in batches of 1, 7 and 100, must equal OneFlow's within 1e-4, or the file is removed.
"""
import argparse
import os
import sys

import numpy as np

import lenet
import onnx_model
import safe_files
import user_input

TOLERANCE = 1e-4  # the largest difference allowed between onnxruntime's logits and OneFlow's
BATCH_SIZES = (1, 7, 100)  # checked in onnxruntime; 7 leaves a short last batch
TRACED_BATCH_SIZE = 100  # OneFlow's graph runs this batch size, as lenet_eval.py; the file takes any


def opset(text):
    """argparse type: an ONNX opset the installed onnx knows, from 7 (onnxruntime's oldest) up."""
    import onnx  # noqa: PLC0415  (only to read this flag)

    value = int(text)
    if not 7 <= value <= onnx.defs.onnx_opset_version():
        raise ValueError(text)
    return value


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder of the trained model (default: ./lenet_models_1)")
parser.add_argument("--output", default="lenet.onnx", help="the ONNX file to write; its folder must exist (default: lenet.onnx)")
parser.add_argument("--opset", type=opset, default=onnx_model.DEFAULT_OPSET,
                    help=f"ONNX opset, 7 up to what the installed onnx knows (default: {onnx_model.DEFAULT_OPSET}, "
                         "the converter's own; a lower one runs on older runtimes)")
parser.add_argument("--data-dir", default=".", help="folder of mnist.npz, whose test digits check the file; "
                                                    "downloaded there if missing (default: .)")
parser.add_argument("--check-images", metavar="N", type=user_input.positive_int, default=None,
                    help="check with the first N test digits, at least 100 (default: all of them)")


def check_output(output):
    """Raise InputError if output is a folder or its folder is missing; a folder that cannot be written to shows at
    the first file made there (safe_files.replace_file)."""
    folder = os.path.dirname(output) or "."
    if os.path.isdir(output):
        raise lenet.InputError(f"cannot write {output}: it is a folder (give a file name, such as {os.path.join(output, 'lenet.onnx')})")
    if not os.path.isdir(folder):
        raise lenet.InputError(f"cannot write {output}: there is no folder {folder} (create it first)")


def export_checked(model, images, output, opset_version, device):
    """Write model's EvalGraph to the ONNX file output, checked on images (N, 1, 28, 28) in onnxruntime at each of
    BATCH_SIZES against OneFlow; return the largest difference of the logits. CheckFailed (and no file) above TOLERANCE.
    main has checked output (check_output) before reading the model and the data."""
    differences = []

    def write(tmp):  # once the folder has taken a file
        graph = lenet.EvalGraph(model)
        expected = lenet.predict(graph, images, TRACED_BATCH_SIZE, device)  # traces the graph, then the reference
        onnx_model.export(graph, tmp, opset_version)
        try:
            session = onnx_model.load(tmp)
            for batch_size in BATCH_SIZES:
                differences.append(float(np.abs(onnx_model.predict(session, images, batch_size) - expected).max()))
        except lenet.InputError as e:  # the file is not what LeNet's should be
            raise onnx_model.CheckFailed(f"the exported model fails in onnxruntime: {str(e).replace(tmp, output)}; "
                                         f"{output} was not written") from None
        if max(differences) > TOLERANCE:
            raise onnx_model.CheckFailed(
                f"the exported model is wrong: onnxruntime's logits differ from OneFlow's by up to {max(differences):.3g} "
                f"(more than {TOLERANCE:.0e}); {output} was not written")

    try:
        safe_files.replace_file(output, write)
    except OSError as e:
        raise lenet.InputError(f"cannot write {output} ({e.strerror or e})") from None
    return max(differences)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.check_images is not None and args.check_images < max(BATCH_SIZES):
        parser.error(f"argument --check-images: at least {max(BATCH_SIZES)} (a batch of {max(BATCH_SIZES)} is checked), "
                     f"not {args.check_images}")
    try:
        check_output(args.output)  # before the model and the data are read
        device, _ = lenet.choose_device("cpu")  # the file is the same on any device; OneFlow's reference runs here
        model = lenet.load_model(args.model_dir, device)
        _, (images, _), _, found = lenet.load_mnist(args.data_dir, progress=sys.stderr.isatty())
        if found:
            print(found)
        images = images[:args.check_images]
        difference = export_checked(model, images, args.output, args.opset, device)
    except (lenet.InputError, onnx_model.CheckFailed) as e:
        sys.exit(f"error: {e}")
    size = os.path.getsize(args.output)
    print(f"file {args.output}")
    print(f"size {size / 1e6:.1f} MB ({size:,} bytes)")
    print(f"opset {args.opset}")
    print(f"largest difference {difference:.1e} (onnxruntime's logits against OneFlow's, {len(images):,} test digits "
          f"in batches of {', '.join(map(str, BATCH_SIZES))}; at most {TOLERANCE:.0e})")


if __name__ == "__main__":
    main()
