"""Checks of what users pass in: numbers, choices, arrays, sizes. Every argument check of the
package goes through here, so a wrong value gets the same kind of sentence wherever it is
passed: what was wrong, what was expected, what came, and what to do.

    n = check_int(n_hidden, "n_hidden", low=1)            # an int, or a ConfigError
    lr = check_real(lr, "lr", low=0, low_open=True)        # a float in (0, inf)
    name = check_choice(output, "output_activation", ("sigmoid", "linear"))

    f = check_function(on_epoch_end, "on_epoch_end", 1, "a function of the history")
    x = as_numeric(x, "x_train")                # masked, text, objects, complex: refused
    found = first_bad_value(rows)               # (row, column, value) of a NaN/inf, or None
    check_fits(n_bytes, physical_memory(), f"n={n:,} patches", "ask for fewer")

The model, the optimizers, training, the data loaders and the files call these before they
compute anything (a refused value is shown by `shown`: short, on one line). They sit at the
bottom of the package and know no array library but NumPy; checks of device arrays take the
array's namespace (`xp`) from the caller.
"""
from __future__ import annotations

import inspect
import math
import os
import reprlib

import numpy as np

from .errors import ConfigError, InputError

_SHORT = reprlib.Repr()  # how refused values are shown: short, and safe on deep nesting
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 40, 60


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


def shown(v):
    """How a refused value is shown: its repr, shortened, and its type when that helps."""
    try:
        text = " ".join(_SHORT.repr(v).split())   # one line, as every message is
    except Exception:  # a repr that fails says nothing more than the type
        text = f"a {type(v).__name__}"
    if len(text) > 60:
        text = text[:57] + "..."
    return text if isinstance(v, (int, float, str, type(None))) else f"{text} ({type(v).__name__})"


def check_int(v, name, low=None, high=None, error=ConfigError):
    """v as a Python int in [low, high], or `error` naming `name`."""
    n = int(v) if is_int(v) else None   # compared as Python's: NumPy's would overflow
    if n is None or (low is not None and n < low) or (high is not None and n > high):
        bounds = (f" >= {low}" if high is None else f" in [{low}, {high}]") if low is not None \
            else (f" <= {high}" if high is not None else "")
        raise error(f"{name} must be an integer{bounds}, got {shown(v)}")
    return n


def check_real(v, name, low=None, high=None, low_open=False, high_open=False, error=ConfigError):
    """v as a finite Python float in the interval from low to high (each end closed unless
    *_open), or `error` naming `name`."""
    ok = is_real(v)
    x = float(v) if ok else None        # compared as Python's: NumPy's would overflow
    if ok and low is not None:
        ok = x > low if low_open else x >= low
    if ok and high is not None:
        ok = x < high if high_open else x <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        where = f" in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}" \
            if low is not None or high is not None else ""
        raise error(f"{name} must be a finite number{where}, got {shown(v)}")
    return x


def check_choice(v, name, choices, error=ConfigError):
    """v if it is one of `choices` (strings), else `error` listing them."""
    if not isinstance(v, str) or v not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {shown(v)}")
    return v


def check_bool(v, name, error=ConfigError):
    """v as a bool (True, False, or a NumPy bool), or `error`."""
    if not isinstance(v, (bool, np.bool_)):
        raise error(f"{name} must be True or False, got {shown(v)}")
    return bool(v)


def check_type(v, name, kinds, what, error=ConfigError):
    """v if isinstance(v, kinds), else `error`: "<name> must be <what>, got <type>"."""
    if not isinstance(v, kinds):
        raise error(f"{name} must be {what}, got {type(v).__name__}")
    return v


def check_path(v, name, error=ConfigError):
    """v as a str path (a str or os.PathLike naming a str, not empty, no NUL), or `error`."""
    path = os.fspath(v) if isinstance(v, (str, os.PathLike)) else None
    if not isinstance(path, str) or not path.strip() or "\0" in path:
        raise error(f"{name} must be a file or folder path, got {shown(v)}")
    return path


