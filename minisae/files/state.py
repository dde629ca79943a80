"""What a checkpoint holds of an optimizer, and the one set of checks that `save` and `load`
both run on it, so that minisae never writes a file it would refuse to read.

    optimizer_settings(opt)   {"type": "Adam", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8}
    optimizer_state(opt)      {"t": 120, "lr": 0.01, "m.encoder.W": array, "v.encoder.W": ...}
    restore(opt, state)       copies a checked state into opt's own arrays

The state's arrays are the optimizer's slots (its class's SLOTS: Adam's m and v, SGD's u), one
per parameter, named "<slot>.<parameter>"; its numbers are SCALARS below. The constructor
arguments saved beside them are the class's SETTINGS.
"""
from __future__ import annotations

import numpy as np

from .. import checks
from ..backend import namespace, to_numpy
from ..errors import CheckpointError, ConfigError
from ..optim import SGD, Adam
from ..training.lbfgs import LBFGS

OPTIMIZERS = {"Adam": Adam, "SGD": SGD, "LBFGS": LBFGS}
"""The optimizers a checkpoint may hold, by the type name it records."""

SCALARS = {"Adam": {"t": "count", "lr": "positive"}, "SGD": {"t": "count", "lr": "positive"},
           "LBFGS": {"t": "count", "evaluations": "count", "max_iter": "count", "memory": "pairs"}}
"""The numbers of each optimizer's state, and what each must be."""

NONNEGATIVE = {"v"}
"""State slots that can never be negative (Adam's v, a running mean of squares)."""

MAX_COUNT = 2**53
"""Counts beyond this do not survive a float64 round trip."""


def kind_of(opt):
    """The type name a checkpoint records for opt, or a CheckpointError."""
    for kind, cls in OPTIMIZERS.items():
        if type(opt) is cls:
            return kind
    raise CheckpointError(f"cannot save an optimizer of type {type(opt).__name__}; a checkpoint "
                          f"holds one of {', '.join(OPTIMIZERS)}")


def optimizer_settings(opt):
    """{"type": kind, setting: value, ...} (JSON types) for a checkpoint."""
    kind = kind_of(opt)
    settings = {"type": kind}
    for name in OPTIMIZERS[kind].SETTINGS:
        value = getattr(opt, name)
        settings[name] = list(value) if isinstance(value, tuple) else value
    return settings


def slot_keys(kind, param_names):
    """The state's array keys, "<slot>.<parameter>", in order."""
    return [f"{slot}.{name}" for slot in OPTIMIZERS[kind].SLOTS for name in param_names]


def optimizer_state(opt):
    """The optimizer's state: its SCALARS as Python numbers, its slots as NumPy copies."""
    kind = kind_of(opt)
    state = {name: getattr(opt, name) for name in SCALARS[kind]}
    for slot in OPTIMIZERS[kind].SLOTS:
        for name, a in getattr(opt, slot).items():
            state[f"{slot}.{name}"] = to_numpy(a).copy()
    return state


def check_scalar(key, value, what):
    """A state number checked: "count" an integer in [0, 2^53), "pairs" one >= 1,
    "positive" a finite number > 0. Returns it as a Python number."""
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "biuf":
        value = value.item()
    if what in ("count", "pairs"):
        whole = checks.is_real(value) and float(value).is_integer()
        low = 1 if what == "pairs" else 0
        if not (whole and low <= value < MAX_COUNT):
            raise CheckpointError(f"optimizer state {key!r} must be a whole number >= {low}, "
                                  f"got {value!r}")
        return int(value)
    if not (checks.is_real(value) and value > 0):
        raise CheckpointError(f"optimizer state {key!r} must be a positive number, got {value!r}")
    return float(value)


def check_values(key, a):
    """One state array (or a chunk of it, as load streams it): finite, and >= 0 for the
    slots in NONNEGATIVE."""
    if not np.isfinite(a).all():
        raise CheckpointError(f"optimizer state {key!r} holds NaN or inf (the run had "
                              f"diverged, or the file is damaged); keep an earlier checkpoint")
    if key.split(".")[0] in NONNEGATIVE and (a < 0).any():
        raise CheckpointError(f"optimizer state {key!r} holds negative values, but it is a "
                              f"running mean of squares; the state is damaged")


