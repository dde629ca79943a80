"""Shared fixtures and helpers for the minisae tests.

`backend` runs a test on NumPy always, and on CuPy where a CUDA device answers (skipped,
with the reason shown under -ra, elsewhere). Tests make their arrays on it with
`get_backend(backend, dtype)` and read results back with `to_numpy`.
"""
import numpy as np
import pytest

from minisae import SparseAutoencoder
from minisae.backend import cupy_available

HAVE_CUPY = cupy_available()
NO_CUPY_REASON = "CuPy with a usable CUDA device not available"
requires_cupy = pytest.mark.skipif(not HAVE_CUPY, reason=NO_CUPY_REASON)

BACKENDS = ["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, requires_cupy])]

# Every valid (output_activation, reconstruction_loss, reduction): bce only with a sigmoid
# output and the mean reduction.
OPTION_COMBOS = [
    ("sigmoid", "mse", "mean"),
    ("sigmoid", "mse", "halfsum"),
    ("sigmoid", "bce", "mean"),
    ("linear", "mse", "mean"),
    ("linear", "mse", "halfsum"),
]
COMBO_IDS = ["-".join(c) for c in OPTION_COMBOS]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend's name: "numpy", or "cupy" where a GPU is usable."""
    return request.param


def make_model(backend="numpy", n_inputs=5, n_hidden=3, combo=("sigmoid", "mse", "mean"),
               dtype="float64", seed=0, **kw):
    """A small model; `combo` is (output_activation, reconstruction_loss, reduction)."""
    out, loss, red = combo
    return SparseAutoencoder(n_inputs=n_inputs, n_hidden=n_hidden, output_activation=out,
                             reconstruction_loss=loss, reduction=red, backend=backend,
                             dtype=dtype, seed=seed, **kw)


def random_inputs(batch, n, seed=0):
    """A NumPy batch in [0, 1], shape (batch, n), float64."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(batch, n))
