"""lenet_app.py: its reader in this process, the server as `make app` starts it, its /predict API, and the page in
headless Chromium (Debian's chromium and chromium-driver, which .ci/run installs).

The server serves the model trained on the fixture (the session's `trained`), on a free port, for the whole module,
with PYTHONFAULTHANDLER=1; every test that uses it checks before and after that it is still alive, and a dead server
fails the test with its exit status or signal and its stderr. Every wait is for a state (a line printed, an element
shown), bounded by a generous deadline for a busy machine.

    APP_SCREENSHOT=docs/app.png .venv/bin/python -m pytest -q tests/test_lenet_app.py -k mouse    # remakes docs/app.png
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

import digit_image
import lenet
from conftest import CLEAN_ENV, ROOT, fixture_arrays, left, numpy_probabilities, numpy_weights, run

sys.path.insert(0, str(ROOT / "benchmarks"))
import app_soak  # noqa: E402  (the soak benchmark's clients; it also sets GRADIO_ANALYTICS_ENABLED=False)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DEADLINE = 180  # seconds for any one state to come: the server's start, a page's answer


# ---------------------------------------------------------------------------------------------
# Expected answers, computed with NumPy alone from the saved weights

@pytest.fixture(scope="module")
def reference(trained):
    """probabilities(image (1, 28, 28)) -> (10,): the softmax of a NumPy forward pass (conftest.numpy_probabilities)
    of the trained model's weights as OneFlow's flow.load reads them."""
    folder, _ = trained
    weights = numpy_weights(folder / "lenet_models_1")
    return lambda image: numpy_probabilities(image[None], weights)[0]


def mnist_digit(digit):
    """The fixture's first test digit of that class, as MNIST stores it: (28, 28) uint8, white on black."""
    raw = fixture_arrays()
    return raw["x_test"][int(np.flatnonzero(raw["y_test"] == digit)[0])]


def digit_pngs(tmp_path):
    """Write mnist_digit(d) for each digit d as a 28x28 PNG; return {digit: path}."""
    paths = {}
    for digit in range(10):
        paths[digit] = tmp_path / f"{digit}.png"
        Image.fromarray(mnist_digit(digit)).save(paths[digit])
    return paths


def as_the_tutorial_reads(digit):
    """mnist_digit(digit) as the network is given it, by the tutorial's definition and not digit_image's code:
    (1, 28, 28), pixel / 255. An MNIST digit is already what the preprocessing makes of any image."""
    return mnist_digit(digit)[None] / 255.0


def transparent_png(path, target):
    """Write the digit of a white-on-black PNG as dark ink on transparent paper, 4 times larger, as drawing apps do."""
    ink = np.asarray(Image.open(path).convert("L"))
    rgba = np.zeros(ink.shape + (4,), np.uint8)
    rgba[..., 3] = ink  # black everywhere, opaque only where the ink is
    Image.fromarray(rgba, "RGBA").resize((112, 112), Image.Resampling.LANCZOS).save(target)
    return target


# ---------------------------------------------------------------------------------------------
# The reader, in this process

@pytest.fixture(scope="module")
def lenet_app():
    import lenet_app  # imports gradio, a few seconds: only for the tests that need it
    return lenet_app


def test_one_graph_is_built_at_start_and_serves_every_request(trained, lenet_app, monkeypatch, tmp_path):
    built = []

    class CountingGraph(lenet.EvalGraph):
        def build(self, images):
            built.append(tuple(images.shape))  # build runs once per graph, when it is compiled
            return super().build(images)

    monkeypatch.setattr(lenet, "EvalGraph", CountingGraph)
    folder, _ = trained
    device = lenet.flow.device("cpu")
    reader = lenet_app.DigitReader(lenet.load_model(folder / "lenet_models_1", device), device)
    assert built == [(1, 1, 28, 28)]  # compiled before any request
    for path in digit_pngs(tmp_path).values():
        label, seen = reader.read_file(str(path))
        assert len(label) == 10 and abs(sum(label.values()) - 1) < 1e-6
        assert seen.shape == (280, 280) and seen.dtype == np.uint8
    assert built == [(1, 1, 28, 28)]


