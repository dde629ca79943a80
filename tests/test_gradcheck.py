"""The gradient check (minisae.gradcheck): central differences, its table, bad gradients named."""
import numpy as np
import pytest

from conftest import make_model, random_inputs
from minisae import get_backend, to_numpy
from minisae.errors import ConfigError, GradientCheckError, MinisaeError
from minisae.gradcheck import (STEP, THRESHOLD, GradCheckRow, assert_gradients_ok, check_model,
                               format_table, numerical_gradient, relative_error)

NAMES = ["encoder.W", "encoder.b", "decoder.W", "decoder.b"]


def test_constants():
    assert THRESHOLD == 1e-7 and STEP == 1e-5


def test_relative_error_values():
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.zeros(3), np.ones(3)) == pytest.approx(1.0)
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert relative_error(np.array([1.0]), np.array([-1.0])) == float("inf")
    # ||(1, 2) - (1, 2.2)|| / ||(2, 4.2)||
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == \
        pytest.approx(0.2 / np.hypot(2.0, 4.2), rel=1e-12)
    assert relative_error(np.ones((2, 3)), np.ones(6)) == 0.0  # shapes are flattened
    assert isinstance(relative_error(np.ones(2), 2 * np.ones(2)), float)


def test_numerical_gradient_of_a_known_function(backend):
    be = get_backend(backend, "float64")
    a = be.asarray(np.random.default_rng(0).uniform(1, 2, size=(3, 4)))
    p = be.asarray(np.random.default_rng(1).uniform(-1, 1, size=(3, 4)))
    p0 = to_numpy(p).copy()
    grad = numerical_gradient(lambda: float((a * p ** 3).sum()), p)
    assert isinstance(grad, np.ndarray) and grad.shape == (3, 4) and grad.dtype == np.float64
    np.testing.assert_allclose(grad, 3 * to_numpy(a) * p0 ** 2, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(to_numpy(p), p0)  # restored exactly


def test_numerical_gradient_respects_the_step():
    p = np.array([0.0])
    # for f = p^3 at 0, central differences with step h give ((h^3) - (-h^3)) / 2h = h^2
    assert numerical_gradient(lambda: float(p[0] ** 3), p, h=1e-2)[0] == pytest.approx(1e-4)


def test_numerical_gradient_of_a_strided_view():
    # a view with a step (not C-contiguous) is perturbed in place too, and restored
    base = np.random.default_rng(5).uniform(-1, 1, size=(4, 4))
    p = base[:, ::2]
    assert not p.flags.c_contiguous
    p0, base0 = p.copy(), base.copy()
    grad = numerical_gradient(lambda: float((p ** 3).sum()), p)
    np.testing.assert_allclose(grad, 3 * p0 ** 2, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(base, base0)


@pytest.mark.parametrize("make", [lambda a: a[:, :2], lambda a: a.T], ids=["slice", "transpose"])
def test_numerical_gradient_never_silently_misses_the_array(make):
    # a layout that cannot be flattened without a copy: the right gradient, or a ConfigError;
    # never a gradient of zeros from perturbing a copy
    base = np.random.default_rng(6).uniform(-1, 1, size=(4, 4))
    p = make(base)
    p0 = p.copy()
    try:
        grad = numerical_gradient(lambda: float((p ** 3).sum()), p)
    except ConfigError:
        return
    np.testing.assert_allclose(grad, 3 * p0 ** 2, rtol=1e-8, atol=1e-9)


def test_check_model_returns_a_row_per_parameter(backend):
    model = make_model(backend, 4, 3, weight_decay=0.01)
    x = random_inputs(3, 4, seed=2)
    rows = check_model(model, x)
    assert [r.name for r in rows] == NAMES
    assert [r.shape for r in rows] == [(4, 3), (3,), (3, 4), (4,)]
    for r in rows:
        assert isinstance(r, GradCheckRow) and r.ok
        assert r.rel_error < THRESHOLD and r.threshold == THRESHOLD
        assert r.analytic_norm == pytest.approx(r.numeric_norm, rel=1e-6)
    assert_gradients_ok(rows)  # does not raise
    # the grads it reports are those of the unperturbed params
    before = to_numpy(model.flat_params).copy()
    check_model(model, x)
    np.testing.assert_array_equal(to_numpy(model.flat_params), before)


def test_check_model_needs_float64():
    model = make_model("numpy", 4, 3, dtype="float32")
    with pytest.raises(ConfigError, match="float64"):
        check_model(model, random_inputs(2, 4))


@pytest.mark.parametrize("broken", NAMES)
def test_a_broken_gradient_is_caught_and_named(monkeypatch, broken):
    model = make_model("numpy", 4, 3, weight_decay=0.01)
    x = random_inputs(3, 4, seed=3)
    real = model.loss_and_grads

    def off_by_one_percent(x, validate=True):
        out = real(x, validate)
        model.grads[broken][...] *= 1.01
        return out

    monkeypatch.setattr(model, "loss_and_grads", off_by_one_percent)
    rows = check_model(model, x)
    bad = [r.name for r in rows if not r.ok]
    assert bad == [broken]
    worst = next(r for r in rows if r.name == broken)
    assert 1e-3 < worst.rel_error < 1e-2  # 1 % off -> about 0.005
    with pytest.raises(GradientCheckError, match=broken.replace(".", r"\.")) as info:
        assert_gradients_ok(rows)
    assert isinstance(info.value, MinisaeError) and "relative error" in str(info.value)
    table = format_table(rows)
    assert "NO" in table


def test_assert_gradients_ok_names_the_worst():
    rows = [GradCheckRow("alpha", (2,), 1.0, 1.0, 1e-3, 1e-7),
            GradCheckRow("beta", (2,), 1.0, 1.0, 5e-2, 1e-7),
            GradCheckRow("gamma", (2,), 1.0, 1.0, 1e-9, 1e-7)]
    with pytest.raises(GradientCheckError) as info:
        assert_gradients_ok(rows)
    msg = str(info.value)
    assert "'beta'" in msg and "5.000e-02" in msg and "alpha, beta" in msg and "gamma" not in msg
    assert_gradients_ok(rows[2:])
    assert not GradCheckRow("t", (1,), 1, 1, 1e-7, 1e-7).ok  # the threshold itself fails


def test_format_table_lists_every_parameter():
    model = make_model("numpy", 4, 3)
    rows = check_model(model, random_inputs(2, 4, seed=4))
    table = format_table(rows, title="gradient check")
    lines = table.splitlines()
    assert lines[0] == "gradient check"
    assert "parameter" in lines[1] and "rel. error" in lines[1]
    assert len(lines) == 2 + len(NAMES)
    for name, shape, line in zip(NAMES, ("4x3", "3", "3x4", "4"), lines[2:]):
        assert line.split()[0] == name and line.split()[1] == shape and line.endswith("yes")
    assert format_table(rows).splitlines()[0].startswith("parameter")


def test_check_model_checks_the_function_it_is_given():
    import minisae.fast
    model = make_model("numpy", 4, 3, weight_decay=0.01)
    x = random_inputs(3, 4, seed=5)
    calls = []

    def engine_off_by_one_percent(m, *inputs):
        calls.append(inputs)
        out = minisae.fast.loss_and_grads(m, *inputs)
        m.grads["decoder.b"][...] *= 1.01
        return out

    rows = check_model(model, x, loss_and_grads=engine_off_by_one_percent)
    assert calls and all(len(c) == 1 and c[0] is x for c in calls)  # called as f(model, x)
    assert [r.name for r in rows if not r.ok] == ["decoder.b"]
    # the default is the reference, model.loss_and_grads; minisae.fast.check_model the engine
    assert all(r.ok for r in check_model(model, x))
    assert minisae.fast.fused(model) is None  # the engine really runs (no fallback)
    rows = minisae.fast.check_model(model, x)
    assert [r.name for r in rows] == NAMES and all(r.ok for r in rows)
    with pytest.raises(GradientCheckError, match=r"decoder\.b"):
        assert_gradients_ok(check_model(model, x, loss_and_grads=engine_off_by_one_percent))


def test_the_engine_check_does_not_run_the_reference(monkeypatch):
    import minisae.fast
    model = make_model("numpy", 4, 3)
    x = random_inputs(3, 4, seed=6)

    def broken_reference(x, validate=True):
        raise AssertionError("the reference ran")

    monkeypatch.setattr(model, "loss_and_grads", broken_reference)
    assert all(r.ok for r in minisae.fast.check_model(model, x))
    with pytest.raises(AssertionError, match="the reference ran"):
        check_model(model, x)
