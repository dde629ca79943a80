"""Checkpoints: round trip, atomic writes, no pickle, clear errors for bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

from forbid import forbid
from minisae import SGD, Adam, SparseAutoencoder
from minisae.config import param_shapes
from minisae.files import checkpoint as ck
from minisae.files.state import optimizer_state
from minisae.errors import CheckpointError
from minisae.training import History, fit


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
    loaded = optimizer_state(c.optimizer)
    assert set(loaded) == set(optimizer_state(opt))
    for key, value in optimizer_state(opt).items():
        np.testing.assert_array_equal(loaded[key], value)
    assert c.history.as_dict() == history.as_dict()
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


# ----------------------------------------------------------------------------- every bad file
# Each ends in a CheckpointError with a one-line message, never another exception.

def refused(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        ck.load(path)
    assert "\n" not in str(e.value) and "allow_pickle" not in str(e.value)
    return str(e.value)


def test_checkpoints_the_os_will_not_let_us_read_or_write_are_named(tmp_path, monkeypatch):
    """Issue 27's last doors: a PermissionError on the checkpoint (reading it, looking into
    its folder, writing it) is one CheckpointError naming the file, never a raw one, nor "no
    checkpoint" for one that is there."""
    model, *_ = trained(tmp_path)
    (tmp_path / "run").mkdir()
    os.rename(tmp_path / "c.npz", tmp_path / "run" / "checkpoint.npz")
    (tmp_path / "other").mkdir()
    ck.save(tmp_path / "other" / "c.npz", model)
    block = forbid(monkeypatch)
    block(tmp_path / "run" / "checkpoint.npz")
    message = refused(tmp_path / "run", r"checkpoint\.npz: cannot be read \(Permission denied\); "
                                        r"check its permissions")
    assert str(tmp_path / "run" / "checkpoint.npz") in message
    block(tmp_path / "run")
    refused(tmp_path / "run" / "checkpoint.npz", r"run.checkpoint\.npz: cannot be looked at "
                                                 r"\(Permission denied\); check its permissions "
                                                 r"and those of the folders above it")
    block(tmp_path / "other")
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint .*other.c\.npz: "
                                              r"Permission denied; check that its folder is "
                                              r"writable") as e:
        ck.save(tmp_path / "other" / "c.npz", model)
    assert "\n" not in str(e.value)


def test_a_run_folder_loads_its_checkpoint(tmp_path):
    model, *_ = trained(tmp_path)
    os.rename(tmp_path / "c.npz", tmp_path / "checkpoint.npz")
    assert ck.load(tmp_path).model.config == model.config
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "no checkpoint.npz in the folder")


def test_old_checkpoints_load(tmp_path):
    """A file written the way minisae wrote checkpoints before the loader was hardened."""
    model, opt, history, _ = trained(tmp_path)
    arrays = {"format_version": np.array(1), "config": np.array(json.dumps(vars(model.config))),
              "history": np.array(json.dumps(history.as_dict())),
              "extra": np.array(json.dumps({"settings": {"preset": "x"}})),
              "optimizer": np.array(json.dumps({"type": "Adam", "lr": 0.02,
                                                "betas": [0.9, 0.999], "eps": 1e-8}))}
    arrays.update({f"param/{k}": np.asarray(v) for k, v in model.params.items()})
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer_state(opt).items()})
    np.savez(tmp_path / "old.npz", **arrays)
    c = ck.load(tmp_path / "old.npz")
    assert c.history.as_dict() == history.as_dict() and c.optimizer.t == opt.t
    np.testing.assert_array_equal(c.model.params["decoder.W"], model.params["decoder.W"])


