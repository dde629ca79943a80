import math

import numpy as np
import pytest

from conftest import make_model, random_inputs
from minisae import SGD, Adam, get_backend, to_numpy
from minisae.errors import CheckpointError, ConfigError, MinisaeError
from minisae.backend import array_module
from minisae.fast import FlatAdam

SHAPES = {"encoder.W": (9, 5), "encoder.b": (5,), "decoder.W": (5, 9), "decoder.b": (9,)}
N = sum(math.prod(s) for s in SHAPES.values())  # 104


def flat_views(be, seed=None):
    """A flat buffer (random, or zeros when seed is None) and named views tiling it, as a
    SparseAutoencoder's params and grads are."""
    flat = be.zeros(N) if seed is None else be.asarray(np.random.default_rng(seed).normal(size=N))
    views, start = {}, 0
    for name, shape in SHAPES.items():
        size = math.prod(shape)
        views[name] = flat[start:start + size].reshape(shape)
        start += size
    return flat, views


def separate_arrays(be, seed):
    """Params that are NOT views of one buffer."""
    rng = np.random.default_rng(seed)
    return {name: be.asarray(rng.normal(size=shape)) for name, shape in SHAPES.items()}


def put(dst, src):
    """dst[...] = src, with src (NumPy) moved to dst's backend first."""
    dst[...] = array_module(dst).asarray(src)


def set_grads(grads, rng):
    for g in grads.values():
        put(g, rng.normal(size=g.shape))


def snapshot(arrays):
    return {k: to_numpy(a).copy() for k, a in arrays.items()}


def adam_reference(p, gs, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Kingma & Ba's Algorithm 1 in float64, step by step over the gradients gs."""
    p, m, v = p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape)
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


# ----------------------------------------------------------------------------- Adam

@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-6), ("float32", 1e-4)])
def test_adam_first_step_is_lr_times_sign_of_g(backend, fast, dtype, rtol):
    be = get_backend(backend, dtype)
    _, params = flat_views(be, seed=0)
    _, grads = flat_views(be)
    rng = np.random.default_rng(1)
    for g in grads.values():  # |g| >= 0.01: eps / |g| <= 1e-6
        put(g, rng.uniform(0.01, 3.0, size=g.shape) * rng.choice([-1.0, 1.0], size=g.shape))
    grads["decoder.b"][0] = 0.0
    before = snapshot(params)
    lr = 0.01
    opt = Adam(params, grads, lr=lr, fast=fast)
    assert opt.fast is fast
    assert all(float(abs(m).max()) == 0 for m in opt.m.values())
    assert all(float(abs(v).max()) == 0 for v in opt.v.values())
    opt.step()
    assert opt.t == 1
    for k in SHAPES:
        step = before[k] - to_numpy(params[k])
        expected = lr * np.sign(to_numpy(grads[k]))
        np.testing.assert_allclose(step, expected, rtol=rtol, atol=rtol * lr, err_msg=k)
    assert (before["decoder.b"][0] - to_numpy(params["decoder.b"])[0]) == 0.0


