"""The math (minisae.functional): formulas and derivatives against closed forms, differences."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisae import functional as F
from minisae import get_backend, to_numpy
from minisae.config import Config
from minisae.errors import ConfigError
from minisae.gradcheck import numerical_gradient, relative_error

TOL = 1e-7  # relative error of a correct gradient against central differences, float64


def rand(be, shape, low=-1.0, high=1.0, seed=0):
    return be.asarray(np.random.default_rng(seed).uniform(low, high, size=shape))


def check_grad(f, p, analytic, tol=TOL):
    """Central differences of the scalar f() in p against `analytic`."""
    numeric = numerical_gradient(f, p)
    err = relative_error(numeric, analytic)
    assert err < tol, f"relative error {err:.3e}"
    assert np.linalg.norm(numeric) > 0  # not a vacuous comparison of zeros


# ----------------------------------------------------------------------------- sigmoid

def test_sigmoid_of_zero_is_a_half(backend):
    for dtype in ("float32", "float64"):
        be = get_backend(backend, dtype)
        y = F.sigmoid(be.zeros((2, 3)))
        assert y.dtype == be.dtype
        np.testing.assert_array_equal(to_numpy(y), 0.5)


def test_sigmoid_matches_the_textbook_formula(backend):
    be = get_backend(backend, "float64")
    z = rand(be, (4, 5), -30, 30)
    expected = 1.0 / (1.0 + np.exp(-to_numpy(z)))
    np.testing.assert_allclose(to_numpy(F.sigmoid(z)), expected, rtol=1e-12, atol=1e-15)


def test_functions_return_fresh_arrays_and_leave_inputs_alone():
    rng = np.random.default_rng(0)
    z, x, dy = rng.uniform(-2, 2, (3, 4)), rng.uniform(0, 1, (3, 4)), rng.uniform(-1, 1, (3, 4))
    kept = [a.copy() for a in (z, x, dy)]
    y = F.sigmoid(z)
    outputs = [y, F.sigmoid_backward(dy, y), F.relu(z), F.relu_backward(dy, F.relu(z)),
               F.mse_backward(y, x), F.bce_with_logits_backward(y, x), F.softplus(z),
               F.weight_decay_backward(z, 0.1)]
    for a in outputs:
        assert not np.shares_memory(a, z) and not np.shares_memory(a, x) \
            and not np.shares_memory(a, dy)
    for a, b in zip((z, x, dy), kept):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-z)), rtol=1e-14)


@pytest.mark.parametrize("dtype,big", [("float32", 1e4), ("float64", 1e4), ("float32", 3.4e38),
                                       ("float64", 1e300)])
def test_sigmoid_is_stable_for_huge_inputs(backend, dtype, big):
    be = get_backend(backend, dtype)
    z = be.asarray([[-big, big, 0.0, -big / 3]])
    assert bool(be.xp.isfinite(z).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = to_numpy(F.sigmoid(z))
    assert y.dtype == np.dtype(dtype)
    assert np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()
    assert y[0, 0] == 0.0 and y[0, 1] == 1.0 and y[0, 2] == 0.5


def test_sigmoid_backward_matches_finite_differences(backend):
    be = get_backend(backend, "float64")
    z = rand(be, (3, 4), -4, 4, seed=1)
    R = rand(be, (3, 4), seed=2)
    analytic = F.sigmoid_backward(R, F.sigmoid(z))
    check_grad(lambda: float((R * F.sigmoid(z)).sum()), z, analytic)


def test_relu_and_its_backward(backend):
    be = get_backend(backend, "float64")
    z = be.asarray([[-2.0, -0.5, 0.5, 3.0], [1.0, -1.0, 0.25, -0.25]])
    y = F.relu(z)
    np.testing.assert_array_equal(to_numpy(y), [[0, 0, 0.5, 3.0], [1.0, 0, 0.25, 0]])
    R = rand(be, z.shape, seed=3)
    # every |z| >= 0.25: no kink within the finite-difference step
    check_grad(lambda: float((R * F.relu(z)).sum()), z, F.relu_backward(R, y))
    np.testing.assert_array_equal(to_numpy(F.relu_backward(R, y))[to_numpy(z) < 0], 0.0)


# ----------------------------------------------------------------------------- MSE

def test_mse_on_a_tiny_hand_made_batch(backend):
    be = get_backend(backend, "float64")
    y = be.asarray([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    x = be.zeros((2, 3))
    # squared error summed: 1 + 4 + 9 + 1 = 15; mean over 6 elements; halfsum = 15 / 2 / batch
    assert float(F.mse(y, x)) == pytest.approx(2.5, rel=1e-15)
    assert float(F.mse(y, x, "mean")) == pytest.approx(2.5, rel=1e-15)
    assert float(F.mse(y, x, "halfsum")) == pytest.approx(3.75, rel=1e-15)
    # a loss is a 0-d array of the input's library (read as a number with float())
    loss = F.mse(y, x)
    assert loss.shape == () and type(to_numpy(loss).item()) is float
    np.testing.assert_allclose(to_numpy(F.mse_backward(y, x, "mean")), to_numpy(y) * 2 / 6, rtol=1e-15)
    np.testing.assert_allclose(to_numpy(F.mse_backward(y, x, "halfsum")), to_numpy(y) / 2, rtol=1e-15)


def test_mse_is_zero_for_a_perfect_reconstruction():
    x = np.random.default_rng(0).uniform(size=(3, 4))
    assert float(F.mse(x.copy(), x)) == 0.0
    assert float(F.mse(x.copy(), x, "halfsum")) == 0.0


def test_halfsum_is_392_times_mean_for_784_features(backend):
    be = get_backend(backend, "float64")
    x = rand(be, (5, 784), 0, 1, seed=4)
    y = rand(be, (5, 784), 0, 1, seed=5)
    mean, halfsum = float(F.mse(y, x, "mean")), float(F.mse(y, x, "halfsum"))
    assert halfsum == pytest.approx(mean * 784 / 2, rel=1e-12)
    assert halfsum == pytest.approx(392 * mean, rel=1e-12)


def test_unknown_reduction_is_rejected():
    # functional.py trusts its reduction; the config is where an unknown one is refused
    with pytest.raises(ConfigError, match="reduction") as info:
        Config(4, 2, reduction="sum").validated()
    assert "mean" in str(info.value) and "halfsum" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("reduction", ["mean", "halfsum"])
def test_mse_backward_matches_finite_differences(backend, reduction):
    be = get_backend(backend, "float64")
    x = rand(be, (3, 5), 0, 1, seed=6)
    y = rand(be, (3, 5), 0, 1, seed=7)
    check_grad(lambda: float(F.mse(y, x, reduction)), y, F.mse_backward(y, x, reduction))


# ----------------------------------------------------------------------------- BCE

def test_bce_with_logits_matches_the_textbook_formula(backend):
    be = get_backend(backend, "float64")
    z = rand(be, (3, 4), -5, 5, seed=8)
    x = rand(be, (3, 4), 0, 1, seed=9)
    s, xn = 1 / (1 + np.exp(-to_numpy(z))), to_numpy(x)
    expected = -np.mean(xn * np.log(s) + (1 - xn) * np.log(1 - s))
    assert float(F.bce_with_logits(z, x)) == pytest.approx(expected, rel=1e-12)


def test_bce_with_logits_is_finite_for_huge_logits(backend):
    for dtype in ("float32", "float64"):
        be = get_backend(backend, dtype)
        z = be.asarray([[-1e4, 1e4], [1e4, -1e4]])
        x = be.asarray([[0.0, 1.0], [0.0, 1.0]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss = float(F.bce_with_logits(z, x))
        # the right answers cost nothing; the wrong ones cost |z| each
        assert loss == pytest.approx(2 * 1e4 / 4, rel=1e-6)
        sp = to_numpy(F.softplus(be.asarray([-1e4, 0.0, 1e4])))
        assert np.isfinite(sp).all() and sp[0] == 0.0 and sp[1] == pytest.approx(math.log(2))


def test_bce_with_logits_backward_matches_finite_differences(backend):
    be = get_backend(backend, "float64")
    z = rand(be, (4, 3), -3, 3, seed=10)
    x = rand(be, (4, 3), 0, 1, seed=11)
    analytic = F.bce_with_logits_backward(F.sigmoid(z), x)
    check_grad(lambda: float(F.bce_with_logits(z, x)), z, analytic)


# ----------------------------------------------------------------------------- KL sparsity

def test_kl_closed_form():
    expected = 0.1 * math.log(0.1 / 0.3) + 0.9 * math.log(0.9 / 0.7)
    got = F.kl_divergence(0.1, np.array([0.3]))
    assert got[0] == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(0.1 * math.log(1 / 3) + 0.9 * math.log(0.9 / 0.7))


def test_kl_is_zero_at_the_target_and_positive_elsewhere(backend):
    be = get_backend(backend, "float64")
    for rho in (0.01, 0.1, 0.5, 0.9):
        assert float(F.kl_divergence(rho, be.asarray([rho])).sum()) == 0.0
        assert float(F.kl_divergence_backward(rho, be.asarray([rho])).sum()) == pytest.approx(0, abs=1e-12)
    kl = to_numpy(F.kl_divergence(0.1, be.asarray([0.05, 0.2, 0.5, 0.99])))
    assert (kl > 0).all()


def test_kl_float32_near_zero_at_target():
    kl = F.kl_divergence(0.1, np.array([0.1], dtype=np.float32))
    assert kl.dtype == np.float32 and abs(float(kl[0])) < 1e-6


def test_clip_keeps_rho_hat_inside_the_open_interval():
    for dtype in (np.float32, np.float64):
        q = F.clip_rho_hat(np.array([0.0, 0.5, 1.0], dtype=dtype))
        assert q.dtype == dtype
        assert 0 < q[0] == dtype(F.RHO_EPS) and q[2] < 1 and q[1] == 0.5
        kl = F.kl_divergence(0.1, q)
        assert np.isfinite(kl).all()


def test_kl_backward_matches_finite_differences(backend):
    be = get_backend(backend, "float64")
    rho_hat = be.asarray([0.02, 0.1, 0.3, 0.7, 0.95])
    check_grad(lambda: float(F.kl_divergence(0.1, rho_hat).sum()), rho_hat,
               F.kl_divergence_backward(0.1, rho_hat))


def test_kl_backward_is_zero_where_clipped():
    g = F.kl_divergence_backward(0.1, np.array([0.0, 1e-9, 0.5, 1.0]))
    assert g[0] == 0 and g[1] == 0 and g[3] == 0 and g[2] != 0


def sparsity_penalty(h, rho, beta):
    """The KL sparsity penalty of codes h, as the model puts it together: (penalty, rho_hat)."""
    rho_hat = F.mean_activation(h)
    return F.kl_penalty(rho_hat, rho, beta), rho_hat


def sparsity_backward(h, rho, beta):
    """d penalty / dh: the gradient row with respect to rho_hat, spread over the batch."""
    return F.mean_activation_backward(F.kl_penalty_backward(F.mean_activation(h), rho, beta), h)


def test_sparsity_penalty_value(backend):
    be = get_backend(backend, "float64")
    h = be.asarray([[0.2, 0.5], [0.4, 0.1]])  # rho_hat = (0.3, 0.3)
    penalty, rho_hat = sparsity_penalty(h, 0.1, 2.0)
    expected = 2.0 * 2 * (0.1 * math.log(0.1 / 0.3) + 0.9 * math.log(0.9 / 0.7))
    assert penalty.shape == ()  # a 0-d array, read with float()
    assert float(penalty) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(to_numpy(rho_hat), [0.3, 0.3], rtol=1e-15)


def test_kl_penalty_takes_rho_hat_first():
    # kl_penalty(rho_hat, rho, beta): the per-unit mean activations first, then the target
    rho_hat = np.array([0.3, 0.05])
    expected = 1.5 * sum(0.1 * math.log(0.1 / q) + 0.9 * math.log(0.9 / (1 - q))
                         for q in (0.3, 0.05))
    assert float(F.kl_penalty(rho_hat, 0.1, 1.5)) == pytest.approx(expected, rel=1e-14)
    row = F.kl_penalty_backward(rho_hat, 0.1, 1.5)
    np.testing.assert_allclose(row, 1.5 * (-0.1 / rho_hat + 0.9 / (1 - rho_hat)), rtol=1e-14)


def test_mean_activation_is_unclipped():
    rho_hat = F.mean_activation(np.zeros((3, 2)))
    np.testing.assert_array_equal(rho_hat, 0.0)
    penalty = float(F.kl_penalty(rho_hat, 0.1, 1.0))  # clipped inside the penalty only
    assert math.isfinite(penalty) and penalty > 0


def test_mean_activation_backward_matches_finite_differences(backend):
    be = get_backend(backend, "float64")
    h = rand(be, (4, 3), 0.05, 0.95, seed=27)
    R = rand(be, (3,), seed=28)
    analytic = F.mean_activation_backward(R, h)
    assert analytic.shape == h.shape
    check_grad(lambda: float((R * F.mean_activation(h)).sum()), h, analytic)


def test_sparsity_backward_matches_finite_differences(backend):
    be = get_backend(backend, "float64")
    h = rand(be, (4, 3), 0.05, 0.95, seed=12)
    analytic = sparsity_backward(h, 0.1, 3.0)
    assert analytic.shape == h.shape
    check_grad(lambda: float(sparsity_penalty(h, 0.1, 3.0)[0]), h, analytic)
    # the documented formula: beta * (-(rho / rho_hat) + (1 - rho) / (1 - rho_hat)) / batch
    rho_hat = to_numpy(h).mean(axis=0)
    row = 3.0 * (-(0.1 / rho_hat) + 0.9 / (1 - rho_hat)) / 4
    np.testing.assert_allclose(to_numpy(analytic), np.broadcast_to(row, (4, 3)), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(rho=st.floats(0.01, 0.5), beta=st.floats(0.0, 5.0), batch=st.integers(1, 8),
       n=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_sparsity_properties(rho, beta, batch, n, seed):
    rng = np.random.default_rng(seed)
    # KL's curvature grows like rho_hat^-3: near 0.01 the truncation error of central
    # differences alone exceeds 1e-7, so keep rho_hat >= 0.05 for the gradient check
    h = rng.uniform(0.05, 0.95, size=(batch, n))
    penalty, rho_hat = sparsity_penalty(h, rho, beta)
    penalty = float(penalty)
    assert math.isfinite(penalty)
    kl = F.kl_divergence(rho, F.clip_rho_hat(rho_hat))
    assert (kl >= -1e-15).all()
    assert penalty >= -1e-15 * n
    # KL is exactly 0 where rho_hat == rho, and so is its gradient
    assert float(F.kl_divergence(rho, np.full(n, rho)).sum()) == 0.0
    assert np.abs(F.kl_divergence_backward(rho, np.full(n, rho))).max() <= 1e-12
    flat, _ = sparsity_penalty(np.full((batch, n), rho), rho, beta)
    assert abs(float(flat)) <= 1e-12
    if beta > 0:
        numeric = numerical_gradient(lambda: float(sparsity_penalty(h, rho, beta)[0]), h)
        analytic = sparsity_backward(h, rho, beta)
        err = relative_error(numeric, analytic)
        # central differences cannot resolve a gradient below rounding of the penalty itself
        assert err < TOL or np.linalg.norm(numeric - analytic) < 1e-10 * (1 + abs(penalty))


# ----------------------------------------------------------------------------- weight decay

def test_weight_decay_value_and_gradient(backend):
    be = get_backend(backend, "float64")
    W1 = be.asarray([[1.0, 2.0], [0.0, -1.0]])
    W2 = be.asarray([[3.0]])
    assert float(F.weight_decay([W1, W2], 0.1)) == pytest.approx(0.05 * (1 + 4 + 1 + 9),
                                                                 rel=1e-15)
    assert float(F.weight_decay([W1, W2], 0.0)) == 0.0
    np.testing.assert_allclose(to_numpy(F.weight_decay_backward(W1, 0.1)), 0.1 * to_numpy(W1))
    W = rand(be, (3, 4), seed=13)
    check_grad(lambda: float(F.weight_decay([W, W2], 0.07)), W, F.weight_decay_backward(W, 0.07))


# ----------------------------------------------------------------------------- dtype policy

def test_float32_stays_float32_with_python_scalars(backend):
    be = get_backend(backend, "float32")
    z, x = rand(be, (3, 4), -3, 3, seed=14), rand(be, (3, 4), 0, 1, seed=15)
    h = F.sigmoid(z)
    rho_hat = h.mean(axis=0)
    outputs = {
        "sigmoid": h,
        "sigmoid_backward": F.sigmoid_backward(x, h),
        "relu": F.relu(z),
        "relu_backward": F.relu_backward(x, F.relu(z)),
        "mse_backward mean": F.mse_backward(h, x, "mean"),
        "mse_backward halfsum": F.mse_backward(h, x, "halfsum"),
        "softplus": F.softplus(z),
        "bce_with_logits_backward": F.bce_with_logits_backward(h, x),
        "clip_rho_hat": F.clip_rho_hat(rho_hat),
        "kl_divergence": F.kl_divergence(0.1, F.clip_rho_hat(rho_hat)),
        "kl_divergence_backward": F.kl_divergence_backward(0.1, rho_hat),
        "mean_activation": F.mean_activation(h),
        "kl_penalty_backward": F.kl_penalty_backward(rho_hat, 0.1, 0.2),
        "mean_activation_backward": F.mean_activation_backward(
            F.kl_penalty_backward(rho_hat, 0.1, 0.2), h),
        "weight_decay_backward": F.weight_decay_backward(z, 0.3),
    }
    for name, a in outputs.items():
        assert a.dtype == np.float32, f"{name} gave {a.dtype}"
    # the losses are 0-d arrays of the inputs' dtype (left on the device until read)
    for name, value in {"mse": F.mse(h, x), "bce_with_logits": F.bce_with_logits(h, x),
                        "sparsity_penalty": sparsity_penalty(h, 0.1, 0.2)[0],
                        "kl_penalty": F.kl_penalty(rho_hat, 0.1, 0.2),
                        "weight_decay": F.weight_decay([z], 0.1)}.items():
        assert value.dtype == np.float32 and value.shape == (), f"{name} gave {value.dtype}"


def test_numpy_scalars_are_numpy_arrays_to_the_functions():
    import array_api_compat

    from minisae.backend import array_module, library, namespace
    # a NumPy scalar is a NumPy array to the Array API: its namespace is NumPy's
    assert namespace(np.float64(0.3)) is array_api_compat.array_namespace(np.empty(0))
    assert library(np.float64(0.3)) == "numpy" and library(0.2) is None
    assert to_numpy(0.2).shape == () and float(to_numpy(np.float64(0.3))) == 0.3
    # the engine's raw module of anything that is not CuPy's is numpy
    assert array_module(np.float64(0.3)) is np and array_module(0.2) is np
    assert float(F.kl_divergence(0.1, np.float64(0.1))) == 0.0
    assert float(F.kl_divergence_backward(0.1, np.float64(0.1))) == 0.0
