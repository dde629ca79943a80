"""The fast engine (minisae/fast/) gives the numbers of the reference path, and each path runs
when it should.

- minisae.fast.loss_and_grads(model, x) (minisae/fast/step.py) against the reference,
  model.loss_and_grads(x) (the layers, in model.py), for every valid output x loss x
  reduction; and its explicit fallback to the reference where `fused(model)` gives a reason;
- fast/kernels.py's fused passes against the functional.py functions they reproduce; on CuPy
  (where a GPU answers) these are the ElementwiseKernels;
- FastAdam(opt).step() against opt.step() (Adam's Algorithm 1), with each kernel (numba's
  fused loop, NumPy's chunked passes), in one and two threads, float32 and float64; FastAdam
  shares opt's t, m and v, so a run can change path midway;
- which code runs: the layers and Adam.step from model.loss_and_grads, opt.step(), the
  gradient check's default and fit(engine=Engine(fast=False)); the engine from
  minisae.fast.loss_and_grads, FastAdam, minisae.fast.check_model and fit's default.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minisae.fast
from conftest import COMBO_IDS, OPTION_COMBOS, make_model, random_inputs
from minisae import Adam, SparseAutoencoder, get_backend, to_numpy
from minisae import functional as F
from minisae.fast import FastAdam
from minisae.fast import adam as fast_adam
from minisae.fast import kernels as K
from minisae.fast import step as fast_step
from minisae.errors import ConfigError
from minisae.gradcheck import check_model
from minisae.layers import Dense
from minisae.training import Engine, fit

PARAM_NAMES = ["encoder.W", "encoder.b", "decoder.W", "decoder.b"]


def twins(backend, combo, dtype, seed=0, **kw):
    """Two models with the same weights: the first for the fast engine, the second for the
    reference."""
    n_inputs, n_hidden = kw.pop("n_inputs", 11), kw.pop("n_hidden", 6)
    fast = make_model(backend, n_inputs, n_hidden, combo=combo, dtype=dtype, seed=seed, **kw)
    reference = make_model(backend, n_inputs, n_hidden, combo=combo, dtype=dtype, seed=seed, **kw)
    rng = np.random.default_rng(seed + 100)
    for name, p in fast.params.items():
        p[...] = fast.backend.asarray(rng.uniform(-1.5, 1.5, size=p.shape))
    reference.flat_params[...] = fast.flat_params
    return fast, reference


def assert_same_loss(a, b, rtol, atol):
    assert a.names == b.names
    for part in ("total", "reconstruction", "sparsity", "weight_decay"):
        assert getattr(a, part) == pytest.approx(getattr(b, part), rel=rtol, abs=atol), part
    np.testing.assert_allclose(a.mean_activation, b.mean_activation, rtol=rtol, atol=atol)


def assert_same_step(fast, reference, x, rtol, atol):
    """The engine on `fast` and the reference on `reference`: the same loss and gradients."""
    assert minisae.fast.fused(fast) is None  # the fused step really runs
    a, b = minisae.fast.loss_and_grads(fast, x), reference.loss_and_grads(x)
    assert_same_loss(a, b, rtol, atol)
    for name in PARAM_NAMES:
        ga, gb = to_numpy(fast.grads[name]), to_numpy(reference.grads[name])
        assert ga.dtype == gb.dtype == fast.dtype
        np.testing.assert_allclose(ga, gb, rtol=rtol, atol=atol * max(1.0, np.abs(gb).max()),
                                   err_msg=name)


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-12, 1e-14), ("float32", 2e-5, 1e-6)])
def test_fast_model_matches_reference(backend, combo, dtype, rtol, atol):
    fast, reference = twins(backend, combo, dtype, sparsity_weight=0.8, weight_decay=0.01)
    for seed in (1, 2):  # twice: the second step reuses every buffer
        assert_same_step(fast, reference, random_inputs(9, 11, seed=seed), rtol, atol)


@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_fast_model_matches_reference_without_sparsity_or_decay(backend, combo):
    fast, reference = twins(backend, combo, "float64", sparsity_weight=0.0)
    assert_same_step(fast, reference, random_inputs(5, 11, seed=3), 1e-12, 1e-15)


def test_fast_model_matches_reference_with_a_saturated_unit(backend):
    fast, reference = twins(backend, OPTION_COMBOS[0], "float64", sparsity_weight=1.0)
    for m in (fast, reference):
        m.params["encoder.W"][:, 0] = 0.0
        m.params["encoder.b"][0] = -60.0  # rho_hat_0 == 0: clipped, its KL gradient is 0
    assert_same_step(fast, reference, random_inputs(4, 11, seed=4), 1e-12, 1e-15)


@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_fast_model_follows_a_change_of_batch_size(backend, combo):
    fast, reference = twins(backend, combo, "float64")
    for batch in (7, 3, 7, 1):
        assert_same_step(fast, reference, random_inputs(batch, 11, seed=batch), 1e-12, 1e-14)


@settings(max_examples=40, deadline=None)
@given(combo=st.sampled_from(OPTION_COMBOS), batch=st.integers(1, 8), n=st.integers(1, 8),
       n_hidden=st.integers(1, 8), rho=st.floats(0.01, 0.5), beta=st.floats(0.0, 5.0),
       lam=st.floats(0.0, 0.1), seed=st.integers(0, 2**16))
def test_fast_model_matches_reference_property(combo, batch, n, n_hidden, rho, beta, lam, seed):
    fast, reference = twins("numpy", combo, "float64", seed=seed, n_inputs=n, n_hidden=n_hidden,
                            sparsity_target=rho, sparsity_weight=beta, weight_decay=lam)
    assert_same_step(fast, reference, random_inputs(batch, n, seed=seed), 1e-11, 1e-13)


def test_fast_step_leaves_the_batch_and_the_parameters_alone(backend):
    fast, _ = twins(backend, OPTION_COMBOS[0], "float64", weight_decay=0.1)
    x = fast.backend.asarray(random_inputs(6, 11, seed=5))
    x0, p0 = to_numpy(x).copy(), to_numpy(fast.flat_params).copy()
    minisae.fast.loss_and_grads(fast, x, validate=False)
    np.testing.assert_array_equal(to_numpy(x), x0)
    np.testing.assert_array_equal(to_numpy(fast.flat_params), p0)


def test_fast_step_checks_its_input_as_the_reference_does():
    model = make_model("numpy", 5, 3)
    bad = random_inputs(2, 5)
    bad[0, 0] = np.nan
    for compute in (model.loss_and_grads, lambda x: minisae.fast.loss_and_grads(model, x)):
        with pytest.raises(ValueError, match="NaN"):
            compute(bad)
        with pytest.raises(ValueError, match="n_inputs|columns|shape"):
            compute(random_inputs(2, 4))


# ----------------------------------------------------------------------------- which path runs

class Counter:
    """Counts calls of a function or method, then calls it."""

    def __init__(self, monkeypatch, owner, name):
        self.calls = 0
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def engine_must_not_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the reference path reached the fast engine")

    monkeypatch.setattr(fast_step, "_loss_and_grads", refuse)


@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_the_model_runs_the_layers_and_fast_loss_and_grads_the_engine(monkeypatch, combo):
    dense = Counter(monkeypatch, Dense, "backward")
    engine = Counter(monkeypatch, fast_step, "_loss_and_grads")
    model = make_model("numpy", 5, 3, combo=combo)
    model.loss_and_grads(random_inputs(2, 5))
    assert (dense.calls, engine.calls) == (2, 0)  # the decoder's and the encoder's
    minisae.fast.loss_and_grads(model, random_inputs(2, 5))
    assert (dense.calls, engine.calls) == (2, 1)
    model.loss_and_grads(random_inputs(2, 5))     # and the model is still the reference
    assert (dense.calls, engine.calls) == (4, 1)


@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_model_loss_and_grads_never_reaches_the_engine(monkeypatch, combo):
    # (Replaces the check that a model's `fast` switch was restored: there is no switch, the
    # model is always the reference.)
    model = make_model("numpy", 5, 3, combo=combo, weight_decay=0.01)
    x = random_inputs(3, 5)
    expected = model.loss_and_grads(x).total
    minisae.fast.loss_and_grads(model, x)  # the engine has run on this model: buffers exist
    assert model in fast_step._BUFFERS
    engine_must_not_run(monkeypatch)
    assert model.loss_and_grads(x).total == expected
    model.loss(x), model.encode(x), model.reconstruct(x)
    assert all(r.ok for r in check_model(model, x))
    with pytest.raises(AssertionError, match="reached the fast engine"):
        minisae.fast.loss_and_grads(model, x)  # the patch is in force


def test_fast_loss_and_grads_falls_back_where_fused_gives_a_reason(monkeypatch):
    fast, reference = twins("numpy", OPTION_COMBOS[0], "float64", sparsity_weight=0.5,
                            weight_decay=0.01)
    reasons = []

    def not_fused(model):
        reasons.append(model)
        return "no fused step for this model (a test)"

    monkeypatch.setattr(fast_step, "fused", not_fused)  # where loss_and_grads asks
    ref = Counter(monkeypatch, SparseAutoencoder, "loss_and_grads")
    engine = Counter(monkeypatch, fast_step, "_loss_and_grads")
    x = random_inputs(4, 11, seed=6)
    a = minisae.fast.loss_and_grads(fast, x)
    assert (ref.calls, engine.calls) == (1, 0) and reasons == [fast]
    b = reference.loss_and_grads(x)
    assert ref.calls == 2
    assert_same_loss(a, b, 0.0, 0.0)  # the very same computation: the same bits
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(fast.grads[name], reference.grads[name])


def test_fast_loss_and_grads_falls_back_on_a_backend_it_does_not_run(monkeypatch):
    monkeypatch.setenv("MINISAE_TEST_BACKEND", "1")
    pytest.importorskip("array_api_strict")
    model = make_model("array-api-strict", 5, 3, weight_decay=0.01)
    reason = minisae.fast.fused(model)
    assert isinstance(reason, str) and "array-api-strict" in reason
    engine_must_not_run(monkeypatch)
    ref = Counter(monkeypatch, SparseAutoencoder, "loss_and_grads")
    x = random_inputs(4, 5, seed=7)
    a = minisae.fast.loss_and_grads(model, x)
    grads = {k: to_numpy(g).copy() for k, g in model.grads.items()}
    b = model.loss_and_grads(x)
    assert ref.calls == 2
    assert_same_loss(a, b, 0.0, 0.0)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(grads[name], to_numpy(model.grads[name]))
    # and Adam on such arrays steps by itself: no FastAdam for it
    opt = Adam(model.params, model.grads)
    assert minisae.fast.fast_optimizer(opt) is opt


def test_adam_step_is_the_reference_and_fast_adam_the_engine(monkeypatch):
    reference = Counter(monkeypatch, Adam, "step")
    engine = Counter(monkeypatch, FastAdam, "step")
    model = make_model("numpy", 5, 3)
    model.loss_and_grads(random_inputs(2, 5))
    opt = Adam(model.params, model.grads)
    opt.step()
    assert (reference.calls, engine.calls) == (1, 0)
    FastAdam(opt).step()
    assert (reference.calls, engine.calls) == (1, 1)  # the engine does not call Adam.step
    stepper = minisae.fast.fast_optimizer(opt)
    assert isinstance(stepper, FastAdam) and stepper.opt is opt
    stepper.step()
    assert (reference.calls, engine.calls) == (1, 2)
    assert opt.t == 3


@pytest.mark.parametrize("fast", [False, True])
def test_fit_runs_the_path_it_is_told(monkeypatch, fast):
    dense = Counter(monkeypatch, Dense, "backward")
    engine = Counter(monkeypatch, fast_step, "_loss_and_grads")
    adam = Counter(monkeypatch, Adam, "step")
    fast_adam_steps = Counter(monkeypatch, FastAdam, "step")
    model = make_model("numpy", 5, 3)
    opt = Adam(model.params, model.grads, lr=0.01)
    fit(model, opt, random_inputs(8, 5), epochs=2, batch_size=4, progress=False,
        engine=Engine(fast=fast, threads=1))
    steps = 2 * 2
    calls = (dense.calls, engine.calls, adam.calls, fast_adam_steps.calls)
    assert calls == ((0, steps, 0, steps) if fast else (2 * steps, 0, steps, 0))
    assert opt.t == steps


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_gradient_check_runs_the_path_it_names(monkeypatch, path):
    dense = Counter(monkeypatch, Dense, "backward")
    engine = Counter(monkeypatch, fast_step, "_loss_and_grads")
    model = make_model("numpy", 3, 2)
    x = random_inputs(2, 3)
    p0 = to_numpy(model.flat_params).copy()
    if path == "reference":
        rows = check_model(model, x)
    else:
        rows = minisae.fast.check_model(model, x)
    assert all(r.ok for r in rows)
    n_params = model.n_params
    calls = 1 + 2 * n_params  # the analytic pass, then two per parameter element
    if path == "reference":
        assert (dense.calls, engine.calls) == (2 * calls, 0)
    else:
        assert (dense.calls, engine.calls) == (0, calls)
    np.testing.assert_array_equal(to_numpy(model.flat_params), p0)  # every element restored


def test_gradient_check_of_a_given_function_runs_that_function(monkeypatch):
    engine = Counter(monkeypatch, fast_step, "_loss_and_grads")
    model = make_model("numpy", 3, 2)
    rows = check_model(model, random_inputs(2, 3), loss_and_grads=minisae.fast.loss_and_grads)
    assert all(r.ok for r in rows) and engine.calls == 1 + 2 * model.n_params


# ----------------------------------------------------------------------------- kernels

def arrays(be, *shapes, seed=0, low=-3.0, high=3.0):
    rng = np.random.default_rng(seed)
    return [be.asarray(rng.uniform(low, high, size=s)) for s in shapes]


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-14), ("float32", 2e-6)])
def test_bias_sigmoid_matches_reference(backend, dtype, rtol):
    be = get_backend(backend, dtype)
    z, b = arrays(be, (7, 5), (5,), seed=1)
    expected = to_numpy(F.sigmoid(z + b))
    out = K.bias_sigmoid_(z, b)
    assert out is z and out.dtype == be.dtype
    np.testing.assert_allclose(to_numpy(z), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("output", ["sigmoid", "linear"])
@pytest.mark.parametrize("reduction", ["mean", "halfsum"])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_mse_heads_match_reference(backend, output, reduction, dtype, rtol):
    be = get_backend(backend, dtype)
    z, b = arrays(be, (6, 9), (9,), seed=2, low=-8.0, high=8.0)
    (x,) = arrays(be, (6, 9), seed=3, low=0.0, high=1.0)
    scale = F.reduction_scale(reduction, x.shape)
    y = F.sigmoid(z + b) if output == "sigmoid" else z + b
    dy = F.mse_backward(y, x, reduction)
    expected_dz = to_numpy(F.sigmoid_backward(dy, y) if output == "sigmoid" else dy)
    expected_loss = float(F.mse(y, x, reduction))
    head = K.sigmoid_mse_head_ if output == "sigmoid" else K.linear_mse_head_
    dz = be.zeros(z.shape)
    squared_error = head(z, b, x, scale, dz)
    assert float(squared_error) * scale == pytest.approx(expected_loss, rel=rtol)
    assert dz.dtype == be.dtype
    np.testing.assert_allclose(to_numpy(dz), expected_dz, rtol=rtol * 10,
                               atol=rtol * np.abs(expected_dz).max())


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_bce_head_matches_reference(backend, dtype, rtol):
    be = get_backend(backend, dtype)
    z, b = arrays(be, (6, 9), (9,), seed=4, low=-30.0, high=30.0)
    (x,) = arrays(be, (6, 9), seed=5, low=0.0, high=1.0)
    a = z + b
    expected_loss = float(F.bce_with_logits(a, x))
    expected_dz = to_numpy(F.bce_with_logits_backward(F.sigmoid(a), x))
    dz = be.zeros(z.shape)
    loss_sum = K.sigmoid_bce_head_(z, b, x, dz, work=be.zeros(z.shape))
    assert float(loss_sum) / x.size == pytest.approx(expected_loss, rel=rtol)
    np.testing.assert_allclose(to_numpy(dz), expected_dz, rtol=rtol * 10,
                               atol=rtol * np.abs(expected_dz).max())


@pytest.mark.parametrize("with_row", [True, False])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-14), ("float32", 2e-6)])
def test_sigmoid_backward_in_place_matches_reference(backend, with_row, dtype, rtol):
    be = get_backend(backend, dtype)
    dy, row = arrays(be, (5, 4), (4,), seed=6)
    (y,) = arrays(be, (5, 4), seed=7, low=0.0, high=1.0)
    expected = to_numpy(F.sigmoid_backward(dy + row if with_row else dy, y))
    before = to_numpy(y).copy()
    out = K.sigmoid_backward_(dy, y, row if with_row else None, work=be.zeros(y.shape))
    assert out is dy
    np.testing.assert_allclose(to_numpy(dy), expected, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(to_numpy(y), before)


def test_weight_decay_gradient_matches_reference(backend):
    # (The fast engine's weight-decay *value* now comes from the model's losses.Objective, as the
    # reference's does: it is compared in test_fast_model_matches_reference.)
    be = get_backend(backend, "float64")
    W1, dW = arrays(be, (4, 3), (4, 3), seed=8)
    expected = to_numpy(dW + F.weight_decay_backward(W1, 0.3))
    out = K.add_weight_decay_grad_(dW, W1, 0.3, work=be.zeros(W1.shape))
    assert out is dW
    np.testing.assert_allclose(to_numpy(dW), expected, rtol=1e-14)
    before = to_numpy(dW).copy()
    K.add_weight_decay_grad_(dW, W1, 0.0)  # lambda = 0: nothing to add, no scratch needed
    np.testing.assert_array_equal(to_numpy(dW), before)


# ----------------------------------------------------------------------------- Adam

def has_numba():
    return fast_adam.numba_adam() is not None


KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not has_numba(), reason="numba is not installed (the optional `fast` extra)"))]


def adam_runs(kernel, threads, dtype="float32", steps=3):
    """(p, m, v) after `steps` updates of FastAdam(opt) with `kernel` and of opt.step() (the
    reference), on a model big enough for several default-size chunks (and the threaded
    split)."""
    runs = []
    for fast in (True, False):
        model = make_model("numpy", n_inputs=784, n_hidden=700, dtype=dtype, seed=6)
        assert model.n_params > 4 * FastAdam.CHUNK
        opt = Adam(model.params, model.grads, lr=0.01)
        stepper = opt
        if fast:
            stepper = FastAdam(opt, threads=threads, kernel=kernel)
            assert stepper.kernel == kernel and stepper.threads == threads
        rng = np.random.default_rng(7)
        for _ in range(steps):
            model.flat_grads[...] = rng.normal(size=model.n_params)
            stepper.step()
        assert opt.t == steps
        if fast and threads > 1:
            assert stepper._pool is not None  # the threaded split ran
        runs.append(tuple(np.concatenate([a.ravel() for a in arrays.values()]).copy()
                          for arrays in (model.params, opt.m, opt.v)))
    return runs


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_adam_at_its_default_chunk_matches_the_reference(kernel, threads):
    (p, m, v), (p_ref, m_ref, v_ref) = adam_runs(kernel, threads)
    np.testing.assert_allclose(p, p_ref, rtol=2e-5, atol=2e-6)
    # m and v take the reference's operations in its order: the same bits
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(v, v_ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fast_adam_in_float64_matches_the_reference(kernel):
    (p, m, v), (p_ref, m_ref, v_ref) = adam_runs(kernel, 1, dtype="float64", steps=4)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(v, v_ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fast_adam_updates_the_optimizers_own_state(backend, kernel):
    if backend != "numpy" and kernel == "numba":
        pytest.skip("on CuPy the kernel is CuPy's")
    model = make_model(backend, 6, 4)
    opt = Adam(model.params, model.grads, lr=0.01)
    m, v = dict(opt.m), dict(opt.v)          # the arrays themselves
    fast = FastAdam(opt, kernel=kernel)
    model.loss_and_grads(random_inputs(3, 6))
    g = to_numpy(model.flat_grads).copy()
    fast.step()
    assert opt.t == 1
    assert all(opt.m[k] is m[k] and opt.v[k] is v[k] for k in PARAM_NAMES)  # not replaced
    flat_m = np.concatenate([to_numpy(a).ravel() for a in m.values()])
    flat_v = np.concatenate([to_numpy(a).ravel() for a in v.values()])
    np.testing.assert_array_equal(flat_m, (1 - 0.9) * g)      # written into opt's own arrays
    np.testing.assert_array_equal(flat_v, (1 - 0.999) * g * g)
    fast.step()
    assert opt.t == 2
    opt.lr = 0.0001   # it reads the optimizer's settings at every step
    p = to_numpy(model.flat_params).copy()
    fast.step()
    assert opt.t == 3
    # the same gradient at every step: m_hat = g and v_hat = g^2, so the step is
    # lr g / (|g| + eps), with the new lr
    moved = p - to_numpy(model.flat_params)
    np.testing.assert_allclose(moved, 0.0001 * g / (np.abs(g) + 1e-8), rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_run_can_change_path_midway(kernel):
    """Steps on FastAdam, then on opt.step(), then on FastAdam again: the run of an
    optimizer that only ever took opt.step(), within rounding."""
    runs = []
    for plan in (["fast"] * 3 + ["reference"] * 3 + ["fast"] * 2, ["reference"] * 8):
        model = make_model("numpy", 9, 5, seed=3)
        opt = Adam(model.params, model.grads, lr=0.02)
        fast = FastAdam(opt, kernel=kernel)
        for i, path in enumerate(plan):
            x = random_inputs(6, 9, seed=10 + i)
            if path == "fast":
                minisae.fast.loss_and_grads(model, x)
                fast.step()
            else:
                model.loss_and_grads(x)
                opt.step()
        assert opt.t == 8
        runs.append((to_numpy(model.flat_params).copy(),
                     np.concatenate([a.ravel() for a in opt.m.values()]),
                     np.concatenate([a.ravel() for a in opt.v.values()])))
    (p, m, v), (p_ref, m_ref, v_ref) = runs
    assert np.abs(p - to_numpy(make_model("numpy", 9, 5, seed=3).flat_params)).min() > 0
    np.testing.assert_allclose(p, p_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m, m_ref, rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(v, v_ref, rtol=1e-10, atol=1e-18)


def test_fast_adam_picks_numba_where_installed_and_numpy_when_switched_off(monkeypatch):
    model = make_model("numpy", 5, 3)
    opt = Adam(model.params, model.grads)
    expected = "numba" if has_numba() else "numpy"
    assert FastAdam(opt).kernel == expected
    assert minisae.fast.fast_optimizer(opt).kernel == expected
    monkeypatch.setattr(minisae.fast.kernels, "_NUMBA", {})
    monkeypatch.setenv("MINISAE_NUMBA", "0")
    assert fast_adam.numba_adam() is None
    assert FastAdam(opt).kernel == "numpy"
    with pytest.raises(ConfigError, match="numba"):
        FastAdam(opt, kernel="numba")
    with pytest.raises(ConfigError, match="kernel"):
        FastAdam(opt, kernel="fortran")


# ----------------------------------------------------------------------------- TopK's sparse products

@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_topk_sparse_products_match_the_dense_ones_and_the_reference(monkeypatch, activation):
    from minisae.fast import sparse, step
    if sparse.kernels() is None:
        pytest.skip("numba is not installed: the engine keeps the dense products")
    x = np.random.default_rng(3).random((37, 30))
    monkeypatch.setattr(step, "SPARSE_RATIO", 0)  # the sparse products at this small size too
    results = {}
    for name, kernels in (("sparse", sparse.kernels()), ("dense", None)):
        monkeypatch.setattr(step, "sparse_kernels", lambda k=kernels: k)
        model = make_model("numpy", 30, 50, combo=("linear", "mse", "mean"), sparsity="topk",
                           k=6, hidden_activation=activation, dtype="float64", seed=2)
        calls = []
        if kernels is not None:
            monkeypatch.setattr(step, "sparse_kernels", lambda k=kernels: (
                calls.append(1), k)[1])
        loss = minisae.fast.loss_and_grads(model, x)
        results[name] = (loss.total, to_numpy(model.flat_grads).copy())
        if kernels is not None:
            assert calls, "the sparse kernels were not used"
        reference = model.loss_and_grads(x).total, to_numpy(model.flat_grads).copy()
        np.testing.assert_allclose(results[name][1], reference[1], rtol=1e-10, atol=1e-13)
        assert results[name][0] == pytest.approx(reference[0], rel=1e-12)
    np.testing.assert_allclose(results["sparse"][1], results["dense"][1], rtol=1e-10,
                               atol=1e-13)


def test_topk_takes_the_sparse_products_where_there_are_enough_units_per_code(monkeypatch):
    """Sparse where the units >= SPARSE_RATIO * k * BLAS's threads (the run's policy's count,
    or every core outside a run), dense below: the same choice for the same run."""
    from minisae.fast import sparse, step
    from minisae.fast.threads import thread_limits
    if sparse.kernels() is None:
        pytest.skip("numba is not installed: the engine keeps the dense products")
    cfg = make_model("numpy", 6, 100, combo=("linear", "mse", "mean"), sparsity="topk", k=4,
                     hidden_activation="relu").config
    enough = step.SPARSE_RATIO * 4  # units for one thread
    monkeypatch.setattr(step, "available_cores", lambda: 2)
    assert step._sparse_topk(cfg, True, 2 * enough) is sparse.kernels()
    assert step._sparse_topk(cfg, True, 2 * enough - 1) is None
    with thread_limits(1, 6, 100, 10) as policy:
        assert policy.threads == 1
        assert step._sparse_topk(cfg, True, enough) is sparse.kernels()
        assert step._sparse_topk(cfg, True, enough - 1) is None
    assert step._sparse_topk(cfg, False, 10**6) is None  # CuPy: its dense products


def test_tied_topk_keeps_the_dense_products():
    from minisae.fast import step
    cfg = make_model("numpy", 6, 5, combo=("linear", "mse", "mean"), sparsity="topk", k=2,
                     hidden_activation="relu", tied_weights=True).config
    assert step._sparse_topk(cfg, True, 10**6) is None
    assert step._sparse_topk(cfg, False, 10**6) is None


@pytest.mark.parametrize("block_bytes", [1, 4 * 7 * 3, 1 << 30])
def test_the_sigmoid_head_gives_the_same_numbers_block_by_block(monkeypatch, block_bytes):
    """The head runs over blocks of rows (kernels.row_blocks) so that its passes stay in the
    cache: dz is the same to the bit whatever the blocks, the sum the same to rounding."""
    from minisae.fast import kernels
    monkeypatch.setattr(kernels, "_float32_loops", lambda: None)  # NumPy's passes, not numba's
    rng = np.random.default_rng(0)
    z, b = rng.standard_normal((50, 7)).astype(np.float32), rng.random(7).astype(np.float32)
    x = rng.random((50, 7)).astype(np.float32)
    whole_dz = np.empty_like(z)
    whole = kernels._sigmoid_mse_block(z.copy(), b, x, 0.3, whole_dz)
    monkeypatch.setattr(kernels, "BLOCK_BYTES", block_bytes)
    assert sum(r.stop - r.start if r.stop <= 50 else 50 - r.start
               for r in kernels.row_blocks(z)) == 50
    dz = np.empty_like(z)
    assert kernels.sigmoid_mse_head_(z.copy(), b, x, 0.3, dz) == pytest.approx(whole, rel=1e-6)
    np.testing.assert_array_equal(dz, whole_dz)


# ----------------------------------------------------------------------------- compiled float32 loops

def float32_loops():
    loops = K._float32_loops()
    if loops is None:
        pytest.skip("numba is not installed: the engine keeps NumPy's passes")
    return loops


def ulps(values, a):
    """|values - tanh(a)| in units in the last place of float64's tanh(a) rounded to float32."""
    exact = np.tanh(a.astype(np.float64))
    return np.abs(values - exact) / np.spacing(np.abs(exact).astype(np.float32))


