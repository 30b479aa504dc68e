"""The web page under load, as `make app` serves it: requests/s, latency, memory, errors and deaths.

    .venv/bin/python benchmarks/app_soak.py                        # 3 rounds of 10,000 requests at 20 at once; about 25 minutes
    .venv/bin/python benchmarks/app_soak.py --rounds 1 --requests 2000

Each round starts lenet_app.py afresh on a model trained here (one epoch of --data-dir), with PYTHONFAULTHANDLER=1,
and asks its /predict API: first 300 requests one at a time, then --requests from 20 clients at once. The clients
use Gradio's REST API (upload the file, call /predict, read the answer's event stream), each on an HTTP connection
of its own: gradio_client costs some 80 ms of CPU a request here, three times the server's, and would measure
itself. Every answer is checked against the digit lenet_test.py reads in the same file. The server's resident
memory is read after 1,000 and after all of the requests at 20 at once; a server that dies ends the round.

Prints a Markdown table and writes it into BENCHMARKS.md between its app-soak markers.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import cpu_model, one_epoch_model, publish

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # gradio_client's telemetry is on unless this says "False"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MARK_START, MARK_END = "<!-- app-soak:start -->", "<!-- app-soak:end -->"
DEADLINE = 180  # seconds for the server to start, and for any one answer

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data-dir", default=str(REPO / "data/mnist-5k"),
                    help="folder of the mnist.npz to train the model on and take the digits from (default: data/mnist-5k)")
parser.add_argument("--rounds", type=int, default=3, help="rounds, each with a fresh server (default: 3)")
parser.add_argument("--requests", type=int, default=10_000, help="requests at 20 at once per round (default: 10000)")
parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="Markdown file to write the table into (default: BENCHMARKS.md)")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model_dir, logs):
    """Start lenet_app.py on model_dir as `make app` does; return (process, its URL) once it serves.

    Its stdout and stderr go to logs/stdout and logs/stderr; a server that ends before it serves raises RuntimeError.
    """
    port = free_port()
    with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
        process = subprocess.Popen([sys.executable, str(REPO / "lenet_app.py"), "--model-dir", str(model_dir),
                                    "--port", str(port)], env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                                   stdout=stdout, stderr=stderr, start_new_session=True)
    start = time.monotonic()
    while not (logs / "stdout").read_text().count("serving on "):
        if process.poll() is not None or time.monotonic() - start > DEADLINE:
            process.kill()
            raise RuntimeError(f"lenet_app.py did not serve ({process.poll()}):\n{(logs / 'stderr').read_text()}")
        time.sleep(0.1)  # between looks at its output
    return process, f"http://127.0.0.1:{port}/"


def ended(process):
    """None while process runs, else how it ended: "exit N" or the signal's name."""
    status = process.poll()
    if status is None:
        return None
    return f"signal {-status}" if status < 0 else f"exit {status}"


def resident_mib(pid):
    """The resident memory of process pid, in MiB (Linux's /proc)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def ask(http, url, path):
    """The label lenet_app.py's /predict gives the image file at path, asked with the httpx.Client http through
    Gradio's REST API: upload the file, call /predict, read the answer from the call's event stream."""
    with open(path, "rb") as f:
        uploaded = http.post(f"{url}gradio_api/upload", files={"files": (Path(path).name, f)}).raise_for_status().json()
    data = {"data": [{"path": uploaded[0], "meta": {"_type": "gradio.FileData"}}]}
    event_id = http.post(f"{url}gradio_api/call/predict", json=data).raise_for_status().json()["event_id"]
    with http.stream("GET", f"{url}gradio_api/call/predict/{event_id}") as response:
        lines = list(response.raise_for_status().iter_lines())
    # "event: complete" then "data: [the label's value, the State's]", or "event: error" then "data: message"
    events = [line.split(": ", 1) for line in lines if line.startswith(("event: ", "data: "))]
    if ["event", "complete"] not in events:
        raise RuntimeError(f"no answer: {' '.join(lines)}")
    return json.loads(events[events.index(["event", "complete"]) + 1][1])[0]["label"]


def soak(url, files, expected, requests, clients, process=None, every=None, on_every=None):
    """Send requests /predict calls for files (cycled) from clients threads, each on a connection of its own.

    Returns dict(seconds, latencies (s, in order of completion), errors [(file, message)], wrong [(file, answer)]):
    an answer is wrong where its label is not expected[file]. Stops early when process (the server) has ended.
    on_every(count) is called by the thread that completes every every-th request.
    """
    import httpx
    results = dict(latencies=[], errors=[], wrong=[])
    lock, counter = threading.Lock(), iter(range(requests))

    def work():
        with httpx.Client(timeout=DEADLINE) as http:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None or (process is not None and process.poll() is not None):
                    return
                path = files[n % len(files)]
                start = time.perf_counter()
                try:
                    label = ask(http, url, path)
                except Exception as e:  # noqa: BLE001: every failure is counted, and named in the table
                    label, error = None, f"{type(e).__name__}: {e}"
                latency = time.perf_counter() - start
                with lock:
                    results["latencies"].append(latency)
                    if label is None:
                        results["errors"].append((path, error))
                    elif label != expected[path]:
                        results["wrong"].append((path, label))
                    done = len(results["latencies"])
                if every and on_every and done % every == 0:
                    on_every(done)

    start = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results["seconds"] = time.perf_counter() - start
    return results


def digit_files(npz_path, folder, count=200):
    """Write count test digits as PNGs, half as MNIST stores them and half as dark ink on white paper; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(npz_path) as npz:
        pixels = npz["x_test"][:count]
    paths = []
    for i, image in enumerate(pixels):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(image if i % 2 == 0 else 255 - image).save(paths[-1])
    return paths


