"""The training loop, and the evaluation of a model over a whole data set.

    history = fit(model, Adam(model.params, model.grads, lr=0.01), x_train,
                  epochs=10, batch_size=1000, seed=0, x_val=x_test)
    metrics = evaluate(model, x_test)        # floats: total, reconstruction, sparsity, ...

`fit` drives the fast engine by default (minisae/fast/: `engine=Engine(fast=False)` runs the
reference, model.loss_and_grads and Adam.step, end to end). The data are an in-memory NumPy
array or a source of rows (minisae.data.ArrayFiles: .npy, .npz, a folder of shards), streamed
with bounded memory (in the sizes a stream.Stream gives). Each epoch's batches come from
batches.ArrayBatches (an array: a full shuffle) or stream.StreamBatches (a source: chunks
through a shuffle buffer), in an order seeded by (seed, epoch), so a run resumed from a
checkpoint, after an epoch or in the middle of one (Checkpoints' position), draws exactly the
batches an uninterrupted run would.

fit's settings come in small objects, each checked when it is made:
    Engine(fast, threads, log_every)          how the steps are computed
    Checkpoints(save, every, position)        when the run is handed over to be saved, and
                                              where a resumed one starts
    DeadUnits(window, resample_every)         dead units: when a unit is dead, resampling
    Stream(source, chunk_rows, buffer_rows)   a source of rows, with the sizes it streams in
"""
from __future__ import annotations

import functools
import inspect
import math
import sys
import time

import numpy as np

from .. import checks
from .. import functional as F
from .. import losses
from ..backend import flat_owner, namespace, to_numpy
from ..errors import ConfigError, InputError, TrainingError
from ..fast import fast_optimizer, fused
from ..fast import loss_and_grads as fast_loss_and_grads
from ..fast import values as fast_values
from ..fast.threads import (MAX_THREADS, PROBE_ROWS, available_cores, parse_threads,
                            thread_limits)
from ..comm import Alone
from .batches import ArrayBatches
from .history import History
from .stream import Stream, StreamBatches, is_source
from . import units
from .units import DeadUnits
from .progress import progress_bar

_SAID = set()  # notes printed once per process
ALONE = Alone()


def evaluate(model, x, batch_size=1000, per_unit=False):
    """The loss of the whole of x, forward only, in batches: the reconstruction term averaged
    over samples, the sparsity term from each unit's mean activation over all of x (the same
    assembly as training's, the model's losses.Objective), and the diagnostics of today's trainers.

    Returns a dict of floats: total, each loss part, and
      mean_activation   the mean over units of rho_hat
      l0                the mean number of active units per sample (losses.active: h > 0 for
                        ReLU and TopK codes, h > 0.5 for sigmoid ones)
      dead_fraction     the share of units active on no sample of x
      dense_fraction    the share of units active on more than half of the samples
      log10_density     the median, over the units active on some sample, of log10 of the
                        share of samples each is active on (feature density: -2 is 1%)
      fvu               the fraction of variance unexplained: sum (y - x)^2 over the sum of
                        (x - its mean over the samples)^2
    per_unit=True returns (that dict, rho_hat), rho_hat the per-unit mean activations as a
    NumPy float64 array of shape (n_hidden,)."""
    _check_model(model, "evaluate")
    batch_size = checks.check_int(batch_size, "batch_size", 1)
    per_unit = checks.check_bool(per_unit, "per_unit")
    return _evaluate(model, _checked_data(model, x, "x"), batch_size, per_unit)


