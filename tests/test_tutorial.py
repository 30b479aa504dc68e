"""docs/tutorial.md, and the commands the README and docs/export.md show, checked against the code they quote and
against what the commands print.

A fenced block whose line above names a file (`lenet.py`) is an excerpt of it: its lines must stand in that file
as they are, in order (a line `...` leaves lines out). A block under `<!-- run -->` runs in a copy of the clone on
data/mnist-5k: a text block's `$ ` lines are commands, the lines after each what it prints; a Python block is run
with .venv/bin/python, and the text block after it is what it prints. Every Python block of the tutorial is one
or the other.
"""
import math
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, run

TUTORIAL = ROOT / "docs" / "tutorial.md"
RUN_PAGES = [TUTORIAL, ROOT / "README.md", ROOT / "docs" / "export.md"]
RUN = "<!-- run -->"


def blocks(page):
    """[(label, lang, lines)]: each fenced block of page, with the last non-blank line above it."""
    found, label, lines = [], "", page.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            end = lines.index("```", i + 1)
            found.append((label, lines[i][3:], lines[i + 1:end]))
            label, i = "", end + 1
            continue
        if lines[i].strip():
            label = lines[i].strip()
        i += 1
    return found


def excerpts():
    """[(file, lines)]: the tutorial's excerpts."""
    return [(label, lines) for label, lang, lines in blocks(TUTORIAL) if re.fullmatch(r"[\w/]+\.py", label)]


def stands_in(lines, text):
    """Whether lines stand in text in order, each run between `...` lines as consecutive whole lines."""
    parts, part = [], []
    for line in lines:
        if line.strip() == "...":
            parts.append(part)
            part = []
        else:
            part.append(line)
    parts.append(part)
    rest = text.splitlines()
    for part in parts:
        at = next((i for i in range(len(rest) - len(part) + 1) if rest[i:i + len(part)] == part), None)
        if at is None:
            return False
        rest = rest[at + len(part):]
    return True


def sessions(page):
    """[(command, expected lines)] of page's run blocks, in order; a Python block's command is ("python", code)."""
    found, pending = [], None
    for label, lang, lines in blocks(page):
        if pending is not None:  # the output of the Python block above
            assert lang == "text", f"{page.name}: a run Python block must be followed by its output"
            found.append((("python", "\n".join(pending)), lines))
            pending = None
        elif label == RUN and lang == "python":
            pending = lines
        elif label == RUN:
            for line in lines:
                if line.startswith("$ "):
                    found.append((line[2:].split("  #")[0].strip(), []))
                else:
                    found[-1][1].append(line)
    return found


NUMBER = re.compile(r"\d+(?:\.\d+)?e[-+]\d+|\d+\.\d+%?|\d+")


def masked(line):
    """line with what differs from machine to machine by design masked: the device's reason (the tests run on the
    CPU) and the speed."""
    line = re.sub(r"^device (\S+) \(.*\)$", r"device \1 (...)", line)
    return re.sub(r"images/s \d+", "images/s N", line)


def same_line(expected, actual):
    """Whether actual is the expected line but for the rounding of another CPU: the text and every whole number
    equal, percentages within 1.5 points, other decimals within 10% + 0.01 (a model trained for 5 epochs on another
    CPU's rounding goes its own way, as another seed does; 95.6-96.2% was seen), a rounding error such as 3.8e-06
    within a factor of 10."""
    expected, actual = masked(expected), masked(actual)
    if NUMBER.split(expected) != NUMBER.split(actual):
        return False
    for e, a in zip(NUMBER.findall(expected), NUMBER.findall(actual)):
        if "e" in e:  # a rounding error, as 3.8e-06: of the same order
            if "e" not in a or not 0.1 <= float(a) / float(e) <= 10:
                return False
        elif "." not in e:
            if e != a:
                return False
        elif e.endswith("%") != a.endswith("%"):
            return False
        elif e.endswith("%"):
            if not abs(float(e[:-1]) - float(a[:-1])) <= 1.5:
                return False
        elif not math.isclose(float(e), float(a), rel_tol=0.1, abs_tol=0.01):
            return False
    return True


