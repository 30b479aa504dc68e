"""Device choice, through a fake CUDA driver: no driver, cuInit failing, a driver too old, GPUs OneFlow 0.9.0 runs
on (compute capability 6.0 to 8.9) and GPUs it does not, under the launcher too, each with its device line or its
one-line error. No GPU is needed: gpu_probe.load_library, the probe's one seam, returns a fake libcuda.so.1
(fake_cuda.py) that plays each machine, and with --device cpu fails the test if it is asked at all."""
import importlib.util
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import gpu_probe
import lenet
import lenet_eval
import multi_node
import oneflow_setup
from conftest import FIXTURE, numpy_accuracy_line, run_script
from fake_cuda import A100, B200, H200, L4, M60, FakeDriver
from lenet import flow


def too_new_or_old(number, gpu):
    """The reason a GPU of that compute capability is refused."""
    name, (major, minor) = gpu
    return f"cuda:{number} ({name}) has compute capability {major}.{minor}; OneFlow 0.9.0 runs on 6.0 to 8.9"


NO_DRIVER = "no NVIDIA driver: libcuda.so.1 not found"
NOT_VISIBLE = "no GPU visible to this process: CUDA_VISIBLE_DEVICES, a container without GPUs or MIG hides them"
OLD_DRIVER = ("NVIDIA driver for CUDA 10.2 is too old: OneFlow 0.9.0, a CUDA 11.7 build, needs one for CUDA 11.0 or "
              "newer (450.80.02 or newer)")
CONTEXT_FREE = {"cuDriverGetVersion", "cuInit", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName",
                "cuDeviceGetAttribute", "cuGetErrorName"}


@pytest.fixture
def machine(monkeypatch):
    """play(driver, processes=1, local_rank=0): this process has that fake driver (None: no libcuda.so.1; "never":
    the test fails if the driver is loaded). Returns the list of calls of oneflow_setup.on_cpu (the CPU settings)."""
    def play(driver, processes=1, local_rank=0):
        def load_library():
            if driver == "never":
                pytest.fail("the CUDA driver was loaded, though nothing about the GPUs was to be asked")
            return driver
        monkeypatch.setattr(gpu_probe, "load_library", load_library)
        monkeypatch.setattr(flow.env, "get_world_size", lambda: processes)
        monkeypatch.setattr(flow.env, "get_local_rank", lambda: local_rank)
        cpu_settings = []
        monkeypatch.setattr(oneflow_setup, "on_cpu", lambda: cpu_settings.append(True))
        return cpu_settings
    return play


class Stop(Exception):
    """Raised where a script would place the model on its device after its device line: a GPU run cannot go on
    without a GPU."""


def first_line(argv, capsys, monkeypatch):
    """(exit status, the first line lenet_eval.main(argv) writes: the device line on stdout, else its error line).

    The run is stopped once the device line is written (placing the model raises Stop), so the status of a run
    that goes on is None; test_a_script_on_a_hopper_runs_on_the_cpu_to_its_end runs one through. No model or data is
    read, and each process's checks stand alone: their agreement under the launcher is tests/test_multi_node.py's."""
    def stop(*args):
        raise Stop()
    monkeypatch.setattr(lenet, "place", stop)
    monkeypatch.setattr(lenet.CheckPoint, "load", lambda self, path: None)
    digits = (np.zeros((1, 1, 28, 28), np.float32), np.zeros(1, np.int32))
    monkeypatch.setattr(lenet, "load_mnist", lambda *args, **kwargs: (digits, digits, "./mnist.npz", None))
    monkeypatch.setattr(multi_node, "agreed", lambda check, flags: check()[0])
    try:
        lenet_eval.main(argv)
    except Stop:
        return None, capsys.readouterr().out.splitlines()[0]
    except SystemExit as exit:  # sys.exit("error: ..."): the message on stderr and status 1
        assert capsys.readouterr().out == ""
        return (1, exit.code) if isinstance(exit.code, str) else (exit.code, None)
    raise AssertionError("lenet_eval.main went past the model's placing")