def test_a_drawing_is_read_as_dark_ink_on_white_paper(trained, lenet_app, reference, tmp_path):
    folder, _ = trained
    device = lenet.flow.device("cpu")
    reader = lenet_app.DigitReader(lenet.load_model(folder / "lenet_models_1", device), device)
    # The Sketchpad's composite: black strokes, transparent where nothing was drawn (no background loaded yet).
    strokes = Image.open(transparent_png(digit_pngs(tmp_path)[7], tmp_path / "7-rgba.png"))
    label, seen = reader.read_drawing({"background": None, "layers": [strokes], "composite": strokes})
    expected = reference(digit_image.load_image(tmp_path / "7-rgba.png"))
    assert np.allclose([label[str(d)] for d in range(10)], expected, atol=1e-5)
    assert np.array_equal(seen[::10, ::10], np.round(digit_image.load_image(tmp_path / "7-rgba.png")[0] * 255))

    # No digit yet (a fresh or cleared canvas, a blank page): no answer rather than an error, as the page reads
    # after every stroke.
    assert reader.read_drawing(None) == (None, None)
    white = Image.new("RGBA", (280, 280), "white")
    assert reader.read_drawing({"background": white, "layers": [], "composite": white}) == (None, None)


def test_the_canvas_is_read_after_every_stroke_and_only_the_last_of_rapid_strokes_waits(trained, lenet_app):
    folder, _ = trained
    device = lenet.flow.device("cpu")
    page = lenet_app.build_page(lenet_app.DigitReader(lenet.load_model(folder / "lenet_models_1", device), device))
    sketchpad = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "drawing")
    readings = [event for event in page.fns.values() if (sketchpad._id, "input") in event.targets]
    assert len(readings) == 1  # a stroke made by the user (not a value the page sets) is read, with no button
    # Strokes made while a reading is under way make one reading more once it ends, of the canvas as it is then.
    assert readings[0].trigger_mode == "always_last"
    assert not [block for block in page.blocks.values() if type(block).__name__ == "Button"]


# ---------------------------------------------------------------------------------------------
# The server, as a user starts it

def free_port():
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(process, stdout_path, stderr_path, prefix, unless=None):
    """The first line of the process's stdout that starts with prefix, once printed; fails if the process ends first,
    or returns None if it ended with a line of stderr that starts with unless."""
    start, seconds = time.monotonic(), left(DEADLINE)
    while time.monotonic() - start < seconds:
        for line in stdout_path.read_text().splitlines():
            if line.startswith(prefix):
                return line
        if process.poll() is not None:
            if unless and any(line.startswith(unless) for line in stderr_path.read_text().splitlines()):
                return None
            pytest.fail(f"lenet_app.py ended ({process.returncode}) before printing {prefix!r}:\n"
                        f"{stdout_path.read_text()}\n{stderr_path.read_text()}")
        time.sleep(0.05)  # between looks at the file: the wait is for the line
    pytest.fail(f"lenet_app.py printed no {prefix!r} line in {seconds:.0f} s:\n{stderr_path.read_text()}")


