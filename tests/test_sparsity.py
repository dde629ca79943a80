"""The sparsity family: every mechanism's gradients, formulas, refusals and diagnostics, on
both paths.

- central differences in float64 on the reference (model.loss_and_grads) and on the engine
  (minisae.fast.loss_and_grads) for kl, squared, absolute, l1 (relu), l1 weighed by decoder
  norms, topk (relu and linear codes), each with tied weights, a subtracted decoder bias and
  weight decay, and with every valid output x loss x reduction; AuxK with its residual held
  fixed (and the check failing when it is not, which is why model.frozen_residual exists);
- hypothesis properties over small shapes: both paths agree with each other and with
  central differences, for each mechanism;
- closed forms: squared and absolute vanish at rho_hat == rho, absolute's gradient is
  +-beta, l1 is beta * mean_i sum_j h_ij (times ||W2[j]|| with l1_decoder_norm), topk keeps k
  codes per row and they are the k largest pre-activations, tied models decode with
  encoder.W.T, AuxK is 0 without dead units and reaches only the dead units;
- refusals of invalid combinations (a one-line ConfigError);
- evaluate's diagnostics (l0, dead_fraction, dense_fraction, fvu) on crafted models.

Training, dead units, resampling, checkpoints and the command line: test_sparsity_training.py.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minisae.fast
from minisae.comm import Alone
from conftest import COMBO_IDS, OPTION_COMBOS
from minisae import SparseAutoencoder, to_numpy
from minisae import functional as F
from minisae import losses
from minisae.config import Config, combination_problem
from minisae.errors import ConfigError
from minisae.fast import kernels as K
from minisae.gradcheck import (assert_gradients_ok, check_model, numerical_gradient,
                               relative_error, straight_through_gradient)
from minisae.layers import Identity, ReLU, TopK
from minisae.training import evaluate

PATHS = ["reference", "fast"]

MECHANISMS = {
    "kl": dict(sparsity="kl"),
    "squared": dict(sparsity="squared"),
    "squared-relu": dict(sparsity="squared", hidden_activation="relu"),
    "absolute": dict(sparsity="absolute"),
    "l1": dict(sparsity="l1", hidden_activation="relu"),
    "l1-decoder-norm": dict(sparsity="l1", hidden_activation="relu", l1_decoder_norm=True),
    "topk-relu": dict(sparsity="topk", k=2, hidden_activation="relu"),
    "topk-linear": dict(sparsity="topk", k=2, hidden_activation="linear"),
    "batchtopk": dict(sparsity="batchtopk", k=2, hidden_activation="relu"),
    "jumprelu": dict(sparsity="jumprelu", hidden_activation="relu", jump_bandwidth=1.0),
}
"""Every penalty-or-selection mechanism (AuxK is tested apart: it needs dead units)."""

OPTIONS = {
    "plain": dict(),
    "decay": dict(weight_decay=0.03),
    "tied": dict(tied_weights=True, weight_decay=0.03),
    "x-b2": dict(subtract_decoder_bias=True, weight_decay=0.03),
    "tied-x-b2": dict(tied_weights=True, subtract_decoder_bias=True, weight_decay=0.03),
}

MARGIN = 1e-4
"""A perturbation of h = 1e-5 moves a pre-activation by at most h * max(|x|, |W1|, 1) here:
a kink (ReLU at 0, the k-th and (k+1)-th largest z swapping, |rho_hat - rho| at 0) further
than this from every point is not crossed by a central difference."""


def build(n_inputs=6, n_hidden=4, seed=0, combo=("sigmoid", "mse", "mean"), **kw):
    out, loss, red = combo
    out = kw.pop("output_activation", out)
    kw.setdefault("sparsity_target", 0.2)
    kw.setdefault("sparsity_weight", 0.7)
    return SparseAutoencoder(n_inputs, n_hidden, output_activation=out, reconstruction_loss=loss,
                             reduction=red, dtype="float64", seed=seed, **kw)


def randomize(model, rng, scale=1.0):
    """Every parameter (biases too, so b2 is nonzero) uniform in +-scale."""
    for p in model.params.values():
        p[...] = rng.uniform(-scale, scale, size=p.shape)


def pre_activations(model, x):
    """z1 = (x or x - b2) @ W1 + b1, computed here from the parameters."""
    P = model.params
    x_in = x - P["decoder.b"] if model.config.subtract_decoder_bias else x
    return x_in @ P["encoder.W"] + P["encoder.b"]


def boundary_gap(z, k):
    """The smallest gap, over rows, between the k-th and (k+1)-th largest entries (inf when k
    is the whole row)."""
    if k >= z.shape[1]:
        return math.inf
    s = -np.sort(-z, axis=1)
    return float((s[:, k - 1] - s[:, k]).min())


def kink_distance(model, x):
    """How far this model's loss at x is from its nearest kink (see MARGIN)."""
    c = model.config
    z1 = pre_activations(model, x)
    d = math.inf
    if c.hidden_activation == "relu" or c.aux_k:
        d = min(d, float(np.abs(z1).min()))
    if c.sparsity == "topk":
        d = min(d, boundary_gap(z1, c.k))
    if c.aux_k:
        dead = to_numpy(model.dead)
        if dead.any():
            d = min(d, boundary_gap(z1[:, dead], c.aux_k))
    if c.sparsity == "batchtopk":  # the k * batch-th and next largest codes of the batch
        d = min(d, boundary_gap(np.maximum(z1, 0).reshape(1, -1), c.k * z1.shape[0]))
    if c.sparsity == "jumprelu":  # the jump, and the straight-through rectangle's edges
        theta = np.exp(to_numpy(model.params["coding.log_theta"]))
        d = min(d, float(np.abs(z1 - theta).min()),
                float(np.abs(np.abs(z1 - theta) - c.jump_bandwidth / 2).min()))
    if c.sparsity == "absolute":
        rho_hat = to_numpy(model.forward(x)[0]).mean(axis=0)
        d = min(d, float(np.abs(rho_hat - c.sparsity_target).min()))
    if c.l1_decoder_norm:
        d = min(d, float(F.row_norms(losses.decoder_weight(model.params)).min()))
    return d


