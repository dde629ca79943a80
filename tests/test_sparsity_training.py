"""The sparsity family in training: every mechanism and option trains from Python and from
the command line, on both paths, with its diagnostics; dead units are tracked, published to
AuxK and resampled; checkpoints save and resume all of it exactly; old checkpoints still
load as KL models.

Gradients, formulas, refusals and evaluate's diagnostics: test_sparsity.py.
"""
import json
import math
import zipfile

import numpy as np
import pytest

import minisae.fast
from minisae import SGD, Adam, SparseAutoencoder, to_numpy
from minisae.apps import cli
from minisae.config import Config
from minisae.errors import ConfigError
from minisae.files import checkpoint
from minisae.files.state import optimizer_state
from minisae.losses import SPARSITY, Loss
from minisae.presets import PRESETS
from minisae.training import DeadUnits, Engine, evaluate, fit, units

MECHANISMS = {
    "kl": dict(sparsity="kl"),
    "squared": dict(sparsity="squared"),
    "absolute": dict(sparsity="absolute"),
    "l1": dict(sparsity="l1", hidden_activation="relu"),
    "l1-decoder-norm": dict(sparsity="l1", hidden_activation="relu", l1_decoder_norm=True),
    "topk-relu": dict(sparsity="topk", k=3, hidden_activation="relu"),
    "topk-linear": dict(sparsity="topk", k=3, hidden_activation="linear"),
    "topk-auxk": dict(sparsity="topk", k=3, hidden_activation="relu", aux_k=4),
}
OPTIONS = {
    "plain": dict(),
    "tied-decay": dict(tied_weights=True, weight_decay=1e-3),
    "x-b2": dict(subtract_decoder_bias=True, output_activation="linear"),
}
DIAGNOSTICS = ("l0", "dead_fraction", "dense_fraction", "fvu")


def data(n=64, n_inputs=10, seed=0, dtype="float64"):
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, n_inputs)).astype(dtype)


def history_without_times(history):
    return {k: v for k, v in history.as_dict().items() if k not in ("seconds", "samples_per_second")}


def kill_units(model, units_, bias=-100.0):
    """Units that never fire on data in [0, 1]: no weight in, a large negative bias."""
    for j in units_:
        model.params["encoder.W"][:, j] = 0.0
        model.params["encoder.b"][j] = bias


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_mechanism_trains_on_both_paths(mechanism, option):
    kwargs = {**MECHANISMS[mechanism], **OPTIONS[option]}
    x, x_val = data(), data(20, seed=1)
    runs = {}
    for fast in (True, False):
        model = SparseAutoencoder(10, 8, dtype="float64", seed=3, **kwargs)
        opt = Adam(model.params, model.grads, lr=0.01)
        history = fit(model, opt, x, epochs=3, batch_size=16, seed=0, x_val=x_val,
                      progress=False, engine=Engine(fast=fast, threads=1),
                      dead_units=DeadUnits(window=32))
        runs[fast] = model, history
    (fast_model, fast_h), (ref_model, ref_h) = runs[True], runs[False]
    total = fast_h.train_total
    assert all(math.isfinite(t) for t in total)
    # the reconstruction falls (the total need not: AuxK's term grows as units die)
    assert fast_h.train_reconstruction[-1] < fast_h.train_reconstruction[0]
    for key in DIAGNOSTICS:
        assert all(v is not None and math.isfinite(v) for v in fast_h.as_dict()[f"val_{key}"])
    assert ("train_dead_fraction" in fast_h.keys()) == (mechanism == "topk-auxk")
    assert ("train_auxk" in fast_h.keys()) == (mechanism == "topk-auxk")
    # the engine and the reference train the same model (float64: to rounding)
    for key, values in history_without_times(ref_h).items():
        if key != "threads":
            np.testing.assert_allclose(history_without_times(fast_h)[key], values, rtol=1e-9,
                                       atol=1e-12, err_msg=key)
    np.testing.assert_allclose(to_numpy(fast_model.flat_params), to_numpy(ref_model.flat_params),
                               rtol=1e-8, atol=1e-10)
    m = evaluate(fast_model, x_val)
    assert 0 <= m["dead_fraction"] <= 1 and 0 <= m["dense_fraction"] <= 1
    assert 0 <= m["l0"] <= 8 and m["fvu"] > 0
    if mechanism.startswith("topk") and mechanism != "topk-linear":
        assert m["l0"] <= 3


