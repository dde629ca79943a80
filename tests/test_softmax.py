"""Softmax regression (minisae.softmax): gradients against finite differences (fixed cases and
hypothesis), closed forms, numerical stability, dtype, errors, and training to high accuracy."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisae import Adam, to_numpy
from minisae.errors import ConfigError, InputError
from minisae.gradcheck import numerical_gradient, relative_error
from minisae.functional import (accuracy, cross_entropy, cross_entropy_backward, log_softmax,
                                one_hot, softmax)
from minisae.losses import Loss
from minisae.softmax import SoftmaxRegression
from minisae.training.lbfgs import LBFGS


def randomize(model, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    model.flat_params[...] = model.backend.asarray(scale * rng.uniform(-1, 1, model.n_params))


def check_gradients(model, x, y):
    """{name: relative error} of loss_and_grads against central differences of its loss."""
    out = model.loss_and_grads(x, y)
    analytic = {k: to_numpy(g).copy() for k, g in model.grads.items()}
    errors = {}
    for name, p in model.params.items():
        numeric = numerical_gradient(lambda: model.loss_and_grads(x, y).total, p)
        errors[name] = (relative_error(numeric, analytic[name]),
                        float(np.linalg.norm(numeric - analytic[name])))
    return out, errors


def blobs(n_per_class, n_inputs, n_classes, seed=0, spread=0.3):
    """Well-separated Gaussian clusters around centres fixed by (n_inputs, n_classes); seed
    draws the points: (x (n, n_inputs), y (n,))."""
    centres = 3.0 * np.random.default_rng([n_inputs, n_classes]).normal(size=(n_classes, n_inputs))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), n_inputs))
    order = rng.permutation(len(y))
    return x[order], y[order]


# ----------------------------------------------------------------------------- gradients

def test_gradients_match_finite_differences(backend):
    model = SoftmaxRegression(7, 4, weight_decay=0.01, backend=backend, seed=1)
    randomize(model, seed=2, scale=1.5)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 7)), rng.integers(0, 4, size=6)
    out, errors = check_gradients(model, x, y)
    assert out.total == pytest.approx(out.cross_entropy + out.weight_decay)
    for name, (err, _) in errors.items():
        assert err < 1e-8, name


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 8), n=st.integers(1, 8), k=st.integers(2, 6),
       lam=st.floats(0.0, 0.1), scale=st.floats(0.01, 4.0), seed=st.integers(0, 2**16))
def test_gradients_property(batch, n, k, lam, scale, seed):
    model = SoftmaxRegression(n, k, weight_decay=lam, seed=seed)
    randomize(model, seed=seed, scale=scale)
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-1, 1, size=(batch, n)), rng.integers(0, k, size=batch)
    out, errors = check_gradients(model, x, y)
    assert math.isfinite(out.total) and out.cross_entropy >= 0 and out.weight_decay >= 0
    for name, (err, abs_diff) in errors.items():
        # below ~1e-11 * |loss| / step the difference is rounding noise, not a wrong gradient
        assert err < 1e-7 or abs_diff < 1e-10 * (1 + out.total), f"{name}: {err:.3e}"


# ----------------------------------------------------------------------------- closed forms

@pytest.mark.parametrize("k", [2, 3, 10])
def test_uniform_weights_give_log_k(backend, k):
    model = SoftmaxRegression(5, k, weight_decay=0.3, backend=backend)
    model.flat_params[...] = 0.0
    x = np.random.default_rng(0).normal(size=(9, 5))
    y = np.arange(9) % k
    out = model.loss_and_grads(x, y)
    assert isinstance(out, Loss) and out.names == ("cross_entropy", "weight_decay")
    assert set(out.as_dict()) == {"total", "cross_entropy", "weight_decay", "accuracy"}
    assert out.cross_entropy == pytest.approx(math.log(k), rel=1e-14)
    assert out.weight_decay == 0.0
    np.testing.assert_allclose(to_numpy(model.predict_proba(x)), 1.0 / k, rtol=1e-14)
    # dz = (1/K - onehot(y)) / batch
    dz = np.full((9, k), 1.0 / k)
    dz[np.arange(9), y] -= 1.0
    dz /= 9
    np.testing.assert_allclose(to_numpy(model.grads["W"]), x.T @ dz, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(to_numpy(model.grads["b"]), dz.sum(axis=0), atol=1e-15)


def test_one_sample_gradient_by_hand():
    # x = (1, 2), W = [[1, 0], [0, 1]] (so z = x), b = (0, ln 2), y = 0, lambda = 0.5
    model = SoftmaxRegression(2, 2, weight_decay=0.5)
    model.params["W"][...] = np.eye(2)
    model.params["b"][...] = [0.0, math.log(2.0)]
    out = model.loss_and_grads(np.array([[1.0, 2.0]]), np.array([0]))
    # z = (1, 2 + ln 2): p0 = e / (e + 2 e^2) = 1 / (1 + 2e), p1 = 2e / (1 + 2e)
    e = math.e
    p = np.array([1.0, 2.0 * e]) / (1.0 + 2.0 * e)
    assert out.cross_entropy == pytest.approx(math.log(1.0 + 2.0 * e), rel=1e-14)
    assert out.weight_decay == pytest.approx(0.25 * 2)      # lambda/2 * ||I||^2
    dz = p - [1.0, 0.0]                                      # (p0 - 1, p1)
    np.testing.assert_allclose(model.grads["W"], np.outer([1.0, 2.0], dz) + 0.5 * np.eye(2),
                               rtol=1e-13)
    np.testing.assert_allclose(model.grads["b"], dz, rtol=1e-13)       # the bias is not decayed
    assert out.accuracy == 0.0                                 # the model says class 1


def test_softmax_is_stable_and_shift_invariant():
    z = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4 + 1.0], [0.5, 0.25, 0.0]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow to 0 is fine
        p, log_p = softmax(z), log_softmax(z)
    assert np.isfinite(log_p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0], atol=1e-300)
    assert log_p[0, 2] == pytest.approx(-2000.0)              # no log(0)
    np.testing.assert_allclose(softmax(z + 123.0), p, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(np.exp(log_p[2]), p[2], rtol=1e-15)
    y = np.array([2, 0, 1])
    ce = cross_entropy(log_p, y)
    assert ce.shape == ()                                         # a 0-d array: float() it
    assert float(ce) == pytest.approx(-log_p[[0, 1, 2], y].mean())
    p0 = p.copy()
    dz = cross_entropy_backward(p, y)
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-15)   # p and onehot both sum to 1
    np.testing.assert_allclose(dz, (p0 - np.eye(3)[y]) / 3, rtol=1e-15, atol=1e-300)
    np.testing.assert_array_equal(p, p0)                          # p itself untouched
    assert not np.shares_memory(dz, p)


def test_one_hot_and_accuracy():
    like = np.zeros((1, 1), dtype=np.float32)
    oh = one_hot(np.array([2, 0, 1, 2]), 3, like)
    assert oh.dtype == np.float32
    np.testing.assert_array_equal(oh, np.eye(3)[[2, 0, 1, 2]])
    z = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [5.0, 4.0]])
    acc = accuracy(z, np.array([1, 0, 0, 1]))                     # argmax (1, 0, 1, 0)
    assert acc.shape == () and float(acc) == 0.5


def test_float32_stays_float32():
    model = SoftmaxRegression(4, 3, dtype="float32")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    model.loss_and_grads(x, np.array([0, 1, 2, 0, 1]))
    assert model.flat_params.dtype == model.flat_grads.dtype == np.float32
    assert model.predict_proba(x).dtype == np.float32


def test_params_are_views_of_the_flat_buffers():
    model = SoftmaxRegression(3, 4)
    assert model.params["W"].shape == (3, 4) and model.params["b"].shape == (4,)
    assert model.n_params == 16 and model.flat_params.shape == (16,)
    model.flat_params[...] = np.arange(16.0)
    np.testing.assert_array_equal(model.params["b"], [12, 13, 14, 15])
    assert model.params["W"].base is model.flat_params and model.grads["W"].base is model.flat_grads
    again = SoftmaxRegression(3, 4)
    np.testing.assert_array_equal(again.flat_params, SoftmaxRegression(3, 4).flat_params)  # seeded


# ----------------------------------------------------------------------------- training

def test_adam_and_lbfgs_reach_high_accuracy_on_separable_data(backend):
    x, y = blobs(40, 5, 4, seed=0)
    x_test, y_test = blobs(20, 5, 4, seed=1)
    model = SoftmaxRegression(5, 4, backend=backend)
    adam = Adam(model.params, model.grads, lr=0.1)
    for _ in range(100):
        out = model.loss_and_grads(x, y)
        adam.step()
    assert model.score(x, y) == 1.0 and out.cross_entropy < 0.1

    model = SoftmaxRegression(5, 4, backend=backend)
    result = LBFGS(model.flat_params, model.flat_grads, max_iter=100).minimize(
        lambda: model.loss_and_grads(x, y))
    assert model.score(x, y) == 1.0 and result.loss < 0.05
    assert model.score(x_test, y_test) >= 0.95
    np.testing.assert_array_equal(to_numpy(model.predict(x)),
                                  to_numpy(model.predict_proba(x)).argmax(axis=1))


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("y,match", [
    (np.array([0.0, 1.0, 2.0]), "y.astype\\(int\\)"),
    (np.eye(3)[[0, 1, 2]], "one-hot.*argmax"),
    (np.array([0, 1]), "one per row"),
    (np.array([0, 1, 3]), "0..2.*from 0 to 3"),
    (np.array([-1, 0, 1]), "from -1"),
])
def test_bad_labels(y, match):
    model = SoftmaxRegression(2, 3)
    with pytest.raises(InputError, match=match):
        model.loss_and_grads(np.zeros((3, 2)), y)


@pytest.mark.parametrize("x,match", [(np.zeros((3, 4)), r"\(batch, 2\)"),
                                     (np.zeros(2), r"x\[None, :\]"),
                                     (np.zeros((0, 2)), "empty"),
                                     (np.array([[0.0, np.nan]]), "NaN")])
def test_bad_inputs(x, match):
    model = SoftmaxRegression(2, 3)
    with pytest.raises(InputError, match=match):
        model.predict(x)


@pytest.mark.parametrize("kw,match", [({"n_classes": 1}, "n_classes"),
                                      ({"n_inputs": 0}, "n_inputs"),
                                      ({"weight_decay": -1e-4}, "weight_decay"),
                                      ({"seed": -1}, "seed"),
                                      ({"dtype": "float16"}, "dtype")])
def test_bad_settings(kw, match):
    args = dict(n_inputs=2, n_classes=3)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        SoftmaxRegression(**args)
