"""The model (SparseAutoencoder): gradients against differences and the math; bad input refused."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import minisae.fast
from conftest import COMBO_IDS, OPTION_COMBOS, make_model, random_inputs, requires_cupy
from minisae import Adam, SparseAutoencoder, get_backend, to_numpy
from minisae.errors import ConfigError, InputError, MinisaeError
from minisae.gradcheck import (assert_gradients_ok, check_model, numerical_gradient,
                               relative_error)
from minisae.losses import Loss

PARAM_NAMES = ["encoder.W", "encoder.b", "decoder.W", "decoder.b"]


def randomize(model, seed=0, scale=1.0):
    """Random weights and nonzero biases, so no gradient is trivially zero."""
    rng = np.random.default_rng(seed)
    for name, p in model.params.items():
        p[...] = model.backend.asarray(scale * rng.uniform(-1, 1, size=p.shape))


def reference(params, x, cfg):
    """Loss parts and all four gradients, written out from scratch in NumPy float64: what the
    model must compute on both of its paths (the layers' reference and the fast engine)."""
    W1, b1, W2, b2 = (to_numpy(params[k]).astype(np.float64) for k in PARAM_NAMES)
    x = to_numpy(x).astype(np.float64)
    batch, n = x.shape
    rho, beta, lam = cfg.sparsity_target, cfg.sparsity_weight, cfg.weight_decay

    h = 1.0 / (1.0 + np.exp(-(x @ W1 + b1)))
    z = h @ W2 + b2
    y = 1.0 / (1.0 + np.exp(-z)) if cfg.output_activation == "sigmoid" else z
    if cfg.reconstruction_loss == "bce":
        reconstruction = np.mean(np.logaddexp(0.0, z) - x * z)
        dz = (y - x) / (batch * n)
    else:
        c = 1.0 / (batch * n) if cfg.reduction == "mean" else 0.5 / batch
        reconstruction = c * np.sum((y - x) ** 2)
        dy = 2.0 * c * (y - x)
        dz = dy * y * (1.0 - y) if cfg.output_activation == "sigmoid" else dy
    rho_hat = h.mean(axis=0)
    q = np.clip(rho_hat, 1e-6, 1 - 1e-6)
    sparsity = beta * np.sum(rho * np.log(rho / q) + (1 - rho) * np.log((1 - rho) / (1 - q)))
    weight_decay = lam / 2 * (np.sum(W1 ** 2) + np.sum(W2 ** 2))

    grads = {"decoder.W": h.T @ dz + lam * W2, "decoder.b": dz.sum(axis=0)}
    inside = (rho_hat >= 1e-6) & (rho_hat <= 1 - 1e-6)
    dh = dz @ W2.T + beta * (-rho / q + (1 - rho) / (1 - q)) * inside / batch
    dz1 = dh * h * (1 - h)
    grads["encoder.W"] = x.T @ dz1 + lam * W1
    grads["encoder.b"] = dz1.sum(axis=0)
    parts = {"reconstruction": reconstruction, "sparsity": sparsity, "weight_decay": weight_decay,
             "total": reconstruction + sparsity + weight_decay}
    return parts, grads, rho_hat


# ----------------------------------------------------------------------------- gradient checks

PATHS = ["reference", "fast"]


def loss_and_grads_on(path):
    """f(model, x) computing the loss and filling model.grads on a path: the reference
    (the model's layers) or the fast engine."""
    return SparseAutoencoder.loss_and_grads if path == "reference" else minisae.fast.loss_and_grads


def check_path(model, path):
    """On the fast path, make sure the fused step really runs (no silent fallback to the
    reference, which would test the reference twice)."""
    if path == "fast":
        assert minisae.fast.fused(model) is None, minisae.fast.fused(model)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_model_gradients_match_finite_differences(backend, combo, path):
    model = make_model(backend, n_inputs=5, n_hidden=3, combo=combo, sparsity_target=0.2,
                       sparsity_weight=0.7, weight_decay=0.01, seed=1)
    randomize(model, seed=2, scale=2.0)
    x = random_inputs(4, 5, seed=3)
    check_path(model, path)
    rows = check_model(model, x) if path == "reference" else minisae.fast.check_model(model, x)
    assert [r.name for r in rows] == PARAM_NAMES
    assert_gradients_ok(rows)
    for r in rows:
        assert r.rel_error < 1e-7 and r.analytic_norm > 0 and r.numeric_norm > 0


@st.composite
def model_cases(draw):
    """A small float64 model pushed toward saturation, on either path, and a batch in [0, 1]."""
    combo = draw(st.sampled_from(OPTION_COMBOS))
    fast = draw(st.booleans())
    batch, n, n_hidden = (draw(st.integers(1, 8)) for _ in range(3))
    kw = dict(sparsity_target=draw(st.floats(0.01, 0.5)),
              sparsity_weight=draw(st.floats(0.0, 5.0)),
              weight_decay=draw(st.floats(0.0, 0.1)))
    x = draw(arrays(np.int64, (batch, n), elements=st.integers(0, 100))) / 100.0
    # the largest |pre-activation| of each layer, up to 8 (sigmoid' = 3e-4 there)
    s1, s2 = draw(st.floats(0.1, 8.0)), draw(st.floats(0.1, 8.0))
    seed = draw(st.integers(0, 2**16))
    model = make_model("numpy", n_inputs=n, n_hidden=n_hidden, combo=combo, seed=seed, **kw)
    rng = np.random.default_rng(seed)
    P = model.params
    P["encoder.b"][...] = rng.uniform(-1, 1, size=n_hidden)
    P["decoder.b"][...] = rng.uniform(-1, 1, size=n)
    for W, b, inputs in (("encoder.W", "encoder.b", x), ("decoder.W", "decoder.b", None)):
        if inputs is None:  # the decoder sees h
            inputs = to_numpy(model.encode(x))
        z = inputs @ P[W] + P[b]
        k = (s1 if W == "encoder.W" else s2) / np.abs(z).max()
        P[W][...] *= k
        P[b][...] *= k
    return model, x, "fast" if fast else "reference"


@settings(max_examples=60, deadline=None)
@given(case=model_cases())
def test_model_gradients_property(case):
    model, x, path = case
    compute = loss_and_grads_on(path)
    check_path(model, path)
    out = compute(model, x)
    total = out.total
    assert math.isfinite(total)
    assert out.sparsity >= -1e-12  # KL >= 0
    rho_hat = out.mean_activation
    # |z| <= 8 keeps rho_hat well inside the clip bounds, where the loss is smooth
    assert (rho_hat > 1e-4).all() and (rho_hat < 1 - 1e-4).all()
    analytic = {k: to_numpy(g).copy() for k, g in model.grads.items()}
    # Central differences resolve a gradient only down to the rounding of the loss divided by
    # the step h = 1e-5: about 2e-11 * |loss|, plus the KL term's, which rounding in rho_hat
    # (1e-16) reaches amplified by beta * (rho / rho_hat + (1 - rho) / (1 - rho_hat)): a unit
    # near saturation makes log(1 - rho_hat) ill-conditioned. Below that floor (with a margin
    # of 5 to 10) the relative error measures noise, not the gradient.
    cfg = model.config
    rho, beta = cfg.sparsity_target, cfg.sparsity_weight
    kl_conditioning = beta * np.sum(rho / rho_hat + (1 - rho) / (1 - rho_hat))
    noise = 1e-10 * (1 + abs(total) + kl_conditioning)
    for name, p in model.params.items():
        numeric = numerical_gradient(lambda: compute(model, x).total, p)
        err = relative_error(numeric, analytic[name])
        assert err < 1e-7 or np.linalg.norm(numeric - analytic[name]) < noise * math.sqrt(p.size), \
            f"{name}: relative error {err:.3e}"


@settings(max_examples=25, deadline=None)
@given(rho=st.floats(0.01, 0.5), beta=st.floats(0.1, 5.0), batch=st.integers(1, 8),
       n=st.integers(1, 8), n_hidden=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_kl_vanishes_when_rho_hat_equals_rho(rho, beta, batch, n, n_hidden, seed):
    x = random_inputs(batch, n, seed=seed)
    grads = []
    for b in (beta, 0.0):
        model = make_model("numpy", n, n_hidden, sparsity_target=rho, sparsity_weight=b, seed=seed)
        model.params["encoder.W"][...] = 0.0
        model.params["encoder.b"][...] = math.log(rho / (1 - rho))  # h = sigmoid(logit(rho)) = rho
        out = model.loss_and_grads(x)
        np.testing.assert_allclose(out.mean_activation, rho, rtol=1e-12)
        assert abs(out.sparsity) <= 1e-12
        grads.append({k: to_numpy(g).copy() for k, g in model.grads.items()})
    # with rho_hat == rho the penalty's gradient is zero: beta changes nothing
    for k in PARAM_NAMES:
        np.testing.assert_allclose(grads[0][k], grads[1][k], rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- from scratch

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_both_paths_match_the_math_written_out_float64(backend, combo, path):
    model = make_model(backend, n_inputs=7, n_hidden=5, combo=combo, sparsity_target=0.15,
                       sparsity_weight=1.3, weight_decay=0.02, seed=4)
    randomize(model, seed=5, scale=1.5)
    x = random_inputs(6, 7, seed=6)
    check_path(model, path)
    out = loss_and_grads_on(path)(model, x)
    parts, grads, rho_hat = reference(model.params, x, model.config)
    for k, v in parts.items():
        assert getattr(out, k) == pytest.approx(v, rel=1e-12, abs=1e-15), k
    np.testing.assert_allclose(out.mean_activation, rho_hat, rtol=1e-13)
    for k in PARAM_NAMES:
        np.testing.assert_allclose(to_numpy(model.grads[k]), grads[k], rtol=1e-10, atol=1e-14,
                                   err_msg=k)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_both_paths_match_the_math_written_out_float32(backend, combo, path):
    model = make_model(backend, n_inputs=12, n_hidden=6, combo=combo, dtype="float32",
                       sparsity_weight=0.5, weight_decay=0.003, seed=7)
    randomize(model, seed=8)
    x = random_inputs(9, 12, seed=9).astype(np.float32)
    check_path(model, path)
    out = loss_and_grads_on(path)(model, x)
    parts, grads, _ = reference(model.params, x, model.config)
    assert out.total == pytest.approx(parts["total"], rel=1e-5)
    for k in PARAM_NAMES:
        g = to_numpy(model.grads[k])
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, grads[k], rtol=1e-4, atol=1e-5 * np.abs(grads[k]).max(),
                                   err_msg=k)


def test_zero_sparsity_weight_and_weight_decay(backend):
    model = make_model(backend, 4, 3, sparsity_weight=0.0, weight_decay=0.0)
    randomize(model, seed=10)
    x = random_inputs(5, 4, seed=11)
    out = model.loss_and_grads(x)
    assert out.sparsity == 0.0 and out.weight_decay == 0.0
    assert out.total == pytest.approx(out.reconstruction, rel=1e-15)
    _, grads, _ = reference(model.params, x, model.config)
    for k in PARAM_NAMES:
        np.testing.assert_allclose(to_numpy(model.grads[k]), grads[k], rtol=1e-10, atol=1e-15)


def test_saturated_unit_is_clipped_not_infinite(backend):
    model = make_model(backend, 4, 3, sparsity_weight=1.0)
    randomize(model, seed=12)
    model.params["encoder.W"][:, 0] = 0.0
    model.params["encoder.b"][0] = -60.0  # unit 0 is off for every sample: rho_hat == 0
    x = random_inputs(3, 4, seed=13)
    out = model.loss_and_grads(x)
    assert math.isfinite(out.total) and out.mean_activation[0] < 1e-20
    for k in PARAM_NAMES:
        assert np.isfinite(to_numpy(model.grads[k])).all()
    _, grads, _ = reference(model.params, x, model.config)
    np.testing.assert_allclose(to_numpy(model.grads["encoder.b"]), grads["encoder.b"],
                               rtol=1e-10, atol=1e-15)


def test_grads_are_assigned_not_accumulated(backend):
    model = make_model(backend, 5, 4, weight_decay=0.1)
    x = random_inputs(3, 5, seed=14)
    model.loss_and_grads(x)
    first = {k: to_numpy(g).copy() for k, g in model.grads.items()}
    model.loss_and_grads(x)
    for k in PARAM_NAMES:
        np.testing.assert_array_equal(to_numpy(model.grads[k]), first[k])


def test_validate_false_gives_the_same_result(backend):
    model = make_model(backend, 5, 4)
    x = random_inputs(3, 5, seed=15)
    a = model.loss_and_grads(x).total
    ga = to_numpy(model.flat_grads).copy()
    b = model.loss_and_grads(x, validate=False).total
    assert a == b
    np.testing.assert_array_equal(to_numpy(model.flat_grads), ga)


def test_loss_results_do_not_change_after_later_steps(backend):
    model = make_model(backend, 5, 4, dtype="float32")
    x1, x2 = random_inputs(3, 5, seed=16), random_inputs(3, 5, seed=17)
    out1 = model.loss_and_grads(x1)
    total, rho_hat = out1.total, out1.mean_activation
    h = model.encode(x1)
    h0 = to_numpy(h).copy()
    model.loss_and_grads(x2)
    assert out1.total == total
    np.testing.assert_array_equal(out1.mean_activation, rho_hat)
    np.testing.assert_array_equal(to_numpy(h), h0)


def test_encode_and_reconstruct_match_the_math(backend):
    for combo in (("sigmoid", "mse", "mean"), ("linear", "mse", "mean")):
        model = make_model(backend, 6, 4, combo=combo)
        randomize(model, seed=18)
        x = random_inputs(5, 6, seed=19)
        P = {k: to_numpy(v) for k, v in model.params.items()}
        h = 1 / (1 + np.exp(-(x @ P["encoder.W"] + P["encoder.b"])))
        z = h @ P["decoder.W"] + P["decoder.b"]
        y = 1 / (1 + np.exp(-z)) if combo[0] == "sigmoid" else z
        np.testing.assert_allclose(to_numpy(model.encode(x)), h, rtol=1e-12)
        np.testing.assert_allclose(to_numpy(model.decode(h)), y, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(to_numpy(model.reconstruct(x)), y, rtol=1e-12, atol=1e-15)
        assert model.encode(x).shape == (5, 4) and model.reconstruct(x).shape == (5, 6)


def test_loss_parts_and_types(backend):
    model = make_model(backend, 6, 4, dtype="float32", weight_decay=0.01)
    out = model.loss_and_grads(random_inputs(5, 6, seed=20))
    assert isinstance(out, Loss)
    for k in ("total", "reconstruction", "sparsity", "weight_decay"):
        assert type(getattr(out, k)) is float, k
    assert out.total == pytest.approx(out.reconstruction + out.sparsity + out.weight_decay)
    assert out.reconstruction > 0 and out.sparsity > 0 and out.weight_decay > 0
    assert isinstance(out.mean_activation, np.ndarray) and out.mean_activation.shape == (4,)
    d = out.as_dict()
    assert d["total"] == out.total and d["mean_activation"] == pytest.approx(out.mean_activation.mean())
    assert "Loss(total=" in repr(out)


# ----------------------------------------------------------------------------- construction

def test_same_seed_same_weights_and_init_ranges():
    a, b = SparseAutoencoder(10, 6, seed=3), SparseAutoencoder(10, 6, seed=3)
    c = SparseAutoencoder(10, 6, seed=4)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, c.flat_params)
    r = math.sqrt(6 / (10 + 6 + 1))
    for name in ("encoder.W", "decoder.W"):
        W = a.params[name]
        assert np.abs(W).max() <= r and np.abs(W).max() > r / 2 and W.std() > 0
    assert (a.params["encoder.b"] == 0).all() and (a.params["decoder.b"] == 0).all()
    assert a.params["encoder.W"].shape == (10, 6) and a.params["decoder.W"].shape == (6, 10)
    assert a.params["encoder.b"].shape == (6,) and a.params["decoder.b"].shape == (10,)
    assert a.n_params == 10 * 6 * 2 + 6 + 10


def test_params_and_grads_are_views_of_flat_buffers():
    m = SparseAutoencoder(4, 3)
    m.params["decoder.b"][...] = 7.0
    assert (m.flat_params[-4:] == 7.0).all()
    m.loss_and_grads(random_inputs(2, 4))
    assert np.shares_memory(m.grads["encoder.W"], m.flat_grads)
    assert m.encoder.W is m.params["encoder.W"] and m.decoder.dW is m.grads["decoder.W"]


# ----------------------------------------------------------------------------- dtype

def _arrays_in(obj, path="", seen=None):
    """(path, array) for every NumPy/CuPy array or scalar reachable through minisae objects,
    dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if type(obj).__name__ == "ndarray" or isinstance(obj, np.generic):
        yield path, obj
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _arrays_in(v, f"{path}[{k!r}]", seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _arrays_in(v, f"{path}[{i}]", seen)
    elif type(obj).__module__.startswith("minisae") and hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            yield from _arrays_in(v, f"{path}.{k}", seen)


@pytest.mark.parametrize("path", PATHS)
def test_float32_model_never_makes_float64(backend, path):
    from minisae.fast import FastAdam
    from minisae.fast.step import _BUFFERS
    model = make_model(backend, 8, 5, dtype="float32", weight_decay=0.01, sparsity_weight=0.5)
    opt = Adam(model.params, model.grads, lr=0.01)
    # the fast path: the engine's step and its Adam, on the reference optimizer's own state
    stepper = FastAdam(opt, threads=1) if path == "fast" else opt
    compute = loss_and_grads_on(path)
    check_path(model, path)
    x = random_inputs(6, 8, seed=21)  # float64 NumPy input: cast on the way in
    outs = []
    for _ in range(3):
        out = compute(model, x)
        stepper.step()
        outs.append(out)
    assert opt.t == 3
    h, y = model.encode(x), model.reconstruct(x)
    found = list(_arrays_in({"model": model, "opt": opt, "stepper": stepper, "outs": outs,
                             "h": h, "y": y, "decoded": model.decode(h),
                             "engine": _BUFFERS.get(model)}))
    paths = [p for p, _ in found]
    # the walk really reaches the layers' caches (or the engine's buffers), the optimizer
    # state and the outputs
    expected = ["['model'].encoder._x", "['model'].coding._y", "['opt'].m['encoder.W']",
                "['opt'].v['decoder.b']", "['outs'][0]._rho_hat", "['h']", "['y']"]
    if path == "fast":
        expected += ["['engine']._arrays['h']", "['engine']._arrays['dz']",
                     "['stepper'].m", "['stepper'].v"]
        if backend == "numpy":  # the weight-decay scratch is NumPy's only
            expected += ["['engine']._arrays['work_encoder.W']",
                         "['engine']._arrays['work_decoder.W']"]
        if backend == "numpy" and stepper.kernel == "numpy":
            expected.append("['stepper']._scratch")
    else:
        assert _BUFFERS.get(model) is None  # the reference never touches the engine
    for where in expected:
        assert where in paths, where
    bad = [(p, a.dtype) for p, a in found if a.dtype != np.float32 and a.dtype.kind == "f"]
    assert not bad
    assert outs[-1].mean_activation.dtype == np.float32


# ----------------------------------------------------------------------------- learning

def test_adam_training_lowers_loss_and_reaches_the_target_sparsity(backend):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 20))
    model = SparseAutoencoder(n_inputs=20, n_hidden=8, sparsity_target=0.1, sparsity_weight=0.2,
                              backend=backend, dtype="float32", seed=0)
    opt = Adam(model.params, model.grads, lr=0.01)
    xb = model.backend.asarray(x)
    first = model.loss_and_grads(xb)
    gap0 = abs(first.mean_activation.mean() - 0.1)
    for _ in range(200):
        opt.step()
        out = model.loss_and_grads(xb)
    gap = abs(out.mean_activation.mean() - 0.1)
    assert out.total < 0.5 * first.total
    assert out.reconstruction < first.reconstruction
    assert gap < gap0 / 4 and gap < 0.05
    assert np.abs(out.mean_activation - 0.1).max() < 0.05


# ----------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    (np.zeros((3, 4)), "features"),
    (np.zeros((3, 6)), "n_inputs=5"),
    (np.zeros(5), "2-D"),
    (np.zeros((2, 5, 1)), "2-D"),
    (np.zeros((0, 5)), "empty"),
    (np.array([[0.1, 0.2, np.nan, 0.3, 0.4]]), "NaN"),
    (np.array([[0.1, 0.2, np.inf, 0.3, 0.4]]), "inf"),
    (np.array([[0.1, 0.2, 0.3, -np.inf, 0.4], [0.0] * 5]), "inf"),
]


@pytest.mark.parametrize("x,word", BAD_INPUTS, ids=[
    "too-few-features", "too-many-features", "1-D", "3-D", "empty", "nan", "inf", "minus-inf"])
def test_bad_input_is_an_input_error(backend, x, word):
    model = make_model(backend, 5, 3)
    for call in (model.loss_and_grads, model.encode, model.reconstruct):
        with pytest.raises(InputError, match=word) as info:
            call(x)
        assert isinstance(info.value, MinisaeError)


def test_bad_input_from_a_list_and_on_the_backend(backend):
    model = make_model(backend, 3, 2)
    with pytest.raises(InputError, match="2-D"):
        model.loss_and_grads([0.1, 0.2, 0.3])
    out = model.loss_and_grads([[0.1, 0.2, 0.3]])
    assert math.isfinite(out.total)
    xb = get_backend(backend, "float64").asarray([[0.1, np.nan, 0.3]])
    with pytest.raises(InputError, match="NaN"):
        model.loss_and_grads(xb)


def test_decode_checks_the_code_shape():
    model = make_model("numpy", 5, 3)
    # the message names the codes (decode's input), the expected shape and what was given
    with pytest.raises(InputError, match=r"codes h.*n_hidden=3.*\(2, 4\).*\(batch, 3\)"):
        model.decode(np.zeros((2, 4)))
    with pytest.raises(InputError, match=r"codes h.*\(batch, 3\).*\(3,\)"):
        model.decode(np.zeros(3))


def test_large_finite_input_is_accepted_without_warning():
    # A linear output accepts any finite data; checking it must not overflow into a
    # RuntimeWarning (an error under this test suite).
    model = make_model("numpy", 4, 3, combo=("linear", "mse", "mean"), dtype="float32")
    x = np.full((1000, 4), 1e35, dtype=np.float32)  # finite; its float32 sum overflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = to_numpy(model.encode(x))
    assert np.isfinite(h).all()


@pytest.mark.parametrize("kwargs,word", [
    (dict(sparsity_target=0.0), "sparsity_target"),
    (dict(sparsity_target=1.0), "sparsity_target"),
    (dict(sparsity_target=-0.1), "sparsity_target"),
    (dict(sparsity_target=1.5), "sparsity_target"),
    (dict(sparsity_target=float("nan")), "sparsity_target"),
    (dict(sparsity_weight=-0.01), "sparsity_weight"),
    (dict(sparsity_weight=float("inf")), "sparsity_weight"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(n_hidden=0), "n_hidden"),
    (dict(n_hidden=-3), "n_hidden"),
    (dict(n_hidden=2.5), "n_hidden"),
    (dict(n_inputs=0), "n_inputs"),
    (dict(output_activation="linear", reconstruction_loss="bce"), "bce"),
    (dict(reconstruction_loss="bce", reduction="halfsum"), "halfsum"),
    (dict(output_activation="tanh"), "output_activation"),
    (dict(reconstruction_loss="l1"), "reconstruction_loss"),
    (dict(reduction="sum"), "reduction"),
    (dict(seed=-1), "seed"),
    (dict(backend="jax"), "unknown backend"),
    (dict(dtype="float16"), "dtype"),
    (dict(dtype=None), "dtype"),
    (dict(seed=True), "seed"),
    (dict(seed=2**64), "seed"),
    (dict(sparsity_weight=10**400), "sparsity_weight"),
    (dict(weight_decay=1e300), "weight_decay"),
    (dict(sparsity_target=True), "sparsity_target"),
    (dict(n_hidden=10**12), "fewer hidden units"),
    (dict(n_hidden=10**30), "fewer hidden units"),
])
def test_bad_config_is_a_config_error(kwargs, word):
    args = dict(n_inputs=5, n_hidden=3)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=word) as info:
        SparseAutoencoder(**args)
    assert isinstance(info.value, MinisaeError)


def test_bce_with_linear_output_message_says_what_to_do():
    with pytest.raises(ConfigError, match="sigmoid") as info:
        SparseAutoencoder(5, 3, output_activation="linear", reconstruction_loss="bce")
    assert "mse" in str(info.value)


def test_model_backend_from_env_var(monkeypatch):
    monkeypatch.setenv("MINISAE_BACKEND", "numpy")
    assert SparseAutoencoder(4, 2, backend=None).backend.name == "numpy"
    monkeypatch.setenv("MINISAE_BACKEND", "nope")
    with pytest.raises(ConfigError, match="MINISAE_BACKEND"):
        SparseAutoencoder(4, 2, backend=None)


# ----------------------------------------------------------------------------- public API

def test_design_example_runs():
    from minisae import Adam, SparseAutoencoder, get_backend  # noqa: F811  (the documented import)

    assert get_backend("numpy").name == "numpy"
    model = SparseAutoencoder(n_inputs=784, n_hidden=16, sparsity_target=0.1,
                              sparsity_weight=0.2, weight_decay=0.0,
                              output_activation="sigmoid", reconstruction_loss="mse",
                              reduction="mean", backend="numpy", dtype="float32", seed=42)
    x = np.random.default_rng(0).uniform(size=(32, 784)).astype(np.float32)
    out = model.loss_and_grads(x)
    for value in (out.total, out.reconstruction, out.sparsity):
        assert type(value) is float and math.isfinite(value)
    assert isinstance(out.mean_activation, np.ndarray) and out.mean_activation.shape == (16,)
    assert set(model.params) == set(model.grads) == set(PARAM_NAMES)
    assert model.params["encoder.W"].shape == (784, 16) and model.params["encoder.b"].shape == (16,)
    assert model.params["decoder.W"].shape == (16, 784) and model.params["decoder.b"].shape == (784,)
    assert float(np.abs(model.flat_grads).sum()) > 0
    opt = Adam(model.params, model.grads, lr=0.01)
    assert opt.betas == (0.9, 0.999) and opt.eps == 1e-8
    before = model.flat_params.copy()
    opt.step()
    assert not np.array_equal(before, model.flat_params)
    assert model.encode(x).shape == (32, 16) and model.reconstruct(x).shape == (32, 784)
    assert model.loss_and_grads(x).total < out.total
    assert "784 -> 16 sigmoid -> 784 sigmoid" in repr(model)


# ----------------------------------------------------------------------------- NumPy vs CuPy

@pytest.mark.gpu
@requires_cupy
@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-4), ("float64", 1e-10)])
@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("path", PATHS)
def test_same_seed_same_numbers_on_numpy_and_cupy(combo, dtype, rtol, path):
    x = random_inputs(16, 30, seed=22)
    results = []
    for name in ("numpy", "cupy"):
        model = make_model(name, 30, 12, combo=combo, dtype=dtype, seed=23, weight_decay=0.01)
        assert model.backend.name == name
        check_path(model, path)
        out = loss_and_grads_on(path)(model, model.backend.asarray(x))
        results.append((to_numpy(model.flat_params).copy(), out.total, out.mean_activation,
                        {k: to_numpy(g).copy() for k, g in model.grads.items()}))
    (p0, t0, r0, g0), (p1, t1, r1, g1) = results
    np.testing.assert_array_equal(p0, p1)
    assert t1 == pytest.approx(t0, rel=rtol)
    np.testing.assert_allclose(r1, r0, rtol=rtol)
    for k in PARAM_NAMES:
        np.testing.assert_allclose(g1[k], g0[k], rtol=rtol, atol=rtol * np.abs(g0[k]).max(),
                                   err_msg=k)


def test_numpy_scalar_hyperparameters_keep_float32_and_save(tmp_path):
    """NumPy float64 scalars as rho/beta/lambda must not upcast the float32 path, and NumPy
    integers as sizes must survive a checkpoint (JSON)."""
    from minisae.files import checkpoint
    model = SparseAutoencoder(np.int64(6), np.int64(4), sparsity_target=np.float64(0.1),
                              sparsity_weight=np.float64(0.5), weight_decay=np.float64(0.01),
                              seed=np.int64(1))
    x = np.random.default_rng(0).random((5, 6), dtype=np.float32)
    for path in ("fast", "reference"):  # the engine, and the reference path
        model.flat_grads[...] = 0.0
        loss = loss_and_grads_on(path)(model, x)
        assert all(g.dtype == np.float32 for g in model.grads.values()), path
        assert all(np.asarray(p).dtype == np.float32 for p in loss._parts.values()
                   if type(p) is not float), path  # np.float64 is a float too
        assert float(np.abs(model.flat_grads).sum()) > 0, path
    assert type(model.config.sparsity_target) is float and type(model.config.n_hidden) is int
    c = checkpoint.load(checkpoint.save(tmp_path / "c.npz", model))
    assert c.model.config == model.config


@pytest.mark.parametrize("x, word", [
    (np.ones((2, 4), dtype=np.complex128) * 0.5, "complex"),
    (np.array([["0.1", "0.2", "0.3", "0.4"]]), "strings"),
    ([[0.1, 0.2, 0.3, 0.4], [0.1]], "rectangular"),
    (np.array([[0.1, None, 0.3, 0.4]], dtype=object), "objects"),
    (np.full((2, 4), 2.0), r"\[0, 1\]"),
])
def test_data_a_model_cannot_use_is_refused(x, word):
    model = make_model("numpy", 4, 3)
    for call in (model.loss_and_grads, model.loss, model.encode, model.reconstruct):
        with pytest.raises(InputError, match=word):
            call(x)


def test_decode_refuses_nan_codes_and_encode_takes_a_batch_size():
    model = make_model("numpy", 4, 3)
    with pytest.raises(InputError, match="NaN"):
        model.decode(np.full((2, 3), np.nan))
    x = random_inputs(7, 4)
    np.testing.assert_allclose(model.encode(x, batch_size=3), model.encode(x), rtol=1e-14)
    with pytest.raises(ConfigError, match="batch_size"):
        model.encode(x, batch_size=0)


def test_from_preset_gives_the_presets_model_and_takes_overrides():
    from minisae.presets import PRESETS
    for name, preset in PRESETS.items():
        small = {k: 2 for k in ("k", "aux_k") if k in preset.model}  # fit in 3 units
        model = SparseAutoencoder.from_preset(name, n_hidden=3, seed=1, **small)
        for key, value in preset.model.items():
            if key not in ("n_hidden", *small):
                assert getattr(model.config, key) == value, (name, key)
        assert model.config.n_hidden == 3
    with pytest.raises(ConfigError, match="unknown argument"):
        SparseAutoencoder.from_preset("ufldl", hidden=3)
    with pytest.raises(ConfigError, match="unknown preset"):
        SparseAutoencoder.from_preset("nope")
