"""`python tests/fake_gpu.py SCRIPT ARGS...` runs SCRIPT as if this machine's driver showed one A100: gpu_probe's
seam, load_library, returns fake_cuda's driver. OneFlow itself still sees no GPU. tests/test_multi_node.py runs one
node's processes through it, a node that chooses cuda beside a node that chooses the CPU."""
import runpy
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import gpu_probe  # noqa: E402
from fake_cuda import A100, FakeDriver  # noqa: E402

gpu_probe.load_library = lambda: FakeDriver([A100])
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
