"""Device choice: the GPUs OneFlow 0.9.0 can run on (compute capability 6.0 to 8.9), a GPU too new (Hopper),
more processes than GPUs under the launcher, a GPU behind a driver too old, each with its device line or its
one-line error. No GPU is needed: oneflow_setup.gpus and nvidia_driver are replaced to play each machine."""
import pytest

import lenet
import lenet_eval
import oneflow_setup
from conftest import FIXTURE, run_script
from lenet import flow

HOPPER, AMPERE, ADA, MAXWELL = ("NVIDIA H200", (9, 0)), ("NVIDIA A100-SXM4-80GB", (8, 0)), ("NVIDIA L4", (8, 9)), \
    ("Tesla M60", (5, 2))
TOO_NEW = "cuda:0 (NVIDIA H200) has compute capability 9.0; OneFlow 0.9.0 runs on 6.0 to 8.9"
OLD_DRIVER = ("OneFlow sees no GPU, though NVIDIA driver 470.82.01 is loaded: a driver too old for CUDA 11.7 is the "
              "usual cause; GLOG_minloglevel=0 shows OneFlow's reason")


@pytest.fixture
def machine(monkeypatch):
    """play(gpus, driver=None, processes=1, local_rank=0): this process sees that machine; returns the list of
    calls of oneflow_setup.on_cpu (the CPU speed settings)."""
    def play(gpus, driver=None, processes=1, local_rank=0):
        monkeypatch.setattr(oneflow_setup, "gpus", lambda: gpus)
        monkeypatch.setattr(oneflow_setup, "nvidia_driver", lambda: driver)
        monkeypatch.setattr(flow.env, "get_world_size", lambda: processes)
        monkeypatch.setattr(flow.env, "get_local_rank", lambda: local_rank)
        cpu_settings = []
        monkeypatch.setattr(oneflow_setup, "on_cpu", lambda: cpu_settings.append(True))
        return cpu_settings
    return play


def described(name=None):
    """(str of the device, its description) as choose_device gives them."""
    device, description = lenet.choose_device(name)
    return str(device), description


@pytest.mark.parametrize("gpus, name, expected", [
    ([], None, ("cpu:0", "cpu (no GPU found)")),
    ([AMPERE], None, ("cuda:0", "cuda:0")),
    ([ADA], None, ("cuda:0", "cuda:0")),  # 8.9 runs the 8.6 kernels
    ([AMPERE, AMPERE], "cuda:1", ("cuda:1", "cuda:1")),
    ([AMPERE], "cpu", ("cpu:0", "cpu")),
    ([HOPPER], None, ("cpu:0", f"cpu ({TOO_NEW})")),
    ([HOPPER, AMPERE], None, ("cuda:1", f"cuda:1 ({TOO_NEW})")),
    ([HOPPER, AMPERE], "cuda", ("cuda:1", f"cuda:1 ({TOO_NEW})")),  # cuda: the first GPU OneFlow can use
    ([HOPPER, AMPERE], "cuda:1", ("cuda:1", f"cuda:1 ({TOO_NEW})")),
    ([MAXWELL], None, ("cpu:0", "cpu (cuda:0 (Tesla M60) has compute capability 5.2; OneFlow 0.9.0 runs on 6.0 to 8.9)")),
])
def test_the_device_and_its_line(machine, gpus, name, expected):
    cpu_settings = machine(gpus)
    assert described(name) == expected
    assert cpu_settings == ([True] if expected[0] == "cpu:0" else [])  # the CPU speed settings, never on a GPU


@pytest.mark.parametrize("gpus, name, reason", [
    ([], "cuda", "no GPU found"),
    ([], "cuda:1", "no GPU found"),
    ([AMPERE], "cuda:1", "OneFlow sees 1 GPU(s)"),
    ([HOPPER], "cuda", TOO_NEW),
    ([HOPPER], "cuda:0", TOO_NEW),
    ([HOPPER, AMPERE], "cuda:0", TOO_NEW),
])
def test_a_gpu_that_is_missing_or_too_new_is_refused(machine, gpus, name, reason):
    cpu_settings = machine(gpus)
    with pytest.raises(lenet.InputError) as error:
        lenet.choose_device(name)
    assert str(error.value) == f"device {name!r} is not available: {reason} (use --device cpu)"
    assert cpu_settings == []


