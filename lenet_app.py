"""A web page that reads a digit you draw or upload, with the saved LeNet (Gradio).

    python lenet_app.py                       # then open http://127.0.0.1:7860 and draw a digit: it is read as you draw
    python lenet_app.py --host 0.0.0.0 --port 8080    # reachable from other machines

The drawing or the image is made to look like an MNIST digit as lenet_test.py does it (digit_image: white on black,
20 pixels in a 28x28 frame); the page shows the 3 likeliest digits and the 28x28 image the network saw. Programs
can ask too, through the endpoint /predict (one image file in, the label out):

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict(handle_file("data/9.png"), api_name="/predict")["label"]    # "9"

It runs offline: no analytics, no share link, nothing fetched from the internet.
"""
import argparse
import ctypes
import os
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image

import digit_image
import lenet
import user_input

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio's import: it reads it then, and is on unless "False"
import gradio as gr  # noqa: E402
from starlette.requests import ClientDisconnect  # noqa: E402  (Gradio's web framework, installed with it)
from starlette.responses import Response  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model-dir", default="./lenet_models_1", help="folder of the trained model (default: ./lenet_models_1)")
parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the first GPU OneFlow 0.9 can run on, else cpu)")
parser.add_argument("--host", default="127.0.0.1", help="address to serve on; 0.0.0.0 for every network "
                                                        "(default: 127.0.0.1, this machine only)")
parser.add_argument("--port", type=user_input.positive_int, default=7860, help="TCP port to serve on (default: 7860)")

TOP_K = 3  # digits shown, with their probabilities
CANVAS = 280  # pixels a side of the drawing canvas: 10 per MNIST pixel
# The brush's radius in canvas pixels. MNIST's strokes are about 2.2 pixels wide on a 20-pixel digit, 11% of its
# height; a digit drawn across most of the canvas (200 pixels) wants strokes of about 22 pixels.
BRUSH_RADIUS = 11
SHOWN_SCALE = 10  # the 28x28 image is shown at 280x280, each pixel a 10x10 square, so that it is not blurred
# Gradio keeps the state of its 10,000 latest sessions (some 0.1 MiB each here), and each API call is a session of
# its own: 1 GiB after 10,000 calls. A session's state lives here for one event chain (an upload's 28x28 image on
# its way to the page), so the 100 latest are plenty.
SESSIONS_KEPT = 100
M_ARENA_MAX = -8  # glibc's mallopt parameter: the most malloc arenas the process may have


class DigitReader:
    """The saved LeNet behind one EvalGraph, built once, run on one image at a time."""

    def __init__(self, model, device):
        self.graph = lenet.EvalGraph(model)
        self.device = device
        # Gradio calls from several threads; an nn.Graph is one compiled job, run by one caller at a time.
        self.lock = threading.Lock()
        self.probabilities(np.zeros((1, 28, 28), np.float32))  # compiles the graph now, not at the first visitor

    def probabilities(self, image):
        """The probabilities (10,) of the digits for one image (1, 28, 28) in [0, 1]."""
        with self.lock:
            # Batches of 1: an nn.Graph in OneFlow 0.9 runs only the input shape of its first call.
            logits = lenet.predict(self.graph, image[None], 1, self.device)
        return lenet.softmax(logits)[0]

    def read(self, gray, name):
        """Return ({digit: probability} for gr.Label, the 28x28 image seen, enlarged) of gray (H, W) levels 0-255.

        Raises user_error() for an image with no digit.
        """
        try:
            image = digit_image.mnist_like(gray, name)[None]  # (1, 28, 28)
        except lenet.InputError as e:
            raise user_error(str(e)) from None
        probabilities = self.probabilities(image)
        label = {str(digit): float(p) for digit, p in enumerate(probabilities)}
        seen = np.round(image[0] * 255).astype(np.uint8).repeat(SHOWN_SCALE, axis=0).repeat(SHOWN_SCALE, axis=1)
        return label, seen

    def read_drawing(self, drawing):
        """read() for the Sketchpad's value ({"background", "layers", "composite"}, the composite an RGBA image); no
        answer (None, None) while it holds no digit: a fresh or cleared page, a first dot."""
        if drawing is None or drawing.get("composite") is None:
            return None, None
        try:
            return self.read(gray_on_white(drawing["composite"]), "the drawing")
        except gr.Error:  # read() found no digit
            return None, None

    def read_file(self, path):
        """read() for an uploaded image file; its errors name the file as the user called it."""
        name = Path(path).name  # Gradio keeps an upload's own name, in a temporary folder of its own
        try:
            gray = digit_image.read_gray(path)
        except lenet.InputError as e:
            raise user_error(str(e).replace(str(path), name)) from None
        return self.read(gray, name)


def user_error(message):
    """A gr.Error, which the page shows in one line; not logged with a traceback: the user's image, not the server, is wrong."""
    return gr.Error(message, print_exception=False)