@pytest.mark.parametrize("fast", [True, False])
def test_adam_matches_the_paper(backend, fast):
    be = get_backend(backend, "float64")
    _, params = flat_views(be, seed=2)
    _, grads = flat_views(be)
    p0 = snapshot(params)
    opt = Adam(params, grads, lr=0.05, betas=(0.8, 0.99), eps=1e-6, fast=fast)
    rng = np.random.default_rng(3)
    history = []
    for _ in range(5):
        set_grads(grads, rng)
        history.append(snapshot(grads))
        opt.step()
    for k in SHAPES:
        expected = adam_reference(p0[k], [h[k] for h in history], 0.05, 0.8, 0.99, 1e-6)
        np.testing.assert_allclose(to_numpy(params[k]), expected, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunk", [None, 7, 16])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_adam_fast_matches_reference(backend, threads, chunk, dtype, rtol):
    be = get_backend(backend, dtype)
    runs = []
    for fast in (True, False):
        flat_p, params = flat_views(be, seed=4)
        _, grads = flat_views(be)
        opt = Adam(params, grads, lr=0.01, fast=fast, threads=threads)
        assert opt.fast is fast
        if chunk is not None and fast:
            opt._engine.CHUNK = chunk  # small chunks: boundaries fall inside and between parameters
        rng = np.random.default_rng(5)
        for _ in range(20):
            set_grads(grads, rng)
            opt.step()
        if fast and backend == "numpy":
            # 104 elements in chunks of 7 or 16 take the threaded path when threads=2
            assert (opt._engine._pool is not None) == (threads == 2 and chunk is not None)
        runs.append((to_numpy(flat_p).copy(), snapshot(opt.m), snapshot(opt.v)))
    (p_f, m_f, v_f), (p_p, m_p, v_p) = runs
    np.testing.assert_allclose(p_f, p_p, rtol=rtol, atol=rtol)
    for k in SHAPES:
        np.testing.assert_allclose(m_f[k], m_p[k], rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(v_f[k], v_p[k], rtol=rtol, atol=rtol * 1e-2)
    # and the parameters really moved
    assert np.abs(p_p - to_numpy(flat_views(be, seed=4)[0])).min() > 0


def test_flat_adam_class_chunk_can_be_monkeypatched(monkeypatch):
    monkeypatch.setattr(FlatAdam, "CHUNK", 5)
    be = get_backend("numpy", "float64")
    results = []
    for fast in (True, False):
        flat_p, params = flat_views(be, seed=6)
        _, grads = flat_views(be)
        opt = Adam(params, grads, lr=0.02, fast=fast, threads=2)
        rng = np.random.default_rng(7)
        for _ in range(10):
            set_grads(grads, rng)
            opt.step()
        results.append(flat_p.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


def test_adam_is_fast_on_a_models_params_by_default(backend):
    model = make_model(backend, 6, 4)
    assert Adam(model.params, model.grads).fast is True
    assert Adam(model.params, model.grads, fast=False).fast is False


def test_adam_on_separate_arrays_falls_back_to_the_reference(backend):
    be = get_backend(backend, "float64")
    params, grads = separate_arrays(be, 8), separate_arrays(be, 9)
    opt = Adam(params, grads, lr=0.01)
    assert opt.fast is False
    p0 = snapshot(params)
    opt.step()
    for k in SHAPES:
        np.testing.assert_allclose(p0[k] - to_numpy(params[k]), 0.01 * np.sign(to_numpy(grads[k])),
                                   rtol=1e-5)


def test_adam_needs_both_params_and_grads_flat_in_the_same_order():
    be = get_backend("numpy", "float64")
    _, params = flat_views(be, seed=10)
    assert Adam(params, separate_arrays(be, 11)).fast is False
    # views of one buffer, but listed out of memory order
    reordered = dict(reversed(list(params.items())))
    _, grads = flat_views(be)
    assert Adam(reordered, dict(reversed(list(grads.items())))).fast is False
    # part of a buffer is not the whole buffer
    partial = {k: v for k, v in params.items() if k != "decoder.b"}
    assert Adam(partial, {k: v for k, v in grads.items() if k != "decoder.b"}).fast is False


def test_adam_state_is_float32_for_float32_params(backend):
    model = make_model(backend, 6, 4, dtype="float32")
    opt = Adam(model.params, model.grads, lr=0.01)
    model.loss_and_grads(random_inputs(3, 6))
    opt.step()
    for d in (opt.m, opt.v, model.params):
        for k, a in d.items():
            assert a.dtype == np.float32, k


# ----------------------------------------------------------------------------- SGD

def test_sgd_momentum_two_steps_closed_form(backend):
    be = get_backend(backend, "float64")
    _, params = flat_views(be, seed=12)
    _, grads = flat_views(be)
    p0 = snapshot(params)
    lr, mu = 0.1, 0.9
    opt = SGD(params, grads, lr=lr, momentum=mu)
    rng = np.random.default_rng(13)
    set_grads(grads, rng)
    g1 = snapshot(grads)
    opt.step()
    for k in SHAPES:
        np.testing.assert_allclose(to_numpy(params[k]), p0[k] - lr * g1[k], rtol=1e-14)
    set_grads(grads, rng)
    g2 = snapshot(grads)
    opt.step()
    # u1 = -lr g1; u2 = mu u1 - lr g2; p2 = p0 + u1 + u2
    for k in SHAPES:
        expected = p0[k] - lr * (1 + mu) * g1[k] - lr * g2[k]
        np.testing.assert_allclose(to_numpy(params[k]), expected, rtol=1e-13, atol=1e-15)
    assert opt.t == 2


def test_sgd_without_momentum_is_plain_gradient_descent():
    be = get_backend("numpy", "float64")
    params, grads = separate_arrays(be, 14), separate_arrays(be, 15)
    p0 = snapshot(params)
    opt = SGD(params, grads, lr=0.5, momentum=0.0)
    opt.step()
    opt.step()
    for k in SHAPES:
        np.testing.assert_allclose(params[k], p0[k] - 2 * 0.5 * grads[k], rtol=1e-14)


# ----------------------------------------------------------------------------- state dicts

@pytest.mark.parametrize("make", [
    lambda p, g: Adam(p, g, lr=0.01),
    lambda p, g: Adam(p, g, lr=0.01, fast=False),
    lambda p, g: SGD(p, g, lr=0.05, momentum=0.8),
], ids=["adam-fast", "adam-reference", "sgd"])
def test_state_dict_round_trip_continues_identically(backend, make):
    be = get_backend(backend, "float64")
    _, pa = flat_views(be, seed=16)
    _, ga = flat_views(be)
    a = make(pa, ga)
    rng = np.random.default_rng(17)
    grads = [rng.normal(size=N) for _ in range(10)]

    def step(opt, g_views, g):
        start = 0
        for name, view in g_views.items():
            view[...] = be.asarray(g[start:start + view.size].reshape(view.shape))
            start += view.size
        opt.step()

    for g in grads[:5]:
        step(a, ga, g)
    state = a.state_dict()
    saved_params = snapshot(pa)
    assert state["t"] == 5 and state["lr"] == a.lr
    slots = {k.split(".")[0] for k in state if k not in ("t", "lr")}
    assert slots == ({"m", "v"} if isinstance(a, Adam) else {"u"})
    for k, v in state.items():
        if k not in ("t", "lr"):
            assert isinstance(v, np.ndarray) and v.dtype == np.float64

    # a fresh optimizer on a copy of the parameters, restored from the saved state
    _, pb = flat_views(be)
    for k in SHAPES:
        pb[k][...] = be.asarray(saved_params[k])
    _, gb = flat_views(be)
    b = make(pb, gb)
    b.load_state_dict(state)
    assert b.t == 5
    for g in grads[5:]:
        step(a, ga, g)
        step(b, gb, g)
    for k in SHAPES:
        np.testing.assert_array_equal(to_numpy(pa[k]), to_numpy(pb[k]))
    # a fresh optimizer without the state takes a different path
    _, pc = flat_views(be)
    for k in SHAPES:
        pc[k][...] = be.asarray(saved_params[k])
    _, gc = flat_views(be)
    c = make(pc, gc)
    for g in grads[5:]:
        step(c, gc, g)
    assert not np.array_equal(to_numpy(pc["encoder.W"]), to_numpy(pa["encoder.W"]))


def test_state_dict_is_a_copy():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=18)
    _, g = flat_views(be, seed=19)
    opt = Adam(p, g)
    opt.step()
    state = opt.state_dict()
    state["m.encoder.W"][...] = 123.0
    assert not (opt.m["encoder.W"] == 123.0).any()


def test_load_state_dict_errors():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=20)
    _, g = flat_views(be, seed=21)
    opt = Adam(p, g)
    opt.step()
    state = opt.state_dict()
    missing = {k: v for k, v in state.items() if k != "v.decoder.b"}
    with pytest.raises(CheckpointError, match="missing"):
        Adam(p, g).load_state_dict(missing)
    wrong = dict(state, **{"m.encoder.W": np.zeros((2, 2))})
    with pytest.raises(CheckpointError, match="shape"):
        Adam(p, g).load_state_dict(wrong)
    with pytest.raises(CheckpointError, match="missing"):
        SGD(p, g).load_state_dict(state)  # an Adam state has no "u"
    nan = dict(state, **{"v.encoder.W": np.full((9, 5), np.nan)})
    with pytest.raises(CheckpointError, match="NaN"):
        Adam(p, g).load_state_dict(nan)
    for bad in ({"t": "abc"}, {"t": -1}, {"t": 1.5}, {"lr": 0.0}, {"lr": "x"}, {"lr": np.array("x")}):
        with pytest.raises(CheckpointError, match="'t'|'lr'"):
            Adam(p, g).load_state_dict(dict(state, **bad))
    with pytest.raises(CheckpointError, match="dict"):
        Adam(p, g).load_state_dict([("t", 1)])
    with pytest.raises(CheckpointError, match="negative"):
        Adam(p, g).load_state_dict(dict(state, **{"v.encoder.W": -np.ones((9, 5))}))
    with pytest.raises(CheckpointError, match="not an array"):
        Adam(p, g).load_state_dict(dict(state, **{"m.decoder.b": [[1.0], [1.0, 2.0]]}))
    fresh = Adam(p, g)
    before = snapshot(fresh.m)
    with pytest.raises(CheckpointError):  # nothing is half-restored
        fresh.load_state_dict(dict(state, **{"v.decoder.b": np.full(9, np.inf)}))
    assert fresh.t == 0
    for k in SHAPES:
        np.testing.assert_array_equal(to_numpy(fresh.m[k]), before[k])


# ----------------------------------------------------------------------------- bad settings

@pytest.mark.parametrize("kwargs,word", [
    (dict(lr=0.0), "lr"),
    (dict(lr=-0.1), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lr="0.1"), "lr"),
    (dict(betas=(1.0, 0.999)), "betas"),
    (dict(betas=(0.9, -0.1)), "betas"),
    (dict(eps=0.0), "eps"),
])
def test_adam_bad_settings(kwargs, word):
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=22)
    _, g = flat_views(be)
    with pytest.raises(ConfigError, match=word):
        Adam(p, g, **kwargs)


