"""The training loop: shuffling, history, resume, NaN guard, validation metrics."""
import numpy as np
import pytest

from minisae import SGD, Adam, SparseAutoencoder
from minisae.errors import ConfigError, InputError, TrainingError
from minisae.training import Checkpoints, DeadUnits, Engine, History, Stream, evaluate, fit
from minisae.training.fit import reconstruction_mse
from minisae.training.stream import ArraySource


def small(seed=0, **kw):
    model = SparseAutoencoder(12, 5, seed=seed, **kw)
    return model, Adam(model.params, model.grads, lr=0.01)


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    return rng.random((120, 12), dtype=np.float32), rng.random((40, 12), dtype=np.float32)


def test_fit_records_every_epoch(data):
    x, xv = data
    model, opt = small()
    h = fit(model, opt, x, epochs=4, batch_size=32, x_val=xv, progress=False)
    assert h.epoch == [1, 2, 3, 4]
    for key, values in h.as_dict().items():
        assert len(values) == 4, key
        assert all(v is not None for v in values), key
    assert opt.t == 4 * (120 // 32)  # full batches only
    assert all(0.0 <= d <= 1.0 for d in h.val_dead_fraction)
    assert h.train_total[-1] < h.train_total[0]
    # the total is the sum of its parts
    assert np.isclose(h.val_total[-1], h.val_reconstruction[-1] + h.val_sparsity[-1]
                      + h.val_weight_decay[-1])


def test_fit_without_validation_records_no_val_fields(data):
    x, xv = data
    model, opt = small()
    h = fit(model, opt, x, epochs=1, batch_size=40, progress=False)
    # the history holds what was measured: no validation set, no val_* (dead_fraction included)
    assert set(h.keys()) == {"epoch", "seconds", "threads", "samples_per_second", "train_total",
                             "train_reconstruction", "train_sparsity", "train_weight_decay",
                             "train_mean_activation"}
    assert "val_total" not in h.last() and "val_dead_fraction" not in h.last()
    with pytest.raises(AttributeError, match="val_total"):
        h.val_total
    # resumed with a validation set: the epoch before it reads None
    h = fit(model, opt, x, epochs=2, batch_size=40, x_val=xv, progress=False, history=h)
    assert h.val_total[0] is None and h.val_dead_fraction[0] is None
    assert h.val_total[1] is not None and h.val_dead_fraction[1] is not None


def test_each_epoch_reshuffles_and_seed_repeats(data):
    x, _ = data
    runs = []
    for seed in (0, 0, 1):
        model, opt = small()
        runs.append(fit(model, opt, x, 3, 30, seed=seed, progress=False).train_total)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_resume_continues_exactly(data):
    x, xv = data
    model, opt = small()
    full = fit(model, opt, x, 5, 32, seed=7, x_val=xv, progress=False)

    model2, opt2 = small()
    part = fit(model2, opt2, x, 2, 32, seed=7, x_val=xv, progress=False)
    rest = fit(model2, opt2, x, 5, 32, seed=7, x_val=xv, progress=False, history=part)
    assert rest.train_total == full.train_total
    assert rest.val_total == full.val_total
    np.testing.assert_array_equal(model.flat_params, model2.flat_params)


def test_non_finite_loss_stops_with_epoch_and_step(data):
    x, _ = data
    model = SparseAutoencoder(12, 5, output_activation="linear", seed=0)
    opt = SGD(model.params, model.grads, lr=50.0, momentum=0.9)  # far too large: blows up
    saved = []
    with pytest.raises(TrainingError, match=r"epoch \d+, step \d+") as e:
        fit(model, opt, x, 50, 30, progress=False,
            checkpoints=Checkpoints(lambda h, at: saved.append(h.last())))
    assert "--lr" in str(e.value)
    # the checkpointing callback never saw a non-finite epoch
    assert len(saved) < 50
    assert all(np.isfinite(r["train_total"]) for r in saved)


def test_bad_data_and_arguments(data):
    x, _ = data
    model, opt = small()
    with pytest.raises(InputError, match="shape"):
        fit(model, opt, x[:, :5], 1, 10, progress=False)
    bad = x.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fit(model, opt, bad, 1, 10, progress=False)
    with pytest.raises(InputError, match="real numbers"):
        fit(model, opt, x.astype(str), 1, 10, progress=False)
    with pytest.raises(InputError, match="real numbers"):
        fit(model, opt, x.astype(np.complex64), 1, 10, progress=False)
    with pytest.raises(InputError, match="rectangular"):
        fit(model, opt, [[0.1, 0.2], [0.3]], 1, 10, progress=False)
    with pytest.raises(InputError, match="empty"):
        fit(model, opt, x[:0], 1, 10, progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        fit(model, opt, x, 1, 0, progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        fit(model, opt, x, -1, 10, progress=False)
    for seed in (-1, True, 1.5):
        with pytest.raises(ConfigError, match="seed"):
            fit(model, opt, x, 1, 10, seed=seed, progress=False)
    # a list of numbers is data too: converted once, like float64
    assert len(fit(model, opt, x.tolist(), 1, 40, progress=False)) == 1


def test_data_outside_the_unit_range_is_refused_with_a_hint(data):
    x, xv = data
    model, opt = small()
    scaled = 16 * x  # like scikit-learn's load_digits().data, 0..16
    with pytest.raises(InputError, match=r"\[0, 1\].*scale.*linear") as e:
        fit(model, opt, scaled, 1, 10, progress=False)
    assert "16" in str(e.value) or "15.9" in str(e.value)
    with pytest.raises(InputError, match="x_val"):
        fit(model, opt, x, 1, 10, x_val=xv - 0.5, progress=False)
    before = model.flat_params.copy()
    with pytest.raises(InputError):  # per call, outside fit
        model.loss_and_grads(scaled[:4])
    np.testing.assert_array_equal(model.flat_params, before)
    bce = SparseAutoencoder(12, 5, reconstruction_loss="bce", seed=0)
    with pytest.raises(InputError, match="cross-entropy"):
        bce.loss(3.0 * x[:5])
    # a linear output reconstructs any finite value
    linear = SparseAutoencoder(12, 5, output_activation="linear", seed=0)
    fit(linear, Adam(linear.params, linear.grads), scaled, 1, 40, progress=False)


def test_an_optimizer_of_another_model_is_refused(data):
    x, _ = data
    model, _ = small()
    other, other_opt = small(seed=1)
    with pytest.raises(ConfigError, match="this model's parameters"):
        fit(model, other_opt, x, 1, 10, progress=False)


def test_float64_data_is_converted_once(data):
    x, _ = data
    model, opt = small()
    fit(model, opt, x.astype(np.float64), 1, 40, progress=False)
    assert model.flat_params.dtype == np.float32


def test_evaluate_matches_model_loss_on_one_batch(data):
    _, xv = data
    model, _ = small(weight_decay=0.01)
    whole = model.loss(xv)
    parts, rho_hat = evaluate(model, xv, batch_size=7, per_unit=True)  # batched, combined
    assert np.isclose(parts["reconstruction"], whole.reconstruction, rtol=1e-5)
    assert np.isclose(parts["sparsity"], whole.sparsity, rtol=1e-4)
    assert np.isclose(parts["weight_decay"], whole.weight_decay, rtol=1e-6)
    np.testing.assert_allclose(rho_hat, whole.mean_activation, rtol=1e-5)
    assert rho_hat.shape == (5,) and rho_hat.dtype == np.float64
    # every value of the metrics is a float (the per-unit array comes apart)
    assert evaluate(model, xv, batch_size=7) == parts
    assert set(parts) == {"total", "reconstruction", "sparsity", "weight_decay",
                          "mean_activation", "l0", "dead_fraction", "dense_fraction",
                          "log10_density", "fvu"}
    assert all(type(v) is float for v in parts.values())
    assert {k: float(v) for k, v in parts.items()} == parts


def test_dead_fraction_counts_silent_units(data):
    _, xv = data
    model, _ = small()
    model.params["encoder.b"][:2] = -50.0  # two units that never fire
    assert evaluate(model, xv)["dead_fraction"] == pytest.approx(2 / 5)


def test_reconstruction_mse_is_per_pixel(data):
    _, xv = data
    model, _ = small()
    y = model.reconstruct(xv)
    assert reconstruction_mse(model, xv, batch_size=9) == pytest.approx(float(((y - xv) ** 2).mean()),
                                                                      rel=1e-5)


def test_history_round_trips_through_dict():
    h = History()
    assert len(h) == 0 and h.last() == {} and h.keys() == ()
    h.append(epoch=1, train_total=2.0, seconds=0.5)
    assert History.from_dict(h.as_dict()).as_dict() == h.as_dict()
    assert h.last() == {"epoch": 1, "train_total": 2.0, "seconds": 0.5}
    assert h.train_total == [2.0] and len(h) == 1
    # a key first recorded later reads None before; one not given at an epoch reads None there
    h.append(epoch=2, train_total=1.5, val_total=1.7)
    assert h.val_total == [None, 1.7] and h.seconds == [0.5, None]
    assert h.keys() == ("epoch", "train_total", "seconds", "val_total")
    again = History.from_dict(h.as_dict())
    assert again.as_dict() == h.as_dict() and len(again) == 2
    # as_dict and from_dict copy: changing the dict leaves either history alone
    d = h.as_dict()
    again = History.from_dict(d)
    d["epoch"].append(3)
    assert h.epoch == [1, 2] and again.epoch == [1, 2]


@pytest.mark.parametrize("d, match", [
    ({"Bogus": [1.0]}, "lower-case"),
    ({"2x": [1.0]}, "lower-case"),
    ({1: [1.0]}, "lower-case"),
    ({"epoch": [1, 2], "train_total": [1.0]}, "different lengths"),
    ({"epoch": (1, 2)}, "list of numbers"),
    ({"epoch": ["1"]}, "list of numbers"),
    ({"epoch": [True]}, "list of numbers"),
    ([1, 2], "dict"),
])
def test_history_from_dict_is_checked(d, match):
    with pytest.raises(ConfigError, match=match):
        History.from_dict(d)


def test_history_keys_are_checked():
    h = History()
    with pytest.raises(ConfigError, match="lower-case"):
        h.append(Epoch=1)
    h.append(epoch=1, train_total=float("nan"))  # a diverged run's numbers are kept
    assert len(h) == 1 and h.train_total[0] != h.train_total[0]


def test_numpy_integers_accepted_and_log_every_checked(data):
    x, _ = data
    model, opt = small()
    h = fit(model, opt, x, np.int64(1), np.int64(40), progress=False)
    assert len(h) == 1
    with pytest.raises(ConfigError, match="log_every"):
        fit(model, opt, x, 2, 40, progress=False, engine=Engine(log_every=0))


def test_fit_with_lbfgs_records_an_iteration_per_epoch(data):
    from minisae import LBFGS
    x, xv = data
    model = SparseAutoencoder(12, 5, dtype="float64", reduction="halfsum", seed=0)
    opt = LBFGS(model.params, model.grads)
    saved = []
    h = fit(model, opt, x, 8, x_val=xv, progress=False,
            checkpoints=Checkpoints(lambda hist, at: saved.append((len(hist), at))))
    assert h.epoch == list(range(1, 9)) and saved == [(n, None) for n in range(1, 9)]
    assert opt.t == 8
    assert all(b < a for a, b in zip(h.train_total, h.train_total[1:]))  # L-BFGS descends
    assert h.train_total[-1] == pytest.approx(model.loss(x).total, rel=1e-9)
    assert all(v is not None for v in h.val_total)
    # resumed: only the iterations up to the new total run
    h = fit(model, opt, x, 11, history=h, progress=False)
    assert len(h) == 11 and opt.t == 11
    with pytest.raises(ConfigError, match="full batch"):
        fit(model, opt, x, 12, 32, progress=False)
    other = SparseAutoencoder(12, 5, dtype="float64", seed=1)
    with pytest.raises(ConfigError, match="this model's parameters"):
        fit(other, opt, x, 12, progress=False)


def test_minibatch_optimizers_need_a_batch_size(data):
    x, _ = data
    model, opt = small()
    with pytest.raises(ConfigError, match="batch_size"):
        fit(model, opt, x, 1, progress=False)


def test_history_and_callback_are_checked(data):
    x, _ = data
    model, opt = small()
    with pytest.raises(ConfigError, match="History"):
        fit(model, opt, x, 1, 40, history=[1, 2], progress=False)
    with pytest.raises(ConfigError, match="save"):
        Checkpoints(save=3)
    with pytest.raises(ConfigError, match="save must be a function of .history, position."):
        Checkpoints(save=lambda history: None)     # the one-argument on_epoch_end of 0.3
    with pytest.raises(ConfigError, match="checkpoints must be a Checkpoints"):
        fit(model, opt, x, 1, 40, checkpoints=lambda history: None, progress=False)


@pytest.mark.parametrize("old, home", [("threads", "engine=Engine"), ("fast", "engine=Engine"),
                                       ("log_every", "engine=Engine"),
                                       ("on_epoch_end", "checkpoints=Checkpoints"),
                                       ("checkpoint_every", "checkpoints=Checkpoints"),
                                       ("on_checkpoint", "checkpoints=Checkpoints"),
                                       ("position", "checkpoints=Checkpoints"),
                                       ("dead_window", "dead_units=DeadUnits"),
                                       ("resample_every", "dead_units=DeadUnits"),
                                       ("chunk_rows", "x_train=Stream"),
                                       ("buffer_rows", "x_train=Stream")])
def test_the_keywords_of_03_are_refused_naming_their_new_home(data, old, home):
    x, _ = data
    model, opt = small()
    with pytest.raises(ConfigError, match=rf"no longer takes {old}=.*pass {home}\("):
        fit(model, opt, x, 1, 40, progress=False, **{old: 1})
    assert opt.t == 0


def test_fits_settings_check_themselves_and_read_well(tmp_path):
    """Engine, Checkpoints, DeadUnits and Stream refuse what fit refused, when made."""
    for make, match in ((lambda: Engine(fast="yes"), "fast"),
                        (lambda: Engine(threads=0), "threads"),
                        (lambda: Engine(log_every=0), "log_every"),
                        (lambda: Checkpoints(every=0, save=print), "every"),
                        (lambda: Checkpoints(every=5), "every needs save"),
                        (lambda: Checkpoints(position={"epoch": 1}), "position"),
                        (lambda: DeadUnits(window=0), "window"),
                        (lambda: DeadUnits(resample_every=0.5), "resample_every"),
                        (lambda: Stream(np.zeros((4, 3))), "source"),
                        (lambda: Stream(ArraySource(np.zeros((4, 3))), chunk_rows=0),
                         "chunk_rows"),
                        (lambda: Stream(ArraySource(np.zeros((4, 3))), 10, 5), "buffer_rows")):
        with pytest.raises(ConfigError, match=match):
            make()

    def save(history, position):
        pass

    assert repr(Engine()) == "Engine(fast=True, threads='auto', log_every=None)"
    assert repr(DeadUnits(resample_every=50)) == "DeadUnits(window=10_000, resample_every=50)"
    at = {"epoch": 2, "step": 7, "sums": {}, "seconds": 1.0, "resampled": 0}
    assert repr(Checkpoints(save, 7, at)) == \
        "Checkpoints(save=test_fits_settings_check_themselves_and_read_well.<locals>.save, " \
        "every=7, position=<epoch 2, step 7>)"
    assert repr(Stream(ArraySource(np.zeros((4, 3)), "x"), 2)) == \
        "Stream(<x: in memory, 4 rows x 3 float64>, chunk_rows=2, buffer_rows=None)"


# ----------------------------------------------------------------------------- fast or reference

def test_fit_fast_and_reference_give_the_same_run(data, monkeypatch):
    import minisae.fast
    from minisae.optim import Adam as ReferenceAdam
    x, xv = data
    calls = {"reference": 0, "adam_step": 0}
    real_loss, real_step = SparseAutoencoder.loss_and_grads, ReferenceAdam.step

    def counted_loss(self, *a, **k):
        calls["reference"] += 1
        return real_loss(self, *a, **k)

    def counted_step(self):
        calls["adam_step"] += 1
        return real_step(self)

    monkeypatch.setattr(SparseAutoencoder, "loss_and_grads", counted_loss)
    monkeypatch.setattr(ReferenceAdam, "step", counted_step)
    runs = {}
    for fast in (True, False):
        model, opt = small(weight_decay=0.01)
        if fast:
            assert minisae.fast.fused(model) is None  # the engine really runs this model
        calls.update(reference=0, adam_step=0)
        h = fit(model, opt, x, 3, 32, seed=3, x_val=xv, progress=False,
                engine=Engine(fast=fast))
        steps = 3 * (120 // 32)
        assert opt.t == steps
        if fast:  # the engine, end to end: neither the layers' step nor Adam.step ran
            assert calls == {"reference": 0, "adam_step": 0}
        else:     # the reference, end to end
            assert calls == {"reference": steps, "adam_step": steps}
        runs[fast] = (h, model.flat_params.copy(), {k: v.copy() for k, v in opt.m.items()})
    (h1, p1, m1), (h0, p0, m0) = runs[True], runs[False]
    assert h1.keys() == h0.keys()
    for key in h1.keys():
        if key not in ("seconds", "samples_per_second"):
            np.testing.assert_allclose(getattr(h1, key), getattr(h0, key), rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(p1, p0, rtol=1e-4, atol=1e-6)
    for k in m0:  # the engine updated the reference optimizer's own moments
        np.testing.assert_allclose(m1[k], m0[k], rtol=1e-3, atol=1e-7, err_msg=k)


def test_fit_fast_is_checked(data):
    x, _ = data
    model, opt = small()
    for fast in ("yes", 1, None):
        with pytest.raises(ConfigError, match="fast"):
            fit(model, opt, x, 1, 40, progress=False, engine=Engine(fast=fast))


def test_a_resumed_auto_run_keeps_the_thread_count_it_recorded(data, monkeypatch):
    from minisae.fast import threads as T
    x, _ = data
    model, opt = small()
    h = fit(model, opt, x, epochs=1, batch_size=40, progress=False)
    assert h.threads == [1]
    h.threads[-1] = 3                                  # as if the run had chosen 3 threads
    seen = []
    fit(model, opt, x, epochs=2, batch_size=40, progress=False, history=h,
        checkpoints=Checkpoints(lambda hist, at: seen.append(T.active().threads)))
    assert seen == [3] and h.threads == [3, 3]
