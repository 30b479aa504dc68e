"""The benchmark's bookkeeping: the median-and-range cells and the rewrite of BENCHMARKS.md's table.

The benchmark itself (benchmarks/bench.py) is run by hand; no test times anything.
"""
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402


def test_summary_gives_the_median_and_the_range():
    assert bench.summary([300.0, 250.4, 410.0]) == "300 (250-410)"
    assert bench.summary([1.25], digits=1) == "1.2"  # one value: no range
    assert bench.summary([]) == "-"


def test_write_section_replaces_only_the_marked_table(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Title\n\nbefore\n\n{bench.MARK_START}\nold table\n{bench.MARK_END}\n\nafter\n")
    bench.write_section(path, f"{bench.MARK_START}\nnew table\n{bench.MARK_END}")
    assert path.read_text() == f"# Title\n\nbefore\n\n{bench.MARK_START}\nnew table\n{bench.MARK_END}\n\nafter\n"


def test_write_section_creates_or_appends(tmp_path):
    section = f"{bench.MARK_START}\ntable\n{bench.MARK_END}"
    bench.write_section(tmp_path / "new.md", section)
    assert (tmp_path / "new.md").read_text() == f"# Benchmarks\n\n{section}\n"
    (tmp_path / "notes.md").write_text("# Notes\n")
    bench.write_section(tmp_path / "notes.md", section)
    assert (tmp_path / "notes.md").read_text() == f"# Notes\n\n{section}\n"