def test_subtract_decoder_bias_starts_b2_at_the_data_mean():
    x = data(dtype="float32")
    model = SparseAutoencoder(10, 8, sparsity="l1", hidden_activation="relu",
                              subtract_decoder_bias=True, output_activation="linear")
    opt = Adam(model.params, model.grads)
    fit(model, opt, x, epochs=0, batch_size=16, progress=False)
    np.testing.assert_allclose(to_numpy(model.params["decoder.b"]), x.mean(axis=0), rtol=1e-6)
    # a run that has started (a history, or an optimizer that has stepped) keeps its b2
    history = fit(model, opt, x, epochs=1, batch_size=16, progress=False)
    for started in (dict(history=history), dict()):
        model.params["decoder.b"][...] = 0.0
        fit(model, opt, x, epochs=len(history) + 1, batch_size=16, progress=False, **started)
        assert np.abs(to_numpy(model.params["decoder.b"])).max() < 0.05  # a few Adam steps
    # the plain model's b2 starts at 0
    plain = SparseAutoencoder(10, 8, sparsity="l1", hidden_activation="relu")
    fit(plain, Adam(plain.params, plain.grads), x, epochs=0, batch_size=16, progress=False)
    np.testing.assert_array_equal(to_numpy(plain.params["decoder.b"]), 0.0)


# ----------------------------------------------------------------------------- dead units

def test_unit_activity_counts_silent_samples_from_rho_hat():
    model = SparseAutoencoder(3, 4, sparsity="l1", hidden_activation="relu")
    activity = units.UnitActivity(model)
    assert units.tracks(model) is None
    steps = [np.array([0.0, 0.2, 0.0, 1.0]), np.array([0.0, 0.0, 0.3, 1.0]),
             np.array([0.0, 0.0, 0.0, 2.0])]
    for rho_hat, batch in zip(steps, (10, 20, 5)):
        activity.update(Loss({"reconstruction": 0.0}, rho_hat), batch)
    np.testing.assert_array_equal(model.silent, [35, 25, 5, 0])
    np.testing.assert_array_equal(activity.dead(25), [True, True, False, False])
    dead = activity.publish(26)
    np.testing.assert_array_equal(dead, [True, False, False, False])
    np.testing.assert_array_equal(to_numpy(model.dead), [True, False, False, False])
    assert model.silent.dtype == np.int64


@pytest.mark.parametrize("kwargs", [dict(), dict(sparsity="topk", k=2,
                                                 hidden_activation="linear")],
                         ids=["sigmoid", "linear"])
