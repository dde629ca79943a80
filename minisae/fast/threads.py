"""Thread policy: how many threads BLAS (and the fast Adam) use during a training run.

    with thread_limits("auto", n_inputs, n_hidden, batch) as policy:
        policy.decide(probe)              # "auto": measure once (fit does this)
        ...training steps...              # policy.threads: BLAS's thread count now

A count is set through threadpoolctl and restored when the block ends. Three policies:

- a number (threads=4): that count, for every step;
- "auto" (the default): one count for the whole run, chosen once at its start, then kept.
  Products of fewer than AUTO_MIN_FLOPS, or a machine with one core, take one thread without
  measuring. Otherwise the step is timed a few times on one thread and on every core this
  process may use (`decide`, below), and every core is kept only if it was faster by MARGIN;
- "adaptive": the same trial, repeated during the run (below), so that the count follows
  the load as it changes, at the price of bit-for-bit repeatability.

Why one count, kept: OpenBLAS's products come out different in their last bits on one
thread and on two (its blocking follows the thread count), and Adam turns such differences
in near-zero gradients into whole steps. Why measured: with another program busy on a core,
BLAS's threads wait for each other in spin loops, and two threads run 1.7x (1000 x 256) to
14x (batch 100 on 2 cores) slower than one; a count fixed from the size and the cores alone
kept those two threads on a busy machine.

How "auto" measures (`ThreadPolicy.decide(probe)`, which fit calls before the first step):
probe() computes one step's forward and backward pass on the run's first rows (at most
PROBE_ROWS) without training: fit puts back what a step changes besides the gradients
(BatchTopK's running threshold), and the first real step overwrites the gradients. On one
thread: one pass to warm up (buffers allocated, compiled loops loaded), a wait until
SETTLE_SECONDS after the start (see below), then SAMPLES timed passes; on every core, up to
SAMPLES more, stopping as soon as even their fastest is EARLY times the one-thread median.
Each count stops early too once MEASURE_SECONDS / 2 of its passes have run. Every core is
kept if its median is MARGIN times the one-thread one, or LOADED_MARGIN (1.33x faster) where
other programs kept at least BUSY_ELSEWHERE of a core busy meanwhile on the cores this
process may use (CpuWatch: Linux's /proc/stat less this process's own time): on a loaded machine the two choices do not risk
the same, since one thread too few costs at most the other cores' share, while threads that
wait for a taken core can run 4x slower than one, and a load that comes and goes (a second
training run between its epochs) can make a few passes on every core look faster than the
run will be (issue 28's "case not understood": beside a second training process, 5,183
samples/s on the two threads "auto" took, 20,946 on one, in the same benchmark). It costs
3 to 7 passes (the first would be paid by the first step anyway) and at most SETTLE_SECONDS of
waiting, with no CPU used: 0.2-0.3 s at the bench's sizes on a busy 2-core machine, about
the time of 10 to 20 steps. None of those passes is a training step, so the run's bits
depend only on the count chosen, recorded in the history ("threads", each epoch) and in
mid-epoch checkpoints' positions ("threads"):

- the same machine under the same load gives the same count, and so the same bits (where
  the two counts time within noise of the MARGIN, either may be kept: both are as fast);
- another load (or another machine) may give another count, and so other bits;
- a resumed run keeps the recorded count (fit passes it as a number), so it is bit-exact
  with a run never stopped;
- `threads=N` (`--threads N`) pins a count: a run with the count an "auto" run recorded
  gives that run's bits exactly.

A loop that uses thread_limits("auto", ...) without calling decide() (the benchmark's raw
step) is measured on its first real steps instead: one trial as "adaptive" runs it (below),
then that count is kept. Those first steps ran on both counts, so such a loop repeats its
bits only where the trial ran the same steps; fit never does this.

The compiled loops (numba: the fast Adam, TopK's sparse products) have no thread count of
their own to set: they are compiled without parallel=True (fast/kernels.py), so numba's
threading layer is never started and each loop runs on the thread that calls it. The fast
Adam can split its update over a pool of its own; the policy gives it one thread
(adam_threads). BLAS's count is the only one the policy sets.

"adaptive" decides from the problem's size and from what the machine gives right now:

- products of fewer than AUTO_MIN_FLOPS run on one thread: a second BLAS thread gains little
  there (within 5% at 24x64 on an idle 2-core EPYC), and with another program busy on a
  core it costs 4x to 100x (BLAS's threads wait for each other in spin loops);
- otherwise the policy times training steps on every core and on one thread, a few of each
  (a trial), keeps the faster, and tries again later: after HOLD_SECONDS (doubled each time
  the answer stays, up to MAX_HOLD_SECONDS), or at once when steps on more threads get
  TRIPWIRE times slower than the trial measured (a program started on another core, say).
  On an idle 2-core machine two threads win at the four bench sizes; with one core busy,
  one thread wins at every size (BENCHMARKS.md, the thread-policy study).

A trial compares steady states. After a product, OpenBLAS's worker threads spin for about
0.1 s before they sleep, so for SETTLE_SECONDS after a step on more threads a one-thread step
shares its core with a spinning worker and runs up to 2x slower: a trial does not count
those steps, and decide() waits that long (from its start) before its one-thread passes.

The training step reports to the policy in force: fast/step.py calls step_started() and
step_finished() around each fused loss_and_grads, and FastAdam reads adam_threads(). Outside
a thread_limits block nothing is timed and nothing changes.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time

from .. import checks
from ..errors import ConfigError

MAX_THREADS = 1024
"""The most threads a run may ask for (BLAS libraries cap their own pools lower)."""
AUTO_MIN_FLOPS = 2e7
"""Below this many flops per matrix product of the step (2 * batch * n_inputs * n_hidden),
both "auto" and "adaptive" run BLAS on one thread, and time nothing."""

SAMPLES = 3               # steps counted for each candidate in a trial
WARMUP_STEPS = 2          # steps before the first trial (first-touch allocations)
SETTLE_SECONDS = 0.12     # one-thread steps this soon after a step on more threads don't count
MARGIN = 0.97             # more threads must be at least 3% faster to be kept
EARLY = 1.5               # a trial ends as soon as the challenger's mean is this much slower
HOLD_SECONDS, MAX_HOLD_SECONDS = 30.0, 240.0
HOLD_STEPS = 30           # and at least this many steps between trials
TRIPWIRE = 1.6            # on more than one thread, re-try when the median of the RECENT
RECENT = 7                # steps is this much slower than the trial measured
MEASURE_SECONDS = 0.25    # "auto"'s timed passes: each count stops after half of this
BUSY_ELSEWHERE = 0.5      # cores other programs kept busy during decide(): a loaded machine,
LOADED_MARGIN = 0.75      # where more threads must be at least 1.33x faster to be kept
PROBE_ROWS = 4096         # at most this many rows in "auto"'s passes (L-BFGS: the whole set)

_active = []              # the policies in force, innermost last


@functools.lru_cache(maxsize=None)
def available_cores():
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota
    (containers), else os.cpu_count(). Read once per process."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(n, quota) if quota else n)


def _cgroup_cpu_quota():
    """Whole CPUs allowed by a cgroup v2 `cpu.max` (rounded up), or None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota == "max":
            return None
        return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


