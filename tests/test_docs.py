"""The README and the pages under docs/: every relative link and image resolves, anchors included; and every
script's --help gives each flag's default, as the README says."""
import json
import re

import numpy as np
import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(page):
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # links in code blocks are not links
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}"
        if anchor:
            assert anchor in anchors(target), f"{page.name}: {link}"


@pytest.mark.parametrize("script", ["lenet_train.py", "lenet_eval.py", "lenet_test.py", "lenet_plot.py", "lenet_app.py",
                                    "lenet_export.py"])
def test_help_gives_every_flags_default(script):
    import importlib  # noqa: PLC0415
    parser = importlib.import_module(script[:-3]).parser
    text = " ".join(parser.format_help().split())  # what --help prints, wrapped to the terminal's width
    for action in parser._actions:
        if not action.option_strings or action.help == "show this help message and exit":
            continue
        help_text = " ".join(action.help.replace("%%", "%").split())
        assert help_text in text, action.option_strings  # what --help prints is what the parser says
        default = re.search(r"\(default: ([^)]*)\)$", help_text)
        assert default, f"{script} {action.option_strings[0]}: no (default: ...) in {help_text!r}"
        if action.default not in (None, False):  # flags off by default and devices chosen at run time say it in words
            # The default itself, alone or before a comma that explains it ("0" must not pass for 10).
            assert default[1].split(", ")[0] == str(action.default), f"{script} {action.option_strings[0]}: {action.default!r}"


def test_the_report_pages_figures_are_those_of_the_files_beside_it():
    # docs/report.md shows lenet_eval.py's output and excerpts of docs/report.json and docs/metrics.jsonl, and the
    # README the same run's lines: each figure against the files, read with json alone.
    report = json.loads((ROOT / "docs" / "report.json").read_text())
    metrics = [json.loads(line) for line in (ROOT / "docs" / "metrics.jsonl").read_text().splitlines()]
    page, readme = (ROOT / "docs" / "report.md").read_text(), (ROOT / "README.md").read_text()
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == report["count"] == 1000
    assert report["accuracy"] == round(100 * np.trace(confusion) / report["count"], 6)

    rows = [tuple(map(int, m[:3])) + (float(m[3]),) for m in re.findall(r"^ +(\d) +(\d+) +(\d+) +([\d.]+)%$", page, re.M)]
    assert rows == [(r["digit"], r["correct"], r["count"], r["accuracy"]) for r in report["per_class"]]
    assert [row["correct"] for row in report["per_class"]] == list(np.diag(confusion))
    assert [row["count"] for row in report["per_class"]] == list(confusion.sum(axis=1))
    shown = [list(map(int, m.split())) for m in re.findall(r"^ {13}\d((?: +\d+){10})$", page, re.M)]
    assert shown == confusion.tolist()
    wrong = report["count"] - int(np.trace(confusion))
    assert f"errors {wrong} of {report['count']}, the {wrong} most confident drawn to docs/errors.png" in page
    assert f"![The {wrong} test digits the 5-epoch model gets wrong](errors.png)" in page
    assert f"\naccuracy: {report['accuracy']:.1f}%\n" in page
    # "4 is the weakest digit here (90%), read as 2 five times"
    weakest = int(np.argmin(np.diag(confusion)))
    off = confusion[weakest].copy()
    off[weakest] = -1
    assert (weakest, confusion[weakest, weakest], int(off.argmax()), off.max()) == (4, 90, 2, 5)
    assert "4 is the weakest digit here (90%), read as 2 five times" in page
    # The JSON excerpt: its first and last rows and its scalars.
    for row in (report["per_class"][0], report["per_class"][-1]):
        assert json.dumps(row) in page
    for row in (report["confusion"][0], report["confusion"][-1]):
        assert json.dumps(row) in page
    for key in ("accuracy", "count", "model_dir", "data_file"):
        assert f'  "{key}": {json.dumps(report[key])}' in page
    assert json.dumps(metrics[0]) in page and len(metrics) == 5

    # The README's run: its last epoch's line and the accuracy lines are those of the same files.
    last = metrics[-1]
    assert f"epoch 5 loss {last['loss']:.4f} test accuracy {last['accuracy']:.1f}% images/s " in readme
    assert last["accuracy"] == report["accuracy"]
    shown = re.findall(r"`accuracy: ([\d.]+)%`|^accuracy: ([\d.]+)%$", readme, re.M)  # lenet_eval.py's line
    shown += re.findall(r"^\| `python lenet_train.py --epochs 5 --data-dir data/mnist-5k` \| test accuracy ([\d.]+)%", readme, re.M)
    assert len(shown) == 4 and {"".join(figure) for figure in shown} == {f"{report['accuracy']:.1f}"}, shown
