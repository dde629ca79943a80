"""minisae: a from-scratch sparse autoencoder with hand-written backprop, on NumPy or CuPy.

    import minisae
    model = minisae.SparseAutoencoder.from_preset("ufldl")
    opt = minisae.Adam(model.params, model.grads, lr=0.01)
    history = minisae.fit(model, opt, x_train, epochs=20, batch_size=1000, x_val=x_test)
    minisae.save("run.npz", model, opt, history)
    model = minisae.load("run.npz").model
    codes = model.encode(x_test, batch_size=1000)

Reading order for the code: functional -> layers -> model -> optim -> gradcheck; skip the fast
engine (minisae/fast/) on a first read.

The public names below, and every submodule (minisae.datasets, minisae.plots, ...), are
loaded on first use rather than here, so that `import minisae` and the `minisae` command
start at once (a Ctrl-C in the first moments is then the command's to handle, not a
traceback from the middle of an import).
"""
import importlib

from .errors import (BackendError, CheckpointError, ConfigError, DatasetError,
                     GradientCheckError, InputError, MinisaeError, TrainingError)

__version__ = "0.2.0"

_PUBLIC = {  # name -> the submodule that defines it
    "Backend": "backend", "get_backend": "backend", "to_numpy": "backend",
    "SparseAutoencoder": "model", "Loss": "model",
    "Adam": "optim", "SGD": "optim", "LBFGS": "lbfgs",
    "SoftmaxRegression": "softmax",
    "fit": "train", "evaluate": "train", "History": "train",
    "save": "checkpoint", "load": "checkpoint", "Checkpoint": "checkpoint",
    "PRESETS": "presets",
}
_SUBMODULES = ("backend", "functional", "layers", "model", "optim", "lbfgs", "gradcheck", "fast",
               "datasets", "patches", "train", "checkpoint", "plots", "presets", "softmax",
               "selftaught", "cli", "errors", "fileio", "checks")

__all__ = ["__version__", *_PUBLIC, "MinisaeError", "ConfigError", "InputError", "BackendError",
           "DatasetError", "CheckpointError", "TrainingError", "GradientCheckError"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'minisae' has no attribute {name!r}")
    globals()[name] = value  # found once; later lookups don't come here
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | set(_SUBMODULES))