def test_the_rational_tanh_is_within_a_few_units_in_the_last_place():
    """kernels._tanh_f32 on every 2^-17 step of [-10, 10] in float32 (2.6 million numbers):
    within 6 units in the last place of the exact tanh, 1 on average (NumPy's own float32
    tanh, measured here: 1.4 and 0.4), odd, and +-1, NaN, +-0 where tanh gives them."""
    tanh = float32_loops()[2]
    a = (np.arange(-10 * 2**17, 10 * 2**17 + 1) / 2**17).astype(np.float32)
    out = np.empty_like(a)
    tanh(a, out)
    error = ulps(out, a)
    assert error.max() <= 6 and error.mean() <= 1.0, (error.max(), error.mean())
    np.testing.assert_array_equal(out[::-1], -out)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 8.0, -8.0, 1e30], np.float32)
    tanh(special, out[:8])
    np.testing.assert_array_equal(out[:8], [np.nan, 1, -1, 0, 0, 1, -1, 1])
    assert np.signbit(out[4])


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), n=st.integers(1, 40), spread=st.floats(0.1, 30.0),
       scale=st.floats(1e-4, 10.0), seed=st.integers(0, 2**16))
def test_the_compiled_float32_sigmoid_head_is_as_close_to_exact_as_numpys(batch, n, spread,
                                                                         scale, seed):
    """The float32 loop (one pass, rational tanh) and NumPy's float32 passes against the head
    computed in float64 from the same float32 inputs. The loop's error is the passes' size
    (four times theirs) plus what the rational tanh adds: its error (5.4 units in the last
    place at most) reaches e = y - x halved, and 1 - t^2 doubled, where t is near 1 is
    where the error counts: at most 12 units of float32's last place times |k e| for dz,
    |e| for the squared error's terms."""
    loops = float32_loops()
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((batch, n)) * spread).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.random((batch, n)).astype(np.float32)
    exact_dz = np.empty((batch, n))
    z64, b64, x64 = z.astype(np.float64), b.astype(np.float64), x.astype(np.float64)
    exact = K._sigmoid_mse_block(z64.copy(), b64, x64, scale, exact_dz)
    e = np.abs(F.sigmoid(z64 + b64) - x64)  # |y - x|, exact
    passes_dz, loop_dz = np.empty_like(z), np.empty_like(z)
    passes = K._sigmoid_mse_block(z.copy(), b, x, scale, passes_dz)
    loop = loops[0](z.copy(), b, x, np.float32(0.5 * scale), loop_dz)
    eps = np.finfo(np.float32).eps
    assert abs(loop - exact) <= 4 * abs(passes - exact) + 8 * eps * exact + \
        12 * eps * e.sum() + 1e-30
    tanh_share = 12 * eps * 0.5 * scale * e
    assert (np.abs(loop_dz - exact_dz) <= 4 * np.abs(passes_dz - exact_dz).max() +
            8 * eps * np.abs(exact_dz) + tanh_share + 1e-30).all()