# The machines of issue 19, each through lenet_eval.main: (driver, flags, processes, local rank, exit status, line).
CASES = {
    "no libcuda": (None, [], 1, 0, None, f"device cpu ({NO_DRIVER})"),
    "no libcuda, --device cuda": (None, ["--device", "cuda"], 1, 0, 1,
                                  f"error: device 'cuda' is not available: {NO_DRIVER} (use --device cpu)"),
    "cuInit 100, no GPU visible": (FakeDriver([A100], init=100), [], 1, 0, None, f"device cpu ({NOT_VISIBLE})"),
    "cuInit succeeds, no GPU counted": (FakeDriver([]), [], 1, 0, None, f"device cpu ({NOT_VISIBLE})"),
    "cuInit 803, library and kernel module differ": (
        FakeDriver([A100], init=803), [], 1, 0, None,
        "device cpu (the CUDA driver failed: cuInit gives CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (803))"),
    "cuInit 999": (FakeDriver([A100], init=999), [], 1, 0, None,
                   "device cpu (the CUDA driver failed: cuInit gives CUDA_ERROR_UNKNOWN (999))"),
    "cuInit 999, --device cuda": (
        FakeDriver([A100], init=999), ["--device", "cuda"], 1, 0, 1,
        "error: device 'cuda' is not available: the CUDA driver failed: cuInit gives CUDA_ERROR_UNKNOWN (999) "
        "(use --device cpu)"),
    "an error cuGetErrorName has no name for": (
        FakeDriver([A100], init=4242), [], 1, 0, None, "device cpu (the CUDA driver failed: cuInit gives error 4242)"),
    "cuDeviceGetAttribute failing": (
        FakeDriver([A100], fail={"cuDeviceGetAttribute": 999}), [], 1, 0, None,
        "device cpu (the CUDA driver failed: cuDeviceGetAttribute gives CUDA_ERROR_UNKNOWN (999))"),
    "a driver for CUDA 10.2 (R440)": (FakeDriver([A100], version=10020), [], 1, 0, None, f"device cpu ({OLD_DRIVER})"),
    "a driver for CUDA 11.0 (R450)": (FakeDriver([A100], version=11000), [], 1, 0, None, "device cuda:0"),
    "A100": (FakeDriver([A100]), [], 1, 0, None, "device cuda:0"),
    "A100, --device cuda:1": (FakeDriver([A100]), ["--device", "cuda:1"], 1, 0, 1,
                              "error: device 'cuda:1' is not available: this process sees 1 GPU (use --device cuda:0)"),
    "H200": (FakeDriver([H200]), [], 1, 0, None, f"device cpu ({too_new_or_old(0, H200)})"),
    "H200, --device cuda": (FakeDriver([H200]), ["--device", "cuda"], 1, 0, 1,
                            f"error: device 'cuda' is not available: {too_new_or_old(0, H200)} (use --device cpu)"),
    "H200 beside A100": (FakeDriver([H200, A100]), [], 1, 0, None, f"device cuda:1 ({too_new_or_old(0, H200)})"),
    "H200 beside A100, --device cuda": (FakeDriver([H200, A100]), ["--device", "cuda"], 1, 0, None,
                                        f"device cuda:1 ({too_new_or_old(0, H200)})"),
    "H200 beside A100, --device cuda:0": (
        FakeDriver([H200, A100]), ["--device", "cuda:0"], 1, 0, 1,
        f"error: device 'cuda:0' is not available: {too_new_or_old(0, H200)} (use --device cuda:1)"),
    "B200 (10.0)": (FakeDriver([B200]), [], 1, 0, None, f"device cpu ({too_new_or_old(0, B200)})"),
    "M60 (5.2)": (FakeDriver([M60]), [], 1, 0, None, f"device cpu ({too_new_or_old(0, M60)})"),
    "L4 (8.9)": (FakeDriver([L4]), [], 1, 0, None, "device cuda:0"),
    "three processes on two GPUs: process 0": (FakeDriver([A100, A100]), [], 3, 0, None,
                                               "device cuda x 3 processes (data-parallel)"),
    "three processes on two GPUs: process 2": (
        FakeDriver([A100, A100]), [], 3, 2, 1,
        "error: cuda:2, the GPU of process 2 on this machine, is not available: this process sees 2 GPUs "
        "(use --nproc_per_node 2)"),
    "two processes on two H200s": (
        FakeDriver([H200, H200]), [], 2, 0, None,
        f"device cpu x 2 processes (data-parallel; {too_new_or_old(0, H200)}; {too_new_or_old(1, H200)})"),
    "two processes on two H200s, --device cuda": (
        FakeDriver([H200, H200]), ["--device", "cuda"], 2, 1, 1,
        f"error: cuda:1, the GPU of process 1 on this machine, is not available: {too_new_or_old(1, H200)} "
        "(use --device cpu)"),
    "two processes on an H200 beside an A100: process 0": (
        FakeDriver([H200, A100]), [], 2, 0, 1,
        f"error: cuda:0, the GPU of process 0 on this machine, is not available: {too_new_or_old(0, H200)} "
        "(use --nproc_per_node 1 with CUDA_VISIBLE_DEVICES=1)"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_machine_gives_its_device_line_or_error(case, machine, capsys, monkeypatch):
    driver, argv, processes, local_rank, status, line = CASES[case]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cpu_settings = machine(driver, processes, local_rank)
    assert first_line(argv, capsys, monkeypatch) == (status, line)
    assert cpu_settings == ([True] if line.startswith("device cpu") else [])  # never on a GPU
    if driver is not None:
        assert set(driver.calls) <= CONTEXT_FREE


@pytest.mark.parametrize("argv, status, line", [
    ([], None, f"device cpu ({gpu_probe.CPU_BUILD})"),
    (["--device", "cuda"], 1, f"error: device 'cuda' is not available: {gpu_probe.CPU_BUILD} (use --device cpu)")])
def test_a_cpu_build_of_oneflow_runs_on_the_cpu_beside_a_gpu(argv, status, line, machine, capsys, monkeypatch):
    machine(FakeDriver([A100]))  # a GPU OneFlow's CUDA build would run on
    monkeypatch.setattr(flow.sysconfig, "with_cuda", lambda: False)
    assert first_line(argv, capsys, monkeypatch) == (status, line)


class Without:
    """A fake driver without some of its functions, as an old driver or a stand-in library may be."""

    def __init__(self, driver, *missing):
        self.driver, self.missing = driver, missing

    def __getattr__(self, name):
        if name in self.missing:
            raise AttributeError(f"/usr/lib/libcuda.so.1: undefined symbol: {name}")
        return getattr(self.driver, name)


def test_a_driver_without_a_function_the_probe_calls_is_named(machine, capsys, monkeypatch):
    machine(Without(FakeDriver([A100]), "cuGetErrorName", "cuDeviceGetAttribute"))
    assert first_line([], capsys, monkeypatch) == (None, (
        "device cpu (libcuda.so.1 has no cuDeviceGetAttribute, cuGetErrorName: a driver too old for CUDA 11, "
        "or not NVIDIA's)"))


@pytest.mark.parametrize("error, reason", [
    ("libcuda.so.1: cannot open shared object file: No such file or directory", NO_DRIVER),
    ("libcuda.so.1: wrong ELF class: ELFCLASS32",
     "the NVIDIA driver's libcuda.so.1 cannot be loaded (libcuda.so.1: wrong ELF class: ELFCLASS32)"),
    ("libnvidia-ptxjitcompiler.so.1: cannot open shared object file: No such file or directory",
     "the NVIDIA driver's libcuda.so.1 cannot be loaded (libnvidia-ptxjitcompiler.so.1: cannot open shared "
     "object file: No such file or directory)"),
])
def test_a_driver_that_cannot_be_loaded_is_named_with_the_loaders_text(error, reason, monkeypatch):
    def cdll(name):
        assert name == "libcuda.so.1"
        raise OSError(error)
    monkeypatch.setattr(gpu_probe.ctypes, "CDLL", cdll)
    assert gpu_probe.probe() == ([], reason)


@pytest.mark.parametrize("shown, second", [
    ("3,5", "5"),  # cuda:0 and cuda:1 of this process are GPUs 3 and 5
    ("GPU-8f6c2a1e-0d4b-4c3a-9e1f-2b7d5c6a8e90, GPU-1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
     "GPU-1d2e3f40-5a6b-4c7d-8e9f-0a1b2c3d4e5f"),  # by UUID, as nvidia-smi -L gives them
    ("MIG-4b3c2d1e-aaaa-4bbb-8ccc-0123456789ab,MIG-9f8e7d6c-dddd-4eee-8fff-ba9876543210",
     "MIG-9f8e7d6c-dddd-4eee-8fff-ba9876543210"),  # MIG instances
])
def test_the_hint_names_the_gpus_as_cuda_visible_devices_names_them(shown, second, machine, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", shown)
    machine(FakeDriver([H200, A100]), processes=2, local_rank=0)
    assert first_line([], capsys, monkeypatch) == (1, (
        f"error: cuda:0, the GPU of process 0 on this machine, is not available: {too_new_or_old(0, H200)} "
        f"(use --nproc_per_node 1 with CUDA_VISIBLE_DEVICES={second})"))


@pytest.mark.parametrize("processes", [1, 2])
def test_device_cpu_asks_nothing_about_the_gpus(processes, machine, capsys, monkeypatch):
    cpu_settings = machine("never", processes=processes)  # fails the test if the driver is loaded
    expected = "device cpu" if processes == 1 else "device cpu x 2 processes (data-parallel)"
    assert first_line(["--device", "cpu"], capsys, monkeypatch) == (None, expected)
    assert cpu_settings == [True]


def load_on_the_cpu_only(monkeypatch):
    """lenet.place fails the test where it is given a GPU, rather than let OneFlow abort the tests without one."""
    place = lenet.place
    def on_the_cpu(model, device):
        if device.type != "cpu":
            pytest.fail(f"the model was to be placed on {device}")
        return place(model, device)
    monkeypatch.setattr(lenet, "place", on_the_cpu)


def test_device_cpu_on_a_broken_driver_runs_to_its_end(machine, trained, capsys, monkeypatch):
    folder, _ = trained
    machine("never")  # a broken driver (cuInit would give 999) that fails the test if it is loaded
    load_on_the_cpu_only(monkeypatch)
    monkeypatch.chdir(folder)
    lenet_eval.main(["--device", "cpu"])  # returns: exit status 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "device cpu" and lines[-1] == numpy_accuracy_line(folder / "lenet_models_1")


def test_a_script_on_a_hopper_runs_on_the_cpu_to_its_end(machine, trained, capsys, monkeypatch):
    folder, _ = trained
    machine(FakeDriver([H200]))
    load_on_the_cpu_only(monkeypatch)
    monkeypatch.chdir(folder)
    lenet_eval.main([])  # returns: exit status 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"device cpu ({too_new_or_old(0, H200)})" and lines[-1] == numpy_accuracy_line(folder / "lenet_models_1")


def test_the_cpu_settings_stay_off_a_gpu_run(monkeypatch):
    """The real on_cpu: the settings OneFlow reads when it builds a graph are set for the CPU, never for a GPU."""
    monkeypatch.setattr(flow.env, "get_world_size", lambda: 1)
    monkeypatch.setattr(oneflow_setup, "SPEEDUPS", True)
    monkeypatch.setenv("LENET_SCHEDULER_NICE", "0")  # this test process's scheduler thread left alone
    graph_settings = ["ONEFLOW_ENABLE_ONEDNN_OPTS", "ONEFLOW_KERNEL_ENABLE_FUSED_CONV_BIAS"]
    for name in graph_settings:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(gpu_probe, "load_library", lambda: FakeDriver([A100]))
    assert str(lenet.choose_device()[0]) == "cuda:0"
    assert [name for name in graph_settings if name in os.environ] == []
    monkeypatch.setattr(gpu_probe, "load_library", lambda: FakeDriver([H200]))
    assert str(lenet.choose_device()[0]) == "cpu:0"
    assert [os.environ.get(name) for name in graph_settings] == ["0", "1"]


def test_the_real_library_missing_is_no_driver(monkeypatch):
    """The ctypes path itself: a library that is not there gives the no-driver reason (any machine)."""
    monkeypatch.setattr(gpu_probe, "LIBRARY", "libcuda-not-installed.so.1")
    assert gpu_probe.load_library() is None
    monkeypatch.setattr(gpu_probe, "load_library", lambda: None)
    assert gpu_probe.probe() == ([], NO_DRIVER)


# A stand-in for libcuda.so.1 in C, so that the probe's ctypes calls (pointers, the name buffer, the error name)
# are checked against a real C library: an A100 and an H200, cuInit giving INIT.
DRIVER_C = r"""
#include <string.h>
static int ready = 0;
static const char *names[] = {"NVIDIA A100-SXM4-80GB", "NVIDIA H200"};
static const int capabilities[][2] = {{8, 0}, {9, 0}};
int cuDriverGetVersion(int *version) { *version = 12040; return 0; }
int cuInit(unsigned int flags) { if (flags) return 1; ready = INIT == 0; return INIT; }
int cuDeviceGetCount(int *count) { if (!ready) return 3; *count = 2; return 0; }
int cuDeviceGet(int *device, int ordinal) {
    if (!ready) return 3; if (ordinal < 0 || ordinal > 1) return 101; *device = ordinal; return 0; }
int cuDeviceGetName(char *name, int length, int device) {
    if (!ready) return 3; strncpy(name, names[device], length - 1); name[length - 1] = 0; return 0; }
int cuDeviceGetAttribute(int *value, int attribute, int device) {
    if (!ready) return 3; if (attribute != 75 && attribute != 76) return 1;
    *value = capabilities[device][attribute - 75]; return 0; }
int cuGetErrorName(int code, const char **name) {
    if (code != 803) return 1; *name = "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"; return 0; }
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="a C compiler is needed to build the stand-in driver")
@pytest.mark.parametrize("init, expected", [
    (0, ([A100, H200], None)),
    (803, ([], "the CUDA driver failed: cuInit gives CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (803)")),
])
def test_the_probe_reads_a_compiled_driver_through_ctypes(init, expected, tmp_path, monkeypatch):
    (tmp_path / "driver.c").write_text(DRIVER_C)
    library = tmp_path / f"libstandin-{init}.so"  # not named libcuda.so.1: OneFlow's own CUDA must not find it
    subprocess.run(["cc", "-shared", "-fPIC", f"-DINIT={init}", "-o", str(library), str(tmp_path / "driver.c")],
                   check=True, timeout=60)
    monkeypatch.setattr(gpu_probe, "LIBRARY", str(library))
    assert gpu_probe.probe() == expected


@pytest.mark.parametrize("name", ["tpu", "cpu:0", "cuda:x", "cuda:-1"])
def test_an_unknown_device_is_refused_without_asking(machine, name):
    machine("never")
    with pytest.raises(lenet.InputError) as error:
        lenet.choose_device(name)
    assert str(error.value) == f"unknown device {name!r} (use cpu, cuda or cuda:N)"


def test_under_the_launcher_a_gpu_index_is_refused_without_asking(machine):
    machine("never", processes=2, local_rank=0)
    with pytest.raises(lenet.InputError) as error:
        lenet.choose_device("cuda:1")
    assert str(error.value) == ("under the launcher each process takes the GPU of its local rank: use --device cuda, "
                                "not cuda:1")


def test_each_script_refuses_an_unavailable_device(tmp_path):
    """As a user runs them, with CUDA_VISIBLE_DEVICES="": the reason is this machine's (no driver, no GPU visible)."""
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    for script, *args in [("lenet_train.py",), ("lenet_eval.py",), ("lenet_test.py", "digit.png")]:
        for device, message in [("cuda", r"error: device 'cuda' is not available: .+ \(use --device cpu\)"),
                                ("tpu", re.escape("error: unknown device 'tpu' (use cpu, cuda or cuda:N)"))]:
            result = run_script(script, *args, "--device", device, cwd=tmp_path)
            assert result.returncode == 1, (script, result.stderr)
            assert re.fullmatch(message, result.stderr.splitlines()[-1]), (script, result.stderr)
            assert "Traceback" not in result.stderr


def fatbin_entries(path):
    """{(kind, sm)} of the CUDA code in an ELF library's .nv_fatbin section: ("cubin", 80) for sm_80 machine code,
    ("ptx", 86) for PTX, which the driver could compile for a newer GPU. The fatbin format (CUDA's fatbinary.h):
    containers of magic 0xBA55ED50 (u32), version (u16), header size (u16), size (u64); in each, entries of kind
    (u16: 1 PTX, 2 cubin), version (u16), header size (u32), size (u64), ..., the sm at byte 28 (u32)."""
    with open(path, "rb") as f:
        elf = f.read(64)
        (table_at,) = struct.unpack_from("<Q", elf, 0x28)  # the section header table: where, entry size, count
        entry_size, count, names_index = struct.unpack_from("<HHH", elf, 0x3A)
        f.seek(table_at)
        table = f.read(entry_size * count)
        sections = [struct.unpack_from("<IIQQQQ", table, i * entry_size) for i in range(count)]  # name, ..., offset, size
        f.seek(sections[names_index][4])
        names = f.read(sections[names_index][5])
        name_of = {names[s[0]:names.index(b"\0", s[0])]: s for s in sections}
        _, _, _, _, offset, size = name_of[b".nv_fatbin"]
        f.seek(offset)
        data = f.read(size)
    entries, at = set(), 0
    while at + 16 <= len(data):
        magic, _, header, length = struct.unpack_from("<IHHQ", data, at)
        if magic != 0xBA55ED50:  # containers are 8-byte aligned, with padding between them
            at += 8
            continue
        entry, end = at + header, at + header + length
        while entry < end:
            kind, _, entry_header, entry_length = struct.unpack_from("<HHIQ", data, entry)
            entries.add(({1: "ptx", 2: "cubin"}[kind], struct.unpack_from("<I", data, entry + 28)[0]))
            entry += entry_header + entry_length
        at = end
    return entries


def test_the_capability_range_is_the_one_of_the_wheels_gpu_code():
    # The range gpu_probe.CAPABILITIES (and the README) states, against the code in OneFlow's own library.
    libraries = Path(importlib.util.find_spec("oneflow").origin).parent.parent / "oneflow.libs"
    entries = fatbin_entries(next(libraries.glob("liboneflow-*.so")))
    assert entries == {("cubin", sm) for sm in (60, 61, 70, 75, 80, 86)}  # and no PTX for a newer GPU to compile
    # A cubin runs on its own major version from its minor up (8.6's on Ada's 8.9), on no other major.
    (lowest, highest), majors = gpu_probe.CAPABILITIES, {sm // 10 for _, sm in entries}
    assert lowest == divmod(min(sm for _, sm in entries), 10) and highest == (max(majors), 9)
