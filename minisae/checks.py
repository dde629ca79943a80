"""Checks of what users pass in: numbers, arrays, data sets. Each failure is a MinisaeError
whose message says what was wrong and what to do. The model, the optimizers and the training
loop call these before they compute anything.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .errors import InputError


def is_int(v):
    """An integer (Python or NumPy), but not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_real(v):
    """A finite real number (Python or NumPy), but not a bool."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def physical_memory():
    """Bytes of RAM on this machine, or None where the OS doesn't say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_data(x, n_inputs, unit_range, what="x"):
    """Refuse data the model cannot learn from, with a message that says what to do.

    x: an array of any backend, (n, n_inputs). unit_range: the model's output is a sigmoid
    (or its loss is cross-entropy), so every value must lie in [0, 1]. min and max find NaN
    and inf too (they propagate)."""
    if len(x) == 0:
        raise InputError(f"{what} is empty (0 rows); pass at least one sample")
    with np.errstate(invalid="ignore"):
        low, high = float(x.min()), float(x.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{what} contains NaN or inf; clean or impute the data first")
    if unit_range and (low < 0.0 or high > 1.0):
        raise InputError(
            f"{what} holds values in [{low:.4g}, {high:.4g}], but a sigmoid output (and "
            f"cross-entropy) can only reconstruct values in [0, 1]; scale the data into "
            f"[0, 1] first (for example (x - x.min()) / (x.max() - x.min())), or use "
            f"output_activation='linear' with reconstruction_loss='mse'")


def as_numeric(x, what="x"):
    """x as an array (NumPy unless it already is another backend's) of real numbers, or an
    InputError saying why not (strings, ragged lists, complex numbers, objects)."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InputError(f"{what} must be a rectangular array of numbers, got "
                             f"{type(x).__name__} ({e})") from None
    if x.dtype.kind not in "biuf":
        kind = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}
        raise InputError(f"{what} must hold real numbers, got {kind.get(x.dtype.kind, x.dtype)} "
                         f"(dtype {x.dtype}); convert it with np.asarray(x, dtype=np.float32) "
                         f"or take its real part")
    return x
