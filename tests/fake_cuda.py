"""A fake libcuda.so.1 for gpu_probe.load_library to return: it plays a machine's NVIDIA driver and GPUs."""

# The GPUs the tests play: name and compute capability, as cuDeviceGetName and cuDeviceGetAttribute give them.
A100 = ("NVIDIA A100-SXM4-80GB", (8, 0))  # Ampere
L4 = ("NVIDIA L4", (8, 9))  # Ada: runs OneFlow 0.9.0's 8.6 kernels
H200 = ("NVIDIA H200", (9, 0))  # Hopper
B200 = ("NVIDIA B200", (10, 0))  # Blackwell
M60 = ("Tesla M60", (5, 2))  # Maxwell

# cuGetErrorName's names, held here for as long as the tests run: it hands out pointers to them.
ERROR_NAMES = {3: b"CUDA_ERROR_NOT_INITIALIZED", 100: b"CUDA_ERROR_NO_DEVICE", 101: b"CUDA_ERROR_INVALID_DEVICE",
               803: b"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", 999: b"CUDA_ERROR_UNKNOWN"}
NOT_INITIALIZED, INVALID_VALUE, INVALID_DEVICE = 3, 1, 101
ATTRIBUTES = {75: 0, 76: 1}  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR and _MINOR: index in (major, minor)


class FakeDriver:
    """libcuda.so.1 as ctypes loads it, playing cuDriverGetVersion's figure, cuInit's result and the GPUs
    [(name, (major, minor))] it shows this process; fail={function: code} makes a call fail. It answers only
    the calls that create no CUDA context (any other is an AttributeError), device calls only after a
    successful cuInit as the real one does, and lists in `calls` the functions called."""

    def __init__(self, gpus=(), version=12040, init=0, fail=None):
        self.gpus, self.version, self.init, self.fail = list(gpus), version, init, fail or {}
        self.calls, self.initialised = [], False

    def _enter(self, function, needs_init=True):
        """Record the call; the CUresult it fails with, or None to go on."""
        self.calls.append(function)
        if function in self.fail:
            return self.fail[function]
        return NOT_INITIALIZED if needs_init and not self.initialised else None

    def cuDriverGetVersion(self, version):
        if (code := self._enter("cuDriverGetVersion", needs_init=False)) is not None:
            return code
        version.contents.value = self.version
        return 0

    def cuInit(self, flags):
        if (code := self._enter("cuInit", needs_init=False)) is not None:
            return code
        if flags != 0:
            return INVALID_VALUE
        self.initialised = self.init == 0
        return self.init

    def cuDeviceGetCount(self, count):
        if (code := self._enter("cuDeviceGetCount")) is not None:
            return code
        count.contents.value = len(self.gpus)
        return 0

    def cuDeviceGet(self, device, ordinal):
        if (code := self._enter("cuDeviceGet")) is not None:
            return code
        if not 0 <= ordinal < len(self.gpus):
            return INVALID_DEVICE
        device.contents.value = ordinal
        return 0

    def cuDeviceGetName(self, buffer, length, device):
        if (code := self._enter("cuDeviceGetName")) is not None:
            return code
        buffer.value = self.gpus[device.value][0].encode()[:length - 1]
        return 0

    def cuDeviceGetAttribute(self, value, attribute, device):
        if (code := self._enter("cuDeviceGetAttribute")) is not None:
            return code
        if attribute not in ATTRIBUTES:
            return INVALID_VALUE
        value.contents.value = self.gpus[device.value][1][ATTRIBUTES[attribute]]
        return 0

    def cuGetErrorName(self, code, name):
        self.calls.append("cuGetErrorName")
        if code not in ERROR_NAMES:
            return INVALID_VALUE
        name.contents.value = ERROR_NAMES[code]
        return 0