def test_adam_threads_must_be_positive():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=23)
    _, g = flat_views(be, seed=24)
    with pytest.raises(ConfigError, match="threads"):
        Adam(p, g, threads=0).step()


def test_sgd_bad_momentum():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=25)
    _, g = flat_views(be)
    for mu in (1.0, -0.5, float("nan")):
        with pytest.raises(ConfigError, match="momentum"):
            SGD(p, g, momentum=mu)


def test_params_and_grads_must_match():
    be = get_backend("numpy", "float64")
    p, g = separate_arrays(be, 26), separate_arrays(be, 27)
    with pytest.raises(ConfigError, match="same names"):
        Adam(p, {k: v for k, v in g.items() if k != "encoder.b"})
    g["encoder.b"] = np.zeros(7)
    with pytest.raises(ConfigError, match="shape"):
        SGD(p, g)


@pytest.mark.parametrize("params,grads,word", [
    ({}, {}, "empty"),
    ([1.0, 2.0], [0.0, 0.0], "dicts"),
    ({"w": [1.0, 2.0]}, {"w": [0.0, 0.0]}, "arrays"),
    ({"w": np.arange(3)}, {"w": np.zeros(3, dtype=np.int64)}, "float"),
])
def test_optimizers_refuse_what_they_cannot_update(params, grads, word):
    for make in (Adam, SGD):
        with pytest.raises(ConfigError, match=word) as info:
            make(params, grads)
        assert isinstance(info.value, MinisaeError)


def test_bad_optimizer_hyperparameters_are_config_errors():
    from minisae import SGD, Adam, SparseAutoencoder
    from minisae.errors import ConfigError
    m = SparseAutoencoder(4, 3)
    for kw in ({"eps": None}, {"eps": 0.0}, {"eps": True}, {"betas": (0.9,)}, {"betas": None},
               {"betas": (0.9, 1.0)}, {"betas": (True, 0.9)}, {"lr": True}, {"lr": -1.0},
               {"lr": 10**400}, {"threads": 1.5}):
        with pytest.raises(ConfigError):
            Adam(m.params, m.grads, **kw)
    for momentum in (None, 1.0, -0.1, True):
        with pytest.raises(ConfigError, match="momentum"):
            SGD(m.params, m.grads, momentum=momentum)
