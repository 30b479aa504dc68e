"""oneflow_native builds with what README.md says building needs: its C files with a C compiler alone, without
Python's headers (which a system Python without its -dev package lacks)."""
import shutil

import pytest

from conftest import ROOT, run


@pytest.mark.parametrize("source", ["oneflow_graph_fix.c", "oneflow_node_watch.c"])
def test_the_c_files_compile_without_pythons_headers(source, tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler: pip install -r requirements.txt could not build oneflow_native either"
    result = run([compiler, "-fsyntax-only", "-Wall", "-Werror", ROOT / "oneflow_native" / source], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
