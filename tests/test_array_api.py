"""The teaching core on array libraries other than NumPy, without a GPU.

Two stand-ins for a GPU library:

- "array-api-strict", the Array API standard's strict implementation, with its arrays on a
  pretend device (array_api_strict.Device("device1")): np.asarray of one raises, mixing one
  with a NumPy array raises, and a function outside the standard does not exist. A line that
  would only fail on a GPU (a forgotten host copy, a NumPy call on device data) fails here.
  It is minisae's hidden test backend, selectable while MINISAE_TEST_BACKEND=1.
- PyTorch tensors (backend="torch"; CPU tensors here, CUDA ones where .ci/gpu-check runs
  these tests): another real library, with its own dtypes and its own autograd, which
  minisae must not switch on.

Each test runs the same computation on NumPy and compares: the same seed gives the same
weights on every backend, so the numbers must agree (float64: to rounding).
Every test here is marked `array_api` (pytest -m array_api runs them alone).
"""
import sys
import types

import numpy as np
import pytest

import minisae
from conftest import OPTION_COMBOS, random_inputs, requires_cupy
from minisae import SGD, Adam, SparseAutoencoder
from minisae import functional as F
from minisae import gradcheck
from minisae.backend import (TEST_BACKEND, TEST_BACKEND_ENV, Backend, device_of, get_backend,
                             library, namespace, to_numpy)
from minisae.errors import ConfigError

pytestmark = pytest.mark.array_api

STRICT = TEST_BACKEND  # "array-api-strict"

# Every sparsity term and option (model keyword arguments); all on 5 inputs and 4 units.
CASES = {
    **{f"kl-{'-'.join(combo)}": dict(output_activation=combo[0], reconstruction_loss=combo[1],
                                     reduction=combo[2], weight_decay=0.01)
       for combo in OPTION_COMBOS},
    "squared": dict(sparsity="squared", sparsity_weight=0.5),
    "absolute": dict(sparsity="absolute", sparsity_weight=0.5),
    "l1-relu": dict(sparsity="l1", hidden_activation="relu", output_activation="linear"),
    "l1-decoder-norm": dict(sparsity="l1", hidden_activation="relu", l1_decoder_norm=True,
                            output_activation="linear", weight_decay=0.01),
    "topk-relu": dict(sparsity="topk", k=2, hidden_activation="relu",
                      output_activation="linear"),
    "topk-linear": dict(sparsity="topk", k=2, hidden_activation="linear",
                        output_activation="linear"),
    "tied": dict(tied_weights=True, weight_decay=0.01),
    "tied-l1-decoder-norm": dict(sparsity="l1", hidden_activation="relu", tied_weights=True,
                                 l1_decoder_norm=True, output_activation="linear"),
    "auxk": dict(sparsity="topk", k=2, hidden_activation="relu", aux_k=2,
                 output_activation="linear"),
}
if "subtract_decoder_bias" in minisae.Config.field_names():
    CASES["subtract-decoder-bias"] = dict(sparsity="topk", k=2, hidden_activation="relu",
                                          output_activation="linear",
                                          subtract_decoder_bias=True)
DEAD = np.array([True, False, True, False])  # AuxK's dead units, set by hand here


@pytest.fixture
def strict(monkeypatch):
    """The name of the strict backend, enabled for this test."""
    pytest.importorskip("array_api_strict")
    monkeypatch.setenv(TEST_BACKEND_ENV, "1")
    return STRICT


@pytest.fixture
def torch():
    """PyTorch, whose backend here puts tensors on the CPU (on a CUDA machine: the GPU,
    which .ci/gpu-check runs these tests on)."""
    torch = pytest.importorskip("torch")
    if minisae.backend.torch_device(torch) == "mps":
        pytest.skip("Apple's MPS device has no float64, which these tests compare in")
    return torch