def lenet_test_answers(model_dir, paths):
    """{path: digit} as lenet_test.py reads each file."""
    out = subprocess.run([sys.executable, str(REPO / "lenet_test.py"), "--model-dir", str(model_dir), *map(str, paths)],
                         capture_output=True, text=True, check=True).stdout
    answers = {}
    for line in out.splitlines():
        if ": prediction: " in line:
            name, rest = line.split(": prediction: ")
            answers[Path(name)] = rest.split()[0]
    return answers


def milliseconds(latencies, q):
    """The q-quantile (0.5, 0.99) of latencies (s), in ms."""
    return 1000 * float(np.quantile(latencies, q))


def main():
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "lenet_models_1"
        one_epoch_model(data_dir, model_dir)
        files = digit_files(data_dir / "mnist.npz", tmp / "digits")
        expected = lenet_test_answers(model_dir, files)
        for round_ in range(args.rounds):
            logs = tmp / f"round{round_}"
            logs.mkdir()
            process, url = start_app(model_dir, logs)
            try:
                one = soak(url, files, expected, 300, 1, process)
                memory = {}
                twenty = soak(url, files, expected, args.requests, 20, process, every=1000,
                              on_every=lambda done: memory.setdefault(done, resident_mib(process.pid)))
                death = ended(process)
                final = resident_mib(process.pid) if death is None else None
            finally:
                process.terminate()
                process.wait(timeout=DEADLINE)
            if death:
                print(f"the server died ({death}):\n{(logs / 'stderr').read_text()}", file=sys.stderr)
            first = memory.get(1000)
            rows.append([round_ + 1,
                         f"{len(one['latencies']) / one['seconds']:.1f}", f"{milliseconds(one['latencies'], 0.5):.0f}",
                         f"{milliseconds(one['latencies'], 0.99):.0f}",
                         f"{len(twenty['latencies']):,}", f"{len(twenty['latencies']) / twenty['seconds']:.1f}",
                         f"{milliseconds(twenty['latencies'], 0.5):.0f}", f"{milliseconds(twenty['latencies'], 0.99):.0f}",
                         f"{first:.0f}" if first else "-", f"{final:.0f}" if final else "-",
                         f"{final - first:+.0f}" if first and final else "-",
                         len(one["errors"]) + len(twenty["errors"]), len(one["wrong"]) + len(twenty["wrong"]),
                         death or "0"])
            for path, message in (one["errors"] + twenty["errors"])[:5]:
                print(f"error: {path.name}: {message}", file=sys.stderr)
            print(f"round {round_ + 1} of {args.rounds}: {rows[-1]}", file=sys.stderr)
    load_after = os.getloadavg()
    lines = ["| round | 1 client: requests/s | p50 ms | p99 ms | 20 clients: requests | requests/s | p50 ms | p99 ms "
             "| server MiB after 1,000 | after all | growth | errors | wrong answers | server deaths |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {' | '.join(map(str, row))} |" for row in rows]
    publish(args.output, MARK_START, MARK_END,
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu_model()}, {os.cpu_count()} cores; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after. 300 requests from 1 client, then "
        f"{args.requests:,} from 20 at once, per round; each round a fresh server; {len(files)} different PNGs.",
            lines)


if __name__ == "__main__":
    main()
