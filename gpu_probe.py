"""Which GPUs this process has, asked of the NVIDIA driver without side effects, and which OneFlow 0.9.0 runs on.

A reader of the tutorial can skip this file. OneFlow's own questions (flow.cuda.get_device_name and
get_device_capability) create a CUDA context on the GPU they name, and flow.cuda.is_available() aborts the
process on any CUDA error but "no device" and "driver too old". The CUDA driver API, called here through ctypes
(libcuda.so.1: cuDriverGetVersion, cuInit, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName, cuDeviceGetAttribute,
cuGetErrorName), creates no context, sees only the GPUs CUDA_VISIBLE_DEVICES lets this process see, and answers
with error codes, each of which becomes a reason on the device line. Nothing here imports OneFlow.
"""
import ctypes
import importlib.metadata
import os

ONEFLOW = importlib.metadata.version("oneflow")
LIBRARY = "libcuda.so.1"  # the CUDA driver API, installed with the NVIDIA driver
# OneFlow 0.9.0's wheel is a CUDA 11.7 build. CUDA's minor-version compatibility runs an 11.x runtime on a driver
# of 450.80.02 or newer; cuDriverGetVersion gives 11000 (CUDA 11.0) for the R450 drivers, 11010 for R455, 11040
# for R470, 11070 for R515 and 12000 and up from R525. So 11000 is the least figure that lets 450.80.02 in. The
# R450 drivers released before it (450.36.06 to 450.66, mid-2020) give 11000 too and the driver API cannot tell
# them apart: those alone get past this check without the compatibility CUDA documents.
DRIVER_FOR_CUDA_11 = 11000
CAPABILITIES = ((6, 0), (8, 9))  # OneFlow 0.9.0 has kernels for 6.0 to 8.6, no PTX; 8.9 (Ada) runs the 8.6 code
CUDA_ERROR_NO_DEVICE = 100  # cuInit's answer where the driver shows this process no GPU
COMPUTE_CAPABILITY_MAJOR, COMPUTE_CAPABILITY_MINOR = 75, 76  # CUdevice_attribute values
NO_DRIVER = f"no NVIDIA driver: {LIBRARY} not found"
NOT_VISIBLE = "no GPU visible to this process: CUDA_VISIBLE_DEVICES, a container without GPUs or MIG hides them"


class Unavailable(Exception):
    """The GPU asked for is one OneFlow cannot run on; the message says why and what to use instead."""


class DriverError(Exception):
    """A CUDA driver call that returned an error; the message names the call and the error."""


# The driver's functions the probe calls, all of which create no CUDA context.
FUNCTIONS = ("cuDriverGetVersion", "cuInit", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName",
             "cuDeviceGetAttribute", "cuGetErrorName")


def load_library():
    """The CUDA driver library (a ctypes.CDLL), or None where there is none; an OSError, with the loader's own text,
    where it is there but cannot be loaded (another ELF class, a dependency missing, no permission). Tests replace
    it with a fake driver."""
    try:
        return ctypes.CDLL(LIBRARY)
    except OSError as e:
        if str(e).startswith(f"{LIBRARY}: cannot open shared object file: No such file or directory"):
            return None
        raise


def error_name(library, code):
    """The name cuGetErrorName gives a CUresult, with its number: "CUDA_ERROR_UNKNOWN (999)"."""
    name = ctypes.c_char_p()
    if library.cuGetErrorName(code, ctypes.pointer(name)) != 0 or not name.value:
        return f"error {code}"
    return f"{name.value.decode(errors='replace')} ({code})"


def call(library, function, *args):
    """library.function(*args); a CUresult other than CUDA_SUCCESS (0) raises DriverError."""
    code = getattr(library, function)(*args)
    if code != 0:
        raise DriverError(f"{function} gives {error_name(library, code)}")