def check_function(f, name, n_args, what, error=ConfigError):
    """f if it is callable with n_args positional arguments (as far as its signature says),
    else `error`: "<name> must be <what>, got <type>"."""
    if not callable(f):
        raise error(f"{name} must be {what}, got {shown(f)}")
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):  # a builtin without one: trusted
        return f
    try:
        signature.bind(*range(n_args))
    except TypeError:
        raise error(f"{name} must be {what}: it cannot be called with {n_args} "
                    f"argument{'s' if n_args != 1 else ''} (its signature is "
                    f"{getattr(f, '__name__', type(f).__name__)}{signature})") from None
    return f


def check_optional(v, check, *args, **kwargs):
    """None, or v checked by check(v, *args, **kwargs)."""
    return None if v is None else check(v, *args, **kwargs)


def dtype_name(dtype):
    """"float32" for "float32", np.float32 or np.dtype("float32"); anything else as its
    repr, for check_choice to refuse (None too: NumPy would read None as float64)."""
    if dtype is None:
        return "None"
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except (TypeError, ValueError, RecursionError):
        return shown(dtype)


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
        raise ConfigError(f"{what} would need {_gib(need)} GiB, more than {where} "
                          f"({_gib(have)} GiB); {hint}")


def _gib(n_bytes):
    """Bytes as GiB for a message, however many (a size taken from a user may be absurd)."""
    gib = n_bytes / 2**30 if n_bytes < 2**1000 else math.inf
    return f"{gib:,.1f}" if gib < 1e6 else f"{gib:.3g}"


# ----------------------------------------------------------------------------- arrays

def as_numeric(x, what="x"):
    """x as an array (NumPy unless it already is another library's) of real numbers, or an
    InputError saying why not (strings, ragged lists, complex numbers, objects, masked)."""
    if isinstance(x, np.ma.MaskedArray):
        raise InputError(f"{what} is a masked array; its hidden values would be trained on. "
                         f"Fill them first (x.filled(value)) or drop the masked rows")
    if not isinstance(x, np.ndarray) and not is_foreign_array(x):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError, OverflowError) as e:
            raise InputError(f"{what} must be a rectangular array of numbers, got "
                             f"{type(x).__name__} ({_first_line(e)})") from None
    kind = getattr(np.dtype(x.dtype), "kind", None) if isinstance(x, np.ndarray) else \
        _foreign_kind(x)
    if kind not in ("b", "i", "u", "f"):
        names = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}
        raise InputError(f"{what} must hold real numbers, got {names.get(kind, x.dtype)} "
                         f"(dtype {x.dtype}); convert it with np.asarray(x, dtype=np.float32) "
                         f"or take its real part")
    return x


FOREIGN_LIBRARIES = ("torch", "cupy", "array_api_strict")
"""The array libraries whose arrays are taken as they are (moved by the backend); anything
else is read with np.asarray."""


def is_foreign_array(x):
    """An array of one of FOREIGN_LIBRARIES (asked by module name: nothing is imported)."""
    return type(x).__module__.split(".")[0] in FOREIGN_LIBRARIES and hasattr(x, "dtype")


def _first_line(e):
    return (str(e).splitlines() or [type(e).__name__])[0][:120]


def as_samples(x, what="x", finite=True):
    """x (as_numeric) if it is 2-D with at least one row and one column (and, for a NumPy
    array, finite when `finite`), else an InputError naming `what`: data whose width is not
    known in advance (a classifier's inputs, data to normalise)."""
    x = as_numeric(x, what)
    if len(x.shape) != 2 or 0 in tuple(x.shape):
        raise InputError(f"{what} must be a 2-D array (n_samples, n_features) with at least one "
                         f"of each, got shape {tuple(x.shape)}")
    if finite and isinstance(x, np.ndarray) and not np.isfinite(x).all():
        raise InputError(f"{what} contains NaN or inf; clean or impute the data first")
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