def _evaluate(model, x, batch_size, per_unit=False, comm=ALONE):
    """evaluate() of data already checked (fit checks its validation set once, not per epoch).
    x: a NumPy array or a row source, read batch_size rows at a time. The FVU is measured
    where the model works (after its normalizer, if it has one). comm: a data-parallel run's
    communicator; each rank evaluates its share of the rows and the ranks' sums are added."""
    n, c = _rows(x), model.config
    per_sample = {t.name: 0.0 for t in model.objective.terms
                  if t.per_sample and not t.training_only}
    m = model.units[1] - model.units[0]  # the units this rank holds (a sharded dictionary)
    rho_hat, counts = np.zeros(m), np.zeros(m)
    squared_error, x_sum, x_squares = 0.0, np.zeros(c.n_inputs), np.zeros(c.n_inputs)
    first, last = comm.part(n)
    for start in range(first, last, batch_size):
        xb = model.as_batch(_read(x, start, min(start + batch_size, last)), validate=False)
        xp = namespace(xb)
        v = fast_values(model, xb)  # model.values(xb), TopK's selection without a sort
        h, y = v["h"], v["y"]
        w = xb.shape[0] / n  # the reconstruction (and an L0) are means over the samples
        for name, value in model.objective.per_sample(v, model.params).items():
            per_sample[name] = per_sample.get(name, 0.0) + w * float(value)
        rho_hat = rho_hat + w * to_numpy(F.mean_activation(h)).astype(np.float64)
        counts = counts + to_numpy(xp.sum(xp.astype(losses.active(c, h), xp.int64), axis=0))
        squared_error += float(xp.sum((y - xb) ** 2))
        x_sum = x_sum + to_numpy(xp.sum(xb, axis=0)).astype(np.float64)
        x_squares = x_squares + to_numpy(xp.sum(xb * xb, axis=0)).astype(np.float64)
    # data parallel: every rank's sums, added (one collective); alone, nothing changes
    sums = comm.sum(np.concatenate([list(per_sample.values()), rho_hat, counts,
                                    [squared_error], x_sum, x_squares]))
    sums = np.split(sums, np.cumsum([len(per_sample), m, m, 1, c.n_inputs]))
    per_sample = dict(zip(per_sample, sums[0].tolist()))
    rho_hat, counts, squared_error, x_sum, x_squares = sums[1], sums[2], float(sums[3][0]), \
        sums[4], sums[5]
    # the terms of rho_hat (over all of x) and of the weights, once (a sharded dictionary's
    # ranks each their units', added up by the objective)
    params = {name: to_numpy(p).astype(np.float64) for name, p in model.params.items()}
    loss = model.objective.forward({"rho_hat": rho_hat}, params, per_sample, training=False)
    # every unit's figures (a sharded dictionary's ranks hold some each)
    rho_hat, counts = (model.comm.units_whole(a) for a in (rho_hat, counts))
    loss = loss.with_mean_activation(rho_hat.mean())
    variance = float(np.sum(x_squares - x_sum * x_sum / n))
    metrics = {**loss.as_dict(), "l0": float(counts.sum() / n),
               "dead_fraction": float((counts == 0).mean()),
               "dense_fraction": float((counts > losses.DENSE_SHARE * n).mean()),
               "log10_density": _median_log10_density(counts / n),
               "fvu": squared_error / variance if variance > 0 else float("nan")}
    return (metrics, rho_hat) if per_unit else metrics


def _median_log10_density(frequency):
    """The median over the units that fire of log10(their firing frequency): where the
    feature-density histogram of SAELens and Anthropic peaks (-2: a unit fires on 1% of the
    samples); NaN when none fires."""
    alive = frequency[frequency > 0]
    return float(np.median(np.log10(alive))) if alive.size else float("nan")


def _rows(x):
    return x.n_rows if is_source(x) else len(x)


def _read(x, start, stop):
    """Rows [start, stop) of an array or a source (a source's rows are checked as read)."""
    if not is_source(x):
        return x[start:stop]
    rows = x.read(start, stop)
    x.check_rows(rows, start)
    return rows


class Engine:
    """How fit computes its steps: what fit takes as engine.

        fit(model, opt, x, epochs=10, batch_size=100, engine=Engine(fast=False, threads=1))

    fast: True runs the fast engine (minisae.fast), False the reference (model.loss_and_grads
    and optimizer.step) end to end; both give the same numbers up to rounding.
    threads: BLAS threads for the run, a number, "auto" (one count for the run: one thread
    for small products, else measured once at the start, a few forward and backward passes
    on one thread and on every core, which are not training steps) or "adaptive" (follows
    the load during the run, at the price of bit-for-bit repeatability); see
    minisae/fast/threads.py. The count used is recorded in the history ("threads") and in
    mid-epoch positions, and a resumed run under "auto" keeps it: resumed runs are bit-exact,
    and threads=N with the recorded N repeats an "auto" run's bits. Under data parallelism (a
    model whose comm has several ranks), "auto" gives each rank its share of this machine's
    cores, unmeasured (the ranks must take the same steps; a probe could differ by rank).
    log_every: read the losses back every this many steps (None: every step on NumPy, every
    20 on a GPU, where reading one waits for the device)."""

    def __init__(self, fast=True, threads="auto", log_every=None):
        self.fast = checks.check_bool(fast, "fast")
        self.threads = parse_threads(threads)
        self.log_every = checks.check_optional(log_every, checks.check_int, "log_every", 1)

    def __repr__(self):
        return f"Engine(fast={self.fast}, threads={self.threads!r}, log_every={self.log_every})"