def test_resampling_needs_relu_codes(kwargs):
    model = SparseAutoencoder(10, 4, **kwargs)
    assert "relu" in units.tracks(model)
    with pytest.raises(ConfigError, match="hidden_activation='relu'") as e:
        fit(model, Adam(model.params, model.grads), data(dtype="float32"), epochs=1,
            batch_size=16, progress=False, dead_units=DeadUnits(resample_every=2))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_resample_revives_dead_units_and_changes_nothing_else(tied, optimizer):
    x = data(50, 10, seed=2)
    model = SparseAutoencoder(10, 6, sparsity="l1", hidden_activation="relu", tied_weights=tied,
                              dtype="float64", seed=1)
    opt = Adam(model.params, model.grads, lr=0.01) if optimizer == "adam" else \
        SGD(model.params, model.grads, lr=0.01, momentum=0.9)
    fit(model, opt, x, epochs=2, batch_size=10, progress=False, engine=Engine(threads=1))
    dead = np.array([True, False, False, True, False, True])
    kill_units(model, np.flatnonzero(dead))
    assert (to_numpy(model.encode(x))[:, dead] == 0).all()
    model.silent[...] = [900, 3, 0, 900, 7, 900]
    before = {k: to_numpy(p).copy() for k, p in model.params.items()}
    state_before = optimizer_state(opt)
    for key, value in state_before.items():  # every state entry nonzero: resets show
        if isinstance(value, np.ndarray):
            assert (value != 0).all(), key

    n = units.resample(model, opt, x, dead, np.random.default_rng(0))
    assert n == 3
    codes = to_numpy(model.encode(x))
    assert (codes[:, dead] > 0).any(axis=0).all()  # each revived unit fires on the data
    W1 = to_numpy(model.params["encoder.W"])
    np.testing.assert_array_equal(to_numpy(model.params["encoder.b"])[dead], 0.0)
    # new directions: decoder rows at the living rows' mean length; encoder columns scaled to
    # 0.2 x the living columns' mean length; both along one (centred) input direction
    alive_norm = np.linalg.norm(before["encoder.W"][:, ~dead], axis=0).mean()
    np.testing.assert_allclose(np.linalg.norm(W1[:, dead], axis=0),
                               units.ENCODER_SCALE * alive_norm, rtol=1e-12)
    if not tied:
        W2 = to_numpy(model.params["decoder.W"])
        alive_rows = np.linalg.norm(before["decoder.W"][~dead], axis=1).mean()
        np.testing.assert_allclose(np.linalg.norm(W2[dead], axis=1), alive_rows, rtol=1e-12)
        np.testing.assert_allclose(W1[:, dead].T / np.linalg.norm(W1[:, dead], axis=0)[:, None],
                                   W2[dead] / alive_rows, rtol=1e-12)
        np.testing.assert_array_equal(W2[~dead], before["decoder.W"][~dead])
    # everything else bit-identical
    np.testing.assert_array_equal(W1[:, ~dead], before["encoder.W"][:, ~dead])
    np.testing.assert_array_equal(to_numpy(model.params["encoder.b"])[~dead],
                                  before["encoder.b"][~dead])
    np.testing.assert_array_equal(to_numpy(model.params["decoder.b"]), before["decoder.b"])
    np.testing.assert_array_equal(model.silent, [0, 3, 0, 0, 7, 0])
    state = optimizer_state(opt)
    assert state.keys() == state_before.keys()
    for key, old in state_before.items():
        new = state[key]
        if not isinstance(old, np.ndarray):
            assert new == old, key
            continue
        name = key.split(".", 1)[1]
        reset = np.zeros(old.shape, dtype=bool)
        if name == "encoder.W":
            reset[:, dead] = True
        elif name == "encoder.b":
            reset[dead] = True
        elif name == "decoder.W":
            reset[dead, :] = True
        np.testing.assert_array_equal(new[reset], 0.0, err_msg=key)
        np.testing.assert_array_equal(new[~reset], old[~reset], err_msg=key)
    assert units.resample(model, opt, x, np.zeros(6, dtype=bool), np.random.default_rng(0)) == 0


def test_fit_resamples_dead_units_and_records_it():
    x, x_val = data(64, 10, seed=3, dtype="float32"), data(20, 10, seed=4, dtype="float32")
    model = SparseAutoencoder(10, 8, sparsity="l1", hidden_activation="relu",
                              output_activation="linear", seed=2)
    kill_units(model, [0, 1, 2])
    opt = Adam(model.params, model.grads, lr=0.01)
    history = fit(model, opt, x, epochs=3, batch_size=16, x_val=x_val, progress=False,
                  dead_units=DeadUnits(window=32, resample_every=4),
                  engine=Engine(threads=1))
    assert history.resampled[0] >= 3
    assert all(isinstance(r, int) for r in history.resampled)
    assert len(history.train_dead_fraction) == 3
    assert all(0 <= f <= 1 for f in history.train_dead_fraction)
    assert evaluate(model, x)["dead_fraction"] < 3 / 8  # revived: they fire on the data
    assert all(v is not None for v in history.val_dead_fraction)
    plain = SparseAutoencoder(10, 8, sparsity="l1", hidden_activation="relu", seed=2)
    h = fit(plain, Adam(plain.params, plain.grads), x, epochs=1, batch_size=16, progress=False)
    assert "resampled" not in h.keys() and "train_dead_fraction" not in h.keys()