def first_bad_value(x, unit_range=False):
    """None when every value of the NumPy array x (rows, features) is finite (and in [0, 1]
    with unit_range); else (row, column, value) of the first bad one. Two reductions (min and
    max, no temporary array) when x is good; the search for the bad value only when it is not."""
    if x.size == 0:
        return None
    low, high = float(np.min(x)), float(np.max(x))
    if math.isfinite(low) and math.isfinite(high) and \
            (not unit_range or (low >= 0.0 and high <= 1.0)):
        return None
    bad = ~np.isfinite(x)
    if unit_range and not bad.any():
        bad = (x < 0) | (x > 1)
    r = int(np.argmax(bad.any(axis=1)))
    c = int(np.argmax(bad[r]))
    return r, c, float(x[r, c])


def check_numbers(d, name, error=ConfigError):
    """A dict of named numbers (Python's or NumPy's, NaN and inf allowed: a diverged loss is
    still a loss) or 0-d arrays of any library, as a new dict; else `error` naming `name`."""
    if not isinstance(d, dict) or not all(
            isinstance(k, str) and (_is_number(v) or _is_scalar_array(v)) for k, v in d.items()):
        raise error(f"{name} must be a dict of named numbers (or 0-d arrays), got {shown(d)}")
    return dict(d)


def check_vector(v, name, error=ConfigError):
    """v if it is a non-empty 1-D array of real numbers (of any library), else `error`."""
    if not ((isinstance(v, np.ndarray) and v.dtype.kind in "biuf") or
            (is_foreign_array(v) and (_foreign_kind(v) or "?") in "biuf")) or \
            len(v.shape) != 1 or v.shape[0] == 0:
        raise error(f"{name} must be a 1-D array of numbers, got {shown(v)}")
    return v


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _is_scalar_array(v):
    return (isinstance(v, np.ndarray) or is_foreign_array(v)) and tuple(v.shape) == () and \
        (v.dtype.kind if isinstance(v, np.ndarray) else _foreign_kind(v) or "?") in "biuf"


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
        raise ConfigError(f"params and grads must have the same names; got "
                          f"{shown(sorted(map(str, params)))} and {shown(sorted(map(str, grads)))}")
    for name, p in params.items():
        g = grads[name]
        for what, a in (("params", p), ("grads", g)):
            if not (isinstance(a, np.ndarray) or is_foreign_array(a)) or not isinstance(name, str):
                raise ConfigError(f"params and grads must map names (str) to arrays (the "
                                  f"model's, updated in place); {what}[{name!r}] is a "
                                  f"{type(a).__name__}")
            if _kind(a) != "f":
                raise ConfigError(f"{what}[{name!r}] must be a float array, got {a.dtype}")
        if tuple(p.shape) != tuple(g.shape) or type(p) is not type(g) or p.dtype != g.dtype:
            raise ConfigError(f"grads[{name!r}] has shape {tuple(g.shape)} ({g.dtype}, "
                              f"{type(g).__name__}), but params[{name!r}] {tuple(p.shape)} "
                              f"({p.dtype}, {type(p).__name__}); give each parameter its own "
                              f"gradient")
    check_writable(params, "params")
    return dict(params), dict(grads)


def check_writable(arrays, name, error=ConfigError):
    """Refuse named NumPy arrays that are read-only: training updates them in place."""
    for key, a in arrays.items():
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            raise error(f"{name}[{key!r}] is read-only (a memory map, or an array marked so), "
                        f"but training updates it in place; copy it into a writable array first")


def _kind(a):
    return np.dtype(a.dtype).kind if isinstance(a, np.ndarray) else _foreign_kind(a)


def check_betas(betas, name="betas"):
    """Adam's (beta1, beta2): two numbers in [0, 1), as a tuple of floats."""
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two numbers in [0, 1), got {shown(betas)}") from None
    return (check_real(b1, f"{name}[0]", 0.0, 1.0, high_open=True),
            check_real(b2, f"{name}[1]", 0.0, 1.0, high_open=True))


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