def probe():
    """(gpus, reason): [(name, (major, minor))] of the GPUs the driver shows this process, cuda:0 first, and why
    that list is empty (None where it is not)."""
    try:
        library = load_library()
    except OSError as e:
        return [], f"the NVIDIA driver's {LIBRARY} cannot be loaded ({e})"
    if library is None:
        return [], NO_DRIVER
    missing = [function for function in FUNCTIONS if not hasattr(library, function)]  # each a dlsym
    if missing:
        return [], f"{LIBRARY} has no {', '.join(missing)}: a driver too old for CUDA 11, or not NVIDIA's"
    try:
        version = ctypes.c_int()
        # Asked before cuInit: its documented answers are CUDA_SUCCESS and CUDA_ERROR_INVALID_VALUE, never
        # CUDA_ERROR_NOT_INITIALIZED, so a driver too old is named as such even where cuInit would fail.
        call(library, "cuDriverGetVersion", ctypes.pointer(version))
        if version.value < DRIVER_FOR_CUDA_11:
            return [], (f"NVIDIA driver for CUDA {version.value // 1000}.{version.value % 1000 // 10} is too old: "
                        f"OneFlow {ONEFLOW}, a CUDA 11.7 build, needs one for CUDA 11.0 or newer (450.80.02 or newer)")
        code = library.cuInit(0)
        if code == CUDA_ERROR_NO_DEVICE:
            return [], NOT_VISIBLE
        if code != 0:
            raise DriverError(f"cuInit gives {error_name(library, code)}")
        count = ctypes.c_int()
        call(library, "cuDeviceGetCount", ctypes.pointer(count))
        gpus = []
        for ordinal in range(count.value):
            device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
            name = ctypes.create_string_buffer(256)
            call(library, "cuDeviceGet", ctypes.pointer(device), ordinal)
            call(library, "cuDeviceGetName", name, len(name), device)
            call(library, "cuDeviceGetAttribute", ctypes.pointer(major), COMPUTE_CAPABILITY_MAJOR, device)
            call(library, "cuDeviceGetAttribute", ctypes.pointer(minor), COMPUTE_CAPABILITY_MINOR, device)
            gpus.append((name.value.decode(errors="replace"), (major.value, minor.value)))
    except DriverError as e:
        return [], f"the CUDA driver failed: {e}"
    return gpus, None if gpus else NOT_VISIBLE


def problem(number, gpus, reason):
    """Why OneFlow cannot run on cuda:number, given probe()'s gpus and reason, or None if it can."""
    lowest, highest = CAPABILITIES
    if number < len(gpus):
        name, capability = gpus[number]
        if lowest <= capability <= highest:
            return None
        return (f"cuda:{number} ({name}) has compute capability {capability[0]}.{capability[1]}; OneFlow {ONEFLOW} "
                f"runs on {lowest[0]}.{lowest[1]} to {highest[0]}.{highest[1]}")
    if gpus:
        return f"this process sees {len(gpus)} GPU{'s' if len(gpus) > 1 else ''}"
    return reason


def visible(numbers):
    """The CUDA_VISIBLE_DEVICES value that shows a process only the GPUs it now sees as cuda:N for N in numbers."""
    shown = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return ",".join(shown[n] if n < len(shown) else str(n) for n in numbers)


CPU_BUILD = "this OneFlow is a CPU build, which runs on no GPU (pip install oneflow==0.9.0 from PyPI is the CUDA one)"


def choose(name, processes=1, local_rank=0, cuda_build=True):
    """(number, note) for --device name ("cuda", "cuda:N" or None for the best there is): cuda:number, or None for the
    CPU, and why the other GPUs cannot be used. Raises Unavailable where name, or under the launcher this process's
    local rank, asks for a GPU OneFlow cannot run on. cuda_build: whether OneFlow was built with CUDA
    (oneflow.sysconfig.with_cuda(); 0.9.0+cpu, a CPU build, satisfies the pin oneflow==0.9.0 too)."""
    if not cuda_build:  # whatever the driver shows
        if name is None:
            return None, CPU_BUILD
        raise Unavailable(f"device {name!r} is not available: {CPU_BUILD} (use --device cpu)")
    gpus, reason = probe()
    problems = [problem(i, gpus, reason) for i in range(max(len(gpus), 1))]
    usable = [i for i, why in enumerate(problems) if why is None]
    note = "; ".join(why for why in problems if why)
    if name is None and not usable:
        return None, note
    if processes > 1:  # each process takes the GPU of its local rank
        number, what = local_rank, f"cuda:{local_rank}, the GPU of process {local_rank} on this machine,"
    else:
        index = (name or "cuda").partition(":")[2]
        number, what = int(index) if index else (usable or [0])[0], f"device {name!r}"
    if number in usable:
        return number, note
    if not usable:
        hint = "--device cpu"
    elif processes > 1:
        hint = f"--nproc_per_node {len(usable)}"
        if usable != list(range(len(usable))):
            hint += f" with CUDA_VISIBLE_DEVICES={visible(usable)}"
    else:
        hint = f"--device cuda:{usable[0]}"
    raise Unavailable(f"{what} is not available: {problem(number, gpus, reason)} (use {hint})")
