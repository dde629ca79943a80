"""The thread policy (minisae/fast/threads.py): the count it chooses, its trials under "auto"
(driven here by a fake clock), and that BLAS, the fused step (minisae.fast.loss_and_grads)
and FastAdam follow it. No test asserts a time."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import minisae.fast
from conftest import make_model, random_inputs
from minisae import Adam
from minisae.errors import ConfigError
from minisae.fast import FastAdam
from minisae.fast import threads as T
from minisae.training import Checkpoints, Engine, fit

BIG = (784, 1000, 1000)     # n_inputs, n_hidden, batch: 1.6 GFLOP per product
TINY = (784, 64, 24)        # 2.4 MFLOP per product


def blas_threads():
    """NumPy's BLAS threads (SciPy's own BLAS, loaded later by some modules, is not ours)."""
    return [lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]


class FakeClock:
    """A clock the test moves: each step takes `step` seconds of it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_steps(policy, clock, seconds_for, n):
    """n steps through the policy; a step takes seconds_for(threads in force) on the clock."""
    used = []
    for _ in range(n):
        policy.step_started()
        used.append(policy.threads)
        clock.now += seconds_for(policy.threads)
        policy.step_finished()
    return used


def auto_policy(monkeypatch, cores=4, size=BIG):
    monkeypatch.setattr(T, "available_cores", lambda: cores)
    clock, applied = FakeClock(), []
    policy = T.ThreadPolicy("adaptive", *size, set_blas=applied.append, clock=clock)
    return policy, clock, applied


# ----------------------------------------------------------------------------- the choice

def test_parse_threads():
    assert T.parse_threads(None) == T.parse_threads("auto") == T.parse_threads(" AUTO ") == "auto"
    assert T.parse_threads("adaptive") == "adaptive"
    assert T.parse_threads(3) == T.parse_threads("3") == 3
    for bad in (0, -1, "0", "two", 1.5, True, ""):
        with pytest.raises(ConfigError, match="threads"):
            T.parse_threads(bad)


def test_auto_starts_small_products_on_one_thread_and_large_on_every_core(monkeypatch):
    monkeypatch.setattr(T, "available_cores", lambda: 8)
    assert T.choose_threads("auto", *TINY) == 1
    assert T.choose_threads("auto", *BIG) == 8
    assert T.choose_threads("adaptive", *BIG) == 8
    assert T.choose_threads(3, *TINY) == 3  # a number is taken as it is


def test_auto_never_changes_the_count_whatever_the_steps_take(monkeypatch):
    # "auto" is repeatable: the same count whatever the load (slow steps do not move it);
    # only "adaptive" trades that for speed under load
    monkeypatch.setattr(T, "available_cores", lambda: 4)
    clock, applied = FakeClock(), []
    policy = T.ThreadPolicy("auto", *BIG, set_blas=applied.append, clock=clock)
    used = run_steps(policy, clock, lambda n: 10.0 if n > 1 else 0.001, 200)
    assert not policy.adaptive and set(used) == {4} and applied == []


def test_available_cores_is_at_least_one_and_at_most_the_affinity():
    assert 1 <= T.available_cores() <= len(__import__("os").sched_getaffinity(0))


def test_a_fixed_count_never_changes(monkeypatch):
    monkeypatch.setattr(T, "available_cores", lambda: 4)
    clock, applied = FakeClock(), []
    policy = T.ThreadPolicy(2, *BIG, set_blas=applied.append, clock=clock)
    assert not policy.adaptive
    assert set(run_steps(policy, clock, lambda n: 1.0, 50)) == {2} and applied == []


def test_auto_on_tiny_products_or_one_core_does_not_try(monkeypatch):
    for cores, size in ((4, TINY), (1, BIG)):
        policy, clock, applied = auto_policy(monkeypatch, cores, size)
        assert not policy.adaptive and policy.threads == 1
        run_steps(policy, clock, lambda n: 1.0, 30)
        assert applied == [] and policy.trials == 0


# ----------------------------------------------------------------------------- the trials

def until_decided(policy, clock, seconds_for, cap=10_000):
    """Steps until the policy finishes its next trial; the thread counts they ran on."""
    trials, used = policy.trials, []
    while policy.trials == trials:
        used += run_steps(policy, clock, seconds_for, 1)
        assert len(used) < cap, "no decision"
    return used


