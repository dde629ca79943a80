"""Checks of what users pass in: numbers, choices, arrays, sizes. Every argument check of the
package goes through here, so a wrong value gets the same kind of sentence wherever it is
passed: what was wrong, what was expected, what came, and what to do.

    n = check_int(n_hidden, "n_hidden", low=1)            # an int, or a ConfigError
    lr = check_real(lr, "lr", low=0, low_open=True)        # a float in (0, inf)
    name = check_choice(output, "output_activation", ("sigmoid", "linear"))

The model, the optimizers, training, the data loaders and the files call these before they
compute anything. They sit at the bottom of the package and know no array library but NumPy;
checks of device arrays take the array's namespace (`xp`) from the caller.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .errors import ConfigError, InputError


# ----------------------------------------------------------------------------- numbers

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


def _got(v):
    """How a refused value is shown: its repr, shortened, and its type when that helps."""
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if isinstance(v, (int, float, str, type(None))) else f"{text} ({type(v).__name__})"


def check_int(v, name, low=None, high=None, error=ConfigError):
    """v as a Python int in [low, high], or `error` naming `name`."""
    if not is_int(v) or (low is not None and v < low) or (high is not None and v > high):
        bounds = (f" >= {low}" if high is None else f" in [{low}, {high}]") if low is not None \
            else (f" <= {high}" if high is not None else "")
        raise error(f"{name} must be an integer{bounds}, got {_got(v)}")
    return int(v)


def check_real(v, name, low=None, high=None, low_open=False, high_open=False, error=ConfigError):
    """v as a finite Python float in the interval from low to high (each end closed unless
    *_open), or `error` naming `name`."""
    ok = is_real(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        where = f" in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}" \
            if low is not None or high is not None else ""
        raise error(f"{name} must be a finite number{where}, got {_got(v)}")
    return float(v)


def check_choice(v, name, choices, error=ConfigError):
    """v if it is one of `choices` (strings), else `error` listing them."""
    if not isinstance(v, str) or v not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {_got(v)}")
    return v


def check_bool(v, name, error=ConfigError):
    """v as a bool (True, False, or a NumPy bool), or `error`."""
    if not isinstance(v, (bool, np.bool_)):
        raise error(f"{name} must be True or False, got {_got(v)}")
    return bool(v)


def check_type(v, name, kinds, what, error=ConfigError):
    """v if isinstance(v, kinds), else `error`: "<name> must be <what>, got <type>"."""
    if not isinstance(v, kinds):
        raise error(f"{name} must be {what}, got {type(v).__name__}")
    return v


def check_path(v, name, error=ConfigError):
    """v as a str path (a str or os.PathLike, not empty), or `error`."""
    if not isinstance(v, (str, os.PathLike)) or not os.fspath(v):
        raise error(f"{name} must be a file or folder path, got {_got(v)}")
    return os.fspath(v)


def dtype_name(dtype):
    """"float32" for "float32", np.float32 or np.dtype("float32"); anything else as its
    repr, for check_choice to refuse (None too: NumPy would read None as float64)."""
    if dtype is None:
        return "None"
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


# ----------------------------------------------------------------------------- memory

def physical_memory():
    """Bytes of RAM on this machine, or None where the OS doesn't say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(need, have, what, hint, where="this machine's memory"):
    """Refuse, before allocating, `need` bytes where only `have` exist (have None: unknown,
    allowed): "<what> need(s) X GiB, more than <where>'s Y GiB; <hint>"."""
    if have is not None and need > have:
        raise ConfigError(f"{what} would need {need / 2**30:,.1f} GiB, more than {where} "
                          f"({have / 2**30:,.1f} GiB); {hint}")


# ----------------------------------------------------------------------------- arrays

def as_numeric(x, what="x"):
    """x as an array (NumPy unless it already is another library's) of real numbers, or an
    InputError saying why not (strings, ragged lists, complex numbers, objects, masked)."""
    if isinstance(x, np.ma.MaskedArray):
        raise InputError(f"{what} is a masked array; its hidden values would be trained on. "
                         f"Fill them first (x.filled(value)) or drop the masked rows")
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise InputError(f"{what} must be a rectangular array of numbers, got "
                             f"{type(x).__name__} ({e})") from None
    kind = getattr(np.dtype(x.dtype), "kind", None) if isinstance(x, np.ndarray) else \
        _foreign_kind(x)
    if kind not in ("b", "i", "u", "f"):
        names = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}
        raise InputError(f"{what} must hold real numbers, got {names.get(kind, x.dtype)} "
                         f"(dtype {x.dtype}); convert it with np.asarray(x, dtype=np.float32) "
                         f"or take its real part")
    return x


