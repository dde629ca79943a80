"""The backends (minisae.backend): NumPy, CuPy, PyTorch or auto; dtypes; to_numpy; errors."""
import os
import sys
import types

import numpy as np
import pytest

import minisae
import minisae.backend
from minisae import Backend, SparseAutoencoder, get_backend, to_numpy
from minisae.backend import (BACKENDS, ENV_VAR, TEST_BACKEND, TEST_BACKEND_ENV, choices,
                             cupy_available, library, namespace)
from minisae.errors import BackendError, ConfigError, MinisaeError


@pytest.fixture
def no_cupy(monkeypatch):
    """Make `import cupy` fail, as on a machine without it (also where it is installed)."""
    monkeypatch.setitem(sys.modules, "cupy", None)


@pytest.fixture
def no_torch_gpu(monkeypatch):
    """Make "auto" see no PyTorch GPU, as on a CPU-only machine (also where there is one)."""
    monkeypatch.setattr(minisae.backend, "torch_gpu_available", lambda: False)


@pytest.fixture
def strict_backend_on(monkeypatch):
    """Enable the hidden array-api-strict backend (arrays on a pretend device)."""
    pytest.importorskip("array_api_strict")
    monkeypatch.setenv(TEST_BACKEND_ENV, "1")


def fake_cupy(device_count=0, count_error=None):
    """A stand-in cupy module that imports fine but has no usable CUDA device."""
    def get_device_count():
        if count_error is not None:
            raise count_error
        return device_count

    mod = types.ModuleType("cupy")
    mod.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))

    def zeros(*a, **k):
        if device_count >= 1:  # listed, but unusable
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return np.zeros(*a, **k)  # only the device count can tell

    mod.zeros = zeros
    return mod


# ----------------------------------------------------------------------------- choosing

def test_numpy_backend_defaults_to_float32():
    be = get_backend("numpy")
    assert isinstance(be, Backend)
    # xp is NumPy's Array API namespace (array_api_compat's wrapper), the one arrays report
    assert be.name == "numpy" and be.xp is namespace(np.empty(0)) and be.dtype == np.float32
    assert be.dtype_name == "float32" and be.device == "cpu" and be.fast
    assert get_backend("NumPy", "float64").dtype == np.float64


def test_backend_fixture_creates_arrays_on_its_module(backend):
    be = get_backend(backend, "float64")
    assert be.name == backend
    a = be.asarray([[1, 2], [3, 4]])
    assert type(a).__module__.split(".")[0] == backend and library(a) == backend
    assert a.dtype == np.float64 and namespace(a) is be.xp
    z = be.zeros((2, 3))
    assert z.shape == (2, 3) and z.dtype == np.float64 and float(z.sum()) == 0.0
    assert be.zeros(4, dtype=be.xp.float32).dtype == np.float32
    assert be.asarray(a, dtype=be.xp.float32).dtype == np.float32
    host = to_numpy(a)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, [[1.0, 2.0], [3.0, 4.0]])
    be.synchronize()


def test_asarray_casts_and_does_not_copy_when_it_need_not():
    be = get_backend("numpy", "float32")
    a64 = np.arange(6.0).reshape(2, 3)
    a32 = be.asarray(a64)
    assert a32.dtype == np.float32 and a32 is not a64
    assert be.asarray(a32) is a32
    assert be.asarray(a32, dtype="float64").dtype == np.float64


def test_get_backend_passes_a_backend_through():
    be = get_backend("numpy", "float32")
    assert get_backend(be, "float32") is be
    be64 = get_backend(be, "float64")
    assert be64.name == "numpy" and be64.dtype == np.float64


def test_auto_falls_back_to_numpy_without_cupy(no_cupy, no_torch_gpu):
    assert not cupy_available()
    assert get_backend("auto").name == "numpy"


def test_auto_on_a_machine_without_a_gpu_driver_imports_neither_gpu_library():
    """"auto" asks for a driver before importing CuPy (0.4 s) or PyTorch (1.6 s) to find no
    GPU: every `minisae` command pays it."""
    import subprocess
    if minisae.backend.gpu_driver():
        pytest.skip("this machine has a GPU driver: auto must import the libraries")
    out = subprocess.run([sys.executable, "-c", "import sys, minisae.backend as b; "
                          "print(b.get_backend('auto').name, 'torch' in sys.modules, "
                          "'cupy' in sys.modules)"], capture_output=True, text=True,
                         env={**os.environ, "MINISAE_BACKEND": ""}, timeout=60)
    assert out.stdout.split() == ["numpy", "False", "False"], out.stderr