def test_the_float32_sigmoid_head_and_layer_run_compiled_and_keep_nan(monkeypatch):
    """In float32 the head and the hidden sigmoid are numba's loops where numba is installed
    (the same numbers as calling the loop), NumPy's passes in float64 and with numba off; a
    NaN in z stays NaN in dz, in the loss and in the codes, as it does in NumPy's passes."""
    loops = float32_loops()
    rng = np.random.default_rng(1)
    z, b = rng.standard_normal((6, 5)).astype(np.float32), rng.random(5).astype(np.float32)
    x = rng.random((6, 5)).astype(np.float32)
    dz, expected_dz = np.empty_like(z), np.empty_like(z)
    expected = loops[0](z.copy(), b, x, np.float32(0.15), expected_dz)
    assert K.sigmoid_mse_head_(z.copy(), b, x, 0.3, dz) == expected
    np.testing.assert_array_equal(dz, expected_dz)
    h = z.copy()
    loops[1](h, b)
    np.testing.assert_array_equal(K.bias_sigmoid_(z.copy(), b), h)
    np.testing.assert_allclose(h, F.sigmoid(z.astype(np.float64) + b), rtol=2e-7, atol=0)
    bad = z.copy()
    bad[2, 3] = np.nan
    assert np.isnan(K.sigmoid_mse_head_(bad.copy(), b, x, 0.3, dz))
    assert np.isnan(dz[2, 3]) and np.isfinite(np.delete(dz.ravel(), 2 * 5 + 3)).all()
    assert np.isnan(K.bias_sigmoid_(bad.copy(), b)[2, 3])
    monkeypatch.setattr(K, "_NUMBA", {})
    monkeypatch.setenv("MINISAE_NUMBA", "0")
    assert K._float32_loops() is None
    dz_passes = np.empty_like(z)
    assert K.sigmoid_mse_head_(z.copy(), b, x, 0.3, dz_passes) == \
        pytest.approx(K._sigmoid_mse_block(z.copy(), b, x, 0.3, expected_dz), rel=1e-6)
    np.testing.assert_array_equal(dz_passes, expected_dz)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_row", [True, False])