def test_auto_keeps_every_core_when_they_are_faster(monkeypatch):
    policy, clock, applied = auto_policy(monkeypatch)
    used = until_decided(policy, clock, lambda n: 0.01 if n == 4 else 0.015)
    assert used[:T.WARMUP_STEPS + T.SAMPLES] == [4] * (T.WARMUP_STEPS + T.SAMPLES)
    assert set(used[T.WARMUP_STEPS + T.SAMPLES:]) == {1}   # then one thread, until decided
    assert policy.trials == 1 and policy.threads == 4 and applied == [1, 4]
    assert run_steps(policy, clock, lambda n: 0.01, 5) == [4] * 5


def test_one_thread_steps_right_after_more_threads_do_not_count(monkeypatch):
    policy, clock, _ = auto_policy(monkeypatch)
    used = until_decided(policy, clock, lambda n: 0.01 if n == 4 else 0.012)
    ones = used.count(1)
    # the first SETTLE_SECONDS of one-thread steps wait for OpenBLAS's spinning worker
    settling = T.SETTLE_SECONDS / 0.012
    assert settling + T.SAMPLES - 1 <= ones <= settling + T.SAMPLES + 1


def test_auto_falls_back_to_one_thread_when_a_core_is_busy(monkeypatch):
    policy, clock, applied = auto_policy(monkeypatch)
    until_decided(policy, clock, lambda n: 0.5 if n == 4 else 0.02)
    assert policy.trials == 1 and policy.threads == 1 and applied[-1] == 1
    assert run_steps(policy, clock, lambda n: 0.02, 5) == [1] * 5


def test_a_clear_loser_ends_the_trial_early(monkeypatch):
    policy, clock, _ = auto_policy(monkeypatch)
    until_decided(policy, clock, lambda n: 0.5 if n == 4 else 0.02)  # now on one thread
    # the hold passes; the next trial runs one thread first, then four: one step of those
    # is enough to see them lose
    clock.now += 2 * T.MAX_HOLD_SECONDS
    run_steps(policy, clock, lambda n: 0.02, T.HOLD_STEPS)
    used = until_decided(policy, clock, lambda n: 0.5 if n == 4 else 0.02)
    assert used == [1] * T.SAMPLES + [4] and policy.threads == 1


def test_more_threads_must_win_by_the_margin(monkeypatch):
    policy, clock, _ = auto_policy(monkeypatch)
    until_decided(policy, clock, lambda n: 0.0099 if n == 4 else 0.01)
    assert policy.threads == 1  # 1% faster is within noise: one thread, kinder to the machine


def test_auto_tries_again_after_its_hold_and_follows_a_change(monkeypatch):
    policy, clock, _ = auto_policy(monkeypatch)
    busy = {"on": True}

    def seconds(n):
        return (0.5 if busy["on"] else 0.01) if n == 4 else 0.02

    until_decided(policy, clock, seconds)
    assert policy.threads == 1
    busy["on"] = False          # the other program ended
    used = until_decided(policy, clock, seconds)
    assert len(used) >= max(T.HOLD_STEPS, T.HOLD_SECONDS / 0.02)  # not before the hold
    assert policy.trials == 2 and policy.threads == 4


def test_the_hold_doubles_while_the_answer_stays(monkeypatch):
    policy, clock, _ = auto_policy(monkeypatch)
    until_decided(policy, clock, lambda n: 0.02)
    first = policy._hold
    run_steps(policy, clock, lambda n: 0.02, 5000)
    assert policy.trials > 2 and policy._hold > first and policy._hold <= T.MAX_HOLD_SECONDS


def test_on_one_thread_a_slowdown_waits_for_the_hold(monkeypatch):
    policy, clock, _ = auto_policy(monkeypatch)
    until_decided(policy, clock, lambda n: 0.5 if n == 4 else 0.02)
    assert policy.threads == 1
    # the machine gets busier still: more threads would not help, so no trial before the hold
    run_steps(policy, clock, lambda n: 0.2, T.HOLD_STEPS - 1)
    assert policy.trials == 1


def test_a_sudden_slowdown_on_more_threads_trips_a_new_trial(monkeypatch):
    policy, clock, _ = auto_policy(monkeypatch)
    until_decided(policy, clock, lambda n: 0.01 if n == 4 else 0.02)
    assert policy.threads == 4
    # another program takes a core: four threads now crawl; well before the hold ends
    # (HOLD_SECONDS), the tripwire sends the policy to one thread
    used = until_decided(policy, clock, lambda n: 0.2 if n == 4 else 0.02)
    assert len(used) < T.RECENT + 2 * T.SAMPLES + 20 and clock.now < T.HOLD_SECONDS
    assert policy.trials == 2 and policy.threads == 1


