"""The array backend: which module does the math (NumPy or CuPy) and in which dtype.

A Backend has two jobs: choosing the array module `xp`, and creating arrays on it.
This is the only module that imports CuPy. Other code asks a Backend for `xp`, or asks
`array_module(a)` which module an array belongs to, so NumPy and CuPy can live side by side
in one process (the tests need both).

    be = get_backend("auto")          # CuPy when a CUDA device answers, else NumPy
    x = be.asarray(numpy_batch)       # host -> device, cast to be.dtype
    array_module(x)                   # numpy or cupy, whichever x belongs to
    to_numpy(x)                       # device -> host
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .errors import BackendError, ConfigError

BACKENDS = ("numpy", "cupy", "auto")
DTYPES = ("float32", "float64")
ENV_VAR = "MINISAE_BACKEND"

_CUPY_INSTALL_HINT = (
    "install it with `pip install 'minisae[cuda12]'` (CUDA 12) or `pip install 'minisae[cuda13]'` "
    "(CUDA 13), or use --backend numpy"
)


@dataclass(frozen=True)
class Backend:
    """An array module (`xp`, numpy or cupy) and the float dtype arrays are made in."""

    name: str
    xp: ModuleType
    dtype: np.dtype

    def asarray(self, a, dtype=None):
        """`a` (NumPy, CuPy or a list) as an array of this backend, in `dtype` (default: ours).

        No copy when it already is one."""
        if self.name == "numpy":
            a = to_numpy(a)  # a CuPy array refuses implicit conversion; move it explicitly
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def zeros(self, shape, dtype=None):
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def empty(self, shape, dtype=None):
        return self.xp.empty(shape, dtype=self.dtype if dtype is None else dtype)

    def synchronize(self):
        """Wait for queued device work (a no-op on NumPy); timing code needs it."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()

    def __repr__(self):
        return f"Backend({self.name!r}, dtype={self.dtype.name})"


def array_module(a) -> ModuleType:
    """numpy or cupy, whichever `a` belongs to (numpy for NumPy arrays, scalars and numbers)."""
    if isinstance(a, (np.ndarray, np.generic, numbers.Number)):
        return np
    try:
        import cupy
    except ImportError:  # not an array of any backend (a list, say): NumPy will take it
        return np
    return cupy.get_array_module(a)


def to_numpy(a):
    """Any backend's array (or a scalar) as a NumPy array; no copy for NumPy input."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):  # a CuPy array
        return a.get()
    return np.asarray(a)


def _import_cupy() -> ModuleType:
    """Import CuPy and make sure a CUDA device answers; say which part is missing if not."""
    try:
        import cupy
    except ImportError as e:
        raise BackendError(f"the CuPy backend needs the cupy package, which is not installed ({e}); "
                           f"{_CUPY_INSTALL_HINT}") from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        if n < 1:
            raise RuntimeError("no CUDA device found")
        cupy.zeros(1).sum().item()  # a device that is listed but unusable fails here
    except Exception as e:  # CUDA raises several unrelated types for "no driver/device"
        raise BackendError(f"CuPy is installed but no usable CUDA device answers ({e}); "
                           "check the NVIDIA driver with `nvidia-smi`, or use --backend numpy") from None
    return cupy


def cupy_available() -> bool:
    """True when CuPy imports and a CUDA device answers."""
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def get_backend(name: str | Backend | None = None, dtype: str = "float32") -> Backend:
    """Backend for "numpy", "cupy" or "auto" (CuPy where a GPU answers, else NumPy).

    name=None reads the MINISAE_BACKEND environment variable, and defaults to "auto".
    dtype is "float32" (training) or "float64" (gradient checks)."""
    if str(dtype) not in DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if isinstance(name, Backend):
        return name if np.dtype(dtype) == name.dtype else Backend(name.name, name.xp, np.dtype(dtype))
    from_env = name is None and bool(os.environ.get(ENV_VAR, "").strip())
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or "auto"
    key = str(name).lower()
    if key not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"
                          + (f" (from ${ENV_VAR})" if from_env else ""))
    if key == "auto":
        key = "cupy" if cupy_available() else "numpy"
    xp = _import_cupy() if key == "cupy" else np
    return Backend(key, xp, np.dtype(dtype))


def flat_views(flat, shapes):
    """Named, shaped views into consecutive slices of the 1-D array `flat`: {name: shape}
    -> {name: view}. Writing a view writes `flat`, so one pass over `flat` updates them all."""
    views, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        views[name] = flat[start:start + size].reshape(shape)
        start += size
    return views


def flat_owner(arrays):
    """The 1-D contiguous array that `arrays` tile exactly, in order, or None: the inverse of
    flat_views, for code that wants one pass over a model's whole parameter vector."""
    if not arrays:
        return None
    owner = arrays[0].base
    if owner is None or getattr(owner, "ndim", None) != 1 or not owner.flags.c_contiguous:
        return None
    ptr = (lambda a: a.ctypes.data) if isinstance(owner, np.ndarray) else (lambda a: a.data.ptr)
    expected = ptr(owner)
    for a in arrays:
        if a.base is not owner or not a.flags.c_contiguous or a.dtype != owner.dtype \
                or ptr(a) != expected:
            return None
        expected += a.nbytes
    return owner if expected == ptr(owner) + owner.nbytes else None