LOGGED = {"test": "the server's start", "length": 0}  # the last test to end, and the length of the stderr by then


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """lenet_app.py serving the trained model, started as `make app` starts it: (process, URL, folder of its stdout
    and stderr). Ended after the module; no request, good or bad, may have raised in it."""
    folder, process = trained[0], None
    try:  # from the first start on: whatever fails, the server is ended
        for attempt in range(5):  # a free port is only free when asked: another run of the tests may take it first
            logs = tmp_path_factory.mktemp("app")
            port = free_port()
            with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
                # GRADIO_TEMP_DIR: the uploads Gradio keeps go to the test's folder, not the system's /tmp.
                process = subprocess.Popen([sys.executable, str(ROOT / "lenet_app.py"), "--port", str(port)],
                                           cwd=folder, env={**CLEAN_ENV, "PYTHONFAULTHANDLER": "1",
                                                            "GRADIO_TEMP_DIR": str(logs / "uploads")},
                                           stdout=stdout, stderr=stderr, start_new_session=True)
            clash = f"error: cannot serve on 127.0.0.1:{port}: the port is taken"
            if wait_for_line(process, logs / "stdout", logs / "stderr", "serving on ", unless=clash):
                break
        start = time.monotonic()
        line = wait_for_line(process, logs / "stdout", logs / "stderr", "serving on ")
        print(f"lenet_app.py served after {time.monotonic() - start:.1f} s")  # shown by pytest -s
        assert line == f"serving on http://127.0.0.1:{port} (Ctrl+C stops)"
        assert (logs / "stdout").read_text().splitlines()[0].startswith("device cpu (")  # with this machine's reason
        LOGGED.update(test="the server's start", length=len((logs / "stderr").read_text()))
        yield process, f"http://127.0.0.1:{port}/", logs
        assert_alive((process, None, logs), f"after {LOGGED['test']} had ended")
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=left(DEADLINE))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    late = (logs / "stderr").read_text()[LOGGED["length"]:]  # up to its end (SIGTERM)
    assert "Traceback" not in late, f"lenet_app.py logged this after {LOGGED['test']} had ended:\n{late}"


def assert_alive(server, when):
    """Fail with how the server ended, when (words), and its stderr if it is no longer running."""
    process, _, logs = server
    status = process.poll()
    if status is not None:
        how = f"been killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
        pytest.fail(f"lenet_app.py has {how} {when}; its stderr:\n{(logs / 'stderr').read_text()}")


@pytest.fixture
def app(server, request):
    """The server's URL. Before the test and after it the server is checked alive, and what it logged meanwhile free
    of tracebacks: whatever came after the previous test (a late line, the server's end) is that test's, and says so."""
    stderr = server[2] / "stderr"
    logged = stderr.read_text()
    late, begun, LOGGED["length"] = logged[LOGGED["length"]:], len(logged), len(logged)  # each line told once
    assert "Traceback" not in late, f"lenet_app.py logged this after {LOGGED['test']} had ended:\n{late}"
    assert_alive(server, f"after {LOGGED['test']} had ended")
    yield server[1]
    LOGGED.update(test=request.node.name, length=len(stderr.read_text()))
    during = stderr.read_text()[begun:LOGGED["length"]]
    assert "Traceback" not in during, f"lenet_app.py logged this during the test:\n{during}"
    assert_alive(server, "during the test")


@pytest.fixture(scope="module")
def clients():
    """{URL: gradio_client.Client}, made once per module, when a test first asks (after its check of the server),
    and closed after the module."""
    made = {}
    yield made
    for client in made.values():
        client.close()


@pytest.fixture
def client(app, clients):
    """A gradio_client.Client of the server, which is checked alive before the test and after it."""
    from gradio_client import Client
    if app not in clients:
        clients[app] = Client(app, verbose=False, httpx_kwargs={"timeout": left(DEADLINE)})  # its default: 5 s a call
    return clients[app]


def test_predict_api_reads_pngs_as_lenet_test_does(client, reference, tmp_path):
    from gradio_client import handle_file
    pngs = digit_pngs(tmp_path)
    # Each digit as MNIST stores it, against the tutorial's reading of it; and one as dark ink on transparent paper
    # (which an RGB conversion would blacken), 4 times larger, against digit_image's own reading.
    transparent = transparent_png(pngs[3], tmp_path / "3-transparent.png")
    inputs = [(path, as_the_tutorial_reads(digit)) for digit, path in pngs.items()]
    for path, seen in [*inputs, (transparent, digit_image.load_image(transparent))]:
        answer = client.predict(handle_file(path), api_name="/predict")
        expected = reference(seen)
        top3 = np.argsort(-expected, kind="stable")[:3]
        assert answer["label"] == str(top3[0])
        assert [c["label"] for c in answer["confidences"]] == [str(d) for d in top3]
        assert np.allclose([c["confidence"] for c in answer["confidences"]], expected[top3], atol=1e-4)
        assert answer["label"] == path.name[0]  # each digit read as itself (the file's name begins with it)