def smooth_model(kwargs, n_inputs=6, n_hidden=4, batch=5, seed=0, combo=("sigmoid", "mse", "mean")):
    """A float64 model with random parameters and a batch x, chosen (by seed) so that no kink
    lies within 1e-3 of the point: the finite differences see a smooth function."""
    for s in range(seed, seed + 50):
        rng = np.random.default_rng(s)
        model = build(n_inputs, n_hidden, seed=s, combo=combo, **kwargs)
        randomize(model, rng)
        x = rng.uniform(0.0, 1.0, size=(batch, n_inputs))
        if kink_distance(model, x) > 1e-3:
            return model, x
    raise AssertionError("no smooth point found")  # pragma: no cover


def run_path(model, x, path):
    if path == "fast":
        return minisae.fast.loss_and_grads(model, x)
    return model.loss_and_grads(x)


def check_path(model, x, path):
    if path == "fast":
        assert minisae.fast.fused(model) is None, minisae.fast.fused(model)  # no silent fallback
        return minisae.fast.check_model(model, x)
    return check_model(model, x)


def grads_of(model):
    return {k: to_numpy(g).copy() for k, g in model.grads.items()}


# ----------------------------------------------------------------------------- finite differences

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_gradients_match_finite_differences(mechanism, option, path):
    model, x = smooth_model({**MECHANISMS[mechanism], **OPTIONS[option]})
    rows = check_path(model, x, path)
    names = ["encoder.W", "encoder.b"] + ([] if model.config.tied_weights else ["decoder.W"]) \
        + ["decoder.b"] + (["coding.log_theta"] if mechanism == "jumprelu" else [])
    assert [r.name for r in rows] == names
    assert_gradients_ok(rows)
    for r in rows:
        assert r.rel_error < 1e-7 and r.analytic_norm > 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("combo", OPTION_COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_gradients_with_every_output_loss_and_reduction(mechanism, combo, path):
    kwargs = {**MECHANISMS[mechanism], "weight_decay": 0.01}
    assert combination_problem(Config(6, 4, output_activation=combo[0],
                                      reconstruction_loss=combo[1], reduction=combo[2],
                                      **kwargs)) is None
    model, x = smooth_model(kwargs, combo=combo, seed=10)
    assert_gradients_ok(check_path(model, x, path))


def test_invalid_reconstruction_combos_are_refused_for_every_mechanism():
    for kwargs in MECHANISMS.values():
        for out, loss, red in (("linear", "bce", "mean"), ("sigmoid", "bce", "halfsum")):
            with pytest.raises(ConfigError, match="bce"):
                build(combo=(out, loss, red), **kwargs)


def test_subtract_decoder_bias_gradient_reaches_b2_through_the_encoder():
    """With x - b2 encoded, b2 has two uses; the check above sees their sum. Here: the
    encoder's share is really there (b2's gradient differs from the plain model's)."""
    model, x = smooth_model(dict(sparsity="l1", hidden_activation="relu",
                                 subtract_decoder_bias=True))
    plain = build(sparsity="l1", hidden_activation="relu")
    plain.flat_params[...] = model.flat_params
    assert np.abs(to_numpy(model.params["decoder.b"])).max() > 0.1
    model.loss_and_grads(x)
    plain.loss_and_grads(x)  # the plain model encodes x itself
    assert not np.allclose(to_numpy(model.grads["decoder.b"]), to_numpy(plain.grads["decoder.b"]))


AUXK = dict(sparsity="topk", k=2, hidden_activation="relu", aux_k=2, aux_weight=0.5,
            output_activation="linear", weight_decay=0.01)
DEAD = np.array([True, False, True, True, False, True])


def auxk_model(seed=0, freeze=True, tied=False):
    """A float64 AuxK model with dead units that AuxK uses (some z1 > 0 among them), at a
    smooth point; freeze: hold the residual x - y fixed, as a gradient check must."""
    for s in range(seed, seed + 50):
        rng = np.random.default_rng(s)
        model = SparseAutoencoder(5, 6, dtype="float64", seed=s, tied_weights=tied, **AUXK)
        randomize(model, rng)
        model.params["encoder.b"][...] += 0.5  # dead units with z1 > 0: AuxK's term is live
        model.dead[...] = DEAD
        x = rng.uniform(0.0, 1.0, size=(6, 5))
        if kink_distance(model, x) > 1e-3:
            break
    if freeze:
        model.frozen_residual = x - to_numpy(model.reconstruct(x))
    assert model.loss_and_grads(x).auxk > 1e-4
    return model, x


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("path", PATHS)
def test_auxk_gradients_with_the_residual_held_fixed(path, tied):
    model, x = auxk_model(tied=tied)
    assert minisae.fast.fused(model) is None  # the engine runs AuxK itself
    rows = check_model(model, x) if path == "reference" else minisae.fast.check_model(model, x)
    assert_gradients_ok(rows)


def test_auxk_gradient_check_fails_without_the_frozen_residual():
    """AuxK's target e = x - y is a stop-gradient constant (Gao et al.): the hand-written
    gradient leaves out e's dependence on the parameters. Central differences of the loss
    with e recomputed at every point do include it, so they disagree; hence
    model.frozen_residual for gradient checks."""
    model, x = auxk_model(freeze=False)
    assert model.frozen_residual is None
    rows = check_model(model, x)
    assert not all(r.ok for r in rows)
    assert max(r.rel_error for r in rows) > 1e-3
    # ...and the same point, the residual frozen at its value there, passes
    model.frozen_residual = x - to_numpy(model.reconstruct(x))
    assert_gradients_ok(check_model(model, x))


def test_auxk_engine_is_the_reference():
    """The engine's AuxK (partial selection among the dead units, their rows of W2 alone)
    equals the reference's to float64 rounding."""
    model, x = auxk_model()
    a = minisae.fast.loss_and_grads(model, x)
    ga = grads_of(model)
    b = model.loss_and_grads(x)
    assert a.names == b.names and "auxk" in a.names
    for name in a.names:
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12, abs=1e-15)
    for name in ga:
        np.testing.assert_allclose(ga[name], to_numpy(model.grads[name]), rtol=1e-12,
                                   atol=1e-14)