POLICIES = ("auto", "adaptive")


def parse_threads(threads):
    """"auto", "adaptive", None (auto) or a positive integer (also as a string, from the
    command line)."""
    if threads is None:
        return "auto"
    if isinstance(threads, str) and threads.strip().lower() in POLICIES:
        return threads.strip().lower()
    if isinstance(threads, str) and threads.strip().isdigit():
        threads = int(threads)
    if not (checks.is_int(threads) and 1 <= threads <= MAX_THREADS):
        raise ConfigError(f"threads must be an integer in [1, {MAX_THREADS}], 'auto' or "
                          f"'adaptive', got {checks.shown(threads)}")
    return int(threads)


def choose_threads(threads, n_inputs, n_hidden, batch):
    """The BLAS thread count a run starts with: `threads` itself when it is a number; under
    "auto" and "adaptive", one thread for small products (kept: nothing is timed), else every
    available core until the policy has measured ("auto" once, "adaptive" in its trials)."""
    threads = parse_threads(threads)
    if threads not in POLICIES:
        return threads
    flops = 2.0 * batch * n_inputs * n_hidden
    return 1 if flops < AUTO_MIN_FLOPS else available_cores()


class ThreadPolicy:
    """The thread counts of one run. `threads` is BLAS's count in force now. With more than one
    core to choose from and products above AUTO_MIN_FLOPS: under "auto", `undecided` is True
    until decide(probe) has measured (or, where nobody calls it, until the first trial on real
    steps has ended); under "adaptive", `adaptive` stays True and the steps reported through
    step_started / step_finished drive the trials. `measured`: {threads: seconds per step} of
    the last measurement or trial. set_blas(n) applies a count; clock and sleep are the
    time's (tests give fakes)."""

    def __init__(self, threads, n_inputs, n_hidden, batch, set_blas=None, clock=time.perf_counter,
                 sleep=time.sleep, watch=None):
        self.requested = parse_threads(threads)
        self.threads = choose_threads(threads, n_inputs, n_hidden, batch)
        self.undecided = self.requested == "auto" and self.threads > 1
        # "auto" that nobody measures with decide(): one trial on the first real steps
        self.adaptive = self.requested in POLICIES and self.threads > 1
        self.cores_tried = self.threads      # the "every core" candidate
        self.trials = 0                      # trials (and "auto"'s measurement) finished
        self.measured = {}
        self._set_blas = set_blas or (lambda n: None)
        self._clock, self._sleep = clock, sleep
        self._watch = watch or CpuWatch()
        self.busy_elsewhere = None           # cores other programs used during decide()
        self._t0 = None
        self._step = 0
        self._last_multi = -1e9              # when the last step on more threads ended
        # the first trial: every core (the count in force), then one thread
        self._plan = [None] * WARMUP_STEPS + [self.threads] * SAMPLES + [1] * SAMPLES \
            if self.adaptive else []
        self._samples = {}
        self._recent = []
        self._best = None                    # the kept candidate's mean step in its trial
        self._kept = None                    # the count the last trial kept
        self._hold = HOLD_SECONDS
        self._hold_until = (0.0, 0)

    def decide(self, probe):
        """Under "auto", the run's count, measured once (see the module's docstring) and kept:
        probe() must compute one step's forward and backward pass and change nothing that
        training keeps. Returns the count; does nothing (calls no probe) where the count is
        already decided: a number, small products, one core, or a second call."""
        if not self.undecided:
            return self.threads
        self.undecided = self.adaptive = False   # the probe's passes are no trial's steps
        start = self._clock()
        self._watch.start()
        self._apply(1)
        probe()                                  # warm-up: buffers, compiled loops
        wait = SETTLE_SECONDS - (self._clock() - start)
        if wait > 0:                             # OpenBLAS's workers stop spinning
            self._sleep(wait)
        one = self._time_passes(probe, 1, float("inf"))
        every = self._time_passes(probe, self.cores_tried, EARLY * one)
        self.measured = {1: one, self.cores_tried: every}
        self.busy_elsewhere = elsewhere = self._watch.cores()
        loaded = elsewhere is not None and elsewhere >= BUSY_ELSEWHERE
        self._apply(self.cores_tried if every < (LOADED_MARGIN if loaded else MARGIN) * one
                    else 1)
        self.trials = 1
        return self.threads

    def _time_passes(self, probe, threads, lost_above):
        """The median seconds of up to SAMPLES probes on `threads`: fewer once they have
        taken MEASURE_SECONDS / 2, or once even the fastest is above lost_above."""
        self._apply(threads)
        times, start = [], self._clock()
        while not times or (len(times) < SAMPLES and min(times) <= lost_above
                            and self._clock() - start < MEASURE_SECONDS / 2):
            t0 = self._clock()
            probe()
            times.append(self._clock() - t0)
        times.sort()
        middle = len(times) // 2
        return times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2

    def adam_threads(self):
        """Threads for the fast Adam under this policy: one. On the machines measured, a
        second Adam thread gains nothing: Adam is bound by memory, and OpenBLAS's worker
        spins on the other core for a while after every product (BENCHMARKS.md)."""
        return 1

    def step_started(self):
        """Called before a training step's products; may change BLAS's thread count."""
        if not self.adaptive:
            return
        if self._plan and self._plan[0] is not None:
            self._apply(self._plan[0])
        self._t0 = self._clock()

    def step_finished(self):
        """Called after the step's products and elementwise work."""
        if not self.adaptive or self._t0 is None:
            return
        now = self._clock()
        seconds, self._t0 = now - self._t0, None
        self._step += 1
        settling = self.threads == 1 and now - seconds - self._last_multi < SETTLE_SECONDS
        if self.threads > 1:
            self._last_multi = now
        if not self._plan:
            self._recent = (self._recent + [seconds])[-RECENT:]
            self._maybe_retry()
        elif not settling:
            self._count(self._plan.pop(0), seconds)

    def _count(self, threads, seconds):
        """One step of a trial; decides when the plan is done or the challenger lost clearly."""
        if threads is None:  # warm-up
            return
        self._samples.setdefault(threads, []).append(seconds)
        means = {n: sum(t) / len(t) for n, t in self._samples.items()}
        challenger = self._plan[-1] if self._plan else None
        clear = len(means) == 2 and challenger in means and \
            means[challenger] > EARLY * min(means.values())
        if not self._plan or clear:
            self._decide(means)

    def _decide(self, means):
        """Keep every core only if it was faster by MARGIN; then hold for a while."""
        one, every = means.get(1, float("inf")), means.get(self.cores_tried, float("inf"))
        keep = self.cores_tried if every < MARGIN * one else 1
        same = keep == self._kept
        self._kept, self._best = keep, means[keep]
        self._apply(keep)
        self.trials += 1
        self.measured = means
        if self.requested == "auto":             # "auto": this one trial, and the count kept
            self.undecided = self.adaptive = False
        self._hold = min(2 * self._hold, MAX_HOLD_SECONDS) if same else HOLD_SECONDS
        self._hold_until = (self._clock() + self._hold, self._step + HOLD_STEPS)
        self._plan, self._samples, self._recent = [], {}, []

    def _maybe_retry(self):
        """A new trial when the hold is over, or at once when more threads got slow: the
        count in force first (no switch), then the other."""
        until_time, until_step = self._hold_until
        slower = self._kept > 1 and len(self._recent) == RECENT and \
            sorted(self._recent)[RECENT // 2] > TRIPWIRE * self._best
        if slower:
            self._hold = HOLD_SECONDS
        if slower or (self._clock() >= until_time and self._step >= until_step):
            other = 1 if self._kept > 1 else self.cores_tried
            self._plan = [self._kept] * SAMPLES + [other] * SAMPLES

    def _apply(self, n):
        if n != self.threads:
            self._set_blas(n)
            self.threads = n


class CpuWatch:
    """How many cores other programs kept busy between start() and cores(): the busy time of
    the cores this process may run on (Linux's /proc/stat, a line per core: every state but
    idle and iowait, steal included) less this process's own CPU time (all its threads,
    BLAS's spinning workers too), over the wall time. cores() is None where /proc/stat cannot
    be read (not Linux) or the window was under 50 ms (the counters tick every 10 ms). In a
    container, /proc/stat may be the host's: other tenants on the same cores count too."""

    def __init__(self):
        self._start = None

    def start(self):
        self._start = self._read()

    def cores(self):
        return self.elsewhere(self._start, self._read())

    @staticmethod
    def elsewhere(start, end):
        """Cores busy elsewhere from two readings (busy seconds, own seconds, wall seconds)."""
        if start is None or end is None or end[2] - start[2] < 0.05:
            return None
        (busy0, own0, t0), (busy1, own1, t1) = start, end
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)

    @staticmethod
    def _read():
        """(the busy CPU seconds of this process's cores, this process's own, the wall
        clock), or None."""
        try:
            mine = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            mine = None
        try:
            busy, per_second = 0, os.sysconf("SC_CLK_TCK")
            with open("/proc/stat") as f:
                for line in f:
                    name, *ticks = line.split()
                    if not name.startswith("cpu") or name == "cpu":
                        continue
                    if mine is not None and int(name[3:]) not in mine:
                        continue
                    ticks = [int(v) for v in ticks[:8]]
                    busy += sum(ticks) - ticks[3] - ticks[4]
        except (OSError, ValueError, IndexError, AttributeError):
            return None
        return busy / per_second, sum(os.times()[:2]), time.monotonic()


def active():
    """The ThreadPolicy of the innermost thread_limits block in force, or None."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def thread_limits(threads, n_inputs, n_hidden, batch):
    """Set the BLAS threads (of every BLAS library loaded now: NumPy's, and SciPy's once it is
    imported) for a run (see the module's docstring); restores them after.
    Yields the ThreadPolicy: policy.threads is the count in force; under "auto", call
    policy.decide(probe) before the first step (fit does)."""
    from threadpoolctl import ThreadpoolController
    blas = ThreadpoolController().select(user_api="blas")

    def set_blas(n):
        for lib in blas.lib_controllers:
            lib.set_num_threads(n)

    policy = ThreadPolicy(threads, n_inputs, n_hidden, batch, set_blas)
    with blas.limit(limits=policy.threads):
        _active.append(policy)
        try:
            yield policy
        finally:
            _active.remove(policy)
