"""The thread policy (minisae/fast/threads.py): the count it chooses, its trials under "auto"
(driven here by a fake clock), and that BLAS, the fused step (minisae.fast.loss_and_grads)
and FastAdam follow it. No test asserts a time."""
import os

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


class Probe:
    """A step's forward and backward pass, faked: each call takes seconds_for(the count in
    force) of the clock, and is counted."""

    def __init__(self, policy, clock, seconds_for):
        self.policy, self.clock, self.seconds_for, self.counts = policy, clock, seconds_for, []

    def __call__(self):
        self.counts.append(self.policy.threads)
        self.clock.now += self.seconds_for(self.policy.threads)


class FakeWatch:
    """A CpuWatch that reports `elsewhere` cores busy with other programs."""

    def __init__(self, elsewhere):
        self.elsewhere, self.started = elsewhere, 0

    def start(self):
        self.started += 1

    def cores(self):
        return self.elsewhere


def measured_policy(monkeypatch, threads="auto", cores=4, size=BIG, elsewhere=0.0):
    """A policy on a fake clock and a fake sleep (which moves the clock), and what it did;
    other programs keep `elsewhere` cores busy meanwhile."""
    monkeypatch.setattr(T, "available_cores", lambda: cores)
    clock, applied, slept = FakeClock(), [], []

    def sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    policy = T.ThreadPolicy(threads, *size, set_blas=applied.append, clock=clock, sleep=sleep,
                            watch=FakeWatch(elsewhere))
    return policy, clock, applied, slept


@pytest.mark.parametrize("every, one, chosen", [(0.01, 0.02, 4),     # every core faster
                                                (0.05, 0.01, 1),     # one thread faster
                                                (0.0099, 0.01, 1)])  # within the margin
def test_auto_measures_once_and_keeps_the_faster_count(monkeypatch, every, one, chosen):
    policy, clock, applied, slept = measured_policy(monkeypatch)
    assert policy.undecided and policy.threads == 4
    probe = Probe(policy, clock, lambda n: every if n == 4 else one)
    assert policy.decide(probe) == chosen == policy.threads
    assert not policy.undecided and policy.trials == 1
    assert policy.measured == pytest.approx({1: one, 4: every})
    # a warm-up pass on one thread, then one thread, then every core; the BLAS count was set
    # to each in turn, and left at the one chosen
    assert probe.counts[:1 + T.SAMPLES] == [1] * (1 + T.SAMPLES)
    assert set(probe.counts[1 + T.SAMPLES:]) == {4}
    assert len(probe.counts) <= 1 + 2 * T.SAMPLES
    assert applied == [1, 4] + ([1] if chosen == 1 else [])
    # OpenBLAS's spinning workers: SETTLE_SECONDS from the start before the timed passes
    assert slept == [pytest.approx(T.SETTLE_SECONDS - one)]
    # decided once: another call measures nothing, and no step moves the count again
    assert policy.decide(probe) == chosen and len(probe.counts) <= 1 + 2 * T.SAMPLES
    before = list(applied)
    used = run_steps(policy, clock, lambda n: 10.0 if n == chosen else 0.001, 500)
    assert set(used) == {chosen} and applied == before and policy.trials == 1


@pytest.mark.parametrize("elsewhere, every, chosen", [
    (0.0, 0.8, 4),    # idle: 1.25x faster is enough
    (None, 0.8, 4),   # no /proc/stat: as idle
    (0.4, 0.8, 4),    # under half a core elsewhere: as idle
    (1.0, 0.8, 1),    # a core busy elsewhere: 1.25x is not enough ...
    (1.0, 0.7, 4),    # ... 1.43x is
    (2.5, 0.76, 1)])
def test_auto_asks_more_of_every_core_on_a_loaded_machine(monkeypatch, elsewhere, every, chosen):
    """Where other programs kept BUSY_ELSEWHERE of a core busy during the measurement, every
    core is kept only if LOADED_MARGIN times one thread's time (1.33x faster), not MARGIN."""
    policy, clock, _, _ = measured_policy(monkeypatch, elsewhere=elsewhere)
    assert policy.decide(Probe(policy, clock, lambda n: every if n == 4 else 1.0)) == chosen
    assert policy._watch.started == 1 and policy.busy_elsewhere == elsewhere


def test_the_cpu_watch_counts_others_time_not_its_own():
    """cores(): the busy time of this process's cores less its own, over the wall time; None
    for a window too short to tell, or without readings."""
    assert T.CpuWatch.elsewhere((10.0, 2.0, 100.0), (11.5, 2.5, 101.0)) == pytest.approx(1.0)
    assert T.CpuWatch.elsewhere((10.0, 2.0, 100.0), (10.5, 2.6, 101.0)) == 0.0  # never < 0
    assert T.CpuWatch.elsewhere((10.0, 2.0, 100.0), (10.5, 2.0, 100.01)) is None
    assert T.CpuWatch.elsewhere(None, (10.5, 2.0, 101.0)) is None