# ----------------------------------------------------------------------------- properties

@st.composite
def cases(draw, mechanism):
    """A small float64 model of `mechanism` with drawn options, parameters and a batch, at a
    point with no kink nearby (continuous data: no ties in TopK's z)."""
    batch, n_inputs, n_hidden = (draw(st.integers(1, 8)) for _ in range(3))
    kw = dict(MECHANISMS.get(mechanism, {}))
    if mechanism.startswith("topk") or mechanism in ("auxk", "batchtopk"):
        kw["k"] = draw(st.integers(1, n_hidden))
    if mechanism == "auxk":
        kw.update(sparsity="topk", hidden_activation="relu",
                  aux_k=draw(st.integers(1, n_hidden)), aux_weight=draw(st.floats(0.01, 2.0)))
    combo = draw(st.sampled_from(OPTION_COMBOS))
    if kw.get("aux_k"):
        combo = draw(st.sampled_from([c for c in OPTION_COMBOS if c[1] == "mse"]))
    kw.update(tied_weights=draw(st.booleans()), subtract_decoder_bias=draw(st.booleans()),
              weight_decay=draw(st.sampled_from([0.0, 0.01, 0.1])))
    if kw["sparsity"] not in ("topk", "batchtopk"):
        kw.update(sparsity_weight=draw(st.floats(0.0, 5.0)),
                  sparsity_target=draw(st.floats(0.01, 0.5)))
    seed = draw(st.integers(0, 2**32 - 1))
    model = build(n_inputs, n_hidden, seed=seed % 1000, combo=combo, **kw)
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    if kw.get("aux_k"):
        model.dead[...] = np.array(draw(st.lists(st.booleans(), min_size=n_hidden,
                                                 max_size=n_hidden)))
    x = rng.uniform(0.0, 1.0, size=(batch, n_inputs))
    assume(kink_distance(model, x) > MARGIN)
    if kw.get("aux_k"):
        model.frozen_residual = x - to_numpy(model.reconstruct(x))
    return model, x


def assert_matches_central_differences(model, x, path, loss, analytic):
    """Each gradient against central differences: a relative error under 1e-7, or a
    difference below what rounding lets central differences resolve (the loss's rounding
    over h, amplified for the KL term by its conditioning near rho_hat = 0 or 1)."""
    c = model.config
    conditioning = 0.0
    if c.sparsity == "kl":
        q = F.clip_rho_hat(loss.mean_activation)
        rho = c.sparsity_target
        conditioning = c.sparsity_weight * float(np.sum(rho / q + (1 - rho) / (1 - q)))
    noise = 1e-10 * (1 + abs(loss.total) + conditioning)
    for name, p in model.params.items():
        if name == "coding.log_theta":  # a straight-through estimate: against its definition
            numeric = straight_through_gradient(model, x)
        else:
            numeric = numerical_gradient(lambda: run_path(model, x, path).total, p)
        err = relative_error(numeric, analytic[name])
        assert err < 1e-7 or np.linalg.norm(numeric - analytic[name]) < noise * math.sqrt(p.size), \
            f"{name}: relative error {err:.3e} on the {path} path"


