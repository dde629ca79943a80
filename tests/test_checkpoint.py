"""Checkpoints: round trip, atomic writes, no pickle, clear errors for bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

from minisae import SGD, Adam, SparseAutoencoder
from minisae import checkpoint as ck
from minisae.errors import CheckpointError
from minisae.train import History, fit


def trained(tmp_path, optimizer="adam"):
    model = SparseAutoencoder(10, 4, weight_decay=1e-3, reduction="halfsum", seed=3)
    opt = Adam(model.params, model.grads, lr=0.02) if optimizer == "adam" else \
        SGD(model.params, model.grads, lr=0.1, momentum=0.5)
    x = np.random.default_rng(0).random((64, 10), dtype=np.float32)
    history = fit(model, opt, x, 2, 16, progress=False)
    path = ck.save(tmp_path / "c.npz", model, opt, history, {"settings": {"preset": "x"}})
    return model, opt, history, path


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_round_trip(tmp_path, optimizer):
    model, opt, history, path = trained(tmp_path, optimizer)
    c = ck.load(path)
    assert c.model.config == model.config
    for name in model.params:
        np.testing.assert_array_equal(c.model.params[name], model.params[name])
    assert type(c.optimizer) is type(opt) and c.optimizer.t == opt.t and c.optimizer.lr == opt.lr
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(c.optimizer.state_dict()[key], value)
    assert c.history == history
    assert c.extra == {"settings": {"preset": "x"}}
    # the loaded optimizer updates the loaded model's arrays
    assert c.optimizer.params["encoder.W"] is c.model.params["encoder.W"]


def test_file_holds_no_pickled_objects(tmp_path):
    *_, path = trained(tmp_path)
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            assert z[key].dtype != object, key


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    model, opt, history, path = trained(tmp_path)
    before = open(path, "rb").read()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        ck.save(path, model, opt, history)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ck.load(tmp_path / "nope.npz")


def test_truncated_file(tmp_path):
    *_, path = trained(tmp_path)
    data = open(path, "rb").read()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="bad.npz"):
        ck.load(bad)


def test_not_a_checkpoint(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a minisae checkpoint"):
        ck.load(other)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="text.npz"):
        ck.load(text)


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    for k, v in list(arrays.items()):
        if v is None:
            del arrays[k]
    np.savez(path, **arrays)


def test_other_format_version(tmp_path):
    *_, path = trained(tmp_path)
    _rewrite(path, format_version=np.array(99))
    with pytest.raises(CheckpointError, match="format version 99"):
        ck.load(path)


def test_wrong_shape(tmp_path):
    *_, path = trained(tmp_path)
    _rewrite(path, **{"param/encoder.W": np.zeros((10, 5), np.float32)})
    with pytest.raises(CheckpointError, match="encoder.W.*shape"):
        ck.load(path)


def test_missing_parameter_and_optimizer_state(tmp_path):
    *_, path = trained(tmp_path)
    _rewrite(path, **{"optim/m.decoder.b": None})
    with pytest.raises(CheckpointError, match="m.decoder.b"):
        ck.load(path)
    _rewrite(path, **{"param/decoder.b": None})
    with pytest.raises(CheckpointError, match="decoder.b"):
        ck.load(path)


def test_damaged_config(tmp_path):
    *_, path = trained(tmp_path)
    _rewrite(path, config=np.array(json.dumps({"n_inputs": 10})))
    with pytest.raises(CheckpointError, match="damaged|incompatible"):
        ck.load(path)
    _rewrite(path, config=np.array("{not json"))
    with pytest.raises(CheckpointError):
        ck.load(path)


def test_non_finite_weights_are_refused(tmp_path):
    *_, path = trained(tmp_path)
    w = np.full((4, 10), np.nan, np.float32)
    _rewrite(path, **{"param/decoder.W": w})
    with pytest.raises(CheckpointError, match="NaN"):
        ck.load(path)


def test_model_only_checkpoint(tmp_path):
    model = SparseAutoencoder(6, 3)
    c = ck.load(ck.save(tmp_path / "m.npz", model))
    assert c.optimizer is None and len(c.history) == 0 and isinstance(c.history, History)
    assert zipfile.is_zipfile(tmp_path / "m.npz")