# ----------------------------------------------------------------------------- BLAS, the step, Adam

def test_thread_limits_sets_blas_and_restores_it():
    before = blas_threads()
    with T.thread_limits(1, *BIG) as policy:
        assert T.active() is policy and policy.threads == 1
        assert set(blas_threads()) == {1}
        with T.thread_limits("auto", *TINY) as inner:
            assert T.active() is inner
        assert T.active() is policy
    assert T.active() is None and blas_threads() == before


def test_thread_limits_restores_blas_after_an_error():
    before = blas_threads()
    with pytest.raises(RuntimeError):
        with T.thread_limits(1, *BIG):
            raise RuntimeError("boom")
    assert T.active() is None and blas_threads() == before


def test_thread_limits_rejects_a_bad_count():
    with pytest.raises(ConfigError):
        with T.thread_limits(0, *BIG):
            pass


def test_the_fused_step_reports_to_the_policy(monkeypatch):
    calls = []
    model = make_model("numpy", 6, 4, dtype="float32")
    minisae.fast.loss_and_grads(model, random_inputs(3, 6))  # no policy in force: not timed
    with T.thread_limits(1, 6, 4, 3) as policy:
        monkeypatch.setattr(policy, "step_started", lambda: calls.append("start"))
        monkeypatch.setattr(policy, "step_finished", lambda: calls.append("end"))
        minisae.fast.loss_and_grads(model, random_inputs(3, 6))
        model.loss_and_grads(random_inputs(3, 6))  # the reference path is not timed
    assert calls == ["start", "end"]


@pytest.mark.parametrize("fast", [True, False])
def test_fit_times_the_engine_steps_only(monkeypatch, fast):
    starts, ends = [], []
    monkeypatch.setattr(T.ThreadPolicy, "step_started", lambda self: starts.append(self))
    monkeypatch.setattr(T.ThreadPolicy, "step_finished", lambda self: ends.append(self))
    model = make_model("numpy", 8, 5, dtype="float32")
    fit(model, Adam(model.params, model.grads, lr=0.01), random_inputs(40, 8), epochs=2,
        batch_size=10, progress=False, engine=Engine(fast=fast, threads=1))
    steps = 2 * 4
    assert (len(starts), len(ends)) == ((steps, steps) if fast else (0, 0))


def test_fast_adam_follows_the_policy_unless_given_threads(monkeypatch):
    model = make_model("numpy", 6, 4, dtype="float32")
    opt = Adam(model.params, model.grads)
    auto, fixed = FastAdam(opt), FastAdam(opt, threads=3)
    assert minisae.fast.fast_optimizer(opt).current_threads() == 1
    assert auto.current_threads() == 1     # no policy in force
    assert fixed.current_threads() == 3
    with T.thread_limits(2, 6, 4, 3) as policy:
        assert auto.current_threads() == policy.adam_threads() == 1
        monkeypatch.setattr(policy, "adam_threads", lambda: 2)
        assert auto.current_threads() == 2
        assert fixed.current_threads() == 3
    assert auto.current_threads() == 1


@pytest.mark.parametrize("threads", [1, "auto"])
def test_fit_runs_under_the_policy_and_restores_blas(threads):
    before = blas_threads()
    seen = []
    model = make_model("numpy", 8, 5, dtype="float32")
    opt = Adam(model.params, model.grads, lr=0.01)
    x = np.random.default_rng(0).random((40, 8))
    fit(model, opt, x, epochs=2, batch_size=10, progress=False, engine=Engine(threads=threads),
        checkpoints=Checkpoints(lambda h, at: seen.append((T.active().threads,
                                                           blas_threads()))))
    assert [s[0] for s in seen] == [1, 1]         # tiny: one thread either way
    assert all(set(b) == {1} for _, b in seen)
    assert T.active() is None and blas_threads() == before


def test_fit_rejects_a_bad_thread_count():
    model = make_model("numpy", 8, 5, dtype="float32")
    with pytest.raises(ConfigError, match="threads"):
        fit(model, Adam(model.params, model.grads), np.zeros((10, 8)), epochs=1, batch_size=5,
            progress=False, engine=Engine(threads=-2))
