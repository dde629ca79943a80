"""The optimizers: Adam against the paper, SGD with momentum, the fast Adam, their saved state."""
import math

import numpy as np
import pytest

from conftest import make_model, random_inputs
from minisae import SGD, Adam, get_backend, to_numpy
from minisae.backend import array_module
from minisae.errors import CheckpointError, ConfigError, MinisaeError
from minisae.fast import FastAdam, fast_optimizer
from minisae.fast.adam import flat_state, numba_adam
from minisae.files import state as S
from minisae.training import LBFGS

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


def stepper(opt, path, **kw):
    """What steps opt on `path`: opt itself (the reference, Adam.step) or FastAdam(opt, **kw)."""
    return FastAdam(opt, **kw) if path == "fast" else opt


PATHS = ["fast", "reference"]
KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    numba_adam() is None, reason="numba is not installed (the optional `fast` extra)"))]


# ----------------------------------------------------------------------------- Adam

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-6), ("float32", 1e-4)])
def test_adam_first_step_is_lr_times_sign_of_g(backend, path, dtype, rtol):
    be = get_backend(backend, dtype)
    _, params = flat_views(be, seed=0)
    _, grads = flat_views(be)
    rng = np.random.default_rng(1)
    for g in grads.values():  # |g| >= 0.01: eps / |g| <= 1e-6
        put(g, rng.uniform(0.01, 3.0, size=g.shape) * rng.choice([-1.0, 1.0], size=g.shape))
    grads["decoder.b"][0] = 0.0
    before = snapshot(params)
    lr = 0.01
    opt = Adam(params, grads, lr=lr)
    assert opt.t == 0
    assert all(float(abs(m).max()) == 0 for m in opt.m.values())
    assert all(float(abs(v).max()) == 0 for v in opt.v.values())
    stepper(opt, path).step()
    assert opt.t == 1
    for k in SHAPES:
        step = before[k] - to_numpy(params[k])
        expected = lr * np.sign(to_numpy(grads[k]))
        np.testing.assert_allclose(step, expected, rtol=rtol, atol=rtol * lr, err_msg=k)
    assert (before["decoder.b"][0] - to_numpy(params["decoder.b"])[0]) == 0.0


