"""A pytest plugin (loaded by conftest.py): a skipped test fails, with its reason, unless --allow-skips, so that a
test this machine cannot run does not pass CI unseen."""
import pytest


def pytest_addoption(parser):
    parser.addoption("--allow-skips", action="store_true",
                     help="let a test skip where this machine cannot run it (by default a skip fails: CI runs every test)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test fails, with its reason, unless --allow-skips: a skip must not pass CI unseen."""
    report = (yield).get_result()
    if report.skipped and not hasattr(report, "wasxfail") and not item.config.getoption("--allow-skips"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"this test skipped, which fails the run (--allow-skips lets it skip): {reason}"
