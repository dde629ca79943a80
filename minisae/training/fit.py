"""The training loop, and the evaluation of a model over a whole data set.

    history = fit(model, Adam(model.params, model.grads, lr=0.01), x_train,
                  epochs=10, batch_size=1000, seed=0, x_val=x_test)
    metrics = evaluate(model, x_test)        # floats: total, reconstruction, sparsity, ...

`fit` drives the fast engine by default (minisae/fast/: `fast=False` runs the reference,
model.loss_and_grads and Adam.step, end to end). Each epoch's batches come from
batches.ArrayBatches, in an order seeded by (seed, epoch), so a run resumed from a
checkpoint after epoch k draws exactly the batches an uninterrupted run would.
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
    """evaluate() of data already checked (fit checks its validation set once, not per epoch)."""
    n, c = len(x), model.config
    reconstruction, rho_hat, counts = 0.0, 0.0, 0.0
    squared_error, x_sum, x_squares = 0.0, 0.0, 0.0
    for start in range(0, n, batch_size):
        xb = model.as_batch(x[start:start + batch_size], validate=False)
        xp = namespace(xb)
        h, z, y = model.forward(xb)
        w = xb.shape[0] / n  # both terms are means over the batch's samples
        reconstruction += w * float(losses.reconstruction(c, xb, z, y))
        rho_hat = rho_hat + w * to_numpy(F.mean_activation(h)).astype(np.float64)
        on = losses.active(c, h)
        counts = counts + to_numpy(xp.sum(xp.astype(on, xp.int64), axis=0))
        squared_error += float(xp.sum((y - xb) ** 2))
        host = x[start:start + batch_size].astype(np.float64)
        x_sum, x_squares = x_sum + host.sum(axis=0), x_squares + (host * host).sum(axis=0)
    params = {name: to_numpy(p).astype(np.float64) for name, p in model.params.items()}
    loss = losses.make_loss(c, reconstruction, rho_hat, params)
    variance = float(np.sum(x_squares - x_sum * x_sum / n))
    metrics = {**loss.as_dict(), "l0": float(counts.sum() / n),
               "dead_fraction": float((counts == 0).mean()),
               "dense_fraction": float((counts > losses.DENSE_SHARE * n).mean()),
               "fvu": squared_error / variance if variance > 0 else float("nan")}
    return (metrics, rho_hat) if per_unit else metrics


def fit(model, optimizer, x_train, epochs, batch_size=None, seed=0, x_val=None, progress=True,
        history=None, on_epoch_end=None, log_every=None, threads="auto", fast=True,
        dead_window=units.DEAD_WINDOW, resample_every=None):
    """Train for epochs (counted from len(history), so a resumed run continues); return History.

    x_train, x_val: NumPy arrays (n, n_inputs), checked once here. on_epoch_end(history) is
    called after each epoch (the CLI saves its checkpoint there). A non-finite loss raises
    TrainingError naming the epoch and step; nothing is saved after it, so the last good
    checkpoint stays. threads: BLAS threads for the run, a number, "auto" (chosen from the
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
    lbfgs = _is_lbfgs(optimizer)
    if lbfgs and batch_size is not None:
        raise ConfigError("L-BFGS trains on the full batch: leave batch_size out (None)")
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
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise ConfigError(f"on_epoch_end must be a function of the history, got "
                          f"{type(on_epoch_end).__name__}")
    _check_optimizer(model, optimizer)
    x_train = _checked_data(model, x_train, "x_train")
    if x_val is not None:
        x_val = _checked_data(model, x_val, "x_val")
    history = History() if history is None else history
    batch_size = len(x_train) if lbfgs else min(batch_size, len(x_train))
    if fast and fused(model) is not None:
        _say_once(f"minisae: {fused(model)}")
    threads = _resumed_threads(parse_threads(threads), history)
    c = model.config
    if c.subtract_decoder_bias and len(history) == 0 and getattr(optimizer, "t", 0) == 0:
        model.params["decoder.b"][...] = model.backend.asarray(
            x_train.mean(axis=0, dtype=np.float64))
    with thread_limits(threads, c.n_inputs, c.n_hidden, batch_size) as policy:
        if lbfgs:
            _fit_lbfgs(model, optimizer, x_train, epochs, x_val, progress, history,
                       on_epoch_end, fast, policy)
        else:
            _fit_minibatch(model, optimizer, x_train, epochs, batch_size, seed, x_val, progress,
                           history, on_epoch_end, log_every, fast, dead_window, resample_every,
                           policy)
    return history


def _resumed_threads(threads, history):
    """Under "auto", a resumed run keeps the thread count its history recorded (the machine's
    cores may differ now; the run's bits must not)."""
    recorded = [t for t in history.as_dict().get("threads", []) if t is not None]
    if threads == "auto" and recorded:
        return int(recorded[-1])
    return threads


def _fit_minibatch(model, optimizer, x_train, epochs, batch_size, seed, x_val, progress,
                   history, on_epoch_end, log_every, fast, dead_window, resample_every, policy):
    batches = ArrayBatches(x_train, batch_size, seed, model.backend)
    steps, first = batches.steps_per_epoch, len(history) + 1
    aux = model.config.aux_k is not None
    activity = units.UnitActivity(model) if aux or resample_every else None
    # Reading a loss from a GPU waits for it, so there losses come back every few steps.
    if log_every is None:
        log_every = 1 if model.backend.name == "numpy" else 20
    compute = fast_loss_and_grads if fast else type(model).loss_and_grads
    stepper = fast_optimizer(optimizer) if fast else optimizer
    with progress_bar(max(0, epochs - first + 1) * steps, progress) as bar:
        for epoch in range(first, epochs + 1):
            t0 = time.perf_counter()
            sums, pending, resampled = {}, [], 0
            for step, x in batches.epoch(epoch):
                if aux:
                    activity.publish(dead_window)
                # A diverging run overflows before its loss turns inf/NaN; the check below
                # reports that with the epoch and step, so NumPy's warnings would only repeat it.
                with np.errstate(over="ignore", invalid="ignore"):
                    pending.append((step, compute(model, x, validate=False)))
                    stepper.step()
                if activity is not None:
                    activity.update(pending[-1][1], batch_size)
                    done = (epoch - 1) * steps + step + 1
                    if resample_every and done % resample_every == 0:
                        rng = np.random.default_rng([seed, epoch, step])
                        resampled += units.resample(model, optimizer, x_train,
                                                    activity.dead(dead_window), rng)
                if (step + 1) % log_every == 0 or step + 1 == steps:
                    _read_losses(pending, sums, epoch, steps, len(history))
                    bar.update(len(pending))
                    pending.clear()
            record = {f"train_{k}": v / steps for k, v in sums.items()}
            if activity is not None:
                record["train_dead_fraction"] = float(activity.dead(dead_window).mean())
            if resample_every:
                record["resampled"] = resampled
            record.update(_validation_record(model, x_val, batch_size))
            history.append(epoch=epoch, seconds=time.perf_counter() - t0,
                           threads=policy.threads, **record)
            _show(bar, history, epochs)
            if on_epoch_end is not None:
                on_epoch_end(history)


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
    [0, 1] where the model needs it, in the model's dtype (cast here, once, never per batch)."""
    if hasattr(x, "dtype") and not isinstance(x, np.ndarray):
        raise InputError(f"{what} must be a NumPy array (loaders give NumPy; the loop moves "
                         f"each batch to the device), got {type(x).__name__}")
    x = checks.as_numeric(x, what)
    checks.check_matrix(x, model.config.n_inputs, what)
    checks.check_values(x, np, model.needs_unit_range, what)
    if x.dtype != model.config.dtype:
        x = x.astype(model.config.dtype)
    return x


def _check_optimizer(model, optimizer):
    """The optimizer must update this model's own parameter arrays, from its own gradients."""
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
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        d = to_numpy(model.reconstruct(xb)) - xb
        total += float(np.vdot(d, d))
    return total / x.size
