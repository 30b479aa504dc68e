"""The speed settings of lenet.py do what BENCHMARKS.md says: MKL serves OneFlow's matrix products, and OneFlow's
scheduler thread runs at a lower priority. (Their speed is measured in benchmarks/bench.py, never here.)"""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, lenet

# Run lenet.py's import and one OneFlow matrix product in a fresh process, then print what it set.
PROBE = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import lenet
print("blas", lenet.BLAS)
print("scheduler", lenet.SCHEDULER_THREAD)
print("niced", sorted(t for t in os.listdir("/proc/self/task") if os.getpriority(os.PRIO_PROCESS, int(t)) != 0))
print("product", float((lenet.flow.ones(3, 4) @ lenet.flow.ones(4, 5)).sum().numpy()))
"""


def probe(**env):
    """Run PROBE with these environment variables added; return its stdout lines as {first word: the rest}."""
    result = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.split(" ", 1) for line in result.stdout.splitlines()]
    return {words[0]: words[1] if len(words) > 1 else "" for words in lines}, result.stdout


@pytest.mark.skipif(lenet.BLAS is None, reason="the mkl wheel is not installed (not an x86-64 machine)")
def test_mkl_computes_oneflows_matrix_products():
    values, stdout = probe(MKL_VERBOSE="1")  # MKL prints a line for every call it serves
    assert values["blas"].endswith(".so.3") and "libmkl_rt" in values["blas"]
    assert "MKL_VERBOSE SGEMM(N,N,5,3,4," in stdout  # the 3x4 by 4x5 product above (column-major: 5, 3, 4)
    assert values["product"] == "60.0"


def test_oneflows_own_blas_when_mkl_is_turned_off():
    values, stdout = probe(LENET_BLAS="openblas", MKL_VERBOSE="1")
    assert values["blas"] == "None"
    assert "MKL_VERBOSE" not in stdout
    assert values["product"] == "60.0"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads are found through Linux's /proc")
def test_the_scheduler_thread_alone_runs_at_nice_10():
    values, _ = probe()
    assert values["scheduler"] != "None"
    assert values["niced"] == f"['{values['scheduler']}']"
    assert os.getpriority(os.PRIO_PROCESS, lenet.SCHEDULER_THREAD) == 10  # in this process too
    assert lenet.SCHEDULER_THREAD != os.getpid()


def test_scheduler_priority_left_alone_when_turned_off():
    values, _ = probe(LENET_SCHEDULER_NICE="0")
    assert values["scheduler"] == "None"
    assert values["niced"] == "[]"

