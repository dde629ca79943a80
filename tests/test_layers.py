"""The layers (minisae.layers): Dense and the activations, forward and backward against the math."""
import numpy as np
import pytest

from minisae import get_backend, to_numpy
from minisae.gradcheck import numerical_gradient, relative_error
from minisae.layers import ACTIVATIONS, Dense, Identity, ReLU, Sigmoid

TOL = 1e-7


def rand(be, shape, low=-1.0, high=1.0, seed=0):
    return be.asarray(np.random.default_rng(seed).uniform(low, high, size=shape))


def dense(be, n_in=4, n_out=3, needs_input_grad=True, seed=0):
    W, b = rand(be, (n_in, n_out), seed=seed), rand(be, (n_out,), seed=seed + 1)
    return Dense(W, b, be.zeros(W.shape), be.zeros(b.shape), needs_input_grad=needs_input_grad)


def projection_check(layer, x, R, params=()):
    """L = sum(R * layer.forward(x)); compare dL/dx (when the layer returns it) and every
    (param, grad) pair's gradient with central differences."""
    def loss():
        return float((R * layer.forward(x)).sum())

    layer.forward(x)
    dx = layer.backward(R)
    dx = None if dx is None else to_numpy(dx).copy()
    grads = [to_numpy(g).copy() for _, g in params]
    checked = []
    if dx is not None:
        err = relative_error(numerical_gradient(loss, x), dx)
        assert err < TOL, f"dx: relative error {err:.3e}"
        checked.append("x")
    for (p, _), analytic in zip(params, grads):
        numeric = numerical_gradient(loss, p)
        assert np.linalg.norm(numeric) > 0
        err = relative_error(numeric, analytic)
        assert err < TOL, f"param of shape {p.shape}: relative error {err:.3e}"
    return dx


# ----------------------------------------------------------------------------- Dense

def test_dense_forward_is_x_at_W_plus_b(backend):
    be = get_backend(backend, "float64")
    layer = dense(be)
    x = rand(be, (5, 4), seed=7)
    y = layer.forward(x)
    expected = to_numpy(x) @ to_numpy(layer.W) + to_numpy(layer.b)
    np.testing.assert_allclose(to_numpy(y), expected, rtol=1e-13)


def test_dense_gradients_match_finite_differences(backend):
    be = get_backend(backend, "float64")
    layer = dense(be, 4, 3)
    x, R = rand(be, (5, 4), seed=10), rand(be, (5, 3), seed=11)
    dx = projection_check(layer, x, R, [(layer.W, layer.dW), (layer.b, layer.db)])
    assert dx.shape == (5, 4)


def test_dense_without_input_grad_skips_dx_but_fills_param_grads(backend):
    be = get_backend(backend, "float64")
    layer = dense(be, 3, 2, needs_input_grad=False)
    x, R = rand(be, (4, 3), seed=12), rand(be, (4, 2), seed=13)
    layer.forward(x)
    assert layer.backward(R) is None
    projection_check(layer, x, R, [(layer.W, layer.dW), (layer.b, layer.db)])
    # the same param grads as a layer that also computes dx
    full = Dense(layer.W, layer.b, be.zeros(layer.W.shape), be.zeros(layer.b.shape))
    full.forward(x)
    full.backward(R)
    np.testing.assert_allclose(to_numpy(full.dW), to_numpy(layer.dW), rtol=1e-14)
    np.testing.assert_allclose(to_numpy(full.db), to_numpy(layer.db), rtol=1e-14)


def test_dense_writes_grads_into_the_given_arrays_and_assigns(backend):
    be = get_backend(backend, "float64")
    layer = dense(be)
    dW, db = layer.dW, layer.db
    x, R = rand(be, (5, 4), seed=14), rand(be, (5, 3), seed=15)
    layer.forward(x)
    layer.backward(R)
    first = to_numpy(dW).copy(), to_numpy(db).copy()
    layer.backward(R)  # twice: assigned, not accumulated
    assert layer.dW is dW and layer.db is db
    np.testing.assert_array_equal(to_numpy(dW), first[0])
    np.testing.assert_array_equal(to_numpy(db), first[1])
    np.testing.assert_allclose(first[0], to_numpy(x).T @ to_numpy(R), rtol=1e-13)
    np.testing.assert_allclose(first[1], to_numpy(R).sum(axis=0), rtol=1e-13)


