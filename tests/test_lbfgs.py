"""L-BFGS (minisae.training.lbfgs): exact on a quadratic, better than Adam per pass on a small
autoencoder, per-iteration callback and history, iteration budget, state round trip, errors."""
import io
import math

import numpy as np
import pytest

from conftest import make_model
from minisae import Adam, get_backend, to_numpy
from minisae.errors import CheckpointError, ConfigError, TrainingError
from minisae.files.state import check_state, optimizer_state, restore
from minisae.training.lbfgs import LBFGS, LBFGSResult, LBFGSStep


class Quadratic:
    """f(p) = 1/2 p.H p - c.p, with H symmetric positive definite; the minimum is H^-1 c.
    Holds p and its gradient H p - c as flat buffers on a backend, like a model."""

    def __init__(self, n=12, backend="numpy", dtype="float64", seed=0):
        rng = np.random.default_rng(seed)
        A = rng.normal(size=(n, n))
        self.H, self.c = A @ A.T + n * np.eye(n), rng.normal(size=n)
        self.be = get_backend(backend, dtype)
        self.p, self.g = self.be.zeros(n), self.be.zeros(n)
        self.calls = 0

    def loss(self):
        self.calls += 1
        p = to_numpy(self.p).astype(np.float64)
        self.g[...] = self.be.asarray(self.H @ p - self.c)
        return 0.5 * p @ self.H @ p - self.c @ p

    @property
    def solution(self):
        return np.linalg.solve(self.H, self.c)


def tiny_autoencoder(backend="numpy", seed=1):
    return make_model(backend, n_inputs=16, n_hidden=8, combo=("sigmoid", "mse", "halfsum"),
                      sparsity_target=0.1, sparsity_weight=3.0, weight_decay=3e-3, seed=seed)


def tiny_data(seed=0):
    return np.random.default_rng(seed).random((128, 16)) ** 3  # mostly dark "pixels"


# ----------------------------------------------------------------------------- it minimises

def test_minimises_a_quadratic_exactly(backend):
    q = Quadratic(backend=backend)
    opt = LBFGS(q.p, q.g, max_iter=100, gtol=1e-12, ftol=0.0)
    result = opt.minimize(q.loss)
    assert isinstance(result, LBFGSResult) and result.converged, result.message
    np.testing.assert_allclose(to_numpy(q.p), q.solution, rtol=0, atol=1e-8)
    f_min = -0.5 * q.c @ q.solution
    assert result.loss == pytest.approx(f_min, rel=1e-12)
    assert result.initial_loss == 0.0  # at p = 0
    # the model is left at the result, with that point's gradient in the grads buffer
    np.testing.assert_allclose(to_numpy(q.g), q.H @ to_numpy(q.p) - q.c, atol=1e-12)
    assert result.evaluations == q.calls and opt.evaluations == q.calls
    assert result.iterations == opt.t == len(result.losses) <= 2 * len(q.c)


def test_float32_buffers_stay_float32():
    q = Quadratic(dtype="float32")
    result = LBFGS(q.p, q.g, max_iter=100).minimize(q.loss)
    assert q.p.dtype == np.float32 and q.g.dtype == np.float32
    np.testing.assert_allclose(q.p, q.solution, atol=1e-4)
    assert math.isfinite(result.loss)


def test_trains_an_autoencoder_lower_than_adam_in_as_many_passes(backend):
    x = tiny_data()
    model = tiny_autoencoder(backend)
    result = LBFGS(model.flat_params, model.flat_grads, max_iter=40).minimize(
        lambda: model.loss_and_grads(x))
    assert result.iterations == 40
    assert result.loss == pytest.approx(model.loss(x).total, rel=1e-12)  # params are the result's
    assert result.loss < 0.1 * result.initial_loss
    # Adam, full batch, one step per pass over the data, at a few learning rates
    for lr in (0.01, 0.03, 0.1):
        twin = tiny_autoencoder(backend)
        adam = Adam(twin.params, twin.grads, lr=lr)
        for _ in range(result.evaluations):
            twin.loss_and_grads(x)
            adam.step()
        assert result.loss < twin.loss(x).total, lr


def test_accepts_params_dicts_that_tile_one_buffer():
    model = tiny_autoencoder()
    opt = LBFGS(model.params, model.grads, max_iter=3)
    assert opt.flat_params is model.flat_params and opt.flat_grads is model.flat_grads
    opt.minimize(lambda: model.loss_and_grads(tiny_data()))
    assert opt.t == 3


# ----------------------------------------------------------------------------- callback, budget

def test_callback_sees_every_iteration_and_the_history_decreases():
    q = Quadratic()
    steps = []
    result = LBFGS(q.p, q.g, max_iter=8, ftol=0.0, gtol=0.0).minimize(q.loss, callback=steps.append)
    assert all(isinstance(s, LBFGSStep) for s in steps)
    assert [s.iteration for s in steps] == list(range(1, 9))
    assert [s.loss for s in steps] == result.losses
    assert steps[-1].evaluations <= result.evaluations
    assert all(b < a for a, b in zip([result.initial_loss] + result.losses, result.losses))
    assert result.loss == result.losses[-1]