def test_auto_takes_a_pytorch_gpu_when_cupy_has_none(monkeypatch):
    pytest.importorskip("torch")
    # (cupy_available is patched rather than `import cupy` blocked: array_api_compat, asked
    # about a torch tensor, looks cupy up in sys.modules and fails on a None there)
    monkeypatch.setattr(minisae.backend, "cupy_available", lambda: False)
    monkeypatch.setattr(minisae.backend, "torch_gpu_available", lambda: True)
    monkeypatch.setattr(minisae.backend, "torch_device", lambda torch: "cuda")
    be = get_backend("auto")  # no array is made: no GPU is needed to choose
    assert be.name == "torch" and str(be.device) == "cuda" and not be.fast


def test_repr_names_backend_and_dtype():
    assert repr(get_backend("numpy", "float64")) == "Backend('numpy', dtype=float64)"


# ----------------------------------------------------------------------------- bad choices

@pytest.mark.parametrize("name", ["tensorflow", "gpu", ""])
def test_unknown_backend_name(name):
    with pytest.raises(ConfigError, match="unknown backend") as info:
        get_backend(name)
    # the message lists the choices
    assert "choose one of numpy, cupy, torch, auto" in str(info.value)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("dtype", ["float16", "int32", "double"])
def test_unsupported_dtype(dtype):
    with pytest.raises(ConfigError, match="dtype"):
        get_backend("numpy", dtype)


def test_cupy_not_installed_says_how_to_install(no_cupy):
    with pytest.raises(BackendError, match="cupy") as info:
        get_backend("cupy")
    msg = str(info.value)
    assert "not installed" in msg and "pip install" in msg and "numpy" in msg
    assert isinstance(info.value, MinisaeError)


@pytest.mark.parametrize("fake", [
    fake_cupy(device_count=0),
    fake_cupy(count_error=RuntimeError("cudaErrorInsufficientDriver")),
    fake_cupy(device_count=1),  # listed, but the first kernel fails
], ids=["zero-devices", "driver-error", "unusable-device"])
def test_cupy_installed_without_a_device(monkeypatch, no_torch_gpu, fake):
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert not cupy_available()
    with pytest.raises(BackendError, match="no usable CUDA device") as info:
        get_backend("cupy")
    assert "nvidia-smi" in str(info.value)
    # "auto" quietly takes NumPy instead
    assert get_backend("auto").name == "numpy"


def test_model_on_cupy_without_gpu_raises_backend_error(no_cupy):
    with pytest.raises(BackendError, match="cupy"):
        SparseAutoencoder(4, 2, backend="cupy")


# ----------------------------------------------------------------------------- MINISAE_BACKEND

def test_env_var_chooses_the_default(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "numpy")
    assert ENV_VAR == "MINISAE_BACKEND"
    assert get_backend().name == "numpy"
    assert get_backend(None, "float64").dtype == np.float64
    monkeypatch.setenv(ENV_VAR, " NumPy ")
    assert get_backend().name == "numpy"


def test_env_var_cupy_without_gpu_raises(monkeypatch, no_cupy):
    monkeypatch.setenv(ENV_VAR, "cupy")
    with pytest.raises(BackendError, match="cupy"):
        get_backend()


def test_unset_env_var_means_auto(monkeypatch, no_cupy, no_torch_gpu):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert get_backend().name == "numpy"
    monkeypatch.setenv(ENV_VAR, "   ")
    assert get_backend().name == "numpy"


def test_bad_env_var_is_a_config_error_naming_it(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "tpu")
    with pytest.raises(ConfigError, match="MINISAE_BACKEND") as info:
        get_backend()
    assert "tpu" in str(info.value)
    # an explicit name wins over the variable
    assert get_backend("numpy").name == "numpy"


# ----------------------------------------------------------------------------- to_numpy

def test_to_numpy_does_not_copy_numpy_arrays():
    a = np.ones(3, dtype=np.float32)
    assert to_numpy(a) is a


def test_to_numpy_scalars_and_lists():
    assert to_numpy(2.5).shape == () and float(to_numpy(2.5)) == 2.5
    np.testing.assert_array_equal(to_numpy([1, 2]), np.array([1, 2]))
    assert float(to_numpy(np.float32(1.5))) == 1.5


def test_to_numpy_calls_get_on_device_arrays(monkeypatch):
    # arrays are told apart by their library's class (array_api_compat), so the stand-in is
    # a subclass of a stand-in cupy.ndarray
    fake = types.ModuleType("cupy")
    fake.ndarray = type("ndarray", (), {})
    monkeypatch.setitem(sys.modules, "cupy", fake)

    class DeviceArray(fake.ndarray):  # duck-types a CuPy array
        def get(self):
            return np.array([7.0, 8.0])

    assert library(DeviceArray()) == "cupy"
    np.testing.assert_array_equal(to_numpy(DeviceArray()), [7.0, 8.0])


def test_to_numpy_on_backend_arrays(backend):
    be = get_backend(backend, "float32")
    host = to_numpy(be.asarray(np.arange(4.0)))
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    np.testing.assert_array_equal(host, [0, 1, 2, 3])


