"""The README and the pages under docs/: every relative link and image resolves, anchors included; and every
script's --help gives each flag's default, as the README says."""
import re

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