@pytest.mark.parametrize("path", PATHS)
def test_adam_matches_the_paper(backend, path):
    be = get_backend(backend, "float64")
    _, params = flat_views(be, seed=2)
    _, grads = flat_views(be)
    p0 = snapshot(params)
    opt = Adam(params, grads, lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    step = stepper(opt, path)
    rng = np.random.default_rng(3)
    history = []
    for _ in range(5):
        set_grads(grads, rng)
        history.append(snapshot(grads))
        step.step()
    assert opt.t == 5
    for k in SHAPES:
        expected = adam_reference(p0[k], [h[k] for h in history], 0.05, 0.8, 0.99, 1e-6)
        np.testing.assert_allclose(to_numpy(params[k]), expected, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunk", [None, 7, 16])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_adam_fast_matches_reference(backend, kernel, threads, chunk, dtype, rtol):
    if backend != "numpy" and kernel != "numpy":
        pytest.skip("on CuPy the kernel is CuPy's, whatever is asked")
    be = get_backend(backend, dtype)
    runs = []
    for path in PATHS:
        flat_p, params = flat_views(be, seed=4)
        _, grads = flat_views(be)
        opt = Adam(params, grads, lr=0.01)
        step = stepper(opt, path, threads=threads, kernel=kernel)
        if chunk is not None and path == "fast":
            step.CHUNK = chunk  # small chunks: boundaries fall inside and between parameters
        rng = np.random.default_rng(5)
        for _ in range(20):
            set_grads(grads, rng)
            step.step()
        assert opt.t == 20
        if path == "fast" and backend == "numpy":
            # 104 elements in chunks of 7 or 16 take the threaded path when threads=2
            assert (step._pool is not None) == (threads == 2 and chunk is not None)
        runs.append((to_numpy(flat_p).copy(), snapshot(opt.m), snapshot(opt.v)))
    (p_f, m_f, v_f), (p_p, m_p, v_p) = runs
    np.testing.assert_allclose(p_f, p_p, rtol=rtol, atol=rtol)
    for k in SHAPES:
        np.testing.assert_allclose(m_f[k], m_p[k], rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(v_f[k], v_p[k], rtol=rtol, atol=rtol * 1e-2)
    # and the parameters really moved
    assert np.abs(p_p - to_numpy(flat_views(be, seed=4)[0])).min() > 0


def test_fast_adam_class_chunk_can_be_monkeypatched(monkeypatch):
    monkeypatch.setattr(FastAdam, "CHUNK", 5)
    be = get_backend("numpy", "float64")
    results = []
    for path in PATHS:
        flat_p, params = flat_views(be, seed=6)
        _, grads = flat_views(be)
        step = stepper(Adam(params, grads, lr=0.02), path, threads=2, kernel="numpy")
        rng = np.random.default_rng(7)
        for _ in range(10):
            set_grads(grads, rng)
            step.step()
        if path == "fast":
            assert step._pool is not None and step._scratch.shape == (2, 5)  # the class's CHUNK
        results.append(flat_p.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


def test_fast_optimizer_is_fast_adam_on_a_models_params(backend):
    model = make_model(backend, 6, 4)
    opt = Adam(model.params, model.grads)
    fast = fast_optimizer(opt, threads=2)
    assert isinstance(fast, FastAdam) and fast.opt is opt and fast.threads == 2
    assert fast_optimizer(opt).threads is None
    p, g, m, v = flat_state(opt)
    assert p is model.flat_params and g is model.flat_grads
    assert all(a is b for a, b in zip((fast.p, fast.g, fast.m, fast.v), (p, g, m, v)))


def assert_not_fast(opt, word="flat buffer"):
    """Neither the engine nor fast_optimizer takes opt: fast_optimizer gives opt itself."""
    assert flat_state(opt) is None
    assert fast_optimizer(opt) is opt
    with pytest.raises(ConfigError, match=word):
        FastAdam(opt)


def test_adam_on_separate_arrays_falls_back_to_the_reference(backend):
    be = get_backend(backend, "float64")
    params, grads = separate_arrays(be, 8), separate_arrays(be, 9)
    opt = Adam(params, grads, lr=0.01)
    assert_not_fast(opt)
    p0 = snapshot(params)
    fast_optimizer(opt).step()
    assert opt.t == 1
    for k in SHAPES:
        np.testing.assert_allclose(p0[k] - to_numpy(params[k]), 0.01 * np.sign(to_numpy(grads[k])),
                                   rtol=1e-5)


def test_fast_adam_needs_params_grads_and_moments_flat_in_the_same_order():
    be = get_backend("numpy", "float64")
    _, params = flat_views(be, seed=10)
    _, grads = flat_views(be)
    assert isinstance(fast_optimizer(Adam(params, grads)), FastAdam)  # the layout it runs
    assert_not_fast(Adam(params, separate_arrays(be, 11)))
    assert_not_fast(Adam(separate_arrays(be, 11), grads))
    # views of one buffer, but listed out of memory order
    reordered = dict(reversed(list(params.items())))
    assert_not_fast(Adam(reordered, dict(reversed(list(grads.items())))))
    # part of a buffer is not the whole buffer
    partial = {k: v for k, v in params.items() if k != "decoder.b"}
    assert_not_fast(Adam(partial, {k: v for k, v in grads.items() if k != "decoder.b"}))
    # moments that are not views of one buffer (replaced after construction)
    for slot in ("m", "v"):
        opt = Adam(params, grads)
        setattr(opt, slot, {k: np.zeros(a.shape) for k, a in params.items()})
        assert_not_fast(opt)


def test_fast_adam_runs_only_an_adam(backend):
    model = make_model(backend, 6, 4)
    assert_not_fast(SGD(model.params, model.grads), "Adam")
    if backend == "numpy":
        assert_not_fast(LBFGS(model.flat_params, model.flat_grads), "Adam")


@pytest.mark.parametrize("path", PATHS)
def test_adam_state_is_float32_for_float32_params(backend, path):
    model = make_model(backend, 6, 4, dtype="float32")
    opt = Adam(model.params, model.grads, lr=0.01)
    model.loss_and_grads(random_inputs(3, 6))
    stepper(opt, path).step()
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


# ----------------------------------------------------------------------------- saved state
# An optimizer's state for a checkpoint: minisae.files.state (optimizer_state, restore and the
# checks that save and load both run, check_state).

ROUND_TRIPS = {  # id: (make, the path before saving, the path after restoring)
    "adam-fast": (lambda p, g: Adam(p, g, lr=0.01), "fast", "fast"),
    "adam-reference": (lambda p, g: Adam(p, g, lr=0.01), "reference", "reference"),
    "adam-fast-then-reference": (lambda p, g: Adam(p, g, lr=0.01), "fast", "reference"),
    "adam-reference-then-fast": (lambda p, g: Adam(p, g, lr=0.01), "reference", "fast"),
    "sgd": (lambda p, g: SGD(p, g, lr=0.05, momentum=0.8), "reference", "reference"),
}


@pytest.mark.parametrize("trip", list(ROUND_TRIPS))
def test_optimizer_state_round_trip_continues_identically(backend, trip):
    make, before, after = ROUND_TRIPS[trip]
    be = get_backend(backend, "float64")
    _, pa = flat_views(be, seed=16)
    _, ga = flat_views(be)
    a = make(pa, ga)
    rng = np.random.default_rng(17)
    grads = [rng.normal(size=N) for _ in range(10)]

    def step(opt, g_views, g, path):
        start = 0
        for name, view in g_views.items():
            view[...] = be.asarray(g[start:start + view.size].reshape(view.shape))
            start += view.size
        stepper(opt, path).step()

    for g in grads[:5]:
        step(a, ga, g, before)
    state = S.optimizer_state(a)
    saved_params = snapshot(pa)
    kind = type(a).__name__
    assert state["t"] == 5 and state["lr"] == a.lr
    assert set(state) == set(S.SCALARS[kind]) | set(S.slot_keys(kind, SHAPES))
    slots = {k.split(".")[0] for k in state if k not in S.SCALARS[kind]}
    assert slots == ({"m", "v"} if isinstance(a, Adam) else {"u"}) == set(type(a).SLOTS)
    for k, v in state.items():
        if k not in S.SCALARS[kind]:
            assert isinstance(v, np.ndarray) and v.dtype == np.float64
    S.check_state(kind, state, SHAPES, "float64")  # what save and load check: it passes

    # a fresh optimizer on a copy of the parameters, restored from the saved state
    _, pb = flat_views(be)
    for k in SHAPES:
        pb[k][...] = be.asarray(saved_params[k])
    _, gb = flat_views(be)
    b = make(pb, gb)
    slot_arrays = {slot: dict(getattr(b, slot)) for slot in type(b).SLOTS}
    S.restore(b, state)
    assert b.t == 5 and b.lr == a.lr
    for slot, arrays in slot_arrays.items():  # copied into b's own arrays, on its device
        assert all(getattr(b, slot)[k] is arrays[k] for k in SHAPES)
        for k in SHAPES:
            np.testing.assert_array_equal(to_numpy(arrays[k]), state[f"{slot}.{k}"])
    for g in grads[5:]:
        step(a, ga, g, after)
        step(b, gb, g, after)
    assert a.t == b.t == 10
    for k in SHAPES:
        np.testing.assert_array_equal(to_numpy(pa[k]), to_numpy(pb[k]))
    if before != after:  # and a run saved on one path, resumed on the other, is the same run
        _, pr = flat_views(be, seed=16)
        _, gr = flat_views(be)
        r = make(pr, gr)
        for g in grads:
            step(r, gr, g, "reference")
        for k in SHAPES:
            np.testing.assert_allclose(to_numpy(pa[k]), to_numpy(pr[k]), rtol=1e-12, atol=1e-14)
    # a fresh optimizer without the state takes a different path
    _, pc = flat_views(be)
    for k in SHAPES:
        pc[k][...] = be.asarray(saved_params[k])
    _, gc = flat_views(be)
    c = make(pc, gc)
    for g in grads[5:]:
        step(c, gc, g, after)
    assert not np.array_equal(to_numpy(pc["encoder.W"]), to_numpy(pa["encoder.W"]))


def test_optimizer_state_is_a_copy():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=18)
    _, g = flat_views(be, seed=19)
    opt = Adam(p, g)
    opt.step()
    state = S.optimizer_state(opt)
    state["m.encoder.W"][...] = 123.0
    assert not (opt.m["encoder.W"] == 123.0).any()
    other = Adam(p, g)
    S.restore(other, state)
    state["v.encoder.W"][...] = 7.0  # restore copies too
    assert not (other.v["encoder.W"] == 7.0).any()


def test_optimizer_settings_rebuild_the_optimizer():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=28)
    _, g = flat_views(be)
    for opt in (Adam(p, g, lr=0.02, betas=(0.8, 0.99), eps=1e-6), SGD(p, g, lr=0.3, momentum=0.5)):
        settings = S.optimizer_settings(opt)
        kind = settings.pop("type")
        assert kind == type(opt).__name__ and set(settings) == set(type(opt).SETTINGS)
        S.check_settings(kind, settings)
        if "betas" in settings:
            assert settings["betas"] == [0.8, 0.99]  # JSON: a list
            settings["betas"] = tuple(settings["betas"])
        twin = S.OPTIMIZERS[kind](p, g, **settings)
        assert all(getattr(twin, k) == getattr(opt, k) for k in settings)
    with pytest.raises(CheckpointError, match="betas must be two numbers"):
        S.check_settings("Adam", {"lr": 0.1, "betas": [0.9], "eps": 1e-8})
    with pytest.raises(CheckpointError, match="lr"):
        S.check_settings("Adam", {"lr": float("nan"), "betas": [0.9, 0.999], "eps": 1e-8})
    with pytest.raises(CheckpointError, match="momentum"):
        S.check_settings("SGD", {"lr": 0.1, "momentum": 1.0})
    with pytest.raises(CheckpointError, match="expected"):
        S.check_settings("SGD", {"lr": 0.1})


def test_check_state_errors():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=20)
    _, g = flat_views(be, seed=21)
    opt = Adam(p, g)
    opt.step()
    state = S.optimizer_state(opt)

    def check(s, kind="Adam", dtype="float64"):
        S.check_state(kind, s, SHAPES, dtype)

    check(state)
    missing = {k: v for k, v in state.items() if k != "v.decoder.b"}
    with pytest.raises(CheckpointError, match="lacks.*v.decoder.b"):
        check(missing)
    with pytest.raises(CheckpointError, match="unknown entries.*extra"):
        check(dict(state, extra=np.zeros(3)))
    wrong = dict(state, **{"m.encoder.W": np.zeros((2, 2))})
    with pytest.raises(CheckpointError, match=r"m.encoder.W.*\(9, 5\)"):
        check(wrong)
    with pytest.raises(CheckpointError, match="float32"):
        check(state, dtype="float32")  # the arrays must be in the model's dtype
    with pytest.raises(CheckpointError, match="lacks"):
        check(state, kind="SGD")  # an Adam state has no "u"
    nan = dict(state, **{"v.encoder.W": np.full((9, 5), np.nan)})
    with pytest.raises(CheckpointError, match="NaN"):
        check(nan)
    for bad in ({"t": "abc"}, {"t": -1}, {"t": 1.5}, {"t": 2**53},
                {"lr": 0.0}, {"lr": "x"}, {"lr": np.array("x")}, {"lr": float("nan")},
                {"lr": float("inf")}):
        with pytest.raises(CheckpointError, match="'t'|'lr'"):
            check(dict(state, **bad))
    check(dict(state, t=np.array(5), lr=np.array(0.5)))  # 0-d arrays, as a file holds them
    with pytest.raises(CheckpointError):
        check([("t", 1)])  # not a state at all
    with pytest.raises(CheckpointError, match="negative"):
        check(dict(state, **{"v.encoder.W": -np.ones((9, 5))}))
    check(dict(state, **{"m.encoder.W": -np.ones((9, 5))}))  # m may be negative
    with pytest.raises(CheckpointError, match="array"):
        check(dict(state, **{"m.decoder.b": [[1.0], [1.0, 2.0]]}))
    with pytest.raises(CheckpointError, match="array"):
        check(dict(state, **{"m.decoder.b": list(range(9))}))

    def checked_restore(opt, s):  # as load does: check the whole state, then copy it in
        check(s)
        S.restore(opt, s)

    fresh = Adam(p, g)
    before = snapshot(fresh.m)
    with pytest.raises(CheckpointError):  # nothing is half-restored
        checked_restore(fresh, dict(state, **{"v.decoder.b": np.full(9, np.inf)}))
    assert fresh.t == 0
    for k in SHAPES:
        np.testing.assert_array_equal(to_numpy(fresh.m[k]), before[k])


def test_restore_checks_the_numbers():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=29)
    _, g = flat_views(be, seed=30)
    opt = Adam(p, g)
    opt.step()
    state = S.optimizer_state(opt)
    for bad in ({"t": -1}, {"t": 1.5}, {"lr": 0.0}, {"lr": "x"}):
        with pytest.raises(CheckpointError, match="'t'|'lr'"):
            S.restore(Adam(p, g), dict(state, **bad))
    fresh = Adam(p, g)
    S.restore(fresh, dict(state, t=np.array(7.0), lr=np.array(0.25)))
    assert (fresh.t, fresh.lr) == (7, 0.25) and type(fresh.t) is int and type(fresh.lr) is float
    with pytest.raises(CheckpointError, match="cannot save an optimizer of type"):
        S.optimizer_state(object())


