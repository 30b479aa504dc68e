"""The tests' own rules: a skip fails the run unless --allow-skips (tests/no_skips.py); all the waits of a test
draw from one budget, and a wait that runs out ends what it started; a test that writes into a folder other tests
share errors (tests/conftest.py)."""
import os
import time

import pytest

import conftest
from conftest import ROOT

pytest_plugins = ["pytester"]


def test_a_skip_fails_the_run_saying_why_unless_skips_are_allowed(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    pytester.makepyfile(test_skips="""
        import pytest

        def test_skips():
            pytest.skip("no such machine here")

        def test_runs():
            pass
    """)
    failed = pytester.runpytest_subprocess("-p", "no_skips", "-p", "no:cacheprovider")
    failed.assert_outcomes(passed=1, failed=1)
    failed.stdout.fnmatch_lines(["*this test skipped, which fails the run (--allow-skips lets it skip): no such machine here*"])
    allowed = pytester.runpytest_subprocess("-p", "no_skips", "-p", "no:cacheprovider", "--allow-skips")
    allowed.assert_outcomes(passed=1, skipped=1)


def test_the_waits_of_a_test_share_one_budget_and_one_that_runs_out_kills_what_it_started(monkeypatch, tmp_path):
    elapsed = time.monotonic() - conftest._test_began[0]
    monkeypatch.setattr(conftest, "BUDGET", elapsed + 3)  # 3 s left for the waits below
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="still running after"):
        conftest.run(["sh", "-c", "sleep 1000 & echo $! > child; wait"], cwd=tmp_path)  # a wait of its own: 600 s
    assert time.monotonic() - start < 30  # the budget's 3 s, on a busy machine
    child = int((tmp_path / "child").read_text())

    def alive():  # a zombie is dead: it waits only for a parent (where PID 1 reaps nothing, for ever) to reap it
        try:
            with open(f"/proc/{child}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:  # SIGKILL is delivered, not waited for
        time.sleep(0.01)
    assert not alive()  # the shell's child, in the session run() started, was killed with it
    assert conftest.left() == 1.0  # and what comes after gets the least


def test_a_write_into_a_shared_folder_is_an_error_naming_what_changed(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_bytes(b"1")
    (tmp_path / "mnist.npz").write_bytes(b"2")
    with conftest.unchanged(tmp_path):
        (tmp_path / "mnist.npz").read_bytes()  # reading changes nothing
    for change in (lambda: (tmp_path / "model" / "weights").write_bytes(b"3"), lambda: (tmp_path / "new").touch(),
                   lambda: (tmp_path / "mnist.npz").unlink()):
        with pytest.raises(AssertionError, match=f"a test changed {tmp_path}, which other tests read: "):
            with conftest.unchanged(tmp_path):
                change()
    with pytest.raises(AssertionError, match=r"read: model/weights\n"):  # the file written, and only it
        with conftest.unchanged(tmp_path):
            (tmp_path / "model" / "weights").write_bytes(b"4")