def test_auxk_runs_publish_the_dead_units_before_each_step():
    """At every step, model.dead (what AuxK reads) is the set of units silent for
    dead_window samples, and a unit that never fires ends up in it."""
    x = data(64, 10, seed=5, dtype="float32")
    model = SparseAutoencoder(10, 8, sparsity="topk", k=3, hidden_activation="relu", aux_k=4,
                              output_activation="linear", seed=4)
    kill_units(model, [0])
    window, seen = 32, []
    engine_step = minisae.fast.step._loss_and_grads

    def spy(model, x):
        dead = to_numpy(model.dead).copy()
        np.testing.assert_array_equal(dead, model.silent >= window)
        seen.append(dead)
        return engine_step(model, x)

    minisae.fast.step._loss_and_grads = spy  # the engine runs it at every step
    try:
        history = fit(model, Adam(model.params, model.grads, lr=0.01), x, epochs=2,
                      batch_size=16, progress=False, dead_units=DeadUnits(window),
                      engine=Engine(threads=1))
    finally:
        minisae.fast.step._loss_and_grads = engine_step
    assert len(seen) == 8
    assert not seen[0].any() and seen[-1][0]  # nothing dead at first; unit 0 at the end
    assert history.train_dead_fraction[-1] >= 1 / 8
    assert all(a >= 0 for a in history.train_auxk)


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_CONFIGS = {
    "squared": dict(sparsity="squared", sparsity_target=0.05, sparsity_weight=3.0),
    "absolute-relu": dict(sparsity="absolute", hidden_activation="relu"),
    "l1-norm-x-b2": dict(sparsity="l1", hidden_activation="relu", l1_decoder_norm=True,
                         subtract_decoder_bias=True, output_activation="linear"),
    "topk-auxk-tied": dict(sparsity="topk", k=3, hidden_activation="relu", aux_k=5,
                           aux_weight=0.25, tied_weights=True, output_activation="linear"),
    "topk-linear": dict(sparsity="topk", k=2, hidden_activation="linear", tied_weights=True,
                        weight_decay=1e-3),
}


@pytest.mark.parametrize("name", CHECKPOINT_CONFIGS)
def test_checkpoint_round_trip(name, tmp_path):
    x = data(32, 10, seed=6, dtype="float32")
    model = SparseAutoencoder(10, 8, seed=5, **CHECKPOINT_CONFIGS[name])
    opt = Adam(model.params, model.grads, lr=0.01)
    history = fit(model, opt, x, epochs=2, batch_size=8, progress=False)
    model.silent[...] = np.arange(8) * 7
    path = checkpoint.save(tmp_path / "c.npz", model, opt, history)
    with zipfile.ZipFile(path) as zf:
        assert "units/silent.npy" in zf.namelist()
    ck = checkpoint.load(path)
    assert ck.model.config == model.config
    assert ck.model.config.as_dict() == {**Config(10, 8).as_dict(), "seed": 5,
                                         **CHECKPOINT_CONFIGS[name]}
    assert list(ck.model.params) == list(model.params)
    np.testing.assert_array_equal(to_numpy(ck.model.flat_params), to_numpy(model.flat_params))
    np.testing.assert_array_equal(ck.model.silent, model.silent)
    a, b = optimizer_state(ck.optimizer), optimizer_state(opt)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert history_without_times(ck.history) == history_without_times(history)
    assert ck.model.loss(x).total == model.loss(x).total


