"""The minibatch training loop.

    history = fit(model, Adam(model.params, model.grads, lr=0.01), x_train,
                  epochs=10, batch_size=1000, seed=0, x_val=x_test)
    metrics = evaluate(model, x_test)        # floats: total, reconstruction, sparsity, ...

Each epoch reshuffles the training set with a generator seeded by (seed, epoch), so a run
resumed from a checkpoint after epoch k draws exactly the batches an uninterrupted run
would. Batches are gathered into one reused buffer; the data set itself is never copied.
Like the book's code, each epoch runs len(x_train) // batch_size full batches (a partial
last batch would give the KL term a noisy rho_hat).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import numpy as np

from .errors import ConfigError, InputError, TrainingError
from .checks import as_numeric, check_data

DEAD_UNIT_THRESHOLD = 1e-3
"""A unit whose mean activation is below this is counted as dead."""


@dataclass
class History:
    """Per-epoch records; each field is a list with one entry per epoch (None where not measured)."""

    epoch: list = field(default_factory=list)
    train_total: list = field(default_factory=list)
    train_reconstruction: list = field(default_factory=list)
    train_sparsity: list = field(default_factory=list)
    train_weight_decay: list = field(default_factory=list)
    train_mean_activation: list = field(default_factory=list)
    val_total: list = field(default_factory=list)
    val_reconstruction: list = field(default_factory=list)
    val_sparsity: list = field(default_factory=list)
    val_weight_decay: list = field(default_factory=list)
    val_mean_activation: list = field(default_factory=list)
    dead_fraction: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def append(self, **record):
        for f in fields(self):
            getattr(self, f.name).append(record.get(f.name))

    def as_dict(self):
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown history fields {sorted(unknown)}")
        return cls(**{k: list(v) for k, v in d.items()})

    def __len__(self):
        return len(self.epoch)

    def last(self):
        """The last epoch's record as a dict (empty before the first epoch)."""
        return {k: v[-1] for k, v in self.as_dict().items()} if self.epoch else {}


def evaluate(model, x, batch_size=1000, per_unit=False):
    """Loss parts of the whole of x, forward only, in batches: reconstruction averaged over
    samples, sparsity from each unit's mean activation over all of x.

    Returns a dict of floats: total, reconstruction, sparsity, weight_decay, mean_activation
    (the mean over units of rho_hat) and dead_fraction (the share of units whose rho_hat is
    below DEAD_UNIT_THRESHOLD). per_unit=True returns (that dict, rho_hat), rho_hat the
    per-unit mean activations as a NumPy float64 array of shape (n_hidden,)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return _evaluate(model, _check_data(model, x, "x"), batch_size, per_unit)


def _evaluate(model, x, batch_size, per_unit=False):
    """evaluate() of data already checked (fit checks its validation set once, not per epoch)."""
    from . import functional as F
    n = len(x)
    reconstruction, rho_hat, weight_decay = 0.0, 0.0, 0.0
    for start in range(0, n, batch_size):
        part = model.loss(x[start:start + batch_size])
        w = min(batch_size, n - start) / n
        reconstruction += w * part.reconstruction
        rho_hat = rho_hat + w * part.mean_activation.astype(np.float64)
        weight_decay = part.weight_decay
    cfg = model.config
    sparsity = float(F.kl_penalty(cfg.sparsity_target, rho_hat, cfg.sparsity_weight))
    metrics = {"total": reconstruction + sparsity + weight_decay,
               "reconstruction": reconstruction, "sparsity": sparsity,
               "weight_decay": weight_decay, "mean_activation": float(rho_hat.mean()),
               "dead_fraction": float((rho_hat < DEAD_UNIT_THRESHOLD).mean())}
    return (metrics, rho_hat) if per_unit else metrics


def _check_data(model, x, what):
    """x (a data set) checked once: a NumPy array of real numbers, (n, n_inputs), finite, in
    [0, 1] where the model needs it, in the model's dtype (cast here, once, never per batch)."""
    if hasattr(x, "dtype") and not isinstance(x, np.ndarray):
        raise InputError(f"{what} must be a NumPy array (loaders give NumPy; the loop moves "
                         f"each batch to the device), got {type(x).__name__}")
    x = as_numeric(x, what)
    n_in = model.config.n_inputs
    if x.ndim != 2 or x.shape[1] != n_in:
        raise InputError(f"{what} must have shape (n, {n_in}), got {x.shape}")
    check_data(x, n_in, model.needs_unit_range, what)
    if x.dtype != model.dtype:
        x = x.astype(model.dtype)
    return x


