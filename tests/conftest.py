"""Shared fixtures and helpers for the minisae tests.

`backend` runs a test on NumPy always, and on CuPy where a CUDA device answers (skipped,
with the reason shown under -ra, elsewhere). Tests make their arrays on it with
`get_backend(backend, dtype)` and read results back with `to_numpy`.
"""
import dataclasses
import hashlib
import socket

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


def closed_port_url():
    """A URL nothing listens at: a download tried there fails at once, offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def make_tiny_mnist(folder, monkeypatch, cache, n_train=300, n_test=60):
    """An n_train/n_test-image "MNIST" of random pixels in `folder`, accepted by its md5s;
    the mirrors are dead ports and $MINISAE_DATA points at it (for CLI tests)."""
    from minisae.data import datasets
    rng = np.random.default_rng(0)
    folder.mkdir()
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    md5s = {}
    for stem in datasets.FILES:
        datasets.write_idx(folder / stem, arrays[stem])
        md5s[stem] = hashlib.md5((folder / stem).read_bytes()).hexdigest()
    for name, spec in datasets.SPECS.items():
        monkeypatch.setitem(datasets.SPECS, name, dataclasses.replace(
            spec, mirrors=(closed_port_url(),), system_dirs=(), content_md5s=md5s))
    monkeypatch.setenv("MINISAE_DATA", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return folder


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A 300/60-image "MNIST" in a folder, accepted by its md5s; mirrors are dead ports."""
    return make_tiny_mnist(tmp_path / "mnist", monkeypatch, tmp_path / "cache")
