"""The array backend: which library holds the arrays (NumPy, CuPy, PyTorch), on which device,
in which float dtype. The one module that knows which array libraries exist.

Everything else is written against the Python Array API standard: a function asks the arrays
it is given for their namespace, `xp = namespace(x)`, and calls the standard's functions on it
(`xp.sum(h, axis=0)`, `xp.tanh(z)`), so the same lines run on every library. A Backend is what
makes arrays in the first place:

    be = get_backend("auto")          # CuPy, else a PyTorch GPU, else NumPy
    x = be.asarray(numpy_batch)       # host -> device, cast to be.dtype
    xp = namespace(x)                 # the Array API namespace of x's library
    to_numpy(x)                       # device -> host, the only way back

Backends: "numpy" (CPU), "cupy" (an NVIDIA GPU), "torch" (PyTorch tensors as plain arrays, no
autograd: on CUDA, else Apple's MPS, else the CPU), and "auto". The fast engine (minisae/fast/)
runs on NumPy and CuPy; on PyTorch, training runs the reference path.

For the tests there is one more, hidden: "array-api-strict", the standard's strict
implementation with its arrays on a pretend device, so that any conversion to NumPy, any mix
of host and device arrays and any function outside the standard fails on a machine without a
GPU. It is selectable only while the environment has MINISAE_TEST_BACKEND=1.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import platform
import sys
from dataclasses import dataclass
from types import ModuleType

import array_api_compat
import numpy as np

from . import checks
from .checks import as_numeric, check_choice, dtype_name, physical_memory
from .errors import BackendError, ConfigError

BACKENDS = ("numpy", "cupy", "torch", "auto")
TEST_BACKEND = "array-api-strict"
TEST_BACKEND_ENV = "MINISAE_TEST_BACKEND"
DTYPES = ("float32", "float64")
ENV_VAR = "MINISAE_BACKEND"
FAST_ENGINE = ("numpy", "cupy")
"""The backends the fast engine runs on; on the others, training runs the reference path."""

_CUPY_INSTALL_HINT = (
    "install it with `pip install 'minisae[cuda12]'` (CUDA 12) or `pip install 'minisae[cuda13]'` "
    "(CUDA 13), or use --backend numpy"
)


def namespace(*arrays):
    """The Array API namespace of the arrays (array_api_compat's wrapper for NumPy, CuPy and
    PyTorch, the library itself where it follows the standard). Python numbers are ignored."""
    return array_api_compat.array_namespace(*arrays)


def device_of(a):
    """The device an array lives on (its library's device object)."""
    return array_api_compat.device(a)


def is_array(a):
    """True for an array of any library minisae can hold (not lists, not numbers)."""
    return array_api_compat.is_array_api_obj(a) and not isinstance(a, (int, float, complex, bool))


def library(a):
    """"numpy", "cupy", "torch", "array-api-strict", or None for anything else. Asks by
    module name, so no library is imported to answer."""
    if isinstance(a, (np.ndarray, np.generic)):
        return "numpy"
    if array_api_compat.is_cupy_array(a):
        return "cupy"
    if array_api_compat.is_torch_array(a):
        return "torch"
    if type(a).__module__.startswith("array_api_strict"):
        return TEST_BACKEND
    return None


def to_numpy(a):
    """Any backend's array (or a number, or a list of numbers) as a NumPy array; no copy for
    NumPy input. The one way data leave a device. Anything that is not numbers (None, text,
    objects, a masked array) is an InputError."""
    kind = library(a)
    if kind == "cupy":
        a = a.get()
    elif kind == "torch":
        a = a.detach().cpu().numpy()
    elif kind == TEST_BACKEND:
        import array_api_strict
        a = a.to_device(array_api_strict.Device("CPU_DEVICE"))
    return np.asarray(as_numeric(a, "a"))


def array_module(a) -> ModuleType:
    """The raw module (numpy or cupy) of an array, for the fast engine's non-standard calls
    (out= buffers, ElementwiseKernels); numpy for NumPy arrays, numbers and lists."""
    if library(a) == "cupy":
        import cupy
        return cupy
    return np


@dataclass(frozen=True)
class Backend:
    """Where arrays are made: a library's Array API namespace `xp`, a device, a float dtype."""

    name: str
    xp: ModuleType
    device: object
    dtype_name: str

    def __post_init__(self):
        check_choice(self.name, "name", BACKENDS[:-1] + (TEST_BACKEND,))
        check_choice(self.dtype_name, "dtype_name", DTYPES)
        if not all(hasattr(self.xp, f) for f in ("asarray", "zeros", self.dtype_name)):
            raise ConfigError(f"xp must be an Array API namespace (get_backend makes Backends), "
                              f"got {type(self.xp).__name__}")
        if self.name == "numpy":
            known = isinstance(self.device, str) and self.device == "cpu"
        else:  # a name, or the library's own device object
            known = isinstance(self.device, str) or \
                type(self.device).__module__.split(".")[0] == self.name.replace("-", "_")
        if not known:
            raise ConfigError(f"device {checks.shown(self.device)} is not a {self.name} device "
                              f"(get_backend picks it)")

    @property
    def dtype(self):
        """The float dtype arrays are made in, as the namespace spells it (xp.float32)."""
        return getattr(self.xp, self.dtype_name)

    @property
    def fast(self):
        """True where the fast engine runs (NumPy, CuPy)."""
        return self.name in FAST_ENGINE

    def asarray(self, a, dtype=None):
        """`a` (a NumPy array, a list, or this backend's array) as an array of this backend on
        its device, in `dtype` (default: ours). No copy when it already is one."""
        dtype = self.dtype if dtype is None else dtype
        kind = library(a)
        if kind is not None and kind != self.name:
            a = to_numpy(a)  # another library's array goes through the host, explicitly
        if self.name == "torch" and isinstance(a, np.ndarray) and not a.flags.writeable:
            a = np.array(a)  # torch refuses to wrap read-only memory
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def zeros(self, shape, dtype=None):
        return self.xp.zeros(shape, dtype=self.dtype if dtype is None else dtype,
                             device=self.device)

    def synchronize(self):
        """Wait for queued device work (a no-op on the CPU); timing code needs it."""
        if self.name == "cupy":
            import cupy
            cupy.cuda.get_current_stream().synchronize()
        elif self.name == "torch" and str(self.device).startswith("cuda"):
            import torch
            torch.cuda.synchronize()

    def memory(self):
        """Bytes free where this backend's arrays live: the GPU's free memory, or this
        machine's RAM (None where the system does not say)."""
        if self.name == "cupy":
            import cupy
            return int(cupy.cuda.runtime.memGetInfo()[0])
        if self.name == "torch" and str(self.device).startswith("cuda"):
            import torch
            return int(torch.cuda.mem_get_info()[0])
        return physical_memory()

    def memory_name(self):
        return "the GPU's free memory" if self.name == "cupy" or str(self.device).startswith(
            "cuda") else "this machine's memory"

    def __repr__(self):
        where = "" if self.name in ("numpy", "cupy") else f", device={self.device}"
        return f"Backend({self.name!r}, dtype={self.dtype_name}{where})"


# ----------------------------------------------------------------------------- the libraries

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


@functools.lru_cache(maxsize=None)
def gpu_driver() -> bool:
    """Whether this machine could have a GPU for CuPy or PyTorch at all: a CUDA driver that
    loads (libcuda), a ROCm one (/dev/kfd), or Apple silicon (MPS). Asked without importing
    either library, so that "auto" on a machine with no GPU does not spend the 0.4 s of
    importing CuPy and the 1.6 s of importing PyTorch (measured here) to find none."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if os.path.exists("/dev/kfd"):
        return True
    try:
        ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return False
    return True


def cupy_available() -> bool:
    """True when CuPy imports and a CUDA device answers."""
    if "cupy" not in sys.modules and not gpu_driver():
        return False
    try:
        _import_cupy()
    except BackendError:
        return False
    return True


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise BackendError(f"the torch backend needs PyTorch, which is not installed ({e}); "
                           f"install it with `pip install 'minisae[torch]'`, or use --backend "
                           f"numpy") from None
    return torch


def torch_device(torch):
    """The device PyTorch tensors go to: "cuda", else "mps" (Apple), else "cpu"."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def torch_gpu_available() -> bool:
    """True when PyTorch imports and sees a CUDA or MPS device."""
    if "torch" not in sys.modules and not gpu_driver():
        return False
    try:
        torch = _import_torch()
    except BackendError:
        return False
    return torch_device(torch) != "cpu"


def test_backend_enabled() -> bool:
    return os.environ.get(TEST_BACKEND_ENV, "").strip() == "1"


def choices():
    """The backend names a user may give here (the hidden test backend when enabled)."""
    return BACKENDS + ((TEST_BACKEND,) if test_backend_enabled() else ())


def _make(name, dtype):
    if name == "numpy":
        return Backend("numpy", array_api_compat.array_namespace(np.empty(0)), "cpu", dtype)
    if name == "cupy":
        cupy = _import_cupy()
        return Backend("cupy", array_api_compat.array_namespace(cupy.empty(0)),
                       cupy.cuda.Device(), dtype)
    if name == "torch":
        torch = _import_torch()
        device = torch_device(torch)
        if device == "mps" and dtype == "float64":
            raise BackendError("PyTorch's MPS device has no float64; use dtype float32, or "
                               "--backend numpy for float64 (gradient checks)")
        xp = array_api_compat.array_namespace(torch.empty(0))
        return Backend("torch", xp, torch.device(device), dtype)
    import array_api_strict
    return Backend(TEST_BACKEND, array_api_strict, array_api_strict.Device("device1"), dtype)


def get_backend(name: str | Backend | None = None, dtype: str = "float32") -> Backend:
    """Backend for "numpy", "cupy", "torch" or "auto" (CuPy where a GPU answers, else PyTorch
    on a GPU, else NumPy).

    name=None reads the MINISAE_BACKEND environment variable, and defaults to "auto".
    dtype is "float32" (training) or "float64" (gradient checks)."""
    dtype = check_choice(dtype_name(dtype), "dtype", DTYPES)
    if isinstance(name, Backend):
        return name if name.dtype_name == dtype else _make(name.name, dtype)
    from_env = name is None and bool(os.environ.get(ENV_VAR, "").strip())
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or "auto"
    key = name.lower() if isinstance(name, str) else None
    if key not in choices():
        raise ConfigError(f"unknown backend {checks.shown(name)}; choose one of "
                          f"{', '.join(choices())}"
                          + (f" (from ${ENV_VAR})" if from_env else ""))
    if key == "auto":
        key = "cupy" if cupy_available() else "torch" if torch_gpu_available() else "numpy"
    return _make(key, dtype)


def select_gpu(index):
    """Make GPU `index` (modulo the GPUs there are) the current one for CuPy, and for PyTorch
    where it is already imported, before either makes a CUDA context on GPU 0 (each rank of
    a data-parallel run on its own GPU). Nothing happens where there is no GPU."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
        if count:
            cupy.cuda.Device(index % count).use()
    except Exception:  # no CuPy, no driver: nothing to select
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.set_device(index % torch.cuda.device_count())


def from_dlpack(obj, like):
    """The DLPack-capable obj (a tensor) as an array of like's library, sharing its memory."""
    kind = library(like)
    if kind == "cupy":
        import cupy
        return cupy.from_dlpack(obj)
    return np.from_dlpack(obj)


# ----------------------------------------------------------------------------- flat buffers

def flat_views(flat, shapes):
    """Named, shaped views into consecutive slices of the 1-D array `flat`: {name: shape}
    -> {name: view}. Writing a view writes `flat`, so one pass over `flat` updates them all."""
    xp = namespace(flat)
    views, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        views[name] = xp.reshape(flat[start:start + size], shape)
        start += size
    return views


def flat_owner(arrays):
    """The 1-D contiguous NumPy or CuPy array that `arrays` tile exactly, in order, or None:
    the inverse of flat_views, for code that wants one pass over a model's whole parameter
    vector (the fast engine, SciPy's L-BFGS)."""
    if not arrays or library(arrays[0]) not in ("numpy", "cupy"):
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
