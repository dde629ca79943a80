"""The training loop, and the evaluation of a model over a whole data set.

    history = fit(model, Adam(model.params, model.grads, lr=0.01), x_train,
                  epochs=10, batch_size=1000, seed=0, x_val=x_test)
    metrics = evaluate(model, x_test)        # floats: total, reconstruction, sparsity, ...

`fit` drives the fast engine by default (minisae/fast/: `fast=False` runs the reference,
model.loss_and_grads and Adam.step, end to end). The data are an in-memory NumPy array or a
source of rows (minisae.data.ArrayFiles: .npy, .npz, a folder of shards), streamed with
bounded memory. Each epoch's batches come from batches.ArrayBatches (an array: a full
shuffle) or stream.StreamBatches (a source: chunks through a shuffle buffer), in an order
seeded by (seed, epoch), so a run resumed from a checkpoint, after an epoch or in the middle
of one (`position`), draws exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from .. import checks
from .. import functional as F
from .. import losses
from ..backend import namespace, to_numpy
from ..errors import ConfigError, InputError, TrainingError
from ..fast import fast_optimizer, fused
from ..fast import loss_and_grads as fast_loss_and_grads
from ..fast.threads import parse_threads, thread_limits
from .batches import ArrayBatches
from .history import History
from .stream import StreamBatches
from . import units
from .progress import progress_bar

_SAID = set()  # notes printed once per process


def evaluate(model, x, batch_size=1000, per_unit=False):
    """The loss of the whole of x, forward only, in batches: the reconstruction term averaged
    over samples, the sparsity term from each unit's mean activation over all of x (the same
    assembly as training's, losses.make_loss), and the diagnostics of today's trainers.

    Returns a dict of floats: total, each loss part, and
      mean_activation   the mean over units of rho_hat
      l0                the mean number of active units per sample (losses.active: h > 0 for
                        ReLU and TopK codes, h > 0.5 for sigmoid ones)
      dead_fraction     the share of units active on no sample of x
      dense_fraction    the share of units active on more than half of the samples
      fvu               the fraction of variance unexplained: sum (y - x)^2 over the sum of
                        (x - its mean over the samples)^2
    per_unit=True returns (that dict, rho_hat), rho_hat the per-unit mean activations as a
    NumPy float64 array of shape (n_hidden,)."""
    _check_model(model, "evaluate")
    batch_size = checks.check_int(batch_size, "batch_size", 1)
    per_unit = checks.check_bool(per_unit, "per_unit")
    return _evaluate(model, _checked_data(model, x, "x"), batch_size, per_unit)


def _evaluate(model, x, batch_size, per_unit=False):
    """evaluate() of data already checked (fit checks its validation set once, not per epoch).
    x: a NumPy array or a row source, read batch_size rows at a time. The FVU is measured
    where the model works (after its normalizer, if it has one)."""
    n, c = _rows(x), model.config
    reconstruction, rho_hat, counts = 0.0, 0.0, 0.0
    squared_error, x_sum, x_squares = 0.0, 0.0, 0.0
    for start in range(0, n, batch_size):
        xb = model.as_batch(_read(x, start, min(start + batch_size, n)), validate=False)
        xp = namespace(xb)
        h, z, y = model.forward(xb)
        w = xb.shape[0] / n  # both terms are means over the batch's samples
        reconstruction += w * float(losses.reconstruction(c, xb, z, y))
        rho_hat = rho_hat + w * to_numpy(F.mean_activation(h)).astype(np.float64)
        counts = counts + to_numpy(xp.sum(xp.astype(losses.active(c, h), xp.int64), axis=0))
        squared_error += float(xp.sum((y - xb) ** 2))
        x_sum = x_sum + to_numpy(xp.sum(xb, axis=0)).astype(np.float64)
        x_squares = x_squares + to_numpy(xp.sum(xb * xb, axis=0)).astype(np.float64)
    params = {name: to_numpy(p).astype(np.float64) for name, p in model.params.items()}
    loss = losses.make_loss(c, reconstruction, rho_hat, params)
    variance = float(np.sum(x_squares - x_sum * x_sum / n))
    metrics = {**loss.as_dict(), "l0": float(counts.sum() / n),
               "dead_fraction": float((counts == 0).mean()),
               "dense_fraction": float((counts > losses.DENSE_SHARE * n).mean()),
               "fvu": squared_error / variance if variance > 0 else float("nan")}
    return (metrics, rho_hat) if per_unit else metrics


def is_source(x):
    """A source of rows (minisae.data.ArrayFiles, stream.ArraySource): n_rows, n_features,
    read(start, stop, out=None), check_rows(x, start, unit_range)."""
    return all(hasattr(x, a) for a in ("n_rows", "n_features", "read", "check_rows"))


def _rows(x):
    return x.n_rows if is_source(x) else len(x)


def _read(x, start, stop):
    """Rows [start, stop) of an array or a source (a source's rows are checked as read)."""
    if not is_source(x):
        return x[start:stop]
    rows = x.read(start, stop)
    x.check_rows(rows, start)
    return rows


def fit(model, optimizer, x_train, epochs, batch_size=None, seed=0, x_val=None, progress=True,
        history=None, on_epoch_end=None, log_every=None, threads="auto", fast=True,
        dead_window=units.DEAD_WINDOW, resample_every=None, checkpoint_every=None,
        on_checkpoint=None, position=None, chunk_rows=None, buffer_rows=None):
    """Train for epochs (counted from len(history), so a resumed run continues); return History.

    x_train, x_val: NumPy arrays (n, n_inputs), checked once here, or sources of rows
    (minisae.data.ArrayFiles), whose rows are checked as they are read (a NaN found late
    stops the run naming the file and the row). A source is streamed: chunks of chunk_rows
    rows through a shuffle buffer of buffer_rows (stream.StreamBatches; memory bounded by the
    buffer, not the data). on_epoch_end(history) is called after each epoch (the CLI saves
    its checkpoint there). A non-finite loss raises TrainingError naming the epoch and step;
    nothing is saved after it, so the last good checkpoint stays.

    Mid-epoch: with checkpoint_every=N, on_checkpoint(history, position) is called every N
    steps (not at an epoch's end, which on_epoch_end has), position a dict (JSON-able) of
    where the run is: {"epoch", "step" (steps done in it), "sums" (the epoch's loss sums so
    far), "seconds", "resampled"}. Passing it back as `position` (with the model, optimizer
    and history saved at that moment) continues the epoch from there, exactly as an
    uninterrupted run would. threads: BLAS threads for the run, a number, "auto" (chosen from the
    problem's size and the machine's cores, the same at every run: one seed gives the same
    bits) or "adaptive" (follows the load, at the price of that repeatability); see
    minisae/fast/threads.py. The count used is recorded in the history ("threads"), and a
    resumed run under "auto" keeps the count the run recorded.
    fast: True runs the fast engine (minisae.fast), False the reference (model.loss_and_grads
    and optimizer.step) end to end; both give the same numbers up to rounding.

    Dead units (ReLU codes; minisae.training.units): a unit silent for dead_window training
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
    log_every = None if log_every is None else checks.check_int(log_every, "log_every", 1)
    seed = checks.check_int(seed, "seed", 0, 2**63 - 1)
    fast = checks.check_bool(fast, "fast")
    dead_window = units.check_window(dead_window)
    resample_every = units.check_resampling(model, resample_every)
    progress = checks.check_bool(progress, "progress")
    if history is not None:
        checks.check_type(history, "history", History, "a History (what fit returned, or a "
                                                       "checkpoint's)")
    checks.check_optional(on_epoch_end, checks.check_function, "on_epoch_end", 1,
                          "a function of the history")
    checks.check_optional(on_checkpoint, checks.check_function, "on_checkpoint", 2,
                          "a function of (history, position)")
    chunk_rows = checks.check_optional(chunk_rows, checks.check_int, "chunk_rows", 1)
    buffer_rows = checks.check_optional(buffer_rows, checks.check_int, "buffer_rows", 1)
    x_train = _checked_data(model, x_train, "x_train")
    if x_val is not None:
        x_val = _checked_data(model, x_val, "x_val")
    history = History() if history is None else history
    if lbfgs and is_source(x_train):
        raise ConfigError("L-BFGS trains on the whole data set at once: give it an array that "
                          "fits in memory, or use Adam on a source of rows")
    batch_size = _rows(x_train) if lbfgs else min(batch_size, _rows(x_train))
    checkpoint_every = None if checkpoint_every is None else \
        checks.check_int(checkpoint_every, "checkpoint_every", 1)
    if checkpoint_every is not None and not callable(on_checkpoint):
        raise ConfigError("checkpoint_every needs on_checkpoint, a function of (history, "
                          "position) that saves them")
    position = _check_position(position, history)
    if fast and fused(model) is not None:
        _say_once(f"minisae: {fused(model)}")
    threads = _resumed_threads(parse_threads(threads), history)
    c = model.config
    if c.subtract_decoder_bias and len(history) == 0 and getattr(optimizer, "t", 0) == 0:
        model.params["decoder.b"][...] = model.backend.asarray(_model_mean(model, x_train))
    with thread_limits(threads, c.n_inputs, c.n_hidden, batch_size) as policy:
        if lbfgs:
            _fit_lbfgs(model, optimizer, x_train, epochs, x_val, progress, history,
                       on_epoch_end, fast, policy)
        else:
            batches = StreamBatches(x_train, batch_size, seed, model.backend,
                                    chunk_rows=chunk_rows, buffer_rows=buffer_rows,
                                    unit_range=model.needs_unit_range and
                                    model.normalizer is None) if is_source(x_train) \
                else ArrayBatches(x_train, batch_size, seed, model.backend)
            loop = _Loop(model, optimizer, x_train, batches, seed, x_val, progress, history,
                         on_epoch_end, log_every, fast, dead_window, resample_every, policy,
                         checkpoint_every, on_checkpoint)
            loop.run(epochs, position)
    return history


def _model_mean(model, x):
    """The mean of the training rows where the model sees them (after its normalizer), in
    float64: where a subtracted decoder bias starts."""
    n, total = _rows(x), 0.0
    for start in range(0, n, 4096):
        block = _read(x, start, min(start + 4096, n))
        if model.normalizer is not None:
            block = model.normalizer.apply(np.asarray(block, dtype=np.float64))
        total = total + np.asarray(block, dtype=np.float64).sum(axis=0)
    return total / n


def _check_position(position, history):
    """A mid-epoch position (from on_checkpoint) checked against the history it goes with."""
    if position is None:
        return None
    keys = {"epoch", "step", "sums", "seconds", "resampled"}
    if not isinstance(position, dict) or set(position) != keys:
        raise ConfigError(f"position must be what on_checkpoint gave (a dict of "
                          f"{', '.join(sorted(keys))}), got {checks.shown(position)}")
    epoch = checks.check_int(position["epoch"], "position's epoch", 1)
    step = checks.check_int(position["step"], "position's step", 0)
    if epoch != len(history) + 1:
        raise ConfigError(f"the position is in epoch {epoch}, but the history holds "
                          f"{len(history)} epochs: it belongs with another history")
    sums = position["sums"]
    if not isinstance(sums, dict) or not all(isinstance(k, str) and checks.is_real(v)
                                             for k, v in sums.items()):
        raise ConfigError("the position's sums must be a dict of numbers")
    return {"epoch": epoch, "step": step, "sums": dict(sums),
            "seconds": checks.check_real(position["seconds"], "position's seconds", 0.0),
            "resampled": checks.check_int(position["resampled"], "position's resampled", 0)}


def _resumed_threads(threads, history):
    """Under "auto", a resumed run keeps the thread count its history recorded (the machine's
    cores may differ now; the run's bits must not)."""
    recorded = [t for t in history.as_dict().get("threads", []) if t is not None]
    if threads == "auto" and recorded:
        return int(recorded[-1])
    return threads


class _Loop:
    """The minibatch loop of one fit() call: epochs of steps, the losses read every log_every
    steps, dead units tracked and resampled, checkpoints mid-epoch and at each epoch's end."""

    def __init__(self, model, optimizer, x_train, batches, seed, x_val, progress, history,
                 on_epoch_end, log_every, fast, dead_window, resample_every, policy,
                 checkpoint_every, on_checkpoint):
        self.model, self.optimizer, self.x_train, self.batches = model, optimizer, x_train, \
            batches
        self.seed, self.x_val, self.progress, self.history = seed, x_val, progress, history
        self.on_epoch_end, self.dead_window, self.policy = on_epoch_end, dead_window, policy
        self.resample_every = resample_every
        self.checkpoint_every, self.on_checkpoint = checkpoint_every, on_checkpoint
        self.steps = batches.steps_per_epoch
        # Reading a loss from a GPU waits for it, so there losses come back every few steps.
        self.log_every = log_every or (1 if model.backend.name == "numpy" else 20)
        if checkpoint_every:
            self.log_every = math.gcd(self.log_every, checkpoint_every)
        self.compute = fast_loss_and_grads if fast else type(model).loss_and_grads
        self.stepper = fast_optimizer(optimizer) if fast else optimizer
        self.aux = model.config.aux_k is not None
        self.activity = units.UnitActivity(model) if self.aux or resample_every else None

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
        pending = []
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
            done = (epoch - 1) * self.steps + step + 1
            if self.checkpoint_every and done % self.checkpoint_every == 0 and \
                    step + 1 < self.steps:
                self.on_checkpoint(self.history, {
                    "epoch": epoch, "step": step + 1, "sums": dict(sums),
                    "seconds": earlier + time.perf_counter() - t0,
                    "resampled": self.resampled})
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

    def _end(self, epoch, sums, seconds, bar, epochs):
        record = {f"train_{k}": v / self.steps for k, v in sums.items()}
        if self.activity is not None:
            record["train_dead_fraction"] = float(self.activity.dead(self.dead_window).mean())
        if self.resample_every:
            record["resampled"] = self.resampled
        record.update(_validation_record(self.model, self.x_val, self.batches.batch_size))
        self.history.append(epoch=epoch, seconds=seconds, threads=self.policy.threads,
                            samples_per_second=self.steps * self.batches.batch_size / seconds
                            if seconds > 0 else None, **record)
        _show(bar, self.history, epochs)
        if self.on_epoch_end is not None:
            self.on_epoch_end(self.history)


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


def _validation_record(model, x_val, batch_size):
    """The held-out set's loss parts and diagnostics for the history (empty without one)."""
    if x_val is None:
        return {}
    val = _evaluate(model, x_val, batch_size)
    return {f"val_{k}": v for k, v in val.items()}


def _fit_lbfgs(model, optimizer, x_train, iterations, x_val, progress, history, on_epoch_end,
               fast, policy):
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
        if on_epoch_end is not None:
            on_epoch_end(history)

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
    they are read)."""
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