def test_an_image_with_no_digit_gets_the_one_line_message_and_the_server_goes_on(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    Image.new("L", (64, 48), 255).save(tmp_path / "blank page.png")
    with pytest.raises(AppError) as error:
        client.predict(handle_file(tmp_path / "blank page.png"), api_name="/predict")
    # Named as the user named it, not by Gradio's temporary copy.
    assert str(error.value) == ("blank page.png: no digit found (the image is blank: ink and paper differ by "
                                "0 grey levels, noise 0)")
    assert client.predict(handle_file(digit_pngs(tmp_path)[1]), api_name="/predict")["label"] == "1"


def test_twenty_requests_at_once_are_all_answered(app, reference, tmp_path):
    from gradio_client import Client, handle_file
    pngs = digit_pngs(tmp_path)
    # A Client for each request, as 20 visitors have: one Client shared by 20 requests at once loses about 1 request
    # in 400 (CancelledError) of its own, whatever the server.
    clients = [Client(app, verbose=False, httpx_kwargs={"timeout": left(DEADLINE)}) for _ in range(20)]
    try:
        jobs = [(digit, client.submit(handle_file(pngs[digit]), api_name="/predict"))
                for digit, client in zip(list(range(10)) * 2, clients)]
        answers = [(digit, job.result(timeout=left(DEADLINE))["label"]) for digit, job in jobs]
    finally:
        for client in clients:
            client.close()
    expected = {digit: str(reference(as_the_tutorial_reads(digit)).argmax()) for digit in range(10)}
    assert expected == {digit: str(digit) for digit in range(10)}  # each digit is read as itself
    assert answers == [(digit, expected[digit]) for digit, _ in jobs]


def test_four_hundred_requests_twenty_at_once_leave_the_server_up(server, app, reference, tmp_path):
    # 400 graph runs of one image each, 20 at once: the server stays up and answers each with its digit. That the
    # graph fix keeps thousands of short runs safe is test_oneflow_graph_fix.py's (without it an idle machine's
    # server died after some hundreds); benchmarks/app_soak.py soaks 3 rounds of 10,000 (BENCHMARKS.md).
    pngs = digit_pngs(tmp_path)
    files = [*pngs.values(), *(transparent_png(path, tmp_path / f"{digit}-ink.png") for digit, path in pngs.items())]
    expected = {path: path.name[0] for path in files}  # each digit read as itself, however it is drawn
    result = app_soak.soak(app, files, expected, requests=400, clients=20, process=server[0])
    assert_alive(server, "during the 400 requests")
    assert result["errors"] == [] and result["wrong"] == []
    assert len(result["latencies"]) == 400


def test_an_upload_its_client_leaves_midway_logs_no_traceback(server, client, tmp_path):
    # As the page does when a stroke's canvas upload is cancelled for the next one's, or a tab is closed.
    port = int(server[1].rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=left(DEADLINE)) as connection:
        connection.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                           b"Content-Type: multipart/form-data; boundary=cut\r\n\r\n--cut\r\nContent-Disposition: "
                           b"form-data; name=\"files\"; filename=\"7.png\"\r\n\r\n\x89PNG")
    from gradio_client import handle_file
    # The server still answers, and the request it read half of left nothing in its log.
    assert client.predict(handle_file(digit_pngs(tmp_path)[7]), api_name="/predict")["label"] == "7"
    assert "Traceback" not in (server[2] / "stderr").read_text()


def test_without_a_model_it_exits_before_serving(tmp_path):
    # A server started by mistake would be ended after DEADLINE seconds, and fail the test.
    result = run([sys.executable, ROOT / "lenet_app.py", "--port", free_port()], cwd=tmp_path, timeout=left(DEADLINE))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: no model at ./lenet_models_1 (run lenet_train.py first)"
    assert "serving" not in result.stdout and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# The page, in headless Chromium

needs_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"no {CHROMIUM} or {CHROMEDRIVER}: apt-get install chromium chromium-driver (.ci/run does)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through chromedriver, both Debian's: Selenium downloads nothing when given their paths."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No GPU, no sandbox (CI runs as root), and none of Chromium's own connections, which a closed network refuses.
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1200,800"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_UPLOADS})
    yield driver
    driver.quit()


