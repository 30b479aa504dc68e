"""What OneFlow 0.9 needs before `import oneflow`, and the CPU speed settings. lenet.py imports it first.

A reader of the tutorial can skip this file: nothing here changes what the network computes, only where
OneFlow finds its libraries and how fast it runs on a CPU. Each speed setting says why in one line; its
measurement is in BENCHMARKS.md. LENET_SPEEDUPS=0 turns every speed setting off (OneFlow's own behaviour);
setting any of the environment variables below yourself overrides it.

It also loads the libraries of oneflow_native/: oneflow_graph_fix, which fixes a race in OneFlow 0.9.0 that
crashes processes running short graph runs back to back (oneflow_graph_fix.c says how; BENCHMARKS.md measures it;
LENET_GRAPH_FIX=0 leaves it out, for benchmarks/graph_crash.py to show the crash), and, once the CPU is chosen,
oneflow_kernels, OneFlow's CPU convolutions on oneDNN (oneflow_kernels.cpp; LENET_KERNELS=0 leaves them out, and
so does LENET_SPEEDUPS=0). Under OneFlow's launcher, `import oneflow` waits for every process of every node:
watchdog.deadline bounds that wait.
"""
import contextlib
import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import watchdog

SPEEDUPS = os.environ.get("LENET_SPEEDUPS", "1") != "0"


def load_cuda_libraries():
    """Load cuDNN 8 (and through its RPATH cuBLAS 11) from the nvidia-* wheels: `import oneflow` needs them, GPU or not."""
    spec = importlib.util.find_spec("nvidia.cudnn")
    if spec is None:
        return  # a system cuDNN may still be on the library path
    lib_dir = Path(list(spec.submodule_search_locations)[0]) / "lib"
    for name in ("ops_infer", "ops_train", "cnn_infer", "cnn_train"):  # dependencies first
        ctypes.CDLL(str(lib_dir / f"libcudnn_{name}.so.8"), mode=ctypes.RTLD_GLOBAL)


def load_graph_fix():
    """Load oneflow_graph_fix globally, before OneFlow, so that liboneflow's calls bind to it; return it (ctypes), or
    None where LENET_GRAPH_FIX=0."""
    if os.environ.get("LENET_GRAPH_FIX", "1") == "0":
        return None
    spec = importlib.util.find_spec("oneflow_graph_fix")  # found, not imported: it is loaded as a plain library
    if spec is None:
        sys.exit("error: oneflow_graph_fix is not installed; pip install -r requirements.txt builds it (with a C compiler)")
    return ctypes.CDLL(spec.origin, mode=ctypes.RTLD_GLOBAL)


def check_graph_fix(library):
    """Exit with one line where oneflow_graph_fix (a ctypes library, or None) does not fit the OneFlow imported: a
    OneFlow whose graph-queue methods have other names than 0.9.0's would never call the fix, and race on."""
    if library is not None and not library.oneflow_graph_fix_check():
        sys.exit(f"error: oneflow_graph_fix is made for oneflow 0.9.0, and this oneflow {flow.__version__} has not "
                 f"its LazyJobStreamPolicy methods: pip install -r requirements.txt (LENET_GRAPH_FIX=0 runs "
                 f"without the fix)")


def graph_runs():
    """(runs recorded, runs ended, runs that ended before OneFlow recorded them) of every nn.Graph in this process so
    far, as oneflow_graph_fix counted them; None without it."""
    if GRAPH_FIX is None:
        return None
    counts = [ctypes.c_long() for _ in range(3)]
    GRAPH_FIX.oneflow_graph_fix_counts(*map(ctypes.byref, counts))
    return tuple(count.value for count in counts)