@pytest.mark.parametrize("make", [
    lambda be: dense(be),
    lambda be: Sigmoid(),
    lambda be: ReLU(),
    lambda be: Identity(),
], ids=["dense", "sigmoid", "relu", "identity"])
def test_backward_does_not_modify_dy(backend, make):
    be = get_backend(backend, "float64")
    layer = make(be)
    x = rand(be, (5, 4), seed=16)
    y = layer.forward(x)
    dy = rand(be, y.shape, seed=17)
    dy0 = to_numpy(dy).copy()
    layer.backward(dy)
    np.testing.assert_array_equal(to_numpy(dy), dy0)


# ----------------------------------------------------------------------------- activations

def test_sigmoid_layer_gradient(backend):
    be = get_backend(backend, "float64")
    x, R = rand(be, (4, 5), -4, 4, seed=20), rand(be, (4, 5), seed=21)
    dx = projection_check(Sigmoid(), x, R)
    assert dx is not None


def test_sigmoid_layer_keeps_only_its_output(backend):
    be = get_backend(backend, "float64")
    layer = Sigmoid()
    x = rand(be, (2, 3), seed=22)
    y = layer.forward(x)
    assert layer._y is y
    np.testing.assert_allclose(to_numpy(y), 1 / (1 + np.exp(-to_numpy(x))), rtol=1e-13)


def test_relu_layer_gradient_away_from_the_kink(backend):
    be = get_backend(backend, "float64")
    rng = np.random.default_rng(23)
    x = rng.uniform(0.1, 2.0, size=(4, 5)) * rng.choice([-1.0, 1.0], size=(4, 5))
    x, R = be.asarray(x), rand(be, (4, 5), seed=24)
    dx = projection_check(ReLU(), x, R)
    np.testing.assert_array_equal(dx[to_numpy(x) < 0], 0.0)


def test_identity_layer(backend):
    be = get_backend(backend, "float64")
    x, R = rand(be, (3, 2), seed=25), rand(be, (3, 2), seed=26)
    layer = Identity()
    assert layer.forward(x) is x
    dx = projection_check(layer, x, R)
    np.testing.assert_array_equal(dx, to_numpy(R))


def test_activation_table():
    assert ACTIVATIONS == {"sigmoid": Sigmoid, "relu": ReLU, "linear": Identity}


# ----------------------------------------------------------------------------- fresh arrays, dtype

@pytest.mark.parametrize("make", [lambda be: dense(be), lambda be: Sigmoid(), lambda be: ReLU()],
                         ids=["dense", "sigmoid", "relu"])
def test_each_call_returns_a_fresh_array(backend, make):
    """The reference layers allocate their outputs: a second call leaves the first's alone."""
    be = get_backend(backend, "float64")
    layer = make(be)
    x1, x2 = rand(be, (5, 4), seed=31), rand(be, (5, 4), seed=32)
    y1 = layer.forward(x1)
    kept = to_numpy(y1).copy()
    dx1 = layer.backward(rand(be, y1.shape, seed=33))
    kept_dx = to_numpy(dx1).copy()
    y2 = layer.forward(x2)
    layer.backward(rand(be, y2.shape, seed=34))
    assert y2 is not y1
    np.testing.assert_array_equal(to_numpy(y1), kept)
    np.testing.assert_array_equal(to_numpy(dx1), kept_dx)


def test_dense_handles_a_change_of_batch_size(backend):
    be = get_backend(backend, "float64")
    layer = dense(be)
    for batch in (5, 2, 5):
        x = rand(be, (batch, 4), seed=batch)
        y = layer.forward(x)
        assert y.shape == (batch, 3)
        np.testing.assert_allclose(to_numpy(y), to_numpy(x) @ to_numpy(layer.W) + to_numpy(layer.b),
                                   rtol=1e-13)
        dx = layer.backward(be.asarray(np.ones((batch, 3))))
        assert dx.shape == (batch, 4)


def test_float32_layers_stay_float32(backend):
    be = get_backend(backend, "float32")
    layers = [dense(be), Sigmoid(), dense(be, 3, 3, seed=5), ReLU(), Identity()]
    x = rand(be, (5, 4), seed=30)
    assert x.dtype == np.float32
    a = x
    for layer in layers:
        a = layer.forward(a)
        assert a.dtype == np.float32
    d = be.asarray(np.ones(a.shape))
    for layer in reversed(layers):
        d = layer.backward(d)
        assert d.dtype == np.float32
    for layer in layers:
        for attr in ("dW", "db", "W", "b"):
            if hasattr(layer, attr):
                assert getattr(layer, attr).dtype == np.float32