class Checkpoints:
    """When fit hands the run over to be saved, and where a resumed run starts: what fit
    takes as checkpoints.

        def save(history, position):
            minisae.save("run.npz", model, opt, history, {"position": position})
        fit(model, opt, x, epochs=10, batch_size=100, checkpoints=Checkpoints(save, every=500))

    save(history, position): called after each epoch (or L-BFGS iteration) with position
    None, and with every=N also every N steps inside an epoch, position then a dict
    (JSON-able) of where the run is: {"epoch", "step" (steps done in it), "sums" (the epoch's
    loss sums so far), "seconds", "resampled", "threads" (BLAS's count; missing in positions
    saved by earlier versions)}. position: such a dict, to resume from; passed back (with
    the model, optimizer and history saved at that moment) it continues the epoch exactly as
    an uninterrupted run would."""

    def __init__(self, save=None, every=None, position=None):
        self.save = checks.check_optional(save, checks.check_function, "save", 2,
                                          "a function of (history, position)")
        self.every = checks.check_optional(every, checks.check_int, "every", 1)
        if self.every is not None and self.save is None:
            raise ConfigError("every needs save, a function of (history, position) that saves "
                              "them")
        self.position = _check_position(position)

    def __repr__(self):
        save = None if self.save is None else \
            getattr(self.save, "__qualname__", type(self.save).__name__)
        at = None if self.position is None else \
            f"<epoch {self.position['epoch']}, step {self.position['step']}>"
        return f"Checkpoints(save={save}, every={self.every}, position={at})"


def moved(**homes):
    """A decorator: the keywords a function took before 0.4, refused with a ConfigError that
    names their new home (homes: {old keyword: where it went})."""
    def decorate(f):
        @functools.wraps(f)
        def call(*args, **kwargs):
            for name in kwargs:
                if name in homes:
                    raise ConfigError(f"{f.__name__}() no longer takes {name}= (0.4 moved it): "
                                      f"pass {homes[name]}")
            return f(*args, **kwargs)
        return call
    return decorate


@moved(fast="engine=Engine(fast=...)", threads="engine=Engine(threads=...)",
       log_every="engine=Engine(log_every=...)",
       on_epoch_end="checkpoints=Checkpoints(save=f), f(history, position): position is None "
                    "at an epoch's end",
       checkpoint_every="checkpoints=Checkpoints(save=..., every=...)",
       on_checkpoint="checkpoints=Checkpoints(save=...)",
       position="checkpoints=Checkpoints(position=...)",
       dead_window="dead_units=DeadUnits(window=...)",
       resample_every="dead_units=DeadUnits(resample_every=...)",
       chunk_rows="x_train=Stream(source, chunk_rows=...)",
       buffer_rows="x_train=Stream(source, buffer_rows=...)")