# Run in every page before its own scripts: window.uploads counts the page's uploads to the server under way (the
# page sends a file, and the canvas its drawing, to /upload before the event that reads it), by fetch or by XHR.
COUNT_UPLOADS = """
window.uploads = 0;
const isUpload = (url) => String(url).includes("/upload");
const originalFetch = window.fetch;
window.fetch = function (input, init) {
    if (!isUpload(typeof input === "string" ? input : input.url)) return originalFetch.apply(this, arguments);
    window.uploads++;
    return originalFetch.apply(this, arguments).finally(() => window.uploads--);
};
const originalOpen = XMLHttpRequest.prototype.open, originalSend = XMLHttpRequest.prototype.send;
XMLHttpRequest.prototype.open = function (method, url) {
    this.isUpload = isUpload(url);
    return originalOpen.apply(this, arguments);
};
XMLHttpRequest.prototype.send = function () {
    if (this.isUpload) {
        window.uploads++;
        this.addEventListener("loadend", () => window.uploads--);
    }
    return originalSend.apply(this, arguments);
};
"""


def wait(browser, condition):
    """condition(browser)'s first truthy value, waited for."""
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, left(DEADLINE), poll_frequency=0.05).until(condition)


def element_state(browser, script):
    """A condition for wait(): the value of a JavaScript expression on the page."""
    return lambda _: browser.execute_script(f"return {script}")


def ready_to_draw(browser):
    """A condition for wait(): the canvas holds its white page and the brush is in hand."""
    # The white page is the first entry of the canvas's history (Undo enabled); the brush's size button shows
    # only while the draw tool is picked. Strokes drawn before the page is in would be wiped by it.
    return element_state(browser, """(() => {
        const undo = document.querySelector('#drawing button[aria-label="Undo"]');
        return !!undo && !undo.disabled && !!document.querySelector('#drawing button[aria-label="Brush Size"]'); })()""")


@pytest.fixture
def page(browser, app):
    """The page freshly opened, its canvas ready to draw on, no tool to pick first. After the test, the page's
    uploads under way are waited for: leaving the page cuts them, which the server logs as a traceback."""
    browser.get(app)
    wait(browser, ready_to_draw(browser))
    assert "select the draw tool" not in browser.find_element("id", "drawing").text
    yield browser
    wait(browser, element_state(browser, "window.uploads === 0"))


STROKES = {  # mouse strokes, points in fractions of the paper's side from its top left corner
    1: [[(0.55, 0.15), (0.5, 0.85)]],
    7: [[(0.22, 0.2), (0.78, 0.2), (0.42, 0.85)]],
    "bar": [[(0.2, 0.15), (0.56, 0.15)]],  # across the top of the 1, to its left: a 7
}


def draw(browser, *shapes):
    """Draw the shapes of STROKES on the canvas with the mouse, each stroke pressed, moved along and released."""
    from selenium.webdriver.common.action_chains import ActionChains
    canvas = browser.find_element("css selector", "#drawing canvas")
    # The paper (280 pixels, zoomed to fit) sits in the middle of the canvas element; 0.7 of the element's
    # shorter side stays within it.
    side = 0.7 * min(canvas.size["width"], canvas.size["height"])
    for stroke in (stroke for shape in shapes for stroke in STROKES[shape]):
        x, y = [round((f - 0.5) * side) for f in stroke[0]]
        actions = ActionChains(browser).move_to_element_with_offset(canvas, x, y).click_and_hold()
        for fx, fy in stroke[1:]:
            next_x, next_y = round((fx - 0.5) * side), round((fy - 0.5) * side)
            actions.move_by_offset(next_x - x, next_y - y)
            x, y = next_x, next_y
        actions.release().perform()


def answer(browser):
    """The digit the page shows, once it shows one; fails at once if the page shows an error message instead."""
    label, message = wait(browser, element_state(browser, """(() => {
        const label = document.querySelector('#label [data-testid=label-output-value]')?.innerText;
        const message = document.querySelector('[data-testid=toast-body]')?.innerText;  // title and message
        return (label || message) ? [label, message] : null; })()"""))
    assert not message, f"the page says: {message}"
    return label