def run_twice(make, x, fit_kwargs, tmp_path, split=2, epochs=4):
    """(uninterrupted, resumed): fit `epochs` in one go, and fit `split`, save, load, fit the
    rest."""
    model = make()
    opt = Adam(model.params, model.grads, lr=0.01)
    full = fit(model, opt, x, epochs=epochs, progress=False, engine=Engine(threads=1),
               **fit_kwargs)
    part_model = make()
    part_opt = Adam(part_model.params, part_model.grads, lr=0.01)
    part = fit(part_model, part_opt, x, epochs=split, progress=False, engine=Engine(threads=1),
               **fit_kwargs)
    checkpoint.save(tmp_path / "part.npz", part_model, part_opt, part)
    ck = checkpoint.load(tmp_path / "part.npz")
    resumed = fit(ck.model, ck.optimizer, x, epochs=epochs, history=ck.history, progress=False,
                  engine=Engine(threads=1), **fit_kwargs)
    return (model, opt, full), (ck.model, ck.optimizer, resumed)


def assert_bit_identical(a, b):
    (model_a, opt_a, hist_a), (model_b, opt_b, hist_b) = a, b
    assert history_without_times(hist_a) == history_without_times(hist_b)
    np.testing.assert_array_equal(to_numpy(model_a.flat_params), to_numpy(model_b.flat_params))
    np.testing.assert_array_equal(model_a.silent, model_b.silent)
    np.testing.assert_array_equal(to_numpy(model_a.dead), to_numpy(model_b.dead))
    sa, sb = optimizer_state(opt_a), optimizer_state(opt_b)
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def test_resume_is_exact_for_topk_with_auxk(tmp_path):
    x = data(96, 12, seed=7, dtype="float32")

    def make():
        model = SparseAutoencoder(12, 16, sparsity="topk", k=3, hidden_activation="relu",
                                  aux_k=6, subtract_decoder_bias=True,
                                  output_activation="linear", seed=6)
        kill_units(model, [0, 5])
        return model

    full, resumed = run_twice(make, x, dict(batch_size=16, seed=3,
                                            dead_units=DeadUnits(window=48)), tmp_path)
    assert_bit_identical(full, resumed)
    history = full[2]
    assert history.train_dead_fraction[1] > 0 and all(a > 0 for a in history.train_auxk[1:])


def test_resume_is_exact_for_l1_with_resampling(tmp_path):
    x = data(96, 12, seed=8, dtype="float32")

    def make():
        model = SparseAutoencoder(12, 16, sparsity="l1", hidden_activation="relu",
                                  sparsity_weight=0.05, l1_decoder_norm=True,
                                  output_activation="linear", seed=7)
        kill_units(model, [1, 2, 3])
        return model

    kwargs = dict(batch_size=16, seed=4, dead_units=DeadUnits(window=64, resample_every=5))
    full, resumed = run_twice(make, x, kwargs, tmp_path)
    assert_bit_identical(full, resumed)
    assert full[2].resampled[0] >= 3 and sum(full[2].resampled[2:]) > 0  # both halves resample


def rewrite_npz(path, change):
    """Load every member of the .npz at path, let change(members) edit the dict, write it back."""
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    change(members)
    np.savez(path, **members)


OLD_FIELDS = ("n_inputs", "n_hidden", "sparsity_target", "sparsity_weight", "weight_decay",
              "output_activation", "reconstruction_loss", "reduction", "dtype", "seed")