def _check_optimizer(model, optimizer):
    """The optimizer must update this model's own parameter arrays."""
    if _is_lbfgs(optimizer):
        ok = optimizer.flat_params is model.flat_params
    else:
        params = getattr(optimizer, "params", None)
        ok = isinstance(params, dict) and set(params) == set(model.params) and all(
            params[k] is model.params[k] for k in model.params)
    if not ok:
        raise ConfigError("the optimizer was not built on this model's parameters, so training "
                          "would change nothing; build it with Adam(model.params, model.grads)")


def _is_lbfgs(optimizer):
    """L-BFGS runs its own full-batch iterations (minimize) instead of minibatch steps."""
    return hasattr(optimizer, "minimize") and hasattr(optimizer, "flat_params")


def fit(model, optimizer, x_train, epochs, batch_size=None, seed=0, x_val=None, progress=True,
        history=None, on_epoch_end=None, log_every=None, threads="auto"):
    """Train for epochs (counted from len(history), so a resumed run continues); return History.

    x_train, x_val: NumPy arrays (n, n_inputs), checked once here. on_epoch_end(history) is
    called after each epoch (the CLI saves its checkpoint there). A non-finite loss raises
    TrainingError naming the epoch and step; nothing is saved after it, so the last good
    checkpoint stays. threads: BLAS threads for the run, a number or "auto" (the thread
    policy of minisae/fast/threads.py chooses from the problem's size and the machine).

    With an L-BFGS optimizer (minisae.optim.LBFGS) an epoch is one L-BFGS iteration over the
    whole of x_train (full batch; leave batch_size None), and the run may end early when
    L-BFGS converges."""
    from .fast.threads import thread_limits
    lbfgs = _is_lbfgs(optimizer)
    if lbfgs and batch_size is not None:
        raise ConfigError("L-BFGS trains on the full batch: leave batch_size out (None)")
    if not lbfgs and batch_size is None:
        raise ConfigError("batch_size is needed: the samples per step of the optimizer")
    for name, value, low in (("epochs", epochs, 0), ("batch_size", 1 if lbfgs else batch_size, 1),
                             ("log_every", 1 if log_every is None else log_every, 1),
                             ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    epochs = int(epochs)
    if history is not None and not isinstance(history, History):
        raise ConfigError(f"history must be a History (what fit returned, or a checkpoint's), "
                          f"got {type(history).__name__}")
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise ConfigError(f"on_epoch_end must be a function of the history, got "
                          f"{type(on_epoch_end).__name__}")
    _check_optimizer(model, optimizer)
    x_train = _check_data(model, x_train, "x_train")
    if x_val is not None:
        x_val = _check_data(model, x_val, "x_val")
    history = History() if history is None else history
    batch_size = len(x_train) if lbfgs else min(int(batch_size), len(x_train))
    first = len(history) + 1
    with thread_limits(threads, model.config.n_inputs, model.config.n_hidden, batch_size):
        if lbfgs:
            _fit_lbfgs(model, optimizer, x_train, epochs, x_val, progress, history, on_epoch_end)
        else:
            _fit_minibatch(model, optimizer, x_train, epochs, batch_size, seed, x_val, progress,
                           history, on_epoch_end, log_every, first)
    return history


def _validation_record(model, x_val, batch_size):
    """The held-out set's loss parts for the history (empty without one)."""
    if x_val is None:
        return {}
    val = _evaluate(model, x_val, batch_size)
    record = {f"val_{k}": val[k] for k in LOGGED}
    record["dead_fraction"] = val["dead_fraction"]
    return record


def _fit_minibatch(model, optimizer, x_train, epochs, batch_size, seed, x_val, progress,
                   history, on_epoch_end, log_every, first):
    steps = len(x_train) // batch_size
    # Reading a loss from the GPU waits for it, so there losses come back every few steps.
    if log_every is None:
        log_every = 1 if model.backend.name == "numpy" else 20
    batch = np.empty((batch_size, x_train.shape[1]), dtype=model.dtype)
    with progress_bar(max(0, epochs - first + 1) * steps, progress) as bar:
        for epoch in range(first, epochs + 1):
            seconds, sums = _train_epoch(model, optimizer, x_train, batch, seed, epoch, steps,
                                         log_every, bar, epochs, len(history))
            record = {f"train_{k}": v / steps for k, v in sums.items()}
            record.update(_validation_record(model, x_val, batch_size))
            history.append(epoch=epoch, seconds=seconds, **record)
            if on_epoch_end is not None:
                on_epoch_end(history)


def _fit_lbfgs(model, optimizer, x_train, iterations, x_val, progress, history, on_epoch_end):
    """L-BFGS iterations up to `iterations` in all, one history record per iteration."""
    x = model.backend.asarray(x_train)  # the full batch, moved to the device once
    last = {}

    def loss_fn():
        last["loss"] = model.loss_and_grads(x, validate=False)
        return last["loss"]

    clock = [time.perf_counter()]

    def on_iteration(step):
        # L-BFGS's last evaluation is at the accepted point: its loss parts are last["loss"]
        parts = last["loss"].as_dict()
        record = {f"train_{k}": parts[k] for k in LOGGED}
        record.update(_validation_record(model, x_val, 1000))
        now = time.perf_counter()
        history.append(epoch=len(history) + 1, seconds=now - clock[0], **record)
        clock[0] = now
        if on_epoch_end is not None:
            on_epoch_end(history)

    optimizer.max_iter = max(optimizer.max_iter, iterations)
    optimizer.t = len(history)
    with np.errstate(over="ignore", invalid="ignore"):  # the NaN guard in LBFGS reports it
        optimizer.minimize(loss_fn, max_iter=max(0, iterations - len(history)),
                           callback=on_iteration, progress=progress)


LOGGED = ("total", "reconstruction", "sparsity", "weight_decay", "mean_activation")


def _train_epoch(model, optimizer, x_train, batch, seed, epoch, steps, log_every, bar, epochs,
                 saved):
    """One pass over x_train in a fresh order; returns (seconds, sums of the logged parts)."""
    batch_size = len(batch)
    order = np.random.default_rng([seed, epoch]).permutation(len(x_train))
    sums = dict.fromkeys(LOGGED, 0.0)
    pending = []
    t0 = time.perf_counter()
    for step in range(steps):
        np.take(x_train, order[step * batch_size:(step + 1) * batch_size], axis=0,
                out=batch, mode="clip")  # indices are in range; "clip" avoids a buffer copy
        # A diverging run overflows before its loss turns inf/NaN; the check below
        # reports that with the epoch and step, so NumPy's warnings would only repeat it.
        with np.errstate(over="ignore", invalid="ignore"):
            pending.append((step, model.loss_and_grads(batch, validate=False)))
            optimizer.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            for s, loss in pending:
                parts = loss.as_dict()
                if not math.isfinite(parts["total"]):
                    raise TrainingError(
                        f"the loss became {parts['total']} at epoch {epoch}, step {s + 1} of "
                        f"{steps}; lower the learning rate (--lr) or check the data. "
                        f"The last checkpoint (epoch {saved}) is kept.")
                for k in sums:
                    sums[k] += parts[k]
            bar.update(len(pending))
            bar.set_postfix(loss=f"{parts['total']:.4g}", rec=f"{parts['reconstruction']:.4g}",
                            sparse=f"{parts['sparsity']:.4g}",
                            act=f"{parts['mean_activation']:.3f}", epoch=f"{epoch}/{epochs}",
                            refresh=False)
            pending.clear()
    return time.perf_counter() - t0, sums


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def progress_bar(total, enabled, desc="training", unit="batch"):
    """A tqdm bar (closed when its block ends, also on an error), or a silent stand-in."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def reconstruction_mse(model, x, batch_size=1000):
    """Mean over samples and pixels of (reconstruction - x)^2, whatever loss the model
    trains with, so that runs with different settings compare on one scale."""
    from .backend import to_numpy
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        d = to_numpy(model.reconstruct(xb)) - xb
        total += float(np.vdot(d, d))
    return total / x.size
