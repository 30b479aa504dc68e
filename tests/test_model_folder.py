"""model_folder: a broken model folder gives lenet_eval.py exit status 1, one line naming what is wrong, no
traceback, and the folder as it was (README's failure table, docs/failures.md)."""
import pytest

import lenet
from conftest import FIXTURE, assert_fails_cleanly, initialised, run_script
from lenet import flow


def first_tensor_dir(model_dir):
    return sorted(p for p in model_dir.iterdir() if p.name.startswith("tensor_"))[0]


def empty(folder):
    (folder / "model").mkdir()


def from_another_network(folder):
    other = flow.nn.Linear(3, 4)
    flow.save({"conv1.weight": other.weight, "fc.bias": other.bias}, str(folder / "model"))


def truncated_out(folder):
    out = first_tensor_dir(folder / "model") / "out"
    out.write_bytes(out.read_bytes()[:100])


def meta_contradicts_out(folder):
    meta = first_tensor_dir(folder / "model") / "meta"
    meta.write_text(meta.read_text().replace("dim: 32", "dim: 64"))


def legacy_without_an_out(folder):
    (folder / "model").mkdir()
    (folder / "model" / "snapshot_done").touch()


@pytest.mark.parametrize("breaks, message", [
    (None, "no model at model (run lenet_train.py first)"),
    (empty, "no model at model: the folder has neither pickled_data nor snapshot_done"),
    (from_another_network, "cannot load the model at model (Error(s) in loading state_dict for LeNet:"),
    (truncated_out, "out holds 100 bytes, but"),
    (meta_contradicts_out, "/meta says oneflow.float32 (64"),
    (legacy_without_an_out, "cannot load the model at model: model/conv1-weight/out is missing"),
])
def test_broken_model_folder(tmp_path, breaks, message):
    (tmp_path / "mnist.npz").write_bytes(FIXTURE.read_bytes())
    if breaks is not None:
        if breaks not in (empty, from_another_network, legacy_without_an_out):
            lenet.CheckPoint(initialised(1)).save(tmp_path / "model")
        breaks(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert_fails_cleanly(run_script("lenet_eval.py", "--model-dir", "model", cwd=tmp_path), message)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