def test_callback_can_stop_the_run_at_an_iterate():
    q = Quadratic()
    iterates = []

    def stop_at_three(step):
        iterates.append(to_numpy(q.p).copy())
        return step.iteration == 3

    opt = LBFGS(q.p, q.g, max_iter=50)
    result = opt.minimize(q.loss, callback=stop_at_three)
    assert result.iterations == opt.t == 3 and not result.converged
    assert "callback" in result.message
    np.testing.assert_array_equal(q.p, iterates[-1])
    assert result.loss == pytest.approx(q.loss(), rel=1e-15)


def test_budget_is_counted_over_calls():
    q = Quadratic()
    opt = LBFGS(q.p, q.g, max_iter=5, ftol=0.0, gtol=0.0)
    assert opt.minimize(q.loss, max_iter=2).iterations == 2
    assert opt.minimize(q.loss).iterations == 3  # what is left of the 5
    done = opt.minimize(q.loss)
    assert done.iterations == 0 and "max_iter" in done.message and opt.t == 5
    assert done.loss == pytest.approx(q.loss())


# ----------------------------------------------------------------------------- state

def test_state_round_trip_through_npz_and_resume():
    x = tiny_data()
    model = tiny_autoencoder()
    opt = LBFGS(model.flat_params, model.flat_grads, max_iter=12, memory=7)
    opt.minimize(lambda: model.loss_and_grads(x), max_iter=5)
    state = optimizer_state(opt)
    assert state == {"t": 5, "evaluations": opt.evaluations, "max_iter": 12, "memory": 7}
    assert all(type(v) is int for v in state.values())  # plain numbers, no pickle needed

    buf = io.BytesIO()
    np.savez(buf, params=to_numpy(model.flat_params), **state)
    buf.seek(0)
    saved = dict(np.load(buf, allow_pickle=False))

    resumed = tiny_autoencoder(seed=99)
    resumed.flat_params[...] = saved.pop("params")
    opt2 = LBFGS(resumed.flat_params, resumed.flat_grads)
    check_state("LBFGS", saved, {}, "float64")  # what a checkpoint's load runs first
    restore(opt2, saved)
    assert (opt2.t, opt2.max_iter, opt2.memory, opt2.evaluations) == (5, 12, 7, opt.evaluations)
    before = resumed.loss(x).total
    result = opt2.minimize(lambda: resumed.loss_and_grads(x))
    assert result.iterations == 7 and opt2.t == 12        # the rest of the budget
    assert result.initial_loss == pytest.approx(before) and result.loss < before


def test_check_state_rejects_other_optimizers_state():
    q = Quadratic()
    other = r"LBFGS state lacks \['evaluations'.*has unknown entries \['lr'\]"
    with pytest.raises(CheckpointError, match=other):
        check_state("LBFGS", {"t": 3, "lr": 0.01}, {}, "float64")
    bad = {"t": 3, "evaluations": 4, "max_iter": 9, "memory": 0}
    with pytest.raises(CheckpointError, match="'memory' must be a whole number >= 1"):
        check_state("LBFGS", bad, {}, "float64")
    opt = LBFGS(q.p, q.g)
    with pytest.raises(CheckpointError, match="memory"):
        restore(opt, bad)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kw,match", [({"max_iter": -1}, "max_iter"),
                                      ({"max_iter": 2.5}, "max_iter"),
                                      ({"max_iter": True}, "max_iter"), ({"memory": 0}, "memory"),
                                      ({"gtol": -1.0}, "gtol"), ({"ftol": float("nan")}, "ftol")])
def test_bad_settings(kw, match):
    q = Quadratic()
    with pytest.raises(ConfigError, match=match):
        LBFGS(q.p, q.g, **kw)
    with pytest.raises(ConfigError, match="max_iter"):
        LBFGS(q.p, q.g).minimize(q.loss, max_iter=-3)


def test_arrays_that_are_not_flat_buffers():
    model = tiny_autoencoder()
    with pytest.raises(ConfigError, match="1-D.*flat_params"):
        LBFGS(model.params["encoder.W"], model.grads["encoder.W"])
    separate = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ConfigError, match="tile one 1-D buffer"):
        LBFGS(separate, model.grads)
    with pytest.raises(ConfigError, match="one size"):
        LBFGS(model.flat_params, model.flat_grads[:-1])
    with pytest.raises(ConfigError, match="floats"):
        LBFGS(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
    with pytest.raises(ConfigError, match="minimize"):
        LBFGS(model.flat_params, model.flat_grads).step()


@pytest.mark.parametrize("failure", ["nan", "interrupt"])
def test_a_failed_evaluation_leaves_the_last_iterate(failure):
    q = Quadratic()
    iterates = []

    def loss():
        value = q.loss()
        if q.calls == 6:
            if failure == "interrupt":
                raise KeyboardInterrupt  # Ctrl-C in the middle of a line search
            return float("nan")
        return value

    opt = LBFGS(q.p, q.g, max_iter=50, gtol=0.0, ftol=0.0)
    expected = (TrainingError, "non-finite loss .*evaluation 6") if failure == "nan" \
        else (KeyboardInterrupt, None)
    with pytest.raises(expected[0], match=expected[1]):
        opt.minimize(loss, callback=lambda s: iterates.append(to_numpy(q.p).copy()))
    assert iterates and opt.t == len(iterates)
    np.testing.assert_array_equal(q.p, iterates[-1])


def test_loss_fn_must_return_a_loss():
    q = Quadratic()
    with pytest.raises(ConfigError, match=r"\.total"):
        LBFGS(q.p, q.g).minimize(lambda: "nope")