def seen_image(browser):
    """The 28x28 image the page shows (each pixel a 10x10 square), as float32 (1, 28, 28) in [0, 1]."""
    url = wait(browser, element_state(browser, "document.querySelector('#seen img')?.src"))
    with urllib.request.urlopen(url, timeout=left(DEADLINE)) as response:
        shown = np.asarray(Image.open(BytesIO(response.read())).convert("L"), np.float32)
    assert shown.shape == (280, 280)
    return (shown[::10, ::10] / 255)[None]


@needs_chromium
def test_reads_a_digit_drawn_with_the_mouse_with_no_button_to_press(page, reference, tmp_path):
    draw(page, 7)  # the pen lifted is all it takes
    shown = answer(page)
    assert shown == str(reference(seen_image(page)).argmax())  # the network's answer for the image shown
    assert shown == "7"  # as a reader would read it; so does the fixture model
    page.save_screenshot(tmp_path / "app.png")
    if os.environ.get("APP_SCREENSHOT"):
        shutil.copy(tmp_path / "app.png", os.environ["APP_SCREENSHOT"])


@needs_chromium
def test_the_answer_follows_the_pen(page):
    draw(page, 1)
    assert answer(page) == "1"  # as a reader would read it; so does the fixture model
    draw(page, "bar")  # a bar across the top makes the 1 a 7
    wait(page, lambda browser: answer(browser) == "7")


@needs_chromium
def test_strokes_drawn_back_to_back_end_on_the_answer_for_the_whole_drawing(page):
    draw(page, 1, "bar")  # the second stroke comes while the first is being read
    wait(page, lambda browser: answer(browser) == "7")


@needs_chromium
def test_the_trash_button_gives_a_fresh_page_to_draw_on(page):
    draw(page, 1)
    assert answer(page) == "1"
    page.find_element("css selector", '#drawing button[aria-label="Clear canvas"]').click()
    wait(page, lambda browser: not browser.find_elements("css selector", "#label [data-testid=label-output-value]"))
    wait(page, ready_to_draw(page))
    assert "select the draw tool" not in page.find_element("id", "drawing").text
    draw(page, 7)
    assert answer(page) == "7"  # the 1 is gone: a 7 over a 1 reads otherwise


@needs_chromium
def test_uploads_a_png_and_reads_it(page, reference, tmp_path):
    path = transparent_png(digit_pngs(tmp_path)[3], tmp_path / "three.png")
    page.find_element("xpath", "//button[@role='tab' and contains(., 'Upload')]").click()
    wait(page, lambda browser: browser.find_element("css selector", "#upload input[type=file]")).send_keys(str(path))
    expected = digit_image.load_image(path)
    assert answer(page) == str(reference(expected).argmax())
    assert np.allclose(seen_image(page), expected, atol=0.5 / 255)


# The page run as a user runs it, with no GRADIO_ANALYTICS_ENABLED of theirs (the tests' own is taken out first): its
# launch() is replaced with one that reports what it was asked for.
OFFLINE = """
import json, os, sys
os.environ.pop("GRADIO_ANALYTICS_ENABLED", None)
sys.path.insert(0, sys.argv[1])
sys.argv[0] = "lenet_app.py"
import lenet_app  # sets the variable before it imports gradio, which reads it then
import gradio

def launch(self, **kwargs):
    print(json.dumps({"page's analytics": self.analytics_enabled,
                      "gradio's analytics": gradio.analytics.analytics_enabled(),
                      "share": kwargs.get("share", "unset")}))
    sys.exit(0)

gradio.Blocks.launch = launch
lenet_app.main(["--model-dir", sys.argv[2]])
"""


def test_the_page_runs_offline_with_no_analytics_and_no_share_link(trained, tmp_path):
    folder, _ = trained
    result = run([sys.executable, "-c", OFFLINE, ROOT, folder / "lenet_models_1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"page's analytics": False, "gradio's analytics": False,
                                                          "share": False}