def check_settings(kind, settings):
    """The constructor arguments of a `kind` optimizer, checked by building nothing: a
    CheckpointError naming the first bad one."""
    expected = set(OPTIMIZERS[kind].SETTINGS)
    if set(settings) != expected:
        raise CheckpointError(f"{kind} settings {sorted(settings)} are not the expected "
                              f"{sorted(expected)}")
    for name, value in settings.items():
        if name == "betas":
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise CheckpointError(f"{kind} setting betas must be two numbers, got {value!r}")
            try:
                checks.check_betas(tuple(value))
            except ConfigError as e:
                raise CheckpointError(f"{kind} setting {e}") from None
        elif name == "max_iter":
            _setting(kind, name, value, "count")
        elif name == "memory":
            _setting(kind, name, value, "pairs")
        elif name in ("gtol", "ftol"):
            if not (checks.is_real(value) and value >= 0):
                raise CheckpointError(f"{kind} setting {name} must be a finite number >= 0, "
                                      f"got {value!r}")
        elif name == "momentum":
            if not (checks.is_real(value) and 0 <= value < 1):
                raise CheckpointError(f"{kind} setting momentum must be in [0, 1), got {value!r}")
        else:  # lr, eps
            _setting(kind, name, value, "positive")


def _setting(kind, name, value, what):
    try:
        check_scalar(name, value, what)
    except CheckpointError as e:
        raise CheckpointError(f"{kind} setting {str(e)[len('optimizer state '):]}") from None


def check_state(kind, state, shapes, dtype):
    """The whole state of a `kind` optimizer for parameters of `shapes` in `dtype`: every key
    present, no other, every number and array as it must be. Raises CheckpointError."""
    expected = set(SCALARS[kind]) | set(slot_keys(kind, shapes))
    if set(state) != expected:
        missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(f"{kind} state " + (f"lacks {missing}" if missing else "") +
                              (" and " if missing and unknown else "") +
                              (f"has unknown entries {unknown}" if unknown else ""))
    for key, what in SCALARS[kind].items():
        check_scalar(key, state[key], what)
    for key in slot_keys(kind, shapes):
        a = state[key]
        shape = shapes[key.split(".", 1)[1]]
        if not isinstance(a, np.ndarray) or a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            got = f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise CheckpointError(f"optimizer state {key!r} must be a {tuple(shape)} {dtype} "
                                  f"array (the model's parameter), got {got}")
        check_values(key, a)


def restore(opt, state):
    """Copy a state into opt: its numbers, and its arrays into opt's own (on its device).
    Every number is checked, and every key looked up, before anything is changed, so a
    refused state leaves opt as it was."""
    kind = kind_of(opt)
    try:
        numbers = {key: check_scalar(key, state[key], what) for key, what in SCALARS[kind].items()}
        arrays = {f"{slot}.{name}": state[f"{slot}.{name}"]
                  for slot in OPTIMIZERS[kind].SLOTS for name in getattr(opt, slot)}
        for key, a in arrays.items():
            check_values(key, np.asarray(a))
    except KeyError as e:
        raise CheckpointError(f"{kind} state lacks {e.args[0]!r}") from None
    except TypeError:
        raise CheckpointError(f"an optimizer state is a dict, got {type(state).__name__}") from None
    for key, value in numbers.items():
        setattr(opt, key, value)
    for slot in OPTIMIZERS[kind].SLOTS:
        for name, a in getattr(opt, slot).items():
            a[...] = namespace(a).asarray(arrays[f"{slot}.{name}"], dtype=a.dtype,
                                          device=a.device)


def check_belongs(opt, model):
    """The optimizer must hold this model's parameter and gradient arrays (else its saved
    state would not fit the saved model)."""
    if isinstance(opt, LBFGS):
        ok = opt.flat_params is model.flat_params and opt.flat_grads is model.flat_grads
    else:
        ok = set(opt.params) == set(model.params) and all(
            opt.params[k] is model.params[k] and opt.grads[k] is model.grads[k]
            for k in model.params)
    if not ok:
        raise CheckpointError("the optimizer was not built on this model's parameters and "
                              "gradients, so its state would not fit the saved model; save the "
                              "optimizer that trains this model")