def test_the_compiled_sigmoid_backward_is_numpys_passes_to_the_bit(monkeypatch, dtype, with_row):
    """sigmoid_backward_'s loop does the passes' operations in their order, without fast-math:
    the same bits as NumPy's passes, in float32 and float64."""
    rng = np.random.default_rng(2)
    dy, y = rng.standard_normal((7, 9)).astype(dtype), rng.random((7, 9)).astype(dtype)
    dy[0, :3] = -0.0  # no row leaves -0.0 as it is, as the passes do
    row = rng.standard_normal(9).astype(dtype) if with_row else None
    compiled = K.sigmoid_backward_(dy.copy(), y, row, np.empty_like(y))
    monkeypatch.setattr(K, "_NUMBA", {})
    monkeypatch.setenv("MINISAE_NUMBA", "0")
    passes = K.sigmoid_backward_(dy.copy(), y, row, np.empty_like(y))
    assert compiled.dtype == passes.dtype == dtype
    np.testing.assert_array_equal(compiled, passes)
    np.testing.assert_array_equal(np.signbit(compiled), np.signbit(passes))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_linear_head_gives_the_passes_dz(monkeypatch, dtype):
    """linear_mse_head_'s loop: dz = ((z + b) - x) k as NumPy's passes compute it, the squared
    error summed in another order (to rounding)."""
    rng = np.random.default_rng(3)
    z, b = rng.standard_normal((13, 21)).astype(dtype), rng.random(21).astype(dtype)
    x = rng.random((13, 21)).astype(dtype)
    dz, dz_passes = np.empty_like(z), np.empty_like(z)
    compiled = K.linear_mse_head_(z.copy(), b, x, 0.3, dz)
    monkeypatch.setattr(K, "_NUMBA", {})
    monkeypatch.setenv("MINISAE_NUMBA", "0")
    passes = K.linear_mse_head_(z.copy(), b, x, 0.3, dz_passes)
    eps = np.finfo(dtype).eps  # (the same bits on the machines tested; reassociation allows
    np.testing.assert_allclose(dz, dz_passes, rtol=2 * eps, atol=0)  # another compiler less)
    assert compiled == pytest.approx(passes, rel=float(10 * eps))


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 12), n=st.integers(2, 40), k=st.integers(1, 40),
       levels=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_topk_keeps_the_references_units_ties_included(batch, n, k, levels, seed):
    """kernels.topk_ (np.partition, then the compiled scan) keeps exactly the units
    functional.topk_mask keeps, ties at the k-th value going to the lowest columns as the
    reference's stable sort gives them: codes drawn from a few levels tie often."""
    if K.numba_loops("topk_scan", K._kept_columns_loop) is None:
        pytest.skip("numba is not installed: argpartition breaks ties its own way")
    k = min(k, n)
    z = np.random.default_rng(seed).integers(0, levels, (batch, n)).astype(np.float32)
    h, rows, kept, mask = K.topk_(z.copy(), 0.0, k, relu=False)
    expected = np.asarray(F.topk_mask(z, k))
    keep = np.zeros_like(expected)
    keep[rows, kept] = True
    np.testing.assert_array_equal(keep, expected)
    np.testing.assert_array_equal(h, np.where(expected, z, 0))
    assert mask is None and kept.shape == (batch, k)


def test_topk_with_a_nan_falls_back_to_argpartition():
    """A row holding NaN has no k-th value to compare with: the scan gives up and
    argpartition chooses, as before the scan existed (k units a row all the same)."""
    z = np.random.default_rng(4).standard_normal((5, 30)).astype(np.float32)
    z[2, 7] = np.nan
    if K.numba_loops("topk_scan", K._kept_columns_loop) is not None:
        assert K._kept_columns(z, 4) is None
        assert K._kept_columns(np.nan_to_num(z), 4).shape == (5, 4)
    h, rows, kept, _ = K.topk_(z.copy(), 0.0, 4, relu=False)
    assert kept.shape == (5, 4) and (np.count_nonzero(h, axis=1) <= 4).all()
    if K.numba_loops("topk_scan", K._kept_columns_loop) is not None:  # a NaN among ties too
        assert K._kept_columns(np.array([[np.nan, 1, 1, 0]], np.float32), 2) is None