def build(backend, case, dtype="float64", n_inputs=5, n_hidden=4, **kw):
    """A small model of CASES[case] on `backend`, with AuxK's dead set as DEAD (and a
    nonzero decoder bias where it is subtracted from x)."""
    model = SparseAutoencoder(n_inputs, n_hidden, backend=backend, dtype=dtype, seed=0,
                              **{**CASES[case], **kw})
    if model.config.aux_k:
        model.dead = model.backend.asarray(DEAD, dtype=model.backend.xp.bool)
    if getattr(model.config, "subtract_decoder_bias", False):
        model.params["decoder.b"][...] = model.backend.asarray(np.linspace(0.1, 0.5, n_inputs))
    return model


def on_device(a, backend):
    """True when `a` is an array of this backend's library, on its device."""
    where = device_of(a)
    if library(a) == "torch":  # torch.device("cuda") holds tensors on "cuda:0"
        return backend.name == "torch" and where.type == backend.device.type
    return library(a) == backend.name and where == backend.device


def assert_same(a, b, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- the loss

@pytest.mark.parametrize("case", CASES)
def test_strict_loss_and_gradients_match_numpy(strict, case):
    x = random_inputs(6, 5)
    ref, model = build("numpy", case), build(strict, case)
    np.testing.assert_array_equal(to_numpy(model.flat_params), ref.flat_params)  # one seed
    assert all(on_device(a, model.backend) for a in (model.flat_params, model.flat_grads,
                                                     *model.params.values(), model.dead))
    loss, expected = model.loss_and_grads(x), ref.loss_and_grads(x)
    assert loss.names == expected.names
    assert loss.as_dict() == pytest.approx(expected.as_dict(), rel=1e-12, abs=1e-15)
    assert all(type(v) is float for v in loss.parts.values()) and type(loss.total) is float
    for name in ref.grads:
        assert on_device(model.grads[name], model.backend)
        assert_same(model.grads[name], ref.grads[name])
    # the forward-only loss too
    assert model.loss(x).as_dict() == pytest.approx(ref.loss(x).as_dict(), rel=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_strict_gradients_pass_the_finite_difference_check(strict, case):
    x = random_inputs(6, 5, seed=1)
    model = build(strict, case)
    if model.config.aux_k:  # AuxK's target is not differentiated: hold it where it is
        model.frozen_residual = model.as_batch(x) - model.reconstruct(x)
    rows = gradcheck.check_model(model, x)
    gradcheck.assert_gradients_ok(rows)
    assert [r.name for r in rows] == list(model.params)


# ----------------------------------------------------------------------------- optimizers

@pytest.mark.parametrize("make", [lambda m: Adam(m.params, m.grads, lr=0.01),
                                  lambda m: SGD(m.params, m.grads, lr=0.1, momentum=0.9)],
                         ids=["adam", "sgd"])
def test_strict_optimizer_steps_match_numpy(strict, make):
    x = random_inputs(6, 5)
    ref, model = build("numpy", "kl-sigmoid-mse-mean"), build(strict, "kl-sigmoid-mse-mean")
    ref_opt, opt = make(ref), make(model)
    for _ in range(3):
        ref.loss_and_grads(x)
        ref_opt.step()
        model.loss_and_grads(x)
        opt.step()
    assert opt.t == ref_opt.t == 3
    assert_same(model.flat_params, ref.flat_params)
    for slot in type(opt).SLOTS:
        for name, state in getattr(opt, slot).items():
            assert on_device(state, model.backend)
            assert_same(state, getattr(ref_opt, slot)[name])


# ----------------------------------------------------------------------------- training

def test_strict_fit_runs_the_reference_and_matches_numpy(strict):
    x, x_val = random_inputs(40, 5), random_inputs(10, 5, seed=3)
    runs = {}
    for name, backend, fast in (("numpy", "numpy", False), ("strict", strict, False),
                                ("strict-fast", strict, True)):
        model = build(backend, "kl-sigmoid-mse-mean")
        opt = Adam(model.params, model.grads, lr=0.05)
        history = minisae.fit(model, opt, x, epochs=3, batch_size=10, x_val=x_val,
                              progress=False, engine=minisae.Engine(fast=fast))
        runs[name] = (model, history.as_dict())
    model = runs["strict"][0]
    reason = minisae.fast.fused(model)
    assert reason is not None and STRICT in reason  # no fast engine here: the reference runs
    assert on_device(model.flat_params, model.backend)
    train = runs["strict"][1]["train_total"]
    assert train[-1] < train[0]  # it trains
    for name in ("strict", "strict-fast"):
        history = runs[name][1]
        for key, values in runs["numpy"][1].items():
            if key not in ("seconds", "samples_per_second"):
                assert history[key] == pytest.approx(values, rel=1e-10, nan_ok=True), (name, key)
        assert_same(runs[name][0].flat_params, runs["numpy"][0].flat_params, rtol=1e-10)


def test_strict_fit_with_auxk_and_resampling(strict):
    x = random_inputs(40, 5)
    for case, every in (("auxk", None), ("l1-relu", 4)):
        model = SparseAutoencoder(5, 6, backend=strict, seed=0, **CASES[case])
        history = minisae.fit(model, Adam(model.params, model.grads, lr=0.05), x, epochs=2,
                              batch_size=10, progress=False,
                              dead_units=minisae.DeadUnits(window=10, resample_every=every))
        assert len(history.train_dead_fraction) == 2
        assert on_device(model.dead, model.backend) and on_device(model.flat_params,
                                                                  model.backend)


def test_strict_evaluate_matches_numpy(strict):
    x = random_inputs(25, 5)
    for case in ("kl-sigmoid-bce-mean", "topk-relu", "l1-decoder-norm"):
        ref, model = build("numpy", case), build(strict, case)
        metrics, rho_hat = minisae.evaluate(model, x, batch_size=7, per_unit=True)
        expected, expected_rho = minisae.evaluate(ref, x, batch_size=7, per_unit=True)
        assert metrics == pytest.approx(expected, rel=1e-12, nan_ok=True)
        assert isinstance(rho_hat, np.ndarray)
        np.testing.assert_allclose(rho_hat, expected_rho, rtol=1e-12)


def test_strict_encode_decode_reconstruct(strict):
    x = random_inputs(7, 5)
    for case in ("kl-sigmoid-mse-mean", "topk-relu", "tied"):
        ref, model = build("numpy", case), build(strict, case)
        h = model.encode(x)
        assert on_device(h, model.backend) and tuple(h.shape) == (7, 4)
        assert_same(h, ref.encode(x))
        assert_same(model.encode(x, batch_size=3), h)  # 3 + 3 + 1 rows
        assert_same(model.encode(model.backend.asarray(x)), h)  # a batch already there
        y = model.decode(h)
        assert on_device(y, model.backend)
        assert_same(y, ref.decode(ref.encode(x)))
        assert_same(model.reconstruct(x), y)


def test_strict_save_and_load(strict, tmp_path):
    x = random_inputs(20, 5)
    model = build(strict, "topk-relu", dtype="float32")
    opt = Adam(model.params, model.grads, lr=0.01)
    history = minisae.fit(model, opt, x, epochs=2, batch_size=5, progress=False)
    path = minisae.save(tmp_path / "run.npz", model, opt, history, extra={"note": "strict"})
    ck = minisae.load(path, backend=strict)
    assert ck.model.backend.name == STRICT and ck.model.config == model.config
    assert on_device(ck.model.flat_params, ck.model.backend)
    assert_same(ck.model.flat_params, model.flat_params, rtol=0, atol=0)
    assert ck.optimizer.t == opt.t == 8
    for slot in ("m", "v"):
        for name, state in getattr(ck.optimizer, slot).items():
            assert on_device(state, ck.model.backend)
            assert_same(state, getattr(opt, slot)[name], rtol=0, atol=0)
    assert ck.history.as_dict() == history.as_dict() and ck.extra == {"note": "strict"}
    # the same file on NumPy holds the same numbers
    np.testing.assert_array_equal(minisae.load(path).model.flat_params,
                                  to_numpy(model.flat_params))


def test_strict_figures(strict, tmp_path):
    from minisae.apps import plots
    model = SparseAutoencoder(16, 6, backend=strict, seed=0)
    be, x = model.backend, random_inputs(5, 16)
    W = model.params["encoder.W"]
    rho_hat = F.mean_activation(model.encode(x))
    history = {"epoch": [1, 2], "train_total": [be.asarray(0.5), be.asarray(0.4)],
               "train_reconstruction": [be.asarray(0.3), be.asarray(0.2)],
               "train_mean_activation": [rho_hat, rho_hat]}
    written = [
        plots.feature_grid(W, tmp_path / "features.png", image_shape=(4, 4)),
        plots.feature_grids_side_by_side([("a", W), ("b", W)], tmp_path / "side.png",
                                         image_shape=(4, 4)),
        plots.reconstructions(be.asarray(x), model.reconstruct(x), tmp_path / "rec.png",
                              n=3, image_shape=(4, 4)),
        plots.activation_histogram(rho_hat, 0.1, tmp_path / "act.png"),
        plots.training_curves(history, tmp_path / "curves.png", sparsity_target=0.1),
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- the command

@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A 100/20-image "MNIST" (conftest's, smaller)."""
    from conftest import make_tiny_mnist
    return make_tiny_mnist(tmp_path / "mnist", monkeypatch, tmp_path / "cache", 100, 20)


def test_strict_cli_train_show_gradcheck(strict, tiny_mnist, tmp_path, capsys, monkeypatch):
    from minisae.apps import cli
    from minisae.files import checkpoint
    out = tmp_path / "run"
    flags = ["--hidden", "8", "--batch-size", "50", "--no-progress", "--backend", strict]
    assert cli.main(["train", *flags, "--epochs", "2", "--out", str(out)]) == 0
    for name in ("checkpoint.npz", "metrics.json") + cli.FIGURES:
        assert (out / name).stat().st_size > 0, name
    ck = checkpoint.load(out, backend=strict)
    assert on_device(ck.model.flat_params, ck.model.backend) and len(ck.history) == 2
    capsys.readouterr()
    shown = tmp_path / "shown"
    assert cli.main(["show", str(out), "--out", str(shown), "--backend", strict]) == 0
    assert all((shown / name).stat().st_size > 0 for name in cli.FIGURES)
    capsys.readouterr()
    # a few of its models (the strict backend is ten times slower than NumPy; the tests
    # above check every sparsity term and option on it)
    keep = [c for c in cli.gradcheck_combinations() if c[3] is not None or c[:3] in
            (("sigmoid", "bce", "mean"), ("linear", "mse", "halfsum"))]
    monkeypatch.setattr(cli, "gradcheck_combinations", lambda: keep)
    variants = getattr(cli, "SPARSITY_VARIANTS", [])
    monkeypatch.setattr(cli, "SPARSITY_VARIANTS",
                        [v for v in variants if "AuxK" in v[0]] or variants[:1], raising=False)
    assert cli.main(["gradcheck", "--backend", strict]) == 0
    text = capsys.readouterr().out
    assert f"path=reference ({STRICT})" in text and f"path=fast ({STRICT})" in text
    assert "all gradients match" in text


# ----------------------------------------------------------------------------- PyTorch

def _no_autograd(arrays):
    return all(not a.requires_grad and a.grad_fn is None for a in arrays)


def test_torch_tensors_train_check_and_match_numpy(torch):
    x = random_inputs(6, 5)
    for case in ("kl-sigmoid-mse-mean", "kl-sigmoid-bce-mean", "l1-decoder-norm", "tied",
                 "auxk"):
        ref, model = build("numpy", case), build("torch", case)
        assert isinstance(model.flat_params, torch.Tensor)
        loss, expected = model.loss_and_grads(x), ref.loss_and_grads(x)
        assert loss.as_dict() == pytest.approx(expected.as_dict(), rel=1e-12)
        for name in ref.grads:
            assert_same(model.grads[name], ref.grads[name], rtol=1e-10, atol=1e-13)
        if model.config.aux_k:
            model.frozen_residual = model.as_batch(x) - model.reconstruct(x)
        gradcheck.assert_gradients_ok(gradcheck.check_model(model, x))
    # training, in float32: the reference path (no fast engine on torch), to float tolerance
    x = random_inputs(40, 5).astype(np.float32)
    runs = {}
    for backend in ("numpy", "torch"):
        model = build(backend, "kl-sigmoid-mse-mean", dtype="float32")
        opt = Adam(model.params, model.grads, lr=0.05)
        runs[backend] = (model, opt, minisae.fit(model, opt, x, epochs=3, batch_size=10,
                                                 x_val=x, progress=False))
    model, opt, history = runs["torch"]
    assert minisae.fast.fused(model) is not None
    train = history.train_total
    assert train[-1] < train[0]
    assert train == pytest.approx(runs["numpy"][2].train_total, rel=1e-4)
    assert history.val_total == pytest.approx(runs["numpy"][2].val_total, rel=1e-4)
    # no autograd graph anywhere: plain tensors, no gradients tracked by PyTorch
    loss = model.loss_and_grads(x)
    tensors = [model.flat_params, model.flat_grads, *model.params.values(),
               *model.grads.values(), *opt.m.values(), *opt.v.values(), model.encode(x),
               model.reconstruct(x), *(v for v in loss._parts.values()
                                       if isinstance(v, torch.Tensor))]
    assert _no_autograd(tensors)


# ----------------------------------------------------------------------------- the contract

def _backend_params():
    return ["numpy", "torch", STRICT,
            pytest.param("cupy", marks=[pytest.mark.gpu, requires_cupy])]


@pytest.fixture(params=_backend_params())
def any_backend(request, monkeypatch):
    """A float64 Backend of every library: NumPy, PyTorch (CPU here), the strict pretend
    device, and CuPy where a GPU answers."""
    if request.param == "torch":
        pytest.importorskip("torch")
    if request.param == STRICT:
        pytest.importorskip("array_api_strict")
        monkeypatch.setenv(TEST_BACKEND_ENV, "1")
    return get_backend(request.param, "float64")


def test_functional_losses_are_0d_arrays_of_the_input_library(any_backend):
    """functional.py's contract: a loss is a 0-d array of its input's library, on its
    device (the caller float()s it); a model's Loss parts are read as floats."""
    be, rng = any_backend, np.random.default_rng(0)
    x, y, z = (rng.uniform(0.05, 0.95, (4, 3)) for _ in range(3))
    rho_hat, W = rng.uniform(0.05, 0.95, 3), rng.normal(size=(3, 3))
    logits, labels = rng.normal(size=(4, 5)), np.array([0, 2, 4, 1])
    cases = {
        "mse": (F.mse, (y, x, "halfsum")),
        "bce_with_logits": (F.bce_with_logits, (z, x)),
        "kl_penalty": (F.kl_penalty, (rho_hat, 0.1, 3.0)),
        "squared_penalty": (F.squared_penalty, (rho_hat, 0.1, 3.0)),
        "absolute_penalty": (F.absolute_penalty, (rho_hat, 0.1, 3.0)),
        "l1_penalty": (F.l1_penalty, (rho_hat, 3.0, F.row_norms(W))),
        "weight_decay": (lambda a, b, lam: F.weight_decay([a, b], lam), (W, x, 0.01)),
        "cross_entropy": (lambda z, y: F.cross_entropy(F.log_softmax(z), y), (logits, labels)),
        "accuracy": (F.accuracy, (logits, labels)),
    }
    for name, (f, args) in cases.items():
        expected = f(*args)
        moved = [be.asarray(a, dtype=be.xp.int64 if a is labels else None)
                 if isinstance(a, np.ndarray) else a for a in args]
        value = f(*moved)
        assert library(value) == be.name and value.ndim == 0, name
        assert on_device(value, be), name
        assert float(value) == pytest.approx(float(expected), rel=1e-12), name
    model = SparseAutoencoder(5, 4, backend=be, dtype="float64", seed=0)
    loss = model.loss_and_grads(random_inputs(6, 5))
    assert all(type(v) is float for v in loss.as_dict().values())
    assert type(loss.reconstruction) is float and type(loss.sparsity) is float


# ----------------------------------------------------------------------------- the size check

def test_size_check_counts_the_devices_memory_on_strict(strict, monkeypatch):
    monkeypatch.setattr(Backend, "memory", lambda self: 2**20)  # a 1 MiB device
    with pytest.raises(ConfigError, match="use fewer hidden units"):
        SparseAutoencoder(784, 1000, backend=strict)
    SparseAutoencoder(16, 8, backend=strict)  # 4 * 280 floats fit


def test_size_check_refuses_before_a_gpu_library_is_asked(monkeypatch):
    """A model too large for the GPU's free memory is refused before any array is asked for:
    the device's (faked) numbers are read, nothing is allocated."""
    asked = []

    def allocate(*args, **kwargs):
        asked.append(args)
        raise AssertionError("asked the GPU library for memory")

    xp = types.SimpleNamespace(float32=np.float32, float64=np.float64, asarray=allocate,
                               zeros=allocate, empty=allocate)
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(memGetInfo=lambda: (64 * 2**20, 80 * 2**30))))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    backend = Backend("cupy", xp, "gpu0", "float32")
    assert backend.memory() == 64 * 2**20
    with pytest.raises(ConfigError, match="use fewer hidden units") as info:
        SparseAutoencoder(784, 10_000, backend=backend)
    assert "the GPU's free memory (0.1 GiB)" in str(info.value)
    assert asked == []


def test_size_check_counts_a_torch_gpus_free_memory(torch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (32 * 2**20, 80 * 2**30))
    backend = Backend("torch", get_backend("torch").xp, torch.device("cuda"), "float32")
    assert backend.memory() == 32 * 2**20 and backend.memory_name() == "the GPU's free memory"
    with pytest.raises(ConfigError, match="use fewer hidden units"):
        # refused before torch is asked for CUDA tensors, which this machine could not give
        SparseAutoencoder(784, 10_000, backend=backend)


# ----------------------------------------------------------------------------- the guard

def _planted(monkeypatch, bug):
    """Run `bug(x)` on every training batch x, before the model's own loss_and_grads."""
    right = SparseAutoencoder.loss_and_grads

    def loss_and_grads(self, x, validate=True):
        bug(x)
        return right(self, x, validate)
    monkeypatch.setattr(SparseAutoencoder, "loss_and_grads", loss_and_grads)


def _fit(backend):
    model = build(backend, "kl-sigmoid-mse-mean")
    return minisae.fit(model, Adam(model.params, model.grads), random_inputs(20, 5), epochs=1,
                       batch_size=5, progress=False, engine=minisae.Engine(fast=False))


def test_the_pretend_device_refuses_a_host_copy_inside_fit(strict, monkeypatch):
    """A batch read back with np.asarray (a silent copy from the GPU, every step) passes on
    NumPy and fails on the pretend device: the strict backend catches it in the tests."""
    _planted(monkeypatch, lambda x: np.asarray(x).sum())
    assert len(_fit("numpy")) == 1  # NumPy cannot tell
    with pytest.raises(RuntimeError, match="device.* to a NumPy array"):
        _fit(strict)


def test_the_pretend_device_refuses_mixing_host_and_device_arrays(strict, monkeypatch):
    _planted(monkeypatch, lambda x: x + np.zeros(x.shape[1]))
    assert len(_fit("numpy")) == 1
    with pytest.raises(TypeError):
        _fit(strict)


def test_the_pretend_device_has_no_function_outside_the_standard(strict, monkeypatch):
    _planted(monkeypatch, lambda x: namespace(x).fmax(x, 0.0))  # NumPy's, not the standard's
    assert len(_fit("numpy")) == 1
    with pytest.raises(AttributeError, match="fmax"):
        _fit(strict)