def test_restore_refusing_a_number_leaves_the_optimizer_alone():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=31)
    _, g = flat_views(be, seed=32)
    opt = Adam(p, g)
    for _ in range(3):
        opt.step()
    state = S.optimizer_state(opt)
    fresh = Adam(p, g, lr=0.01)
    with pytest.raises(CheckpointError, match="'lr'"):
        S.restore(fresh, dict(state, lr=-1.0))
    assert (fresh.t, fresh.lr) == (0, 0.01)


def test_check_belongs():
    model, other = make_model("numpy", 6, 4), make_model("numpy", 6, 4)
    for opt in (Adam(model.params, model.grads), SGD(model.params, model.grads),
                LBFGS(model.flat_params, model.flat_grads)):
        S.check_belongs(opt, model)
        with pytest.raises(CheckpointError, match="this model"):
            S.check_belongs(opt, other)


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


def test_fast_adam_threads_must_be_positive():
    be = get_backend("numpy", "float64")
    _, p = flat_views(be, seed=23)
    _, g = flat_views(be, seed=24)
    opt = Adam(p, g)
    for threads in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="threads"):
            FastAdam(opt, threads=threads)
        with pytest.raises(ConfigError, match="threads"):
            fast_optimizer(opt, threads=threads)
    assert FastAdam(opt, threads=2).threads == 2
    with pytest.raises(TypeError):
        Adam(p, g, threads=2)  # the reference has no threads (nor a fast switch)
    with pytest.raises(TypeError):
        Adam(p, g, fast=True)


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
               {"lr": 10**400}):
        with pytest.raises(ConfigError):
            Adam(m.params, m.grads, **kw)
    for threads in (1.5, 0, False):
        with pytest.raises(ConfigError):
            FastAdam(Adam(m.params, m.grads), threads=threads)
    for momentum in (None, 1.0, -0.1, True):
        with pytest.raises(ConfigError, match="momentum"):
            SGD(m.params, m.grads, momentum=momentum)