def fit(model, optimizer, x_train, epochs, batch_size=None, seed=0, x_val=None, progress=True,
        history=None, *, checkpoints=None, dead_units=None, engine=None):
    """Train for epochs (counted from len(history), so a resumed run continues); return History.

    x_train, x_val: NumPy arrays (n, n_inputs), checked once here, or sources of rows
    (minisae.data.ArrayFiles), whose rows are checked as they are read (a NaN found late
    stops the run naming the file and the row). A source is streamed: chunks through a
    shuffle buffer (stream.StreamBatches; memory bounded by the buffer, not the data), of
    the sizes a Stream(source, chunk_rows, buffer_rows) sets (a source alone: the defaults).
    progress: a progress bar (a line per epoch off a terminal). A non-finite loss raises
    TrainingError naming the epoch and step; nothing is saved after it, so the last good
    checkpoint stays.

    history: the History of the epochs done (what fit or a checkpoint gave), to continue.
    checkpoints: a Checkpoints(save, every, position): save is called after each epoch and
    every N steps, and a position resumes a run in the middle of an epoch (the CLI saves its
    checkpoints there). dead_units: a DeadUnits(window, resample_every) (below). engine: an
    Engine(fast, threads, log_every): the fast engine by default, or the reference.

    Several ranks (model.comm, minisae/comm.py): data parallel, each rank takes its rows of
    every batch, and rank 0 alone shows progress and calls checkpoints' save; a sharded
    dictionary's ranks take every batch whole, and every rank calls save (minisae.save
    gathers the units to rank 0, which writes).

    Dead units (ReLU codes; minisae.training.units): a unit silent for `window` training
    samples is dead. AuxK (a model with aux_k) reconstructs the residual from them at each
    step; resample_every=N gives them new directions every N steps (Anthropic's resampling).
    Either records train_dead_fraction in the history.

    A model that subtracts its decoder bias before encoding (subtract_decoder_bias) starts
    that bias at the mean of x_train when the run starts (an empty history, an optimizer
    that has not stepped): Gao et al. start it at the data's geometric median; the mean is
    the simpler choice, and what a centred encoder input asks for.

    With an L-BFGS optimizer (minisae.LBFGS) an epoch is one L-BFGS iteration over the
    whole of x_train (full batch; leave batch_size None), and the run may end early when
    L-BFGS converges."""
    _check_model(model, "fit")
    checks.check_writable(model.params, "model.params")
    checks.check_writable(model.grads, "model.grads")
    _check_optimizer(model, optimizer)
    lbfgs = _is_lbfgs(optimizer)
    if lbfgs and batch_size is not None:
        raise ConfigError("the optimizer, L-BFGS, trains on the full batch: leave batch_size "
                          "out (None)")
    if not lbfgs and batch_size is None:
        raise ConfigError("batch_size is needed: the samples per step of the optimizer")
    epochs = checks.check_int(epochs, "epochs", 0)
    batch_size = None if lbfgs else checks.check_int(batch_size, "batch_size", 1)
    seed = checks.check_int(seed, "seed", 0, 2**63 - 1)
    progress = checks.check_bool(progress, "progress")
    if history is not None:
        checks.check_type(history, "history", History, "a History (what fit returned, or a "
                                                       "checkpoint's)")
    checkpoints = _settings(checkpoints, "checkpoints", Checkpoints)
    dead_units = _settings(dead_units, "dead_units", DeadUnits)
    engine = _settings(engine, "engine", Engine)
    resample_every = units.check_resampling(model, dead_units)
    if is_source(x_train):
        x_train = Stream(x_train)  # a source alone streams in the default sizes
    stream = x_train if isinstance(x_train, Stream) else None
    x_train = _checked_data(model, x_train, "x_train")
    if x_val is not None:
        x_val = _checked_data(model, x_val, "x_val")
    history = History() if history is None else history
    if lbfgs and is_source(x_train):
        raise ConfigError("L-BFGS trains on the whole data set at once: give it an array that "
                          "fits in memory, or use Adam on a source of rows")
    batch_size = _rows(x_train) if lbfgs else min(batch_size, _rows(x_train))
    comm = model.comm
    _check_ranks(comm, lbfgs, batch_size, resample_every, engine.threads)
    position = _resumed_position(checkpoints.position, history)
    if engine.fast and fused(model) is not None and comm.rank == 0:
        _say_once(f"minisae: {fused(model)}")
    threads = _resumed_threads(engine.threads, history, position)
    if engine.threads == "auto" and comm.size > 1:  # the cores shared by this machine's ranks
        threads = max(1, available_cores() // getattr(comm, "local_size", comm.size))
    c = model.config
    if c.subtract_decoder_bias and len(history) == 0 and getattr(optimizer, "t", 0) == 0:
        model.params["decoder.b"][...] = model.backend.asarray(_model_mean(model, x_train))
    if comm.splits == "rows":  # data parallel: every rank starts from rank 0's weights
        comm.broadcast(model.flat_params)
    if comm.rank != 0:  # rank 0 alone shows progress and saves (a sharded dictionary's
        # ranks all call save: the checkpoint gathers their units, rank 0 writes it)
        progress = False
        if comm.splits != "units":
            checkpoints = Checkpoints(_nothing, checkpoints.every, checkpoints.position)
    with thread_limits(threads, c.n_inputs, c.n_hidden, batch_size) as policy:
        if epochs > len(history) and model.backend.name == "numpy":
            _measure_threads(policy, model, x_train, batch_size, engine.fast)
        if lbfgs:
            _fit_lbfgs(model, optimizer, x_train, epochs, x_val, progress, history,
                       checkpoints.save, engine.fast, policy)
        else:
            batches = _batches(model, x_train, stream, batch_size, seed,
                               comm.part(batch_size))
            loop = _Loop(model, optimizer, x_train, batches, seed, x_val, progress, history,
                         checkpoints, dead_units.window, resample_every, engine, policy)
            loop.run(epochs, position)
    return history


def _settings(value, name, kind):
    """A settings object fit takes (None: its defaults), or a ConfigError."""
    if value is None:
        return kind()
    return checks.check_type(value, name, kind, f"a {kind.__name__}{inspect.signature(kind)}")


def _batches(model, x_train, stream, batch_size, seed, part):
    """The epochs' batches: a full shuffle of an array, or a source streamed in the sizes
    of its Stream; part: (first, last) of the rows of each batch this rank takes."""
    if stream is None:
        return ArrayBatches(x_train, batch_size, seed, model.backend, part)
    return StreamBatches(x_train, batch_size, seed, model.backend, chunk_rows=stream.chunk_rows,
                         buffer_rows=stream.buffer_rows,
                         unit_range=model.needs_unit_range and model.normalizer is None,
                         part=part)


def _check_ranks(comm, lbfgs, batch_size, resample_every, threads):
    """A data-parallel run needs minibatches of at least a row a rank; a sharded dictionary
    is not resampled, and its ranks, which each compute b2's gradient from the same numbers,
    keep one BLAS thread count (that gradient is not reduced: it must come out the same)."""
    if comm.size == 1:
        return
    if lbfgs:
        raise ConfigError("L-BFGS trains in one process: train it without --workers or torchrun")
    if comm.splits == "units" and threads == "adaptive":
        raise ConfigError("a sharded dictionary's ranks keep one thread count for the run, so "
                          "that each computes the decoder bias's gradient alike: use threads "
                          "\"auto\" or a number, not \"adaptive\"")
    if comm.splits == "units" and resample_every:
        raise ConfigError("a sharded dictionary's dead units are not resampled (resampling "
                          "reads the whole dictionary's reconstruction on one rank): leave "
                          "resample_every out, and let AuxK (aux_k) revive them")
    if comm.splits == "rows" and batch_size < comm.size:
        raise ConfigError(f"the batch of {batch_size} rows cannot be shared by {comm.size} "
                          f"ranks: use a batch_size of at least {comm.size}")


def _broadcast_state(model, optimizer):
    """Data parallel: rank 0's weights and optimizer state on every rank. Each rank resampled
    the same units from the same rows; a BLAS that rounds otherwise on another machine must
    not let the ranks drift apart."""
    comm = model.comm
    comm.broadcast(model.flat_params)
    for slot in getattr(type(optimizer), "SLOTS", ()):
        state = getattr(optimizer, slot)
        owner = flat_owner(list(state.values()))
        for a in [owner] if owner is not None else state.values():
            comm.broadcast(a)


def _nothing(history, position):
    """The save of a rank other than 0: rank 0 writes the run's files."""


def _model_mean(model, x):
    """The mean of the training rows where the model sees them (after its normalizer), in
    float64: where a subtracted decoder bias starts. Data parallel, each rank sums its part
    of the rows and the ranks' sums are added (a sharded dictionary's ranks each sum all)."""
    n, total = _rows(x), np.zeros(model.config.n_inputs)
    first, last = model.comm.part(n)
    for start in range(first, last, 4096):
        block = _read(x, start, min(start + 4096, last))
        if model.normalizer is not None:
            block = model.normalizer.apply(np.asarray(block, dtype=np.float64))
        total = total + np.asarray(block, dtype=np.float64).sum(axis=0)
    return model.comm.sum(total) / n


def _check_position(position):
    """A mid-epoch position (what Checkpoints' save was given), checked as a dict."""
    if position is None:
        return None
    keys = {"epoch", "step", "sums", "seconds", "resampled"}
    if not isinstance(position, dict) or set(position) - {"threads"} != keys:
        raise ConfigError(f"position must be what Checkpoints' save was given mid-epoch (a "
                          f"dict of {', '.join(sorted(keys))}), got {checks.shown(position)}")
    epoch = checks.check_int(position["epoch"], "position's epoch", 1)
    step = checks.check_int(position["step"], "position's step", 0)
    sums = position["sums"]
    if not isinstance(sums, dict) or not all(isinstance(k, str) and checks.is_real(v)
                                             for k, v in sums.items()):
        raise ConfigError("the position's sums must be a dict of numbers")
    return {"epoch": epoch, "step": step, "sums": dict(sums),
            "seconds": checks.check_real(position["seconds"], "position's seconds", 0.0),
            "resampled": checks.check_int(position["resampled"], "position's resampled", 0),
            "threads": checks.check_optional(position.get("threads"), checks.check_int,
                                             "position's threads", 1, MAX_THREADS)}


def _resumed_position(position, history):
    """A position checked against the history it goes with."""
    if position is not None and position["epoch"] != len(history) + 1:
        raise ConfigError(f"the position is in epoch {position['epoch']}, but the history "
                          f"holds {len(history)} epochs: it belongs with another history")
    return position


def _resumed_threads(threads, history, position):
    """Under "auto", a resumed run keeps the thread count it recorded, at its mid-epoch
    position or else in its history (the machine's cores or load may differ now; the run's
    bits must not)."""
    recorded = [t for t in history.as_dict().get("threads", []) if t is not None]
    if position is not None and position["threads"] is not None:
        recorded.append(position["threads"])
    if threads == "auto" and recorded:
        return int(recorded[-1])
    return threads


def _measure_threads(policy, model, x_train, batch_size, fast):
    """Under "auto", the run's thread count measured once, before its first step
    (policy.decide, minisae/fast/threads.py): forward and backward passes of the run's own
    step on its first rows (at most PROBE_ROWS), not training steps. The gradients they
    write are the first step's to overwrite; BatchTopK's running threshold, which a pass
    moves, is put back. The model and optimizer come out as they went in."""
    if not policy.undecided:
        return
    compute = fast_loss_and_grads if fast else type(model).loss_and_grads
    x = _read(x_train, 0, min(batch_size, PROBE_ROWS, _rows(x_train)))
    threshold = getattr(model.coding, "threshold", None)
    kept = None if threshold is None else threshold.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        policy.decide(lambda: compute(model, x, validate=False))
    if kept is not None:
        threshold[...] = kept


class _Loop:
    """The minibatch loop of one fit() call: epochs of steps, the losses read every log_every
    steps, dead units tracked and resampled, checkpoints mid-epoch and at each epoch's end."""

    def __init__(self, model, optimizer, x_train, batches, seed, x_val, progress, history,
                 checkpoints, dead_window, resample_every, engine, policy):
        self.model, self.optimizer, self.x_train, self.batches = model, optimizer, x_train, \
            batches
        self.seed, self.x_val, self.progress, self.history = seed, x_val, progress, history
        self.save, self.dead_window, self.policy = checkpoints.save, dead_window, policy
        self.resample_every = resample_every
        self.checkpoint_every = checkpoints.every
        self.steps = batches.steps_per_epoch
        # Reading a loss from a GPU waits for it, so there losses come back every few steps.
        self.log_every = engine.log_every or (1 if model.backend.name == "numpy" else 20)
        if self.checkpoint_every:
            self.log_every = math.gcd(self.log_every, self.checkpoint_every)
        fast = engine.fast
        self.compute = fast_loss_and_grads if fast else type(model).loss_and_grads
        self.stepper = fast_optimizer(optimizer) if fast else optimizer
        self.aux = model.config.aux_k is not None
        self.activity = units.UnitActivity(model) if self.aux or resample_every else None
        self.rate = None

    def run(self, epochs, position):
        first = len(self.history) + 1
        start = position["step"] if position else 0
        total = max(0, (epochs - first + 1) * self.steps - start)
        with progress_bar(total, self.progress, unit="batch") as bar:
            for epoch in range(first, epochs + 1):
                self._epoch(epoch, position if epoch == first else None, bar, epochs)

    def _epoch(self, epoch, position, bar, epochs):
        t0 = time.perf_counter()
        sums = dict(position["sums"]) if position else {}
        earlier = position["seconds"] if position else 0.0
        self.resampled = position["resampled"] if position else 0
        self.comm_at = (getattr(self.model.comm, "seconds", 0.0),
                        getattr(self.model.comm, "bytes", 0))
        pending = []
        self.rate = _Rate(first=self.rate is None)   # the first epoch of this fit call
        for step, x in self.batches.epoch(epoch, start=position["step"] if position else 0):
            if self.aux:
                self.activity.publish(self.dead_window)
            # A diverging run overflows before its loss turns inf/NaN; the check below
            # reports that with the epoch and step, so NumPy's warnings would only repeat it.
            with np.errstate(over="ignore", invalid="ignore"):
                pending.append((step, self.compute(self.model, x, validate=False)))
                self.stepper.step()
            self._units(epoch, step, pending[-1][1])
            if (step + 1) % self.log_every == 0 or step + 1 == self.steps:
                _read_losses(pending, sums, epoch, self.steps, len(self.history))
                bar.update(len(pending))
                pending.clear()
            self.rate.step(self.batches.batch_size)  # the global batch, every rank's rows
            done = (epoch - 1) * self.steps + step + 1
            if self.checkpoint_every and done % self.checkpoint_every == 0 and \
                    step + 1 < self.steps:
                self.save(self.history, {
                    "epoch": epoch, "step": step + 1, "sums": dict(sums),
                    "seconds": earlier + time.perf_counter() - t0,
                    "resampled": self.resampled, "threads": self.policy.threads})
                self.rate.pause()
        self._end(epoch, sums, earlier + time.perf_counter() - t0, bar, epochs)

    def _units(self, epoch, step, loss):
        """Dead-unit bookkeeping after a step; resampling every resample_every steps."""
        if self.activity is None:
            return
        self.activity.update(loss, self.batches.batch_size)
        done = (epoch - 1) * self.steps + step + 1
        if self.resample_every and done % self.resample_every == 0:
            rng = np.random.default_rng([self.seed, epoch, step])
            self.resampled += units.resample(self.model, self.optimizer, self.x_train,
                                             self.activity.dead(self.dead_window), rng)
            _broadcast_state(self.model, self.optimizer)

    def _end(self, epoch, sums, seconds, bar, epochs):
        record = {f"train_{k}": v / self.steps for k, v in sums.items()}
        if self.activity is not None:  # over every rank's units (a sharded dictionary)
            dead = self.activity.dead(self.dead_window).astype(np.float64)
            dead = self.model.comm.units_whole(dead)
            record["train_dead_fraction"] = float(dead.mean())
        if self.resample_every:
            record["resampled"] = self.resampled
        comm = self.model.comm
        if comm.size > 1:  # the collectives' share: this epoch's seconds in them, bytes sent
            record["comm_seconds"] = comm.seconds - self.comm_at[0]
            record["comm_bytes_per_step"] = (comm.bytes - self.comm_at[1]) / self.steps
        record.update(_validation_record(self.model, self.x_val, self.batches.batch_size,
                                         self.model.comm))
        self.history.append(epoch=epoch, seconds=seconds, threads=self.policy.threads,
                            samples_per_second=self.rate.per_second(), **record)
        _show(bar, self.history, epochs)
        if self.save is not None:
            self.save(self.history, None)


class _Rate:
    """Samples per second over an epoch's training alone: the steps (reading the batch,
    forward, backward, update, dead units, losses read), not the checkpoints saved in the
    middle of it, nor the first step of a fit call where the epoch has others (the warm-up:
    compiled kernels loaded, buffers allocated). A resumed epoch counts the rows this
    process trained, in the time it trained them."""

    def __init__(self, first):
        self.rows, self.seconds, self.warm_up = 0, 0.0, first
        self.warm = (0, 0.0)
        self.since = time.perf_counter()

    def step(self, rows):
        now = time.perf_counter()
        self.rows, self.seconds = self.rows + rows, self.seconds + now - self.since
        self.since = now
        if self.warm_up:
            self.warm, self.warm_up = (self.rows, self.seconds), False

    def pause(self):
        """Time from here on (a checkpoint just saved) is not training's."""
        self.since = time.perf_counter()

    def per_second(self):
        rows, seconds = self.rows, self.seconds
        if rows > self.warm[0] and seconds > self.warm[1]:
            rows, seconds = rows - self.warm[0], seconds - self.warm[1]
        return rows / seconds if seconds > 0 and rows else None


def _read_losses(pending, sums, epoch, steps, saved):
    """Read the pending steps' losses (a GPU waits here), refuse a non-finite one, and add
    them to the epoch's sums."""
    for step, loss in pending:
        parts = loss.as_dict()
        if not math.isfinite(parts["total"]):
            raise TrainingError(
                f"the loss became {parts['total']} at epoch {epoch}, step {step + 1} of "
                f"{steps}; lower the learning rate (--lr) or check the data. "
                f"The last checkpoint (epoch {saved}) is kept.")
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v


def _show(bar, history, epochs):
    """The epoch's numbers on the progress bar (or its line, off a terminal)."""
    last = history.last()
    fields = {"epoch": f"{last['epoch']}/{epochs}", "loss": f"{last.get('train_total', 0):.4g}",
              "act": f"{last.get('train_mean_activation', 0):.3f}"}
    if last.get("samples_per_second"):
        fields["samples/s"] = f"{last['samples_per_second']:,.0f}"
    if "val_total" in last and last["val_total"] is not None:
        fields["val"] = f"{last['val_total']:.4g}"
    if hasattr(bar, "line"):
        bar.line(**fields)
    else:
        bar.set_postfix(**fields, refresh=False)


def _validation_record(model, x_val, batch_size, comm=None):
    """The held-out set's loss parts and diagnostics for the history (empty without one);
    comm: every rank evaluates its share of the rows."""
    if x_val is None:
        return {}
    val = _evaluate(model, x_val, batch_size, comm=comm or ALONE)
    return {f"val_{k}": v for k, v in val.items()}


def _fit_lbfgs(model, optimizer, x_train, iterations, x_val, progress, history, save, fast,
               policy):
    """L-BFGS iterations up to `iterations` in all, one history record per iteration."""
    x = model.backend.asarray(x_train)  # the full batch, moved to the device once
    compute = fast_loss_and_grads if fast else type(model).loss_and_grads
    last = {}

    def loss_fn():
        last["loss"] = compute(model, x, validate=False)
        return last["loss"]

    clock = [time.perf_counter()]

    def on_iteration(step):
        # L-BFGS's last evaluation is at the accepted point: its loss parts are last["loss"]
        record = {f"train_{k}": v for k, v in last["loss"].as_dict().items()}
        record.update(_validation_record(model, x_val, 1000))
        now = time.perf_counter()
        history.append(epoch=len(history) + 1, seconds=now - clock[0], threads=policy.threads,
                       **record)
        clock[0] = now
        if save is not None:
            save(history, None)

    optimizer.max_iter = max(optimizer.max_iter, iterations)
    optimizer.t = len(history)
    with np.errstate(over="ignore", invalid="ignore"):  # the NaN guard in LBFGS reports it
        optimizer.minimize(loss_fn, max_iter=max(0, iterations - len(history)),
                           callback=on_iteration, progress=progress)


# ----------------------------------------------------------------------------- checks

def _check_model(model, who):
    from ..model import SparseAutoencoder
    if not isinstance(model, SparseAutoencoder):
        raise ConfigError(f"{who}: model must be a SparseAutoencoder, got {type(model).__name__}")


def _checked_data(model, x, what):
    """x (a data set) checked once: a NumPy array of real numbers, (n, n_inputs), finite, in
    [0, 1] where the model needs it (before a normalizer), in the model's dtype (cast here,
    once, never per batch); or a source of rows of the model's width (its rows are checked as
    they are read; a Stream's source, whose sizes fit reads)."""
    if isinstance(x, Stream):
        x = x.source
    if model.normalizer is not None and model.needs_unit_range:
        raise ConfigError("a model with a normalizer sees centred data, not data in [0, 1]: "
                          "give it output_activation='linear' and reconstruction_loss='mse'")
    if is_source(x):
        if x.n_features != model.config.n_inputs:
            raise InputError(f"{what} has rows of {x.n_features} features but the model has "
                             f"n_inputs={model.config.n_inputs}")
        if x.n_rows < 1:
            raise InputError(f"{what} holds no rows")
        return x
    if hasattr(x, "dtype") and not isinstance(x, np.ndarray):
        raise InputError(f"{what} must be a NumPy array (loaders give NumPy; the loop moves "
                         f"each batch to the device), got {type(x).__name__}")
    x = checks.as_numeric(x, what)
    checks.check_matrix(x, model.config.n_inputs, what)
    checks.check_values(x, np, model.needs_unit_range and model.normalizer is None, what)
    if x.dtype != model.config.dtype:
        x = x.astype(model.config.dtype)
    return x


def _check_optimizer(model, optimizer):
    """The optimizer must update this model's own parameter arrays, from its own gradients."""
    if not callable(getattr(optimizer, "step", None)):
        raise ConfigError(f"optimizer must be an optimizer of this model, e.g. "
                          f"Adam(model.params, model.grads); got {type(optimizer).__name__}")
    if _is_lbfgs(optimizer):
        ok = optimizer.flat_params is model.flat_params and \
            optimizer.flat_grads is model.flat_grads
    else:
        params, grads = getattr(optimizer, "params", None), getattr(optimizer, "grads", None)
        ok = isinstance(params, dict) and isinstance(grads, dict) and \
            set(params) == set(model.params) == set(grads) and \
            all(params[k] is model.params[k] and grads[k] is model.grads[k] for k in model.params)
    if not ok:
        raise ConfigError("the optimizer was not built on this model's parameters and "
                          "gradients, so training would change nothing; build it with "
                          "Adam(model.params, model.grads)")
    # settings changed by hand since it was built are checked again
    checks.check_int(getattr(optimizer, "t", 0), "optimizer.t", 0)
    for name in ("lr", "eps"):
        if hasattr(optimizer, name):
            checks.check_real(getattr(optimizer, name), f"optimizer.{name}", 0.0, low_open=True)
    if hasattr(optimizer, "momentum"):
        checks.check_real(optimizer.momentum, "optimizer.momentum", 0.0, 1.0, high_open=True)
    if hasattr(optimizer, "betas"):
        checks.check_betas(optimizer.betas, "optimizer.betas")


def _is_lbfgs(optimizer):
    """L-BFGS runs its own full-batch iterations (minimize) instead of minibatch steps."""
    return hasattr(optimizer, "minimize") and hasattr(optimizer, "flat_params")


def _say_once(note):
    if note not in _SAID:
        _SAID.add(note)
        print(note, file=sys.stderr)


def reconstruction_mse(model, x, batch_size=1000):
    """Mean over samples and pixels of (reconstruction - x)^2, whatever loss the model
    trains with, so that runs with different settings compare on one scale."""
    total, n = 0.0, _rows(x)
    for start in range(0, n, batch_size):
        xb = _read(x, start, min(start + batch_size, n))
        d = to_numpy(model.reconstruct(xb)) - xb
        total += float(np.vdot(d, d))
    return total / (n * model.config.n_inputs)