def test_a_gpu_behind_a_driver_too_old(machine):
    machine([], driver="470.82.01")
    assert described() == ("cpu:0", f"cpu ({OLD_DRIVER})")
    with pytest.raises(lenet.InputError, match="^device 'cuda' is not available: OneFlow sees no GPU, though NVIDIA"):
        lenet.choose_device("cuda")


def test_the_driver_version_is_read_from_linux(tmp_path, monkeypatch):
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.82.01  Wed Oct 27 21:21:55 UTC 2021\n"
                       "GCC version:  gcc version 9.3.0\n")
    monkeypatch.setattr(oneflow_setup, "NVIDIA_DRIVER", str(version))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert oneflow_setup.nvidia_driver() == "470.82.01"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # every GPU hidden on purpose: no hint of a problem
    assert oneflow_setup.nvidia_driver() is None
    monkeypatch.setattr(oneflow_setup, "NVIDIA_DRIVER", str(tmp_path / "none"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert oneflow_setup.nvidia_driver() is None


@pytest.mark.parametrize("gpus, local_rank, expected", [
    ([AMPERE, AMPERE], 1, None),
    ([AMPERE], 0, None),
    ([AMPERE], 1, "cuda:1, the GPU of process 1 on this machine, is not available: OneFlow sees 1 GPU(s) "
                  "(use fewer processes or --device cpu)"),
    ([HOPPER, AMPERE], 0, f"cuda:0, the GPU of process 0 on this machine, is not available: {TOO_NEW} "
                          "(use fewer processes or --device cpu)"),
])
def test_under_the_launcher_each_process_needs_a_gpu_of_its_own(machine, gpus, local_rank, expected):
    machine(gpus, processes=2, local_rank=local_rank)
    if expected is None:
        assert described() == ('oneflow.placement(type="cuda", ranks=[0, 1])', "cuda x 2 processes (data-parallel)")
    else:
        with pytest.raises(lenet.InputError) as error:
            lenet.choose_device()
        assert str(error.value) == expected


def test_under_the_launcher_a_gpu_index_is_refused(machine):
    machine([AMPERE, AMPERE], processes=2, local_rank=0)
    with pytest.raises(lenet.InputError) as error:
        lenet.choose_device("cuda:1")
    assert str(error.value) == ("under the launcher each process takes the GPU of its local rank: use --device cuda, "
                                "not cuda:1")


@pytest.mark.parametrize("name", ["tpu", "cpu:0", "cuda:x", "cuda:-1"])
def test_an_unknown_device_is_refused(name):
    with pytest.raises(lenet.InputError) as error:
        lenet.choose_device(name)
    assert str(error.value) == f"unknown device {name!r} (use cpu, cuda or cuda:N)"


def test_a_script_on_a_hopper_machine_runs_on_the_cpu_and_says_why(machine, trained, capsys, monkeypatch):
    folder, _ = trained
    machine([HOPPER])
    monkeypatch.chdir(folder)
    lenet_eval.main([])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"device cpu ({TOO_NEW})" and lines[-1].startswith("accuracy: ")


def test_a_script_asked_for_a_gpu_too_new_exits_with_one_line(machine, tmp_path, capsys, monkeypatch):
    machine([HOPPER])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        lenet_eval.main(["--device", "cuda"])
    assert exit.value.code == f"error: device 'cuda' is not available: {TOO_NEW} (use --device cpu)"  # status 1


@pytest.mark.parametrize("device, message", [
    ("cuda", "device 'cuda' is not available: no GPU found (use --device cpu)"),
    ("tpu", "unknown device 'tpu' (use cpu, cuda or cuda:N)"),
])
def test_each_script_refuses_an_unavailable_device(tmp_path, device, message):
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    for script, *args in [("lenet_train.py",), ("lenet_eval.py",), ("lenet_test.py", "digit.png")]:
        result = run_script(script, *args, "--device", device, cwd=tmp_path)  # CUDA_VISIBLE_DEVICES="": no GPU
        assert (result.returncode, result.stderr.splitlines()[-1]) == (1, f"error: {message}"), script
