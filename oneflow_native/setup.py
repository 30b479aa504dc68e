"""Builds the native code for OneFlow 0.9.0 as shared libraries that pip installs, each loaded with ctypes:

- oneflow_graph_fix.c: the graph race (C; loaded by oneflow_setup.py);
- oneflow_node_watch.c: deadlines for waits on other nodes, and the line that names a lost node (C; watchdog.py);
- oneflow_kernels.cpp: OneFlow's CPU convolutions on oneDNN, max-pooling and bias gradients (C++, against
  OneFlow's headers and oneDNN; oneflow_setup.py).

They are built as Python extensions only so that pip builds and installs them: none is imported, and none includes
Python.h, so Python's headers are not needed.

pyproject.toml brings what the kernels are built against: oneflow (its headers, and the libraries the kernels
link to, which `import oneflow` has loaded by the time they are), oneDNN and CUDA's cuda_fp16.h. Where they cannot
be built (no C++ compiler, say), pip goes on without them and oneflow_setup.py says so in one line.

glog: OneFlow's headers use glog 0.5.0, whose generated logging.h and static libglog.a the wheel ships, without two
of its headers; glog/ holds those two from glog's v0.5.0 source (vlog_is_on.h with the namespace its build fills
in). liboneflow exports none of glog's symbols, so the kernels link the wheel's libglog.a, hidden inside them: a
CHECK of OneFlow's inline code that fails in a kernel prints its message and aborts, as OneFlow's own do.
"""
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
# What oneflow.sysconfig.get_compile_flags() gives for 0.9.0, whose import needs cuDNN loaded first (oneflow_setup.py
# does it); without WITH_CUDA OneFlow's classes would have another layout than liboneflow's.
ONEFLOW_FLAGS = ["-DHALF_ENABLE_CPP11_USER_LITERALS=0", "-DWITH_CUDA", "-D_GLIBCXX_USE_CXX11_ABI=0"]
# The folders of oneflow/include the kernels need. The rest of it are copies of the build machine's libc headers
# (math.h, bits/...), which break a compile against the system's.
ONEFLOW_HEADERS = ["oneflow", "absl", "google", "glog-build", "half.hpp", "flatbuffers", "eigen3", "llvm", "llvm-c"]


def package_folder(name):
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise FileNotFoundError(f"{name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def distribution_file(distribution, path):
    """The installed file of a distribution whose path ends in path (oneDNN's wheels put theirs in include/, lib/)."""
    for file in importlib.metadata.files(distribution) or []:
        if file.as_posix().endswith(path):
            return Path(file.locate()).resolve()
    raise FileNotFoundError(f"{path} is not in {distribution}")


class BuildExt(build_ext):
    """Points the kernels' compile at OneFlow, oneDNN and CUDA's headers as this build environment has them."""

    def build_extension(self, ext):
        if ext.name == "oneflow_kernels":
            try:
                self.configure_kernels(ext)
            except (OSError, StopIteration, importlib.metadata.PackageNotFoundError) as e:
                print(f"warning: oneflow_kernels not built: {e!r}")  # oneflow_setup.py says so when it runs
                return
        super().build_extension(ext)

    def configure_kernels(self, ext):
        oneflow = package_folder("oneflow")
        headers = Path(self.build_temp) / "oneflow_include"  # oneflow/include without its libc copies
        headers.mkdir(parents=True, exist_ok=True)
        for name in ONEFLOW_HEADERS:
            link = headers / name
            if link.is_symlink():  # from an earlier build, whose environment may be gone
                link.unlink()
            link.symlink_to(oneflow / "include" / name)
        libraries = oneflow.parent / "oneflow.libs"  # liboneflow-<hash>.so and the libraries it needs
        glog = oneflow / "include" / "glog-build" / "libglog.a"
        onednn = distribution_file("onednn-devel-cpu-gomp", "/oneapi/dnnl/dnnl.hpp").parents[2]  # its include/
        ext.include_dirs += [str(onednn), str(headers), str(headers / "glog-build"),
                             str(HERE),  # glog/log_severity.h and vlog_is_on.h, which the wheel's glog lacks
                             str(package_folder("nvidia.cuda_runtime") / "include")]
        ext.extra_link_args += [
            *(str(next(libraries.glob(f"{name}-*.so*"))) for name in ("liboneflow", "libof_protoobj", "libprotobuf")),
            str(distribution_file("onednn-cpu-gomp", "/libdnnl.so.3")),
            # glog as OneFlow's wheel built it (liboneflow exports none of its symbols), kept inside this library.
            "-Wl,--exclude-libs,ALL", str(glog), "-Wl,-z,defs"]


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        # -fexceptions: a C++ exception of OneFlow's that passes through the fix unlocks its lock (HOLD_LOCK).
        Extension("oneflow_graph_fix", ["oneflow_graph_fix.c"], libraries=["dl", "pthread"], extra_compile_args=["-fexceptions"]),
        Extension("oneflow_node_watch", ["oneflow_node_watch.c"], libraries=["pthread", "m"]),
        Extension("oneflow_kernels", ["oneflow_kernels.cpp"], language="c++", optional=True, libraries=["gomp"],
                  extra_compile_args=["-std=c++17", "-O2", "-fopenmp", "-Wno-deprecated-declarations", *ONEFLOW_FLAGS]),
    ],
)
