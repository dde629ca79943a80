import sys
import types

import numpy as np
import pytest

import minisae
from minisae import Backend, SparseAutoencoder, get_backend, to_numpy
from minisae.backend import ENV_VAR, cupy_available
from minisae.errors import BackendError, ConfigError, MinisaeError


@pytest.fixture
def no_cupy(monkeypatch):
    """Make `import cupy` fail, as on a machine without it (also where it is installed)."""
    monkeypatch.setitem(sys.modules, "cupy", None)


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
    assert be.name == "numpy" and be.xp is np and be.dtype == np.float32
    assert get_backend("NumPy", "float64").dtype == np.float64


def test_backend_fixture_creates_arrays_on_its_module(backend):
    be = get_backend(backend, "float64")
    assert be.name == backend
    a = be.asarray([[1, 2], [3, 4]])
    assert type(a).__module__.split(".")[0] == backend
    assert a.dtype == np.float64
    z = be.zeros((2, 3))
    assert z.shape == (2, 3) and z.dtype == np.float64 and float(z.sum()) == 0.0
    assert be.empty(4, dtype="float32").dtype == np.float32
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


def test_auto_falls_back_to_numpy_without_cupy(no_cupy):
    assert not cupy_available()
    assert get_backend("auto").name == "numpy"


def test_repr_names_backend_and_dtype():
    assert repr(get_backend("numpy", "float64")) == "Backend('numpy', dtype=float64)"


# ----------------------------------------------------------------------------- bad choices

@pytest.mark.parametrize("name", ["tensorflow", "gpu", ""])
def test_unknown_backend_name(name):
    with pytest.raises(ConfigError, match="unknown backend"):
        get_backend(name)


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
def test_cupy_installed_without_a_device(monkeypatch, fake):
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


def test_unset_env_var_means_auto(monkeypatch, no_cupy):
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


def test_to_numpy_calls_get_on_device_arrays():
    class DeviceArray:  # duck-types a CuPy array
        def get(self):
            return np.array([7.0, 8.0])

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