@pytest.mark.parametrize("with_optimizer", [False, True], ids=["model", "with-adam"])
def test_an_old_checkpoint_loads_as_a_kl_sigmoid_model(tmp_path, with_optimizer):
    x = data(32, 10, seed=9, dtype="float32")
    model = SparseAutoencoder(10, 6, sparsity_target=0.05, sparsity_weight=3.0,
                              weight_decay=1e-3, reduction="halfsum", seed=8)
    opt = Adam(model.params, model.grads, lr=0.01)
    history = fit(model, opt, x, epochs=1, batch_size=8, progress=False)
    path = checkpoint.save(tmp_path / "old.npz", model, opt if with_optimizer else None,
                           history)

    def to_old(members):
        config = json.loads(str(members["config"]))
        members["config"] = np.array(json.dumps({k: config[k] for k in OLD_FIELDS}))
        del members["units/silent"]

    rewrite_npz(path, to_old)
    with zipfile.ZipFile(path) as zf:
        assert "units/silent.npy" not in zf.namelist()
        assert set(json.loads(str(np.load(path)["config"]))) == set(OLD_FIELDS)
    ck = checkpoint.load(path)
    c = ck.model.config
    assert (c.sparsity, c.hidden_activation, c.k, c.aux_k, c.tied_weights, c.l1_decoder_norm,
            c.subtract_decoder_bias) == ("kl", "sigmoid", None, None, False, False, False)
    assert (c.sparsity_target, c.sparsity_weight, c.weight_decay, c.reduction) == \
        (0.05, 3.0, 1e-3, "halfsum")
    np.testing.assert_array_equal(to_numpy(ck.model.flat_params), to_numpy(model.flat_params))
    np.testing.assert_array_equal(ck.model.silent, 0)
    assert ck.model.loss(x).as_dict() == model.loss(x).as_dict()
    assert (ck.optimizer is not None) == with_optimizer
    # and it trains on
    fit(ck.model, ck.optimizer or Adam(ck.model.params, ck.model.grads), x, epochs=2,
        batch_size=8, progress=False, history=ck.history)


# ----------------------------------------------------------------------------- presets

@pytest.mark.parametrize("name", ["k-sparse", "l1", "topk", "batchtopk", "jumprelu"])
def test_presets_build(name):
    preset = PRESETS[name]
    assert preset.source and preset.description
    model = SparseAutoencoder.from_preset(name)
    for key, value in preset.model.items():
        assert getattr(model.config, key) == value, key
    small = SparseAutoencoder.from_preset(name, n_hidden=16, **(
        {"k": 4} if "k" in preset.model else {}), **(
        {"aux_k": 8} if "aux_k" in preset.model else {}))
    assert small.config.n_hidden == 16 and small.config.sparsity == preset.model["sparsity"]
    assert minisae.fast.fused(small) is None  # every preset, TopK + AuxK too, on the engine
    with pytest.raises(ConfigError, match="k=25" if "k" in preset.model else "applies"):
        SparseAutoencoder.from_preset(name, n_hidden=16, **(
            {"aux_k": 8} if "aux_k" in preset.model else {}), **(
            {} if "k" in preset.model else {"k": 4}))


# ----------------------------------------------------------------------------- the command line

@pytest.fixture
def tiny_mnist(tiny_mnist, monkeypatch):
    """conftest's tiny MNIST, with the figures not drawn (test_cli.py checks them; they take
    seconds here)."""
    from minisae.apps import plots
    for figure in ("feature_grid", "reconstructions", "activation_histogram", "training_curves"):
        monkeypatch.setattr(plots, figure, lambda *a, **k: None)
    return tiny_mnist


TINY = ["--hidden", "16", "--batch-size", "50", "--no-progress", "--backend", "numpy",
        "--threads", "1"]


def train(tmp_path, name, *flags):
    out = tmp_path / name
    assert cli.main(["train", *TINY, "--out", str(out), *flags]) == 0
    return json.loads((out / "metrics.json").read_text()), checkpoint.load(out / "checkpoint.npz")


def assert_diagnostics(metrics):
    for key in DIAGNOSTICS:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert 0 <= metrics["dead_fraction"] <= 1 and 0 <= metrics["dense_fraction"] <= 1
    assert 0 <= metrics["l0"] <= 16 and metrics["fvu"] > 0