def test_the_cpu_watch_sees_a_spinning_process_on_this_machine():
    """On Linux, a spinning child is counted at (at least nearly) the CPU time it was given,
    whatever else runs: other load only adds."""
    import subprocess
    import sys
    import time
    if T.CpuWatch._read() is None:
        pytest.skip("no /proc/stat here")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the child's start-up is not counted
        ticks = os.sysconf("SC_CLK_TCK")

        def child_seconds():
            with open(f"/proc/{spinner.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

        watch = T.CpuWatch()
        before, t0 = child_seconds(), time.monotonic()
        watch.start()
        time.sleep(0.5)
        seen = watch.cores()
        child = (child_seconds() - before) / (time.monotonic() - t0)
        assert child > 0.2 and seen >= child - 0.15, (seen, child)
    finally:
        spinner.kill()
        spinner.wait()


def test_auto_stops_timing_a_clear_loser_and_long_passes_early(monkeypatch):
    # every core crawls (a busy core): one pass of them is enough
    policy, clock, _, _ = measured_policy(monkeypatch)
    probe = Probe(policy, clock, lambda n: 0.5 if n == 4 else 0.01)
    assert policy.decide(probe) == 1 and probe.counts == [1] * (1 + T.SAMPLES) + [4]
    # passes of a second each: one timed pass of each count, the warm-up needs no wait
    policy, clock, _, slept = measured_policy(monkeypatch)
    probe = Probe(policy, clock, lambda n: 1.0 if n == 4 else 1.5)
    assert policy.decide(probe) == 4 and probe.counts == [1, 1, 4] and slept == []


def test_the_measurement_is_cheap(monkeypatch):
    # what decide() costs at a bench-like step (8 ms on every core, 14 ms on one), idle and
    # with a busy core: the passes and the wait, well under half a second
    for every, one in ((0.008, 0.014), (0.026, 0.016), (0.092, 0.0066)):
        policy, clock, _, _ = measured_policy(monkeypatch, cores=2)
        policy.decide(Probe(policy, clock, lambda n: every if n == 2 else one))
        assert clock.now < 0.35, (every, one, clock.now)


@pytest.mark.parametrize("threads, cores, size, expected", [
    ("auto", 4, TINY, 1), ("auto", 1, BIG, 1),                 # small or one core: 1, untimed
    (3, 4, BIG, 3), (1, 4, BIG, 1), ("adaptive", 4, BIG, 4)])   # a number; adaptive's trials
def test_decide_measures_only_an_undecided_auto(monkeypatch, threads, cores, size, expected):
    policy, clock, applied, slept = measured_policy(monkeypatch, threads, cores, size)
    probe = Probe(policy, clock, lambda n: 1.0)
    assert not policy.undecided
    assert policy.decide(probe) == expected == policy.threads
    assert probe.counts == [] and applied == [] and slept == [] and policy.trials == 0


def test_a_number_never_changes_under_load(monkeypatch):
    policy, clock, applied, _ = measured_policy(monkeypatch, threads=2)
    used = run_steps(policy, clock, lambda n: 10.0 if n > 1 else 0.001, 200)
    assert not policy.adaptive and set(used) == {2} and applied == []


def test_auto_without_decide_runs_one_trial_on_real_steps_then_keeps_it(monkeypatch):
    # a loop that never calls decide (the benchmark's raw step): one trial, as "adaptive"'s
    # first, then the count stays, whatever the steps take after (no hold, no tripwire)
    monkeypatch.setattr(T, "available_cores", lambda: 4)
    clock, applied = FakeClock(), []
    policy = T.ThreadPolicy("auto", *BIG, set_blas=applied.append, clock=clock)
    until_decided(policy, clock, lambda n: 0.5 if n == 4 else 0.02)
    assert policy.threads == 1 and not policy.undecided and not policy.adaptive
    used = run_steps(policy, clock, lambda n: 0.001 if n == 4 else 1.0, 5000)
    assert set(used) == {1} and policy.trials == 1


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


# ----------------------------------------------------------------------------- "auto" through fit

def fake_measurement(monkeypatch, seconds):
    """fit's "auto" measured on 2 cores whatever the model's size, each timed count taking
    seconds[count] (the test may change them between runs); the counts timed, in a list."""
    monkeypatch.setattr(T, "AUTO_MIN_FLOPS", 0.0)
    monkeypatch.setattr(T, "available_cores", lambda: 2)
    monkeypatch.setattr(T, "SETTLE_SECONDS", 0.0)
    timed = []

    def time_passes(self, probe, threads, lost_above):
        self._apply(threads)
        probe()
        timed.append(threads)
        return seconds[threads]

    monkeypatch.setattr(T.ThreadPolicy, "_time_passes", time_passes)
    return timed


def kl_run(seed=0):
    model = make_model("numpy", 8, 6, dtype="float32", seed=seed)
    return model, Adam(model.params, model.grads, lr=0.01), random_inputs(40, 8, seed=1)


def test_fit_decides_once_records_the_count_and_runs_on_it(monkeypatch):
    seconds = {1: 0.02, 2: 0.01}                       # every core faster
    timed = fake_measurement(monkeypatch, seconds)
    model, opt, x = kl_run()
    seen = []
    h = fit(model, opt, x, epochs=3, batch_size=10, progress=False,
            checkpoints=Checkpoints(lambda hist, at: seen.append(
                (T.active().threads, set(blas_threads())))))
    assert timed == [1, 2]                             # once, at the start
    assert h.threads == [2, 2, 2] and seen == [(2, {2})] * 3
    assert opt.t == 3 * 4                              # the passes were not training steps
    seconds.update({1: 0.01, 2: 0.05})                 # the load changed: one thread faster
    model, opt, x = kl_run()
    assert fit(model, opt, x, epochs=1, batch_size=10, progress=False).threads == [1]


def test_a_resumed_run_keeps_the_count_measured_at_its_start(monkeypatch):
    seconds = {1: 0.02, 2: 0.01}
    timed = fake_measurement(monkeypatch, seconds)
    model, opt, x = kl_run()
    positions = []
    h = fit(model, opt, x, epochs=1, batch_size=10, progress=False,
            checkpoints=Checkpoints(lambda hist, at: positions.append(at), every=2))
    assert h.threads == [2] and timed == [1, 2]
    assert [at["threads"] for at in positions if at is not None] == [2]  # mid-epoch, step 2
    seconds.update({1: 0.01, 2: 0.05})                 # now one thread would win
    # from the epoch's end (the history's record) ...
    fit(model, opt, x, epochs=2, batch_size=10, progress=False, history=h)
    assert h.threads == [2, 2] and timed == [1, 2]     # kept, not measured again
    # ... and from the middle of the first epoch (the position's record, no history yet)
    model, opt, x = kl_run()
    at = positions[0]
    fit(model, opt, x, epochs=1, batch_size=10, progress=False,
        checkpoints=Checkpoints(lambda hist, at: None, position=at))
    assert timed == [1, 2]
    # a number given for the resumed run is taken as it is; so is "adaptive"
    assert fit(model, opt, x, epochs=3, batch_size=10, progress=False, history=h,
               engine=Engine(threads=1)).threads == [2, 2, 1]


def test_a_position_without_threads_still_resumes():
    # positions saved before they recorded the count: the history's, else measured
    at = {"epoch": 1, "step": 2, "sums": {}, "seconds": 0.1, "resampled": 0}
    assert Checkpoints(position=at).position["threads"] is None
    with pytest.raises(ConfigError, match="threads"):
        Checkpoints(position={**at, "threads": 0})


SPARSITIES = {"kl": dict(), "topk": dict(sparsity="topk", k=3, hidden_activation="relu",
                                          combo=("linear", "mse", "mean")),
              "batchtopk": dict(sparsity="batchtopk", k=3, hidden_activation="relu",
                                combo=("linear", "mse", "mean"))}


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("chosen", [1, 2])
def test_an_auto_run_is_the_run_pinned_to_its_count_bit_for_bit(monkeypatch, sparsity, chosen):
    # the measurement's passes leave the model as it was (BatchTopK's running threshold put
    # back): "auto" that chose N gives the bits of threads=N, and so does its resumed run
    fake_measurement(monkeypatch, {1: 0.01, 2: 0.02} if chosen == 1 else {1: 0.02, 2: 0.01})
    x = random_inputs(60, 30, seed=3).astype(np.float32)
    runs = {}
    for threads in ("auto", chosen):
        model = make_model("numpy", 30, 40, dtype="float32", **SPARSITIES[sparsity])
        opt = Adam(model.params, model.grads, lr=0.01)
        h = fit(model, opt, x, epochs=2, batch_size=20, progress=False,
                engine=Engine(threads=threads))
        runs[threads] = (h, model, opt)
    (ha, a, oa), (hn, n, on) = runs["auto"], runs[chosen]
    assert ha.threads == hn.threads == [chosen, chosen] and oa.t == on.t == 6
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], n.params[k], err_msg=k)
        np.testing.assert_array_equal(oa.m[k], on.m[k], err_msg=k)
    if sparsity == "batchtopk":
        np.testing.assert_array_equal(a.coding.threshold, n.coding.threshold)


@pytest.mark.parametrize("fast", [True, False])
def test_an_auto_run_measured_for_real_repeats_with_its_recorded_count(monkeypatch, fast):
    # the real measurement (real clock, real BLAS counts) on the fast or reference path:
    # whatever it chose, a run pinned to that count gives the same bits
    monkeypatch.setattr(T, "AUTO_MIN_FLOPS", 0.0)
    monkeypatch.setattr(T, "available_cores", lambda: 2)
    x = random_inputs(60, 30, seed=3).astype(np.float32)
    runs = []
    for threads in ("auto", None):
        model = make_model("numpy", 30, 40, dtype="float32")
        opt = Adam(model.params, model.grads, lr=0.01)
        chosen = threads or runs[0][0].threads[0]
        h = fit(model, opt, x, epochs=2, batch_size=20, progress=False,
                engine=Engine(fast=fast, threads=chosen))
        runs.append((h, model))
    (ha, a), (hn, n) = runs
    assert ha.threads == hn.threads and ha.threads[0] in (1, 2)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], n.params[k], err_msg=k)