def test_compressed_and_big_endian_checkpoints_load(tmp_path):
    model, _, _, path = trained(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/encoder.W"] = arrays["param/encoder.W"].astype(">f4")
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    np.testing.assert_array_equal(ck.load(tmp_path / "z.npz").model.params["encoder.W"],
                                  model.params["encoder.W"])


def test_param_shapes_match_the_model():
    model = SparseAutoencoder(7, 3)
    assert param_shapes(model.config) == {k: v.shape for k, v in model.params.items()}
    assert tuple(model.params) == ck.PARAMS[:4]
    jump = SparseAutoencoder(7, 3, sparsity="jumprelu", hidden_activation="relu")
    assert tuple(jump.params) == ck.PARAMS   # every name a checkpoint may hold, in order


@pytest.mark.parametrize("content,kind", [
    (b"hello, a text file\n", "not a zip archive"),
    (json.dumps({"train_total": 0.1}).encode(), "not a zip archive"),
    (b"", "empty"),
])
def test_other_files_are_named_plainly(tmp_path, content, kind):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    message = refused(path, "not a minisae checkpoint")
    assert kind in message and "minisae train" in message


def test_npy_file(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    refused(tmp_path / "a.npy", r"not a minisae checkpoint.*single NumPy array \(.npy\)")


def _zip_bytes(path):
    return bytearray(open(path, "rb").read())


def _central_entries(data):
    """(offset, name) of each central-directory entry of a zip in data."""
    at = data.find(b"PK\x01\x02")
    while at != -1:
        n = int.from_bytes(data[at + 28:at + 30], "little")
        yield at, bytes(data[at + 46:at + 46 + n]).decode()
        at = data.find(b"PK\x01\x02", at + 46 + n)


@pytest.mark.parametrize("field,value,match", [
    (8, 0x1, "encrypted"),                       # general-purpose flag bit 0
    (10, 99, "compression method 99"),
    (10, 12, "compression method 12"),           # bzip2: zipfile could, minisae does not
])
def test_encrypted_and_unusual_compression(tmp_path, field, value, match):
    *_, path = trained(tmp_path)
    data = _zip_bytes(path)
    at = next(_central_entries(data))[0]
    if field == 8:
        data[at + 8] |= value
    else:
        data[at + 10:at + 12] = value.to_bytes(2, "little")
    open(path, "wb").write(data)
    refused(path, match)


def test_unknown_and_duplicate_members(tmp_path):
    *_, path = trained(tmp_path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("payload.npy", b"x" * 100)
    refused(path, "'payload.npy', which minisae never writes")
    *_, path = trained(tmp_path)
    with pytest.warns(UserWarning, match="Duplicate"), zipfile.ZipFile(path, "a") as z:
        z.writestr("config.npy", b"x")
    refused(path, "twice")


def test_members_that_do_not_belong_to_the_optimizer(tmp_path):
    *_, path = trained(tmp_path, "sgd")
    _rewrite(path, **{"optim/m.encoder.b": np.zeros(4, np.float32)})
    refused(path, "'optim/m.encoder.b', which does not belong with a SGD optimizer")
    *_, path = trained(tmp_path)
    _rewrite(path, optimizer=None)
    refused(path, "does not belong with no optimizer")


@pytest.mark.parametrize("key,value,match", [
    ("extra", "[1, 2]", "extra settings that must be a dict of JSON values, got list"),
    ("extra", "\"settings\"", "extra settings that must be a dict of JSON values, got str"),
    ("optimizer", "[1]", "unknown type None"),
    ("optimizer", '{"type": "RMSprop", "lr": 0.1}', "unknown type 'RMSprop'"),
    ("optimizer", '{"type": "Adam", "lr": "0.1", "betas": [0.9, 0.9], "eps": 1e-8}',
     "'lr' must be a positive number, got '0.1'"),
    ("optimizer", '{"type": "Adam", "lr": 0.1, "betas": 0.9, "eps": 1e-8}',
     "Adam setting betas must be two numbers, got 0.9"),
    ("optimizer", '{"type": "Adam", "lr": 0.1, "eps": 1e-8}', "expected"),
    ("optimizer", '{"type": "Adam", "lr": 0.1, "betas": [0.9, 0.9], "eps": 1e-8, "x": 1}',
     "expected"),
    ("optimizer", '{"type": "Adam", "lr": -1, "betas": [0.9, 0.9], "eps": 1e-8}',
     "'lr' must be a positive number, got -1"),
    ("optimizer", '{"type": "Adam", "lr": NaN, "betas": [0.9, 0.9], "eps": 1e-8}',
     "'lr' must be a positive number, got nan"),
    ("optimizer", '{"type": "Adam", "lr": 1e999, "betas": [0.9, 0.9], "eps": 1e-8}',
     "'lr' must be a positive number, got inf"),
    ("optimizer", '{"type": "Adam", "lr": 0.1, "betas": [0.9, 1.5], "eps": 1e-8}',
     "Adam setting betas"),
    ("history", "[]", "history"),
    ("history", '{"epoch": [1, 2], "Nonsense": [1, 2]}', "'Nonsense' is not a lower-case name"),
    ("history", '{"epoch": [1, "two"]}', "not a list of numbers"),
    ("history", '{"epoch": [1, 2], "seconds": [1.0]}', "different lengths"),
    ("config", "[1]", "config that is a JSON list"),
    ("config", '"n_hidden"', "config that is a JSON str"),
    ("config", '{"n_inputs": 10, "n_hidden": 4, "color": "red"}', "unknown fields"),
    ("config", '{"n_inputs": 10, "n_hidden": 4.5}', "n_hidden"),
    ("config", '{"n_inputs": 10, "n_hidden": 4, "dtype": "float16"}', "dtype"),
    ("config", '{"n_inputs": 10, "n_hidden": 4, "sparsity_target": "0.1"}', "sparsity_target"),
    pytest.param("config", "[" * 10_000, "'config' would cost more than the 32 KiB",
                 id="config-deep-nesting"),
    pytest.param("extra", "[" * 10_000, "not readable JSON", id="extra-deep-nesting"),
    pytest.param("config", "1" * 5000, "not readable JSON", id="config-5000-digits"),
    pytest.param("config", "x" * 20_000, "more than the 65,536", id="config-too-long"),
    pytest.param("config", "[1" + ", 1" * 1000 + "]", "'config' would cost more than the "
                 "32 KiB", id="config-of-many-values"),
])
def test_json_members_of_the_wrong_type(tmp_path, key, value, match):
    *_, path = trained(tmp_path)
    _rewrite(path, **{key: np.array(value)})
    refused(path, match)


def test_json_members_that_are_not_strings(tmp_path):
    *_, path = trained(tmp_path)
    _rewrite(path, config=np.zeros(3))
    refused(path, "'config' has shape")
    _rewrite(path, config=np.array(b"{}"))
    refused(path, "should be a string")
    _rewrite(path, format_version=np.array(1.0))
    refused(path, "should be an integer")


@pytest.mark.parametrize("key,value,match", [
    ("optim/m.encoder.W", "nan", "'m.encoder.W' holds NaN or inf"),
    ("optim/v.decoder.b", "inf", "'v.decoder.b' holds NaN or inf"),
    ("optim/v.encoder.b", "negative", "negative"),
    ("optim/m.decoder.W", "float64", "holds float64, expected float32"),
    ("optim/m.decoder.W", "int32", "holds int32"),
    ("optim/v.decoder.W", "shape", r"has shape \(4, 9\)"),
    ("optim/v.decoder.W", "fortran", "Fortran"),
    ("optim/t", "negative", "'t' must be a whole number >= 0, got -1"),
    ("optim/t", "fraction", "'t' must be a whole number >= 0, got 3.5"),
    ("optim/t", "string", "'optim/t' should be an integer"),
    ("optim/lr", "nan", "'lr' must be a positive number, got nan"),
    ("param/decoder.b", "inf", "NaN or inf"),
])
def test_optimizer_state_is_checked_before_use(tmp_path, key, value, match):
    *_, path = trained(tmp_path)
    with np.load(path) as z:
        a = z[key]
    a = {"nan": lambda: np.full_like(a, np.nan), "inf": lambda: np.full_like(a, np.inf),
         "negative": lambda: -np.ones_like(a), "float64": lambda: a.astype(np.float64),
         "int32": lambda: a.astype(np.int32), "shape": lambda: np.zeros((4, 9), a.dtype),
         "fortran": lambda: np.asfortranarray(a), "fraction": lambda: np.array(3.5),
         "string": lambda: np.array("3")}[value]()
    _rewrite(path, **{key: a})
    refused(path, match)


def test_save_refuses_what_load_would(tmp_path):
    model = SparseAutoencoder(3, 2)
    with pytest.raises(CheckpointError, match="extra.*JSON"):
        ck.save(tmp_path / "c.npz", model, extra={"x": object()})
    with pytest.raises(CheckpointError, match="cannot save an optimizer of type"):
        ck.save(tmp_path / "c.npz", model, optimizer=object())
    assert not (tmp_path / "c.npz").exists()


def test_save_refuses_a_state_load_would_refuse_and_keeps_the_old_file(tmp_path):
    *_, path = trained(tmp_path)
    before = open(path, "rb").read()
    damages = {"'m.encoder.W' holds NaN or inf": lambda o: o.m["encoder.W"].fill(np.nan),
               "'v.decoder.b' holds negative values": lambda o: o.v["decoder.b"].fill(-1.0),
               "'lr' must be a positive number": lambda o: setattr(o, "lr", float("nan")),
               "'t' must be a whole number": lambda o: setattr(o, "t", -1)}
    for match, damage in damages.items():
        model, opt, history, _ = trained(tmp_path / "scratch")
        damage(opt)
        with pytest.raises(CheckpointError, match="cannot save: .*" + match):
            ck.save(path, model, opt, history)
        assert open(path, "rb").read() == before
    other = SparseAutoencoder(10, 4, weight_decay=1e-3, reduction="halfsum", seed=3)
    with pytest.raises(CheckpointError, match="not built on this model's parameters"):
        ck.save(path, other, opt)
    with pytest.raises(CheckpointError, match="extra.*dict"):
        ck.save(path, model, extra=["not", "a", "dict"])
    assert open(path, "rb").read() == before


def test_save_into_an_unwritable_place(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="cannot write the checkpoint") as e:
        ck.save(tmp_path / "file" / "c.npz", SparseAutoencoder(3, 2))
    assert "\n" not in str(e.value)


def test_float64_round_trip(tmp_path):
    model = SparseAutoencoder(5, 3, dtype="float64", seed=2)
    opt = Adam(model.params, model.grads, lr=0.1)
    fit(model, opt, np.random.default_rng(0).random((8, 5)), 1, 4, progress=False)
    c = ck.load(ck.save(tmp_path / "c.npz", model, opt))
    assert c.model.dtype == np.float64 and c.optimizer.t == opt.t
    np.testing.assert_array_equal(optimizer_state(c.optimizer)["v.encoder.W"],
                                  optimizer_state(opt)["v.encoder.W"])


def test_lbfgs_round_trip(tmp_path):
    from minisae import LBFGS
    model = SparseAutoencoder(10, 4, reduction="halfsum", dtype="float64", seed=3)
    opt = LBFGS(model.params, model.grads, max_iter=30, memory=7)
    x = np.random.default_rng(0).random((40, 10))
    history = fit(model, opt, x, 6, progress=False)
    assert len(history) == 6 and opt.t == 6
    path = ck.save(tmp_path / "l.npz", model, opt, history)
    c = ck.load(path)
    assert type(c.optimizer) is LBFGS
    assert (c.optimizer.t, c.optimizer.max_iter, c.optimizer.memory) == (6, 30, 7)
    assert c.optimizer.evaluations == opt.evaluations > 0
    assert c.optimizer.flat_params is c.model.flat_params
    np.testing.assert_array_equal(c.model.flat_params, model.flat_params)
    # and it trains on from there
    more = fit(c.model, c.optimizer, x, 9, history=c.history, progress=False)
    assert len(more) == 9 and c.optimizer.t == 9


def test_save_and_load_check_what_they_are_given(tmp_path):
    model, opt, history, path = trained(tmp_path)
    for args, word in (((tmp_path / "x.npz", "model"), "SparseAutoencoder"),
                       ((tmp_path / "x.npz", model, opt, {"epoch": []}), "History"),
                       ((None, model), "path must be a file")):
        with pytest.raises(CheckpointError, match=word):
            ck.save(*args)
    with pytest.raises(CheckpointError, match="checkpoint file"):
        ck.load(None)
    model.params["decoder.b"][0] = np.nan
    with pytest.raises(CheckpointError, match="NaN"):
        ck.save(tmp_path / "nan.npz", model, opt, history)
    assert not (tmp_path / "nan.npz").exists()