def assert_paths_agree(model, x):
    """The engine and the reference: the same loss parts, rho_hat and gradients; returns the
    reference's loss and gradients."""
    fast_loss = minisae.fast.loss_and_grads(model, x)
    fast_grads = grads_of(model)
    ref_loss = model.loss_and_grads(x)
    ref_grads = grads_of(model)
    assert fast_loss.names == ref_loss.names
    for name, value in ref_loss.parts.items():
        assert fast_loss.parts[name] == pytest.approx(value, rel=1e-10, abs=1e-13), name
    np.testing.assert_allclose(fast_loss.mean_activation, ref_loss.mean_activation,
                               rtol=1e-10, atol=1e-13)
    assert set(fast_grads) == set(ref_grads) == set(model.params)
    for name, g in ref_grads.items():
        np.testing.assert_allclose(fast_grads[name], g, rtol=1e-9,
                                   atol=1e-12 * max(1.0, np.abs(g).max()), err_msg=name)
    return ref_loss, ref_grads


@pytest.mark.parametrize("mechanism", [*MECHANISMS, "auxk"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_paths_agree_and_match_central_differences(mechanism, data):
    model, x = data.draw(cases(mechanism))
    assert (minisae.fast.fused(model) is None) == \
        (mechanism != "auxk" or model.config.reconstruction_loss != "bce")
    loss, analytic = assert_paths_agree(model, x)
    assert math.isfinite(loss.total)
    if model.config.sparsity in ("squared", "absolute", "l1") or mechanism == "kl":
        assert loss.sparsity >= 0.0
    path = data.draw(st.sampled_from(PATHS), label="path")
    assert_matches_central_differences(model, x, path, loss, analytic)


# ----------------------------------------------------------------------------- closed forms

@pytest.mark.parametrize("sparsity", ["squared", "absolute", "kl"])
def test_penalty_vanishes_at_the_target(sparsity):
    rho = 0.3
    rho_hat = np.full(5, rho)
    c = Config(4, 5, sparsity=sparsity, sparsity_target=rho, sparsity_weight=2.0).validated()
    term = losses.SPARSITY[sparsity](c)
    assert float(term.forward({"rho_hat": rho_hat}, {})) == pytest.approx(0.0, abs=1e-15)
    grads = term.backward()
    assert list(grads) == ["rho_hat"]
    np.testing.assert_allclose(grads["rho_hat"], 0.0, atol=1e-12)
    # and in a model whose sigmoid codes are all rho: W1 = 0, b1 = logit(rho)
    model = build(4, 5, sparsity=sparsity, sparsity_target=rho, sparsity_weight=2.0)
    model.params["encoder.W"][...] = 0.0
    model.params["encoder.b"][...] = math.log(rho / (1 - rho))
    loss = model.loss_and_grads(np.random.default_rng(0).random((3, 4)))
    np.testing.assert_allclose(loss.mean_activation, rho, atol=1e-15)
    assert loss.sparsity == pytest.approx(0.0, abs=1e-12)


def test_squared_and_absolute_closed_forms():
    rng = np.random.default_rng(1)
    rho_hat, rho, beta = rng.random(7), 0.2, 1.7
    assert float(F.squared_penalty(rho_hat, rho, beta)) == pytest.approx(
        beta * np.sum((rho_hat - rho) ** 2))
    assert float(F.absolute_penalty(rho_hat, rho, beta)) == pytest.approx(
        beta * np.sum(np.abs(rho_hat - rho)))
    np.testing.assert_allclose(F.squared_penalty_backward(rho_hat, rho, beta),
                               2 * beta * (rho_hat - rho))


@pytest.mark.parametrize("path", PATHS)
def test_absolute_gradient_is_plus_or_minus_beta(path):
    """d penalty / d rho_hat is beta * sign(rho_hat - rho): its size never shrinks near the
    target. Through the model: the penalty's share of db1 is beta * sign / batch * h'(z1)
    summed over the batch."""
    beta, rho = 1.3, 0.5
    rho_hat = np.array([0.1, 0.49, 0.51, 0.9])
    c = Config(3, 4, sparsity="absolute", sparsity_target=rho, sparsity_weight=beta).validated()
    term = losses.Absolute(c)
    term.forward({"rho_hat": rho_hat}, {})
    np.testing.assert_array_equal(term.backward()["rho_hat"], beta * np.array([-1.0, -1.0, 1.0, 1.0]))
    model, x = smooth_model(dict(sparsity="absolute", sparsity_target=rho,
                                 sparsity_weight=beta))
    without = build(sparsity="absolute", sparsity_target=rho, sparsity_weight=0.0)
    without.flat_params[...] = model.flat_params
    loss = run_path(model, x, path)
    db1 = to_numpy(model.grads["encoder.b"]).copy()
    run_path(without, x, path)
    h = to_numpy(model.forward(x)[0])
    sign = np.sign(loss.mean_activation - rho)
    expected = beta * sign * (h * (1 - h)).mean(axis=0)
    np.testing.assert_allclose(db1 - to_numpy(without.grads["encoder.b"]), expected,
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("decoder_norm", [False, True], ids=["plain", "decoder-norm"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_l1_is_beta_times_the_mean_code_sum(path, decoder_norm, tied):
    beta = 0.37
    model, x = smooth_model(dict(sparsity="l1", hidden_activation="relu",
                                 sparsity_weight=beta, l1_decoder_norm=decoder_norm,
                                 tied_weights=tied), n_hidden=7, batch=9)
    h = np.maximum(pre_activations(model, x), 0.0)
    assert (h > 0).any() and (h == 0).any()
    loss = run_path(model, x, path)
    W2 = to_numpy(model.params["encoder.W"]).T if tied else to_numpy(model.params["decoder.W"])
    weights = np.linalg.norm(W2, axis=1) if decoder_norm else np.ones(7)
    direct = beta * np.mean(np.sum(np.abs(h) * weights, axis=1))
    assert loss.sparsity == pytest.approx(direct, rel=1e-12)
    rho_hat = h.mean(axis=0)
    assert loss.sparsity == pytest.approx(beta * np.sum(rho_hat * weights), rel=1e-12)
    np.testing.assert_allclose(loss.mean_activation, rho_hat, rtol=1e-12, atol=1e-15)


def test_l1_penalty_functional_forms():
    rng = np.random.default_rng(2)
    rho_hat, w, beta = rng.random(5), rng.random(5) + 0.1, 0.9
    assert float(F.l1_penalty(rho_hat, beta)) == pytest.approx(beta * rho_hat.sum())
    assert float(F.l1_penalty(rho_hat, beta, w)) == pytest.approx(beta * (rho_hat * w).sum())
    d, dw = F.l1_penalty_backward(rho_hat, beta)
    np.testing.assert_allclose(d, beta)
    assert dw is None
    d, dw = F.l1_penalty_backward(rho_hat, beta, w)
    np.testing.assert_allclose(d, beta * w)
    np.testing.assert_allclose(dw, beta * rho_hat)
    W = rng.standard_normal((4, 3))
    W[2] = 0.0
    norms = F.row_norms(W)
    np.testing.assert_allclose(norms, np.linalg.norm(W, axis=1))
    g = F.row_norms_backward(np.ones(4), W, norms)
    np.testing.assert_allclose(g[[0, 1, 3]], W[[0, 1, 3]] / norms[[0, 1, 3], None])
    np.testing.assert_array_equal(g[2], 0.0)  # a row of zeros: no gradient, no NaN


def topk_expected(z, k):
    """The column sets of each row's k largest z (continuous z: no ties)."""
    return [set(np.argsort(-row)[:k]) for row in z]


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_topk_keeps_the_k_largest_pre_activations(activation):
    rng = np.random.default_rng(3)
    for k in (1, 3, 8):
        model = build(6, 8, sparsity="topk", k=k, hidden_activation=activation,
                      output_activation="linear")
        randomize(model, rng)
        x = rng.uniform(0.0, 1.0, size=(20, 6))
        z1 = pre_activations(model, x)
        h = to_numpy(model.encode(x))
        nonzero = h != 0
        for row, (z_row, h_row, want) in enumerate(zip(z1, h, topk_expected(z1, k))):
            kept = set(np.flatnonzero(nonzero[row]))
            if activation == "linear":
                assert kept == want  # exactly k per row
                np.testing.assert_allclose(h_row[list(want)], z_row[list(want)], rtol=1e-15)
            else:
                assert kept == {j for j in want if z_row[j] > 0}  # at most k: the positive ones
                np.testing.assert_allclose(h_row[list(kept)], z_row[list(kept)], rtol=1e-15)
        counts = nonzero.sum(axis=1)
        if activation == "linear":
            assert (counts == k).all()
        else:
            assert (counts <= k).all()


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
def test_engine_topk_kernel_matches_the_layer(relu):
    rng = np.random.default_rng(4)
    z, b = rng.standard_normal((9, 7)), rng.standard_normal(7)
    for k in (1, 4, 7):
        layer = TopK(k, ReLU() if relu else Identity())
        h_ref = layer.forward(z + b)
        h, rows, kept, mask = K.topk_(z.copy(), b, k, relu)
        np.testing.assert_array_equal(h, h_ref)
        assert kept.shape == (9, k) and mask is None
        dh = rng.standard_normal((9, 7))
        np.testing.assert_array_equal(K.topk_backward_(dh.copy(), h, rows, kept, relu),
                                      layer.backward(dh))
        # through a communicator alone: every candidate stays
        h2, rows, kept, mask = K.topk_(z.copy(), b, k, relu, Alone().units_gather)
        np.testing.assert_array_equal(h2, h_ref)
        assert mask.all()
        np.testing.assert_array_equal(K.topk_backward_(dh.copy(), h, rows, kept, relu, mask),
                                      layer.backward(dh))


def test_topk_mask_functional():
    z = np.array([[0.3, -1.0, 2.0, 0.5], [1.0, 1.0, 0.0, -2.0]])
    np.testing.assert_array_equal(F.topk_mask(z, 2), [[False, False, True, True],
                                                      [True, True, False, False]])
    # ties go to the lower index (the engine's argpartition may choose otherwise: documented)
    np.testing.assert_array_equal(F.topk_mask(np.zeros((1, 4)), 2), [[True, True, False, False]])
    allowed = np.array([True, False, True, True])
    keep, top = F.topk_among(z, 2, allowed)
    np.testing.assert_array_equal(keep, [[False, False, True, True], [True, False, True, False]])
    np.testing.assert_array_equal(top, [[2.0, 0.5], [1.0, 0.0]])
    keep, top = F.topk_among(z, 9, allowed)
    assert keep.sum(axis=1).tolist() == [3, 3] and top.shape == (2, 9)
    assert np.isinf(top[:, 3:]).all() and (top[:, 3:] < 0).all()


def test_coding_layer_follows_the_config():
    def coding_layer(c):
        return SparseAutoencoder(**c.as_dict()).coding
    assert isinstance(coding_layer(Config(3, 4, sparsity="topk", k=2, hidden_activation="relu")),
                      TopK)
    layer = coding_layer(Config(3, 4, sparsity="topk", k=2, hidden_activation="linear"))
    assert isinstance(layer, TopK) and isinstance(layer.activation, Identity) and layer.k == 2
    assert isinstance(coding_layer(Config(3, 4, sparsity="l1", hidden_activation="relu")), ReLU)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_tied_models_decode_with_the_encoder_transposed(mechanism):
    model = build(6, 4, tied_weights=True, combo=("linear", "mse", "mean"), **MECHANISMS[mechanism])
    rng = np.random.default_rng(5)
    randomize(model, rng)
    assert "decoder.W" not in model.params and "decoder.W" not in model.grads
    thresholds = ["coding.log_theta"] if mechanism == "jumprelu" else []
    assert list(model.params) == ["encoder.W", "encoder.b", "decoder.b"] + thresholds
    assert model.n_params == 6 * 4 + 4 + 6 + 4 * len(thresholds)
    h = rng.random((3, 4))
    W1, b2 = to_numpy(model.params["encoder.W"]), to_numpy(model.params["decoder.b"])
    np.testing.assert_allclose(to_numpy(model.decode(h)), h @ W1.T + b2, rtol=1e-14)
    assert np.shares_memory(losses.decoder_weight(model.params), model.params["encoder.W"])
    # training moves the one W both layers use
    model.params["encoder.W"][0, 0] += 1.0
    np.testing.assert_allclose(to_numpy(model.decode(h)),
                               h @ to_numpy(model.params["encoder.W"]).T + b2, rtol=1e-14)


def test_add_grads_sends_a_tied_decoder_gradient_to_the_encoder():
    grads = {"encoder.W": np.zeros((3, 2)), "encoder.b": np.zeros(2), "decoder.b": np.zeros(3)}
    extra = np.arange(6.0).reshape(2, 3)
    losses.add_grads(grads, [("decoder.W", extra)])
    np.testing.assert_array_equal(grads["encoder.W"], extra.T)
    untied = {"decoder.W": np.ones((2, 3))}
    losses.add_grads(untied, [("decoder.W", extra)])
    np.testing.assert_array_equal(untied["decoder.W"], 1.0 + extra)


def auxk_and_plain_twins():
    """An AuxK model with no dead units, and the same model without AuxK."""
    model, x = auxk_model()
    model.dead[...] = False
    model.frozen_residual = None
    plain = SparseAutoencoder(5, 6, dtype="float64", **{k: v for k, v in AUXK.items()
                                                        if k not in ("aux_k", "aux_weight")})
    plain.flat_params[...] = model.flat_params
    return model, plain, x


def test_auxk_has_no_gradient_without_dead_units():
    model, plain, x = auxk_and_plain_twins()
    loss = model.loss_and_grads(x)
    plain_loss = plain.loss_and_grads(x)
    assert loss.reconstruction == plain_loss.reconstruction
    for name in model.params:
        np.testing.assert_allclose(to_numpy(model.grads[name]), to_numpy(plain.grads[name]),
                                   rtol=0, atol=1e-15, err_msg=name)


def test_auxk_is_zero_without_dead_units():
    model, plain, x = auxk_and_plain_twins()
    loss = model.loss_and_grads(x)
    assert loss.auxk == 0.0
    assert loss.total == pytest.approx(plain.loss_and_grads(x).total, rel=1e-15)


def test_auxk_gradient_reaches_only_dead_units():
    model, x = auxk_model()
    plain = SparseAutoencoder(5, 6, dtype="float64", **{k: v for k, v in AUXK.items()
                                                        if k not in ("aux_k", "aux_weight")})
    plain.flat_params[...] = model.flat_params
    loss = model.loss_and_grads(x)
    plain.loss_and_grads(x)
    diff = {k: to_numpy(model.grads[k]) - to_numpy(plain.grads[k]) for k in model.params}
    # the units AuxK used: the aux_k largest z1 among the dead ones, where z1 > 0
    z1 = pre_activations(model, x)
    among = np.where(DEAD, z1, -np.inf)
    used = np.zeros(6, dtype=bool)
    for row, z_row in zip(among, z1):
        for j in np.argsort(-row)[:AUXK["aux_k"]]:
            used[j] |= bool(DEAD[j] and z_row[j] > 0)
    assert used.any() and loss.auxk > 0
    assert np.abs(diff["encoder.W"][:, ~DEAD]).max() <= 1e-15
    assert np.abs(diff["encoder.b"][~DEAD]).max() <= 1e-15
    assert np.abs(diff["encoder.b"][used]).min() > 0
    assert np.abs(diff["decoder.W"][~used]).max() <= 1e-15
    assert np.abs(diff["decoder.W"][used]).max() > 0
    assert np.abs(diff["decoder.b"]).max() <= 1e-15  # the residual is a constant
    # the term itself: alpha * mse(h_aux @ W2, x - y)
    keep = np.zeros_like(z1, dtype=bool)
    for i, row in enumerate(among):
        keep[i, np.argsort(-row)[:AUXK["aux_k"]]] = True
    h_aux = np.where(keep & DEAD & (z1 > 0), z1, 0.0)
    e = x - to_numpy(model.reconstruct(x))
    e_hat = h_aux @ to_numpy(model.params["decoder.W"])
    # Gao et al.'s normalized MSE: the residual's own variance over the batch below
    normalized = np.sum((e_hat - e) ** 2) / np.sum((e - e.mean(axis=0)) ** 2)
    assert loss.auxk == pytest.approx(AUXK["aux_weight"] * normalized, rel=1e-12)


# ----------------------------------------------------------------------------- refusals

REFUSALS = [
    (dict(sparsity="kl", hidden_activation="relu"), "hidden_activation='sigmoid'"),
    (dict(sparsity="topk", hidden_activation="relu"), "give k between 1 and 4"),
    (dict(sparsity="topk", k=5, hidden_activation="relu"), "got k=5"),
    (dict(sparsity="topk", k=2, hidden_activation="sigmoid"), "'relu' or 'linear'"),
    (dict(sparsity="l1", hidden_activation="relu", k=2),
     "applies to sparsity='topk' or 'batchtopk' only"),
    (dict(sparsity="l1", hidden_activation="relu", aux_k=2), "aux_k"),
    (dict(sparsity="topk", k=2, hidden_activation="linear", aux_k=2), "hidden_activation='relu'"),
    (dict(sparsity="topk", k=2, hidden_activation="relu", aux_k=5), "aux_k must be at most"),
    (dict(sparsity="kl", l1_decoder_norm=True), "l1_decoder_norm"),
    (dict(sparsity="topk", k=2, hidden_activation="relu", l1_decoder_norm=True),
     "l1_decoder_norm"),
    (dict(sparsity="l1", hidden_activation="linear"), "hidden_activation='linear'"),
    (dict(sparsity="squared", hidden_activation="linear"), "hidden_activation='linear'"),
    (dict(sparsity="kl", hidden_activation="linear"), "hidden_activation='linear'"),
    (dict(sparsity="topk", k=0, hidden_activation="relu"), "k must be"),
    (dict(sparsity="topk", k=2, hidden_activation="relu", aux_k=0), "aux_k must be"),
    (dict(sparsity="topk", k=2, hidden_activation="relu", aux_k=1, aux_weight=-1.0),
     "aux_weight must be"),
    (dict(sparsity="lasso"), "sparsity must be one of"),
    (dict(sparsity="l1", hidden_activation="tanh"), "hidden_activation must be one of"),
]


@pytest.mark.parametrize("kwargs,reason", REFUSALS, ids=[str(i) for i in range(len(REFUSALS))])
def test_invalid_combinations_are_refused_in_one_line(kwargs, reason):
    for make in (lambda: SparseAutoencoder(3, 4, **kwargs),
                 lambda: Config(3, 4, **kwargs).validated()):
        with pytest.raises(ConfigError) as e:
            make()
        assert reason in str(e.value)
        assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_valid_combinations_pass():
    for kwargs in [*MECHANISMS.values(), AUXK, dict(sparsity="topk", k=4, hidden_activation="relu",
                                                    aux_k=4, tied_weights=True,
                                                    subtract_decoder_bias=True)]:
        c = Config(3, 4, **kwargs)
        assert combination_problem(c) is None
        assert c.validated() == c


# ----------------------------------------------------------------------------- diagnostics

def test_evaluate_counts_active_dead_and_dense_units():
    """One input, four ReLU units with thresholds: unit 0 fires on 3 of 4 samples (dense),
    unit 1 on exactly half (not dense: more than half is), unit 2 on one, unit 3 never (dead)."""
    model = SparseAutoencoder(1, 4, sparsity="l1", hidden_activation="relu",
                              output_activation="linear", dtype="float64")
    model.params["encoder.W"][...] = [[1.0, 1.0, 1.0, 0.0]]
    model.params["encoder.b"][...] = [-0.15, -0.25, -0.35, -1.0]
    x = np.array([[0.1], [0.2], [0.3], [0.4]])
    for batch_size in (1000, 3, 1):
        m = evaluate(model, x, batch_size=batch_size)
        assert m["l0"] == pytest.approx(1.5)
        assert m["dead_fraction"] == 0.25
        assert m["dense_fraction"] == 0.25
    m, rho_hat = evaluate(model, x, per_unit=True)
    np.testing.assert_allclose(rho_hat, [0.45 / 4, 0.2 / 4, 0.05 / 4, 0.0], atol=1e-15)
    assert m["sparsity"] == pytest.approx(model.config.sparsity_weight * rho_hat.sum())


def test_evaluate_sigmoid_codes_are_active_above_one_half():
    """Sigmoid codes are never 0: active means h > 0.5 (z1 > 0). A unit at z1 = 0 exactly
    (h = 0.5) is not active."""
    model = SparseAutoencoder(3, 4, dtype="float64")
    model.params["encoder.W"][...] = 0.0
    model.params["encoder.b"][...] = [-1.0, 0.0, 0.5, 2.0]
    x = np.random.default_rng(6).random((10, 3))
    m = evaluate(model, x)
    assert (m["l0"], m["dead_fraction"], m["dense_fraction"]) == (2.0, 0.5, 0.5)
    c = model.config
    h = to_numpy(model.encode(x))
    np.testing.assert_array_equal(losses.active(c, h), h > 0.5)
    relu = Config(3, 4, sparsity="l1", hidden_activation="relu")
    np.testing.assert_array_equal(losses.active(relu, np.array([[0.0, 0.1, 0.6]])),
                                  [[False, True, True]])


@pytest.mark.parametrize("mechanism", ["l1", "topk-relu", "topk-linear"])
def test_fvu_of_a_model_that_reconstructs_the_mean_is_one(mechanism):
    model = build(5, 4, combo=("linear", "mse", "mean"), **MECHANISMS[mechanism])
    x = np.random.default_rng(7).random((40, 5))
    randomize(model, np.random.default_rng(8))
    model.params["decoder.W"][...] = 0.0
    model.params["decoder.b"][...] = x.mean(axis=0)
    assert evaluate(model, x, batch_size=7)["fvu"] == pytest.approx(1.0, rel=1e-12)


def test_fvu_is_the_unexplained_share_of_the_variance():
    model = build(5, 4, combo=("linear", "mse", "mean"), **MECHANISMS["topk-relu"])
    randomize(model, np.random.default_rng(9), scale=0.3)
    x = np.random.default_rng(10).random((30, 5))
    y = to_numpy(model.reconstruct(x))
    direct = np.sum((y - x) ** 2) / np.sum((x - x.mean(axis=0)) ** 2)
    m = evaluate(model, x, batch_size=8)
    assert m["fvu"] == pytest.approx(direct, rel=1e-12)
    h = to_numpy(model.encode(x))
    assert m["l0"] == pytest.approx((h > 0).sum(axis=1).mean())
    assert m["dead_fraction"] == pytest.approx(((h > 0).sum(axis=0) == 0).mean())
    assert m["dense_fraction"] == pytest.approx(((h > 0).mean(axis=0) > 0.5).mean())
    density = (h > 0).mean(axis=0)
    assert m["log10_density"] == pytest.approx(np.median(np.log10(density[density > 0])))
    assert "sparsity" not in m and "auxk" not in m  # topk has no penalty; AuxK is training's
    assert math.isnan(evaluate(model, np.tile(x[:1], (4, 1)))["fvu"])  # no variance at all


def test_evaluate_leaves_out_auxk():
    model, x = auxk_model()
    m = evaluate(model, x)
    assert "auxk" not in m
    assert m["total"] == pytest.approx(m["reconstruction"] + m["weight_decay"])


@pytest.mark.parametrize("mechanism", ["l1", "topk-relu"])
def test_encode_subtracts_the_decoder_bias_like_the_forward_pass(mechanism):
    model = build(5, 4, subtract_decoder_bias=True, combo=("linear", "mse", "mean"),
                  **MECHANISMS[mechanism])
    randomize(model, np.random.default_rng(11))
    x = np.random.default_rng(12).random((6, 5))
    np.testing.assert_allclose(to_numpy(model.forward(x)[0]),
                               np.maximum(pre_activations(model, x), 0) if mechanism == "l1"
                               else to_numpy(model.forward(x)[0]))
    np.testing.assert_allclose(to_numpy(model.encode(x)), to_numpy(model.forward(x)[0]),
                               err_msg="encode() must code x - b2 as training does")


def test_linear_topk_codes_count_every_kept_unit_as_active():
    """k-sparse codes (linear TopK) have exactly k nonzero codes per sample, of either sign:
    l0 is k. Here every pre-activation is negative."""
    model = build(5, 6, sparsity="topk", k=2, hidden_activation="linear",
                  combo=("linear", "mse", "mean"))
    randomize(model, np.random.default_rng(13))
    model.params["encoder.b"][...] -= 10.0
    x = np.random.default_rng(14).random((9, 5))
    h = to_numpy(model.encode(x))
    assert ((h != 0).sum(axis=1) == 2).all() and (h <= 0).all()
    assert evaluate(model, x)["l0"] == 2.0


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_evaluates_forward_on_the_engine_is_the_models(mechanism):
    """minisae.fast.values (what evaluate runs: TopK by partial selection, not two sorts)
    gives model.values' codes and reconstruction."""
    model = build(6, 8, seed=2, **MECHANISMS[mechanism])
    randomize(model, np.random.default_rng(3))
    x = model.as_batch(np.random.default_rng(4).uniform(size=(9, 6)))
    ours, reference = minisae.fast.values(model, x), model.values(x)
    assert set(ours) == set(reference)
    for name in ("h", "y"):
        np.testing.assert_allclose(to_numpy(ours[name]), to_numpy(reference[name]), rtol=1e-12,
                                   atol=1e-15)