def distribution_library(distribution, prefix):
    """The path of the installed file of a distribution whose name starts with prefix, or None."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((f.locate().resolve() for f in files if f.name.startswith(prefix)), None)


def load_mkl():
    """Load Intel MKL (the mkl wheel) globally; return its path, or None where it is turned off or not installed.

    OneFlow 0.9 calls cblas_sgemm through the dynamic linker, so a BLAS loaded globally first takes those calls
    from the OpenBLAS inside OneFlow, which has no AVX-512 kernels.
    """
    if not SPEEDUPS or os.environ.get("LENET_BLAS", "mkl") != "mkl":
        return None
    library = distribution_library("mkl", "libmkl_rt.so")
    if library is None:
        return None
    # OneFlow already runs independent ops on a thread per core; MKL's own threads only crowd them.
    os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    return library


def cpu_flags():
    """The CPU's feature flags (avx2, avx512f, ...) from /proc/cpuinfo; empty where it is missing (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def set_cpu_variables():
    """Set the CPU settings that OneFlow reads only at its import, where the user has not set them.

    Both steer OneFlow's CPU kernels alone, which a model on a GPU does not run; the settings that change what a
    graph is made of wait for the CPU to be chosen (set_cpu_graph_variables).
    """
    if {"avx2", "fma"} <= cpu_flags():
        # OneFlow's OpenBLAS does not recognise recent CPUs and runs its SSE3 kernels there; Haswell's are AVX2.
        # Read when OpenBLAS is loaded, by `import oneflow`.
        os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
    # OneFlow gives its CPU kernels cores - 2 threads unless told, 0 on a 2-core machine. Read by `import oneflow`
    # (SetCpuDeviceManagerNumThreads, when it sets up its environment).
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def set_cpu_graph_variables():
    """Set the CPU settings that OneFlow reads after its import, where the user has not set them; on_cpu calls it.

    OneFlow reads these when it builds a kernel or a graph, not at `import oneflow` (tests/test_oneflow_setup.py
    shows it), so a process that runs on a GPU never has them.
    """
    # OneFlow sends element-wise binary ops (bias add, ...) to oneDNN, which runs its slow reference kernel for
    # them. Read each time a CPU kernel is made (EnvBool, not cached).
    os.environ.setdefault("ONEFLOW_ENABLE_ONEDNN_OPTS", "0")
    # The convolutions' bias added inside the convolution kernel rather than in a pass of its own: on a GPU it
    # would be another op (conv2d with a bias input, conv_bias_grad). Read at the first convolution of each
    # thread (the Conv2d functor is a static thread_local), so it must be set before the model first runs.
    os.environ.setdefault("ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS", "1")


# OneFlow prints this line on stderr at every import where there is no InfiniBand (nearly everywhere).
IBVERBS_NOTICE = "libibverbs not available, ibv_fork_init skipped"


def import_oneflow_quietly():
    """Import oneflow with IBVERBS_NOTICE taken out of its stderr; every other line still reaches stderr.

    A grep process forwards the rest as it comes, so even a crash inside the import shows what it printed.
    """
    sys.stderr.flush()
    try:
        quiet = subprocess.Popen(["grep", "--line-buffered", "-vxF", IBVERBS_NOTICE], stdin=subprocess.PIPE, stdout=2)
    except OSError:  # no grep: the notice stays
        import oneflow  # noqa: F401, PLC0415
        return
    saved = os.dup(2)
    os.dup2(quiet.stdin.fileno(), 2)
    try:
        import oneflow  # noqa: F401, PLC0415
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        quiet.stdin.close()
        quiet.wait()


load_cuda_libraries()
GRAPH_FIX = load_graph_fix()
BLAS = load_mkl()
if SPEEDUPS:
    set_cpu_variables()