@pytest.mark.parametrize("preset,flags", [
    ("topk", ["--k", "4", "--aux-k", "8", "--dead-window", "100"]),
    ("l1", []),
    ("k-sparse", ["--k", "4"]),
], ids=["topk", "l1", "k-sparse"])
def test_cli_trains_each_preset(tiny_mnist, tmp_path, preset, flags):
    metrics, ck = train(tmp_path, preset, "--preset", preset, "--epochs", "2", *flags)
    assert_diagnostics(metrics)
    assert metrics["sparsity"] == PRESETS[preset].model["sparsity"]
    assert metrics["settings"]["preset"] == preset and metrics["epochs"] == 2
    c = ck.model.config
    expected = {**PRESETS[preset].model, "n_hidden": 16}
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in ("--k", "--aux-k"):
            expected[flag[2:].replace("-", "_")] = int(value)
    for key, value in expected.items():
        assert getattr(c, key) == value, key
    if preset == "topk":
        assert c.aux_k == 8 and "train_dead_fraction" in ck.history.keys()
        assert metrics["l0"] <= 4
    if preset == "k-sparse":
        assert c.tied_weights and "decoder.W" not in ck.model.params
        assert metrics["active"] == "h > 0"


@pytest.mark.parametrize("flags,config", [
    (["--sparsity", "topk", "--k", "3", "--hidden-activation", "relu", "--tied-weights",
      "--aux-k", "4", "--aux-weight", "0.1", "--output", "linear", "--dead-window", "100"],
     dict(sparsity="topk", k=3, hidden_activation="relu", tied_weights=True, aux_k=4,
          aux_weight=0.1, output_activation="linear")),
    (["--sparsity", "l1", "--hidden-activation", "relu", "--l1-decoder-norm",
      "--subtract-decoder-bias", "--sparsity-weight", "0.01", "--output", "linear",
      "--resample-every", "3", "--dead-window", "50"],
     dict(sparsity="l1", hidden_activation="relu", l1_decoder_norm=True,
          subtract_decoder_bias=True, sparsity_weight=0.01, output_activation="linear")),
    (["--sparsity", "squared", "--sparsity-target", "0.05", "--weight-decay", "0.001"],
     dict(sparsity="squared", sparsity_target=0.05, weight_decay=0.001)),
    (["--sparsity", "absolute", "--hidden-activation", "relu", "--reference"],
     dict(sparsity="absolute", hidden_activation="relu")),
    (["--sparsity", "topk", "--k", "5", "--hidden-activation", "linear", "--output", "linear",
      "--reduction", "halfsum"],
     dict(sparsity="topk", k=5, hidden_activation="linear", reduction="halfsum")),
    (["--sparsity", "batchtopk", "--k", "3", "--hidden-activation", "relu", "--aux-k", "4",
      "--output", "linear", "--dead-window", "100"],
     dict(sparsity="batchtopk", k=3, hidden_activation="relu", aux_k=4,
          output_activation="linear")),
    (["--sparsity", "jumprelu", "--hidden-activation", "relu", "--jump-threshold", "0.2",
      "--jump-bandwidth", "0.1", "--sparsity-weight", "0.01", "--output", "linear",
      "--reference"],
     dict(sparsity="jumprelu", jump_threshold=0.2, jump_bandwidth=0.1, sparsity_weight=0.01)),
], ids=["topk-auxk-tied", "l1-resample", "squared", "absolute-reference", "topk-linear",
        "batchtopk-auxk", "jumprelu-reference"])
def test_cli_trains_with_explicit_flags(tiny_mnist, tmp_path, flags, config):
    metrics, ck = train(tmp_path, "run", "--epochs", "1", *flags)
    assert_diagnostics(metrics)
    for key, value in config.items():
        assert getattr(ck.model.config, key) == value, key
    assert metrics["active"] == ("h > 0.5" if ck.model.config.hidden_activation == "sigmoid"
                                 else "h > 0")
    keys = ck.history.keys()
    assert ("resampled" in keys) == ("--resample-every" in flags)
    assert ("train_dead_fraction" in keys) == ("--resample-every" in flags or "--aux-k" in flags)
    for key in DIAGNOSTICS:
        assert f"test_{key}" in metrics["history"]


@pytest.mark.parametrize("flags", [
    ["--preset", "topk", "--k", "4", "--aux-k", "8", "--dead-window", "100"],
    ["--preset", "batchtopk", "--k", "4", "--aux-k", "8", "--dead-window", "100"],
    ["--preset", "jumprelu", "--jump-threshold", "0.1"]], ids=["topk", "batchtopk", "jumprelu"])