def _foreign_kind(x):
    """The NumPy-style kind letter of another library's dtype ("f" for torch.float32, ...)."""
    name = str(x.dtype).rsplit(".", 1)[-1]
    for prefix, kind in (("bool", "b"), ("uint", "u"), ("int", "i"), ("float", "f"),
                         ("bfloat", "f"), ("complex", "c")):
        if name.startswith(prefix):
            return kind
    return None


def check_matrix(x, n_columns, what="x", columns="n_inputs"):
    """Refuse x unless it is 2-D with n_columns columns and at least one row."""
    shape = tuple(x.shape)
    if len(shape) != 2:
        hint = " (one sample? use x[None, :])" if len(shape) == 1 else \
            " (images? flatten them to (batch, n_inputs), e.g. x.reshape(len(x), -1))" \
            if len(shape) > 2 else ""
        raise InputError(f"{what} must be 2-D (batch, {n_columns}), got {len(shape)}-D shape "
                         f"{shape}{hint}")
    if shape[1] != n_columns:
        raise InputError(f"{what} has {shape[1]} features but the model has {columns}="
                         f"{n_columns}; got shape {shape}, expected (batch, {n_columns})")
    if shape[0] == 0:
        raise InputError(f"{what} is empty (0 rows); pass at least one sample")


def check_values(x, xp, unit_range, what="x"):
    """Refuse data the model cannot learn from: NaN or inf anywhere, and, when unit_range (a
    sigmoid output or cross-entropy), values outside [0, 1]. xp: x's namespace. min and max
    find NaN and inf too (they propagate); two reductions, read once each."""
    low, high = float(xp.min(x)), float(xp.max(x))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{what} contains NaN or inf; clean or impute the data first")
    if unit_range and (low < 0.0 or high > 1.0):
        raise InputError(
            f"{what} holds values in [{low:.4g}, {high:.4g}], but a sigmoid output (and "
            f"cross-entropy) can only reconstruct values in [0, 1]; scale the data into "
            f"[0, 1] first (for example (x - x.min()) / (x.max() - x.min())), or use "
            f"output_activation='linear' with reconstruction_loss='mse'")


# ----------------------------------------------------------------------------- optimizers

def check_params(params, grads):
    """An optimizer's params and grads: dicts with the same names, of float arrays of the same
    shapes that it may write. Returns copies of the two dicts (the arrays themselves shared)."""
    if not isinstance(params, dict) or not isinstance(grads, dict):
        raise ConfigError("params and grads must be dicts of named arrays, e.g. "
                          "Adam(model.params, model.grads); got "
                          f"{type(params).__name__} and {type(grads).__name__}")
    if not params:
        raise ConfigError("params is empty: pass the model's parameters, "
                          "e.g. Adam(model.params, model.grads)")
    if set(params) != set(grads):
        raise ConfigError(f"params and grads must have the same names; got {sorted(params)} "
                          f"and {sorted(grads)}")
    for name, p in params.items():
        g = grads[name]
        if not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in (p, g)):
            raise ConfigError(f"params and grads must hold arrays (the model's, updated in "
                              f"place); {name!r} is a {type(p).__name__}")
        if tuple(p.shape) != tuple(g.shape):
            raise ConfigError(f"grad of {name!r} has shape {tuple(g.shape)}, param "
                              f"{tuple(p.shape)}")
        if _kind(p) != "f":
            raise ConfigError(f"parameter {name!r} must be a float array, got {p.dtype}")
        if isinstance(p, np.ndarray) and not p.flags.writeable:
            raise ConfigError(f"parameter {name!r} is read-only (a memory map, or an array "
                              f"marked so), but an optimizer updates it in place; copy the "
                              f"model's parameters into writable arrays first")
    return dict(params), dict(grads)


def _kind(a):
    return np.dtype(a.dtype).kind if isinstance(a, np.ndarray) else _foreign_kind(a)


def check_betas(betas):
    """Adam's (beta1, beta2): two numbers in [0, 1), as a tuple of floats."""
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {_got(betas)}") from None
    return (check_real(b1, "betas[0]", 0.0, 1.0, high_open=True),
            check_real(b2, "betas[1]", 0.0, 1.0, high_open=True))


# ----------------------------------------------------------------------------- files

def open_regular(path, what, error):
    """Open `path` for reading in binary, refusing what is not a regular file (a folder, a
    FIFO with no writer, which would block for ever, a device) and a file that cannot be
    read, each with `error` naming it. The type is checked before open() is called, and the
    open itself does not block (O_NONBLOCK), in case the path changed in between."""
    import stat
    path = check_path(path, what, error)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as e:
        raise error(f"{what} {path}: cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if \
            stat.S_ISFIFO(mode) else "a device or socket"
        raise error(f"{what} {path} is {kind}, not a regular file; give the file itself")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise error(f"{what} {path}: cannot be read ({e.strerror or e}); check its "
                    f"permissions") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{what} {path} is not a regular file; give the file itself")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