def gray_on_white(image):
    """float32 (H, W) grey levels 0-255 of a Pillow image, its transparent parts white paper (as digit_image reads files)."""
    image = image.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("L"), np.float32)


def blank_paper():
    """A white page as the Sketchpad's background, which also makes the canvas open with the brush in hand.

    Gradio 6 opens an empty Sketchpad on "select the draw tool to start"; one with a background opens drawing.
    The page reaches the canvas a moment after the canvas shows (about a second), and wipes strokes drawn before.
    """
    return {"background": Image.new("RGB", (CANVAS, CANVAS), "white"), "layers": [], "composite": None}


def build_page(reader):
    """The page: a canvas and an upload box on the left; the 3 likeliest digits and the 28x28 image on the right."""
    with gr.Blocks(title="LeNet reads your digit", analytics_enabled=False) as page:
        gr.Markdown("# LeNet reads your digit\nDraw a digit, or upload a picture of one. The network trained by "
                    "lenet_train.py reads it as you draw.")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Draw"):
                    sketchpad = gr.Sketchpad(
                        value=blank_paper(), type="pil", label="Draw a digit", elem_id="drawing",
                        canvas_size=(CANVAS, CANVAS), layers=False, transforms=(),
                        brush=gr.Brush(default_size=BRUSH_RADIUS, colors=["#000000"], color_mode="fixed"))
                with gr.Tab("Upload"):
                    # type="filepath" with image_mode=None: the file as it is, not converted to RGB (which turns
                    # a transparent PNG's paper black); digit_image reads it as lenet_test.py does.
                    upload = gr.Image(type="filepath", image_mode=None, sources=["upload"], label="Upload an image",
                                      elem_id="upload")
            with gr.Column():
                label = gr.Label(num_top_classes=TOP_K, label="Likeliest digits", elem_id="label")
                # PNG: the pixels exactly as the network saw them (Gradio's default, WebP, is lossy). No "share"
                # button, which uploads to Hugging Face.
                seen = gr.Image(label="What the network saw (28x28)", interactive=False, elem_id="seen", format="png",
                                buttons=["download", "fullscreen"])
        # The API's answer is the label alone: the 28x28 image goes through a State, which gradio_client leaves out.
        seen_state = gr.State()

        # Read as you draw: each stroke, once the pen is lifted, is a user input. always_last: strokes made while a
        # reading is under way make one more reading once it is done, of the drawing as it is then, not one each.
        sketchpad.input(reader.read_drawing, sketchpad, [label, seen], api_visibility="private",
                        trigger_mode="always_last", show_progress="hidden")

        def clear():
            """A fresh page, and no answer."""
            return blank_paper(), None, None

        # The canvas's trash button empties it to no value at all, which Gradio shows as "select the draw tool
        # to start": the white page is put back, without a progress veil over the canvas.
        sketchpad.clear(clear, None, [sketchpad, label, seen], api_visibility="private", show_progress="hidden")

        upload.upload(reader.read_file, upload, [label, seen_state], api_name="predict",
                      api_description="The digit in one image file: {'label': '9', 'confidences': [the top 3]}").success(
            lambda image: image, seen_state, seen, api_visibility="private")
    return page


async def client_gone(request, error):
    """The answer to a request whose client left before sending all of it (a canvas upload that the page cancels
    for the next stroke's, a closed tab): nobody to answer, nothing wrong here, so no traceback in the log."""
    return Response(status_code=499)  # nginx's "client closed request"


def fewer_malloc_arenas():
    """Let glibc's malloc keep 2 arenas rather than up to 8 a core: with one for each of Gradio's threads, freed
    memory is spread over half-empty arenas and the server grows by some 10 MiB every 1,000 requests (BENCHMARKS.md)."""
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc: its own allocator
        pass


def main(argv=None):
    args = parser.parse_args(argv)
    fewer_malloc_arenas()
    try:
        device, description = lenet.choose_device(args.device)
        print(f"device {description}")
        reader = DigitReader(lenet.load_model(args.model_dir, device), device)
    except lenet.InputError as e:
        sys.exit(f"error: {e}")
    page = build_page(reader)
    try:
        # prevent_thread_lock: launch() returns once the server answers, so that the URL is printed only then.
        # max_file_size: a phone's photo is a few MB; bigger uploads are refused before anything reads them.
        page.launch(server_name=args.host, server_port=args.port, share=False, quiet=True, prevent_thread_lock=True,
                    max_file_size="20mb", state_session_capacity=SESSIONS_KEPT,
                    app_kwargs={"exception_handlers": {ClientDisconnect: client_gone}})
    except OSError:  # Gradio's "Cannot find empty port", for any failure to bind (uvicorn has printed which)
        sys.exit(f"error: cannot serve on {args.host}:{args.port}: the port is taken or the address is not "
                 f"this machine's (use --port or --host)")
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C stops)", flush=True)
    page.block_thread()  # until Ctrl+C


if __name__ == "__main__":
    main()