def test_cli_resumed_topk_run_matches_an_uninterrupted_one(tiny_mnist, tmp_path, flags):
    """And BatchTopK's threshold estimate, JumpReLU's thresholds: bit for bit."""
    train(tmp_path, "full", *flags, "--epochs", "3")
    train(tmp_path, "part", *flags, "--epochs", "1")
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "3",
                     "--no-progress", "--backend", "numpy", "--threads", "1"]) == 0
    full = checkpoint.load(tmp_path / "full" / "checkpoint.npz")
    resumed = checkpoint.load(tmp_path / "part" / "checkpoint.npz")
    assert history_without_times(resumed.history) == history_without_times(full.history)
    np.testing.assert_array_equal(resumed.model.flat_params, full.model.flat_params)
    np.testing.assert_array_equal(resumed.model.silent, full.model.silent)
    assert resumed.model.config == full.model.config
    if resumed.model.config.sparsity == "batchtopk":
        assert float(resumed.model.coding.threshold) == float(full.model.coding.threshold) > 0


CLI_REFUSALS = [
    (["--sparsity", "topk", "--k", "4", "--sparsity-weight", "2"], "--sparsity-weight"),
    (["--sparsity", "topk", "--k", "4", "--sparsity-target", "0.05"], "--sparsity-target"),
    (["--sparsity", "kl", "--hidden-activation", "relu"], "--hidden-activation"),
    (["--sparsity", "topk", "--hidden-activation", "relu"], "--k"),
    (["--sparsity", "topk", "--k", "17", "--hidden-activation", "relu"], "--k"),
    (["--preset", "topk"], "--k"),  # its k = 25 > --hidden 16
    (["--sparsity", "topk", "--k", "4", "--hidden-activation", "linear", "--aux-k", "4"],
     "--hidden-activation"),
    (["--sparsity", "l1", "--hidden-activation", "linear"], "--hidden-activation"),
    (["--k", "3"], "--k"),
    (["--aux-k", "3"], "--aux-k"),
    (["--l1-decoder-norm"], "--l1-decoder-norm"),
    (["--resample-every", "5"], "--resample-every"),
]


@pytest.mark.parametrize("flags,flag", CLI_REFUSALS, ids=[str(i) for i in range(len(CLI_REFUSALS))])
def test_cli_refuses_invalid_combinations_in_one_line(tiny_mnist, tmp_path, capsys, flags, flag):
    out = tmp_path / "refused"
    code = cli.main(["train", *TINY, "--epochs", "1", "--out", str(out), *flags])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("minisae: error:")
    assert flag in err, err
    assert not (out / "checkpoint.npz").exists()


def test_cli_refusal_names_each_flag_once(tiny_mnist, tmp_path, capsys):
    code = cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"),
                     "--sparsity", "topk", "--hidden-activation", "relu"])
    err = capsys.readouterr().err
    assert code != 0 and "---" not in err, err


def test_cli_gradcheck_lists_every_sparsity_variant(capsys):
    assert cli.main(["gradcheck", "--backend", "numpy"]) == 0
    text = capsys.readouterr().out
    for label, _ in cli.SPARSITY_VARIANTS:
        lines = [line for line in text.splitlines() if line.strip().startswith(label)]
        assert len(lines) == 2, label  # one per path
        assert all(line.rstrip().endswith(("yes", "yes (= reference)")) for line in lines), lines
    assert "all gradients match, on both paths" in text
    variants = [kw for _, kw in cli.SPARSITY_VARIANTS]
    assert {kw.get("sparsity", "kl") for kw in variants} == set(SPARSITY)
    for option in ("tied_weights", "l1_decoder_norm", "aux_k", "subtract_decoder_bias"):
        assert any(kw.get(option) for kw in variants), option
    assert {kw.get("hidden_activation") for kw in variants} >= {"relu", "linear"}
