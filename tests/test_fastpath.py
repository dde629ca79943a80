"""The fast paths give the same numbers as the plain ones.

- SparseAutoencoder: `_loss_and_grads_fused` (the default for a sigmoid output with the MSE)
  against the plain layer-by-layer path (model.fused = False);
- functional.py's fused in-place functions against the plain functions they stand for; on
  CuPy (where a GPU answers) these are the ElementwiseKernels;
- Adam's flat, chunked update at its default CHUNK against the paper's per-parameter one.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_model, random_inputs
from minisae import Adam, get_backend, to_numpy
from minisae import functional as F

FUSED_COMBOS = [("sigmoid", "mse", "mean"), ("sigmoid", "mse", "halfsum")]
NOT_FUSED = [("sigmoid", "bce", "mean"), ("linear", "mse", "mean"), ("linear", "mse", "halfsum")]
PARAM_NAMES = ["encoder.W", "encoder.b", "decoder.W", "decoder.b"]


def twins(backend, combo, dtype, seed=0, **kw):
    """Two models with the same weights: the first on the fast path, the second plain."""
    fast = make_model(backend, n_inputs=kw.pop("n_inputs", 11), n_hidden=kw.pop("n_hidden", 6),
                      combo=combo, dtype=dtype, seed=seed, **kw)
    plain = make_model(backend, n_inputs=fast.config.n_inputs, n_hidden=fast.config.n_hidden,
                       combo=combo, dtype=dtype, seed=seed, **kw)
    rng = np.random.default_rng(seed + 100)
    for name, p in fast.params.items():
        p[...] = fast.backend.asarray(rng.uniform(-1.5, 1.5, size=p.shape))
    plain.flat_params[...] = fast.flat_params
    plain.fused = False
    return fast, plain


def assert_same_step(fast, plain, x, rtol, atol):
    a, b = fast.loss_and_grads(x), plain.loss_and_grads(x)
    for part in ("total", "reconstruction", "sparsity", "weight_decay"):
        assert getattr(a, part) == pytest.approx(getattr(b, part), rel=rtol, abs=atol), part
    np.testing.assert_allclose(a.mean_activation, b.mean_activation, rtol=rtol, atol=atol)
    for name in PARAM_NAMES:
        ga, gb = to_numpy(fast.grads[name]), to_numpy(plain.grads[name])
        assert ga.dtype == gb.dtype == fast.dtype
        np.testing.assert_allclose(ga, gb, rtol=rtol, atol=atol * max(1.0, np.abs(gb).max()),
                                   err_msg=name)


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("combo", FUSED_COMBOS, ids=["mean", "halfsum"])
@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-12, 1e-14), ("float32", 2e-5, 1e-6)])
def test_fused_model_matches_plain(backend, combo, dtype, rtol, atol):
    fast, plain = twins(backend, combo, dtype, sparsity_weight=0.8, weight_decay=0.01)
    for seed in (1, 2):  # twice: the second step reuses every buffer
        assert_same_step(fast, plain, random_inputs(9, 11, seed=seed), rtol, atol)


def test_fused_model_matches_plain_without_sparsity_or_decay(backend):
    fast, plain = twins(backend, FUSED_COMBOS[0], "float64", sparsity_weight=0.0)
    assert_same_step(fast, plain, random_inputs(5, 11, seed=3), 1e-12, 1e-15)


def test_fused_model_matches_plain_with_a_saturated_unit(backend):
    fast, plain = twins(backend, FUSED_COMBOS[0], "float64", sparsity_weight=1.0)
    for m in (fast, plain):
        m.params["encoder.W"][:, 0] = 0.0
        m.params["encoder.b"][0] = -60.0  # rho_hat_0 == 0: clipped, its KL gradient is 0
    assert_same_step(fast, plain, random_inputs(4, 11, seed=4), 1e-12, 1e-15)


def test_fused_model_follows_a_change_of_batch_size(backend):
    fast, plain = twins(backend, FUSED_COMBOS[0], "float64")
    for batch in (7, 3, 7, 1):
        assert_same_step(fast, plain, random_inputs(batch, 11, seed=batch), 1e-12, 1e-14)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 8), n=st.integers(1, 8), n_hidden=st.integers(1, 8),
       reduction=st.sampled_from(["mean", "halfsum"]), rho=st.floats(0.01, 0.5),
       beta=st.floats(0.0, 5.0), lam=st.floats(0.0, 0.1), seed=st.integers(0, 2**16))
def test_fused_model_matches_plain_property(batch, n, n_hidden, reduction, rho, beta, lam, seed):
    fast, plain = twins("numpy", ("sigmoid", "mse", reduction), "float64", seed=seed,
                        n_inputs=n, n_hidden=n_hidden, sparsity_target=rho,
                        sparsity_weight=beta, weight_decay=lam)
    assert_same_step(fast, plain, random_inputs(batch, n, seed=seed), 1e-11, 1e-13)


def test_fused_path_leaves_the_layers_as_the_plain_forward_would(backend):
    fast, _ = twins(backend, FUSED_COMBOS[0], "float64")
    x = random_inputs(6, 11, seed=5)
    fast.loss_and_grads(x)
    h = to_numpy(fast.encode(x))
    np.testing.assert_allclose(to_numpy(fast.encoder_activation._y), h, rtol=1e-13)
    np.testing.assert_allclose(to_numpy(fast.decoder._x), h, rtol=1e-13)
    np.testing.assert_array_equal(to_numpy(fast.encoder._x), x)


@pytest.mark.parametrize("combo", FUSED_COMBOS + NOT_FUSED, ids=lambda c: "-".join(c))
def test_which_path_runs(monkeypatch, combo):
    model = make_model("numpy", 5, 3, combo=combo)
    calls = []
    real = model._loss_and_grads_fused
    monkeypatch.setattr(model, "_loss_and_grads_fused", lambda x: calls.append(1) or real(x))
    model.loss_and_grads(random_inputs(2, 5))
    assert len(calls) == (combo in FUSED_COMBOS)
    model.fused = False
    model.loss_and_grads(random_inputs(2, 5))
    assert len(calls) == (combo in FUSED_COMBOS)


# ----------------------------------------------------------------------------- functional

def arrays(be, *shapes, seed=0, low=-3.0, high=3.0):
    rng = np.random.default_rng(seed)
    return [be.asarray(rng.uniform(low, high, size=s)) for s in shapes]


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-14), ("float32", 2e-6)])
def test_bias_sigmoid_matches_plain(backend, dtype, rtol):
    be = get_backend(backend, dtype)
    z, b = arrays(be, (7, 5), (5,), seed=1)
    expected = to_numpy(F.sigmoid(z + b))
    out = F.bias_sigmoid_(z, b)
    assert out is z and out.dtype == be.dtype
    np.testing.assert_allclose(to_numpy(z), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("reduction", ["mean", "halfsum"])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_bias_sigmoid_mse_backward_matches_plain(backend, reduction, dtype, rtol):
    be = get_backend(backend, dtype)
    z, b = arrays(be, (6, 9), (9,), seed=2, low=-8.0, high=8.0)
    (x,) = arrays(be, (6, 9), seed=3, low=0.0, high=1.0)
    scale = F._reduction_scale(reduction, x.shape)
    y = F.sigmoid(z + b)
    dy = F.mse_backward(y, x, reduction)
    expected_dz = to_numpy(F.sigmoid_backward(dy, y))
    expected_loss = F.mse(y, x, reduction)

    dz = be.empty(z.shape)
    squared_error = F.bias_sigmoid_mse_backward_(z, b, x, scale, out=dz)
    assert float(squared_error) * scale == pytest.approx(expected_loss, rel=rtol)
    assert dz.dtype == be.dtype
    np.testing.assert_allclose(to_numpy(dz), expected_dz, rtol=rtol * 10,
                               atol=rtol * np.abs(expected_dz).max())


@pytest.mark.parametrize("with_row", [True, False])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-14), ("float32", 2e-6)])
def test_sigmoid_backward_in_place_matches_plain(backend, with_row, dtype, rtol):
    be = get_backend(backend, dtype)
    dy, row = arrays(be, (5, 4), (4,), seed=4)
    (y,) = arrays(be, (5, 4), seed=5, low=0.0, high=1.0)
    expected = to_numpy(F.sigmoid_backward(dy + row if with_row else dy, y))
    before = to_numpy(y).copy()
    out = F.sigmoid_backward_(dy, y, row if with_row else None, work=be.empty(y.shape))
    assert out is dy
    np.testing.assert_allclose(to_numpy(dy), expected, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(to_numpy(y), before)


# ----------------------------------------------------------------------------- Adam

@pytest.mark.parametrize("threads", [1, 2])
def test_adam_flat_path_at_its_default_chunk_matches_plain(threads):
    """A model big enough for several default-size chunks (and the threaded split)."""
    runs = []
    for fused in (True, False):
        model = make_model("numpy", n_inputs=784, n_hidden=700, dtype="float32", seed=6)
        assert model.n_params > 4 * Adam.CHUNK
        opt = Adam(model.params, model.grads, lr=0.01, fused=fused, threads=threads)
        rng = np.random.default_rng(7)
        for _ in range(3):
            model.flat_grads[...] = rng.normal(size=model.n_params)
            opt.step()
        runs.append(model.flat_params.copy())
    np.testing.assert_allclose(runs[0], runs[1], rtol=2e-5, atol=2e-6)