# OneFlow's C++ log lines (glog) on a machine without a CUDA driver only say that there is none; errors still
# reach Python as exceptions. GLOG_minloglevel=0 shows them all.
os.environ.setdefault("GLOG_minloglevel", "3")
# Linux lists a process's threads here; OneFlow's scheduler is one of those its import starts.
_THREADS_BEFORE = set(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
_MEETING = contextlib.nullcontext()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under the launcher, the import waits for every process to join
    _MEETING = watchdog.deadline(
        f"error: rank {os.environ.get('RANK')}: not all {os.environ['WORLD_SIZE']} processes met at "
        f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within {watchdog.SECONDS:g} s; start "
        f"the launcher on every node with the same --nnodes, --nproc_per_node, --master_addr and --master_port "
        f"(LENET_NODE_TIMEOUT sets the wait)")
with _MEETING:
    import_oneflow_quietly()
_THREADS_OF_ONEFLOW = set(os.listdir("/proc/self/task")) - _THREADS_BEFORE if _THREADS_BEFORE is not None else set()

import oneflow as flow  # noqa: E402  (imported above, after the settings)

check_graph_fix(GRAPH_FIX)


# ---------------------------------------------------------------------------------------------
# After the import: settings for a model that runs on the CPU.

SCHEDULER_THREAD = None  # the thread id of OneFlow's scheduler once it is niced


def _cpu_nanoseconds(tid):
    """CPU time a thread of this process has used, in ns; None if it has ended."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def find_scheduler_thread():
    """The thread id of OneFlow's VM scheduler, or None where it cannot be told (no /proc, or no thread stood out).

    The scheduler is started by `import oneflow` and spins (sched_yield) for as long as any op is unfinished;
    the other threads the import starts sleep. So it is the one of them that uses CPU time while matrix
    products are queued, however busy the machine: the products cannot finish without it.
    """
    before = {tid: _cpu_nanoseconds(tid) for tid in _THREADS_OF_ONEFLOW}
    x = flow.ones(256, 256) / 256
    pending = x
    for _ in range(20):  # some 10 ms of matrix products, queued without waiting for them
        pending = pending @ x
    pending.numpy()
    after = {tid: _cpu_nanoseconds(tid) for tid in before}
    used = {tid: after[tid] - before[tid] for tid in before if None not in (before[tid], after[tid])}
    busy = sorted(used, key=used.get, reverse=True)
    if not busy or used[busy[0]] == 0 or (len(busy) > 1 and used[busy[1]] * 10 > used[busy[0]]):
        return None
    return int(busy[0])


def kernels_missing_line(reason):
    """The one line said where the kernels are not loaded: what is missing, and what it costs."""
    return (f"note: {reason}, so OneFlow's own CPU convolutions run (about 2 times slower to train); "
            f"LENET_KERNELS=0 leaves the kernels out without this line")


@functools.lru_cache(maxsize=None)
def load_kernels():
    """Load oneflow_native's CPU kernels (convolutions on oneDNN, max-pooling, bias gradients) into OneFlow's kernel
    registry; return the library (ctypes).

    None where LENET_KERNELS=0 or LENET_SPEEDUPS=0, and where it cannot be loaded, which one line on stderr says:
    OneFlow's own kernels then run, as they do for everything the library does not cover. Loaded as
    oneflow.utils.load_library would (its load_library.cpp is a dlopen), through ctypes for OSError's own text.
    """
    if not SPEEDUPS or os.environ.get("LENET_KERNELS", "1") == "0":
        return None
    spec = importlib.util.find_spec("oneflow_kernels")  # found, not imported: it is loaded as a plain library
    if spec is None:
        compiler = os.environ.get("CXX", "c++")
        reason = (f"pip found no C++ compiler ({compiler}) to build oneflow_native's kernels: install one "
                  f"(apt-get install g++) and run pip install -r requirements.txt again"
                  if shutil.which(compiler) is None else
                  "oneflow_native's kernels were not built (pip install -v -r requirements.txt shows why)")
        print(kernels_missing_line(reason), file=sys.stderr)
        return None
    onednn = distribution_library("onednn-cpu-gomp", "libdnnl.so.3")
    try:
        if onednn is None:
            raise OSError("libdnnl.so.3 not found: pip install -r requirements.txt installs onednn-cpu-gomp")
        ctypes.CDLL(str(onednn), mode=ctypes.RTLD_GLOBAL)  # what the kernels link to, by its name libdnnl.so.3
        library = ctypes.CDLL(spec.origin, mode=ctypes.RTLD_LOCAL)  # liboneflow is loaded: `import oneflow`
    except OSError as e:
        print(kernels_missing_line(f"oneflow_native's kernels could not be loaded ({e})"), file=sys.stderr)
        return None
    return library


KERNEL_OPS = ("conv2d", "conv_data_grad", "conv_filter_grad", "reduce_sum", "max_pool_2d", "max_pool_2d_grad")


def kernel_runs():
    """{op: runs} of oneflow_native's kernels in this process so far; None where they are not loaded."""
    library = load_kernels()
    if library is None:
        return None
    counts = [ctypes.c_long() for _ in KERNEL_OPS]
    library.oneflow_kernels_counts(*map(ctypes.byref, counts))
    return dict(zip(KERNEL_OPS, (count.value for count in counts)))


def on_cpu():
    """Speed settings for a process that runs its model on the CPU; called once the CPU is chosen (never for a GPU)."""
    global SCHEDULER_THREAD
    if not SPEEDUPS:
        return
    set_cpu_graph_variables()
    load_kernels()
    # How much nicer than the rest of the process: the scheduler's spinning takes a core from the kernels; 10
    # nicer it runs when a core is free (not 19: as fast on an idle machine, and not slower than 0 when other jobs
    # hold every core). Relative, so that a process started with `nice` keeps its scheduler below the rest too.
    own = os.getpriority(os.PRIO_PROCESS, 0)
    nice = min(19, own + int(os.environ.get("LENET_SCHEDULER_NICE", "10")))
    if nice == own or SCHEDULER_THREAD is not None:
        return
    tid = find_scheduler_thread()
    if tid is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # a sandbox may forbid it; training is then only slower
        return
    SCHEDULER_THREAD = tid


def forward_in_parts(model, images, dropout_mask):
    """model(images, dropout_mask), on one CPU in two halves of the batch: the same sums in another order.

    OneFlow deals a graph's CPU ops round-robin to a thread per core, and one chain of ops keeps all but one
    thread waiting on it; two independent chains keep two busy (1.3 times the images/s on 2 cores).
    """
    weight = model.conv1.weight
    if not SPEEDUPS or weight.is_global or weight.device.type != "cpu":
        return model(images, dropout_mask)
    return flow.cat([model(x, mask) for x, mask in zip(images.chunk(2), dropout_mask.chunk(2))])