def same_output(expected, actual):
    """Whether actual lines are the expected ones, each by same_line, where a line `...` stands for any lines."""
    if not expected or expected[0] == "...":
        if not expected:
            return not actual
        return any(same_output(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and same_line(expected[0], actual[0]) and same_output(expected[1:], actual[1:])


class Clones:
    """Copies of the clone (its tracked files, and .venv linked) in which commands run, each command once: a
    sequence of commands already run is not run again, so that pages that show the same commands share them."""

    def __init__(self, folder):
        self.folder, self.histories, self.outputs = folder, [], {}

    def clone(self):
        target = self.folder / f"clone{len(self.histories)}"
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        for name in files.decode().split("\0"):
            if name and (ROOT / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
        (target / ".venv").symlink_to(ROOT / ".venv" if (ROOT / ".venv").is_dir() else sys.prefix)
        self.histories.append((target, []))
        return self.histories[-1]

    def output(self, commands):
        """The stdout and stderr lines of the last of commands, run in a clone after the ones before it."""
        commands = tuple(commands)
        if commands not in self.outputs:
            clone = next((clone for clone in self.histories if tuple(clone[1]) == commands[:-1]), None)
            if clone is None:  # a new clone, in which the commands before the last run again
                clone = self.clone()
                for command in commands[:-1]:
                    self.run_in(clone, command)
            self.outputs[commands] = self.run_in(clone, commands[-1])
        return self.outputs[commands]

    @staticmethod
    def run_in(clone, command):
        """Run command (a shell line, or ("python", code)) in clone (folder, history); return its output's lines."""
        target, history = clone
        if command[0] == "python":
            (target / "snippet.py").write_text(command[1])
            argv = [".venv/bin/python", "snippet.py"]
        else:
            argv = shlex.split(command)
        result = run(argv, cwd=target)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}{result.stderr}"
        history.append(command)
        return (result.stdout + result.stderr).splitlines()


@pytest.fixture(scope="session")
def clones(tmp_path_factory):
    return Clones(tmp_path_factory.mktemp("clones"))


@pytest.mark.parametrize("file, lines", excerpts(), ids=[f"{f}:{lines[0].strip()[:40]}" for f, lines in excerpts()])
def test_an_excerpt_stands_in_the_file_it_names(file, lines):
    assert stands_in(lines, (ROOT / file).read_text()), f"not in {file}:\n" + "\n".join(lines)


def test_every_python_block_of_the_tutorial_is_an_excerpt_or_run():
    found = blocks(TUTORIAL)
    for i, (label, lang, lines) in enumerate(found):
        if lang == "python":
            assert label == RUN or (ROOT / label).is_file(), f"block {i} ({lines[0]}) is neither an excerpt nor run"
    assert len(excerpts()) >= 15 and sum(label == RUN for label, _, _ in found) >= 4


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: page.name)
def test_each_command_shown_prints_what_the_page_says(page, clones):
    shown = sessions(page)
    assert shown, f"{page.name} has no {RUN} block"
    for i, (command, expected) in enumerate(shown):
        actual = clones.output(command for command, _ in shown[:i + 1])
        assert same_output(expected, actual), (f"{page.name}: {command} printed\n" + "\n".join(actual) +
                                               "\nwhere the page says\n" + "\n".join(expected))


def test_the_output_comparison_tells_rounding_from_a_change():
    shown = ["epoch 5 loss 0.1763 test accuracy 95.6% images/s 1119", "...", "prediction: 9 (probability 0.998)"]
    assert same_output(shown, ["epoch 5 loss 0.1801 test accuracy 96.2% images/s 2790", "x", "y",
                               "prediction: 9 (probability 0.990)"])
    assert same_output(["device cpu (no NVIDIA driver: libcuda.so.1 not found)"],
                       ["device cpu (no GPU visible: CUDA_VISIBLE_DEVICES is empty)"])
    for changed in (["epoch 4 loss 0.1763 test accuracy 95.6% images/s 1", "prediction: 9 (probability 0.998)"],
                    ["epoch 5 loss 0.1763 test accuracy 93.6% images/s 1", "prediction: 9 (probability 0.998)"],
                    ["epoch 5 loss 0.2763 test accuracy 95.6% images/s 1", "prediction: 9 (probability 0.998)"],
                    ["epoch 5 loss 0.1763 test accuracy 95.6% images/s 1", "prediction: 4 (probability 0.998)"],
                    ["epoch 5 loss 0.1763 test accuracy 95.6% images/s 1"],
                    ["epoch 5 loss 0.1763 test accuracy 95.6% images/s 1", "prediction: 9 (probability 0.998)", "z"]):
        assert not same_output(shown, changed), changed
    assert not same_output(["device cpu (...)"], ["device cuda:0 (...)"])


def test_the_sample_images_are_what_the_text_says(tmp_path):
    from PIL import Image
    import numpy as np

    with np.load(ROOT / "data" / "mnist-5k" / "mnist.npz") as npz:
        digit, label = npz["x_test"][900], npz["y_test"][900]
    assert label == 9 and (np.asarray(Image.open(ROOT / "data" / "9.png")) == digit).all()
    photo = Image.open(ROOT / "data" / "7-photo.jpg")
    assert photo.mode == "RGB" and min(photo.size) > 100
