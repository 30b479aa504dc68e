"""lenet.CheckPoint: save then load, replacing a folder, the tutorial's own checkpoint layout, and saves that cannot
be written (a file in the way, a read-only folder, a full disk) leaving the old model as it was."""
import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import lenet
from conftest import FIXTURE, ROOT, in_mount_namespace, initialised, logits, read_only_mounts, run
from lenet import flow


CPU = flow.device("cpu")


def test_save_then_load_gives_identical_logits(tmp_path):
    saved, loaded = initialised(1), initialised(2)
    lenet.CheckPoint(saved).save(tmp_path / "model")
    assert not np.array_equal(logits(saved), logits(loaded))
    lenet.CheckPoint(loaded).load(tmp_path / "model")
    assert np.array_equal(logits(saved), logits(loaded))
    # As the README shows: two lines of plain OneFlow load it back.
    plain = lenet.LeNet()
    plain.load_state_dict(flow.load(str(tmp_path / "model")))
    assert np.array_equal(logits(saved), logits(plain))


def test_save_replaces_an_existing_model_and_leaves_nothing_beside_it(tmp_path):
    first, second, loaded = initialised(1), initialised(2), initialised(3)
    lenet.CheckPoint(first).save(tmp_path / "model")
    (tmp_path / "model" / "stale-file").write_text("from an older save")
    lenet.CheckPoint(second).save(tmp_path / "model")
    assert os.listdir(tmp_path) == ["model"]
    assert not (tmp_path / "model" / "stale-file").exists()
    lenet.CheckPoint(loaded).load(tmp_path / "model")
    assert np.array_equal(logits(second), logits(loaded))


def test_save_onto_a_file_is_refused(tmp_path):
    (tmp_path / "model").write_text("precious")
    with pytest.raises(lenet.InputError, match=f"cannot save the model to {tmp_path / 'model'}: it is a file"):
        lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
    assert (tmp_path / "model").read_text() == "precious"
    assert os.listdir(tmp_path) == ["model"]


def test_load_without_a_model(tmp_path):
    with pytest.raises(lenet.InputError, match=f"no model at {tmp_path / 'none'} \\(run lenet_train.py first\\)"):
        lenet.CheckPoint(initialised(1)).load(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(lenet.InputError, match="neither pickled_data nor snapshot_done"):
        lenet.CheckPoint(initialised(1)).load(tmp_path / "empty")


def write_legacy(folder, model, meta):
    """Write model's weights as the tutorial's flow.train.CheckPoint did: snapshot_done, NAME/out (and NAME/meta)."""
    folder.mkdir()
    (folder / "snapshot_done").touch()
    for name, parameter in model.named_parameters():
        variable = folder / name.replace(".", "-")
        variable.mkdir()
        (variable / "out").write_bytes(parameter.numpy().astype("<f4").tobytes())
        if meta:
            dims = "".join(f"  dim: {d}\n" for d in parameter.shape)
            (variable / "meta").write_text(f"shape {{\n{dims}}}\ndata_type: kFloat\n")
    step = folder / "System-Train-TrainStep-train_job"  # the tutorial's step counter: ignored
    step.mkdir()
    (step / "out").write_bytes(np.int64(1200).tobytes())


@pytest.mark.parametrize("meta", [True, False])
def test_loads_the_tutorials_checkpoint_layout(tmp_path, meta):
    saved, loaded = initialised(1), initialised(2)
    write_legacy(tmp_path / "lenet_models_1", saved, meta)
    lenet.CheckPoint(loaded).load(tmp_path / "lenet_models_1")
    assert np.array_equal(logits(saved), logits(loaded))


def test_legacy_folder_with_a_wrong_shape(tmp_path):
    write_legacy(tmp_path / "model", initialised(1), meta=False)
    (tmp_path / "model" / "dense2-weight" / "out").write_bytes(np.zeros(10 * 500, "<f4").tobytes())
    with pytest.raises(lenet.InputError, match="dense2-weight/out holds 5000 floats, dense2-weight needs 5120"):
        lenet.CheckPoint(initialised(2)).load(tmp_path / "model")


def test_new_format_from_another_network(tmp_path):
    other = flow.nn.Linear(3, 4)
    flow.save({"conv1.weight": other.weight}, str(tmp_path / "model"))
    with pytest.raises(lenet.InputError, match=f"cannot load the model at {tmp_path / 'model'} "):
        lenet.CheckPoint(initialised(1)).load(tmp_path / "model")


@pytest.fixture
def saved(tmp_path):
    """A folder with the fixture's data and a model (seed 1) saved at ./model; returns the folder."""
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
    return tmp_path


def test_unreadable_model(saved, monkeypatch):
    pickled = saved / "model" / "pickled_data"
    if os.geteuid() != 0:
        pickled.chmod(0)
    else:  # root reads any file: refuse it the way the kernel would
        read_bytes = Path.read_bytes
        monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(
            PermissionError(errno.EACCES, "Permission denied", str(self))) if self == pickled else read_bytes(self))
    with pytest.raises(lenet.InputError, match=f"cannot load the model at {saved / 'model'} .*Permission denied"):
        lenet.CheckPoint(lenet.LeNet()).load(saved / "model")


# Saves the model of seed 2 over the model of seed 1 at argv[3] (saving that one first if argv[4] is "first") with
# lenet.CheckPoint: prints the one-line error it raises, whether the model found there then still gives seed 1's
# logits, and what its folder holds.
SAVE = """
import os, sys
sys.path[:0] = sys.argv[1:3]
import numpy as np
import lenet
from conftest import initialised, logits
target = sys.argv[3]
if sys.argv[4:] == ["first"]:
    lenet.CheckPoint(initialised(1)).save(target)
try:
    lenet.CheckPoint(initialised(2)).save(target)
    print("saved")
except lenet.InputError as e:
    print("error:", e)
print("old model kept:", np.array_equal(logits(lenet.load_model(target, lenet.flow.device("cpu"))), logits(initialised(1))))
print("folder holds:", sorted(os.listdir(os.path.dirname(target))))
"""


def save(target, mounts, *first):
    """Run SAVE onto target in a mount namespace of its own with mounts; return its output lines."""
    command = in_mount_namespace(mounts, [sys.executable, "-c", SAVE, ROOT, ROOT / "tests", target, *first])
    result = run(command, cwd=Path(target).parent.parent)  # beside the folder mounted over, not in it
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_save_into_a_read_only_folder(saved):
    assert save(saved / "model", read_only_mounts(saved)) == [
        f"error: cannot save the model to {saved / 'model'} (Read-only file system)",
        "old model kept: True",
        "folder holds: ['mnist.npz', 'model']"]
    assert np.array_equal(logits(lenet.load_model(saved / "model", CPU)), logits(initialised(1)))


def test_save_onto_a_full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    # 10 MB: room for one model (6.7 MB), not for a second beside it while it is written.
    assert save(disk / "model", [["-t", "tmpfs", "-o", "size=10m", "tmpfs", disk]], "first") == [
        f"error: cannot save the model to {disk / 'model'} (No space left on device)",
        "old model kept: True",
        "folder holds: ['model']"]  # the half-written new folder is gone