def test_public_names():
    for name in ("SparseAutoencoder", "Adam", "SGD", "get_backend", "to_numpy", "Backend", "Loss",
                 "MinisaeError", "ConfigError", "InputError", "BackendError", "GradientCheckError"):
        assert hasattr(minisae, name), name
        assert name in minisae.__all__
    assert isinstance(minisae.__version__, str)


# ----------------------------------------------------------------------------- PyTorch

def test_torch_backend_makes_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() or minisae.backend.torch_device(torch) != "cpu":
        pytest.skip("PyTorch sees a GPU here: its tensors go there")
    assert "torch" in BACKENDS
    for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
        be = get_backend("torch", dtype)
        assert be.name == "torch" and str(be.device) == "cpu" and not be.fast
        assert be.dtype is torch_dtype
        a = be.asarray(np.arange(6.0).reshape(2, 3))
        assert isinstance(a, torch.Tensor) and a.device.type == "cpu" and a.dtype is torch_dtype
        assert not a.requires_grad  # plain arrays: no autograd
        assert library(a) == "torch" and namespace(a) is be.xp
        z = be.zeros((2, 3))
        assert isinstance(z, torch.Tensor) and z.dtype is torch_dtype and float(z.sum()) == 0.0
        host = to_numpy(a)
        assert isinstance(host, np.ndarray) and host.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(host, np.arange(6.0).reshape(2, 3))
        be.synchronize()
    # a read-only NumPy array (a memory-mapped data set) is copied, not refused
    ro = np.ones(3)
    ro.flags.writeable = False
    assert float(get_backend("torch").asarray(ro).sum()) == 3.0
    # another library's array reaches NumPy through the host
    back = get_backend("numpy", "float64").asarray(a)
    assert isinstance(back, np.ndarray) and back.dtype == np.float64
    assert repr(get_backend("torch")) == "Backend('torch', dtype=float32, device=cpu)"


def test_a_model_on_torch_gives_numpys_numbers():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(size=(6, 5))
    results = []
    for name in ("numpy", "torch"):
        model = SparseAutoencoder(5, 3, weight_decay=0.01, backend=name, dtype="float64", seed=2)
        out = model.loss_and_grads(x)
        results.append((out.total, to_numpy(model.flat_grads).copy()))
    assert isinstance(model.flat_params, torch.Tensor)
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10, atol=1e-14)


def test_torch_not_installed_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendError, match="PyTorch") as info:
        get_backend("torch")
    assert "not installed" in str(info.value) and "minisae[torch]" in str(info.value)


def test_torch_on_mps_refuses_float64(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(minisae.backend, "torch_device", lambda torch: "mps")
    with pytest.raises(BackendError, match="MPS.*float64"):
        get_backend("torch", "float64")


# ----------------------------------------------------------------------------- hidden test backend

@pytest.mark.parametrize("value", [None, "", "0", "yes"])
def test_the_test_backend_is_refused_unless_enabled(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(TEST_BACKEND_ENV, raising=False)
    else:
        monkeypatch.setenv(TEST_BACKEND_ENV, value)
    assert TEST_BACKEND_ENV == "MINISAE_TEST_BACKEND" and TEST_BACKEND == "array-api-strict"
    assert TEST_BACKEND not in choices() and TEST_BACKEND not in BACKENDS
    with pytest.raises(ConfigError, match="unknown backend") as info:
        get_backend(TEST_BACKEND)
    assert "choose one of numpy, cupy, torch, auto" in str(info.value)  # not advertised
    with pytest.raises(ConfigError, match="unknown backend"):
        SparseAutoencoder(4, 2, backend=TEST_BACKEND)
    monkeypatch.setenv(ENV_VAR, TEST_BACKEND)
    with pytest.raises(ConfigError, match="MINISAE_BACKEND"):
        get_backend()


def test_the_test_backend_when_enabled(strict_backend_on):
    import array_api_strict
    assert TEST_BACKEND in choices()
    be = get_backend(TEST_BACKEND, "float64")
    assert be.name == TEST_BACKEND and be.xp is array_api_strict and not be.fast
    assert be.dtype == array_api_strict.float64
    a = be.asarray(np.arange(3.0))
    assert library(a) == TEST_BACKEND and a.device == be.device
    assert a.device != array_api_strict.Device("CPU_DEVICE")  # the pretend device
    with pytest.raises(RuntimeError):
        np.asarray(a)  # no silent way back to the host


def test_to_numpy_brings_a_strict_device_array_back(strict_backend_on):
    for dtype in ("float32", "float64"):
        be = get_backend(TEST_BACKEND, dtype)
        a = be.asarray(np.arange(6.0).reshape(2, 3))
        host = to_numpy(a)
        assert isinstance(host, np.ndarray) and host.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(host, np.arange(6.0).reshape(2, 3))
        assert float(to_numpy(be.xp.sum(a))) == 15.0  # a 0-d array too
