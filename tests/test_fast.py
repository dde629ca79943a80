"""The fast engine (minisae/fast/) gives the numbers of the reference path, and each path runs
when it should.

- SparseAutoencoder: fast=True (minisae/fast/step.py) against fast=False (the layers, in
  model.py) for every valid output x loss x reduction;
- fast/kernels.py's fused passes against the functional.py functions they reproduce; on CuPy
  (where a GPU answers) these are the ElementwiseKernels;
- FlatAdam against Adam.reference_step, with each kernel (numba's fused loop, NumPy's
  chunked passes), in one and two threads, float32 and float64;
- which code runs: the layers and Adam.reference_step under fast=False and under the gradient
  check's reference mode, the engine otherwise.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import COMBO_IDS, OPTION_COMBOS, make_model, random_inputs
from minisae import Adam, get_backend, to_numpy
from minisae import functional as F
from minisae.fast import FlatAdam
from minisae.fast import kernels as K
from minisae.fast import step as fast_step
from minisae.gradcheck import check_model
from minisae.layers import Dense

PARAM_NAMES = ["encoder.W", "encoder.b", "decoder.W", "decoder.b"]


def twins(backend, combo, dtype, seed=0, **kw):
    """Two models with the same weights: the first on the fast path, the second the reference."""
    n_inputs, n_hidden = kw.pop("n_inputs", 11), kw.pop("n_hidden", 6)
    fast = make_model(backend, n_inputs, n_hidden, combo=combo, dtype=dtype, seed=seed, fast=True, **kw)
    reference = make_model(backend, n_inputs, n_hidden, combo=combo, dtype=dtype, seed=seed,
                           fast=False, **kw)
    rng = np.random.default_rng(seed + 100)
    for name, p in fast.params.items():
        p[...] = fast.backend.asarray(rng.uniform(-1.5, 1.5, size=p.shape))
    reference.flat_params[...] = fast.flat_params
    return fast, reference


def assert_same_step(fast, reference, x, rtol, atol):
    a, b = fast.loss_and_grads(x), reference.loss_and_grads(x)
    for part in ("total", "reconstruction", "sparsity", "weight_decay"):
        assert getattr(a, part) == pytest.approx(getattr(b, part), rel=rtol, abs=atol), part
    np.testing.assert_allclose(a.mean_activation, b.mean_activation, rtol=rtol, atol=atol)
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
    fast.loss_and_grads(x, validate=False)
    np.testing.assert_array_equal(to_numpy(x), x0)
    np.testing.assert_array_equal(to_numpy(fast.flat_params), p0)


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


@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
def test_fast_false_runs_the_layers_and_fast_true_the_engine(monkeypatch, combo):
    dense = Counter(monkeypatch, Dense, "backward")
    engine = Counter(monkeypatch, fast_step, "autoencoder_loss_and_grads")
    import minisae.fast
    monkeypatch.setattr(minisae.fast, "autoencoder_loss_and_grads",
                        fast_step.autoencoder_loss_and_grads)
    model = make_model("numpy", 5, 3, combo=combo, fast=False)
    model.loss_and_grads(random_inputs(2, 5))
    assert (dense.calls, engine.calls) == (2, 0)  # the decoder's and the encoder's
    model.fast = True
    model.loss_and_grads(random_inputs(2, 5))
    assert (dense.calls, engine.calls) == (2, 1)


def test_adam_fast_false_runs_the_reference_step(monkeypatch):
    reference = Counter(monkeypatch, Adam, "reference_step")
    engine = Counter(monkeypatch, FlatAdam, "step")
    model = make_model("numpy", 5, 3)
    model.loss_and_grads(random_inputs(2, 5))
    Adam(model.params, model.grads, fast=False).step()
    assert (reference.calls, engine.calls) == (1, 0)
    Adam(model.params, model.grads).step()
    assert (reference.calls, engine.calls) == (1, 1)


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_gradient_check_runs_the_path_it_names(monkeypatch, path):
    dense = Counter(monkeypatch, Dense, "backward")
    engine = Counter(monkeypatch, fast_step, "autoencoder_loss_and_grads")
    import minisae.fast
    monkeypatch.setattr(minisae.fast, "autoencoder_loss_and_grads",
                        fast_step.autoencoder_loss_and_grads)
    model = make_model("numpy", 3, 2, fast=True)
    rows = check_model(model, random_inputs(2, 3), path=path)
    assert all(r.ok for r in rows)
    n_params = model.n_params
    calls = 1 + 2 * n_params  # the analytic pass, then two per parameter element
    if path == "reference":
        assert (dense.calls, engine.calls) == (2 * calls, 0)
    else:
        assert (dense.calls, engine.calls) == (0, calls)
    assert model.fast is True  # restored


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
    dz = be.empty(z.shape)
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
    dz = be.empty(z.shape)
    loss_sum = K.sigmoid_bce_head_(z, b, x, dz, work=be.empty(z.shape))
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
    out = K.sigmoid_backward_(dy, y, row if with_row else None, work=be.empty(y.shape))
    assert out is dy
    np.testing.assert_allclose(to_numpy(dy), expected, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(to_numpy(y), before)


def test_weight_decay_pieces_match_reference(backend):
    be = get_backend(backend, "float64")
    W1, W2, dW = arrays(be, (4, 3), (3, 4), (4, 3), seed=8)
    assert float(K.weight_decay([W1, W2], 0.3)) == pytest.approx(float(F.weight_decay([W1, W2], 0.3)))
    assert K.weight_decay([W1, W2], 0.0) == 0.0
    expected = to_numpy(dW + F.weight_decay_backward(W1, 0.3))
    K.add_weight_decay_grad_(dW, W1, 0.3, work=be.empty(W1.shape))
    np.testing.assert_allclose(to_numpy(dW), expected, rtol=1e-14)


# ----------------------------------------------------------------------------- Adam

def has_numba():
    from minisae.fast.adam import numba_adam
    return numba_adam() is not None


KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not has_numba(), reason="numba is not installed (the optional `fast` extra)"))]


def adam_runs(kernel, threads, dtype="float32", steps=3):
    """(p, m, v) after `steps` updates of the fast engine's `kernel` and of the reference, on
    a model big enough for several default-size chunks (and the threaded split)."""
    runs = []
    for fast in (True, False):
        model = make_model("numpy", n_inputs=784, n_hidden=700, dtype=dtype, seed=6)
        assert model.n_params > 4 * FlatAdam.CHUNK
        opt = Adam(model.params, model.grads, lr=0.01, fast=fast, threads=threads)
        if fast:
            opt._engine = FlatAdam.build(opt, threads=threads, kernel=kernel)
            assert opt._engine.kernel == kernel
        rng = np.random.default_rng(7)
        for _ in range(steps):
            model.flat_grads[...] = rng.normal(size=model.n_params)
            opt.step()
        if fast and threads > 1:
            assert opt._engine._pool is not None  # the threaded split ran
        runs.append(tuple(np.concatenate([a.ravel() for a in arrays.values()]).copy()
                          for arrays in (model.params, opt.m, opt.v)))
    return runs


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_flat_adam_at_its_default_chunk_matches_the_reference(kernel, threads):
    (p, m, v), (p_ref, m_ref, v_ref) = adam_runs(kernel, threads)
    np.testing.assert_allclose(p, p_ref, rtol=2e-5, atol=2e-6)
    # m and v take the reference's operations in its order: the same bits
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(v, v_ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_flat_adam_in_float64_matches_the_reference(kernel):
    (p, m, v), (p_ref, m_ref, v_ref) = adam_runs(kernel, 1, dtype="float64", steps=4)
    np.testing.assert_allclose(p, p_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(v, v_ref)


def test_flat_adam_picks_numba_where_installed_and_numpy_when_switched_off(monkeypatch):
    from minisae.fast import adam as fast_adam
    model = make_model("numpy", 5, 3)
    expected = "numba" if has_numba() else "numpy"
    assert Adam(model.params, model.grads)._engine.kernel == expected
    monkeypatch.setattr(fast_adam, "_NUMBA", {})
    monkeypatch.setenv("MINISAE_NUMBA", "0")
    assert fast_adam.numba_adam() is None
    assert Adam(model.params, model.grads)._engine.kernel == "numpy"
    with pytest.raises(ImportError, match="numba"):
        FlatAdam.build(Adam(model.params, model.grads, fast=False), kernel="numba")
    with pytest.raises(ValueError):
        FlatAdam.build(Adam(model.params, model.grads, fast=False), kernel="fortran")
