"""tests/no_skips.py, the tests' own rule: a skip fails the run unless --allow-skips."""
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
