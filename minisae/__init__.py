"""minisae: a from-scratch sparse autoencoder with hand-written backprop, on NumPy, CuPy or
PyTorch tensors.

    import minisae
    model = minisae.SparseAutoencoder.from_preset("ufldl")
    opt = minisae.Adam(model.params, model.grads, lr=0.01)
    history = minisae.fit(model, opt, x_train, epochs=20, batch_size=1000, x_val=x_test)
    minisae.save("run.npz", model, opt, history)
    model = minisae.load("run.npz").model
    codes = model.encode(x_test, batch_size=1000)

The house, from the bottom (a module imports only from its own floor or below):

    the teaching core   errors, checks, backend, comm, functional, layers, losses, config,
                        model, optim, gradcheck, softmax, presets: what a learner reads, and
                        the reference the gradient check verifies
    distributed         several processes on torch.distributed: data parallel, or the
                        dictionary sharded (the communicators, the launcher)
    fast/               the fast engine: the same numbers with fused kernels and threads
    training/           fit (which drives the engine) and its settings (Engine, Checkpoints,
                        DeadUnits, Stream), evaluate, History, L-BFGS
    data/, files/       data sets; checkpoints and atomic writes
    apps/               the `minisae` command, the benchmark, self-taught learning, figures

The public names below, and every submodule, are loaded on first use rather than here, so
that `import minisae` and the `minisae` command start at once.
"""
import importlib

from .errors import (BackendError, CheckpointError, CommError, ConfigError, DatasetError,
                     GradientCheckError, InputError, MinisaeError, TrainingError)

__version__ = "0.7.0"

_PUBLIC = {  # name -> the module that defines it
    "Backend": "backend", "get_backend": "backend", "to_numpy": "backend",
    "SparseAutoencoder": "model", "Loss": "losses", "Config": "config",
    "Adam": "optim", "SGD": "optim", "LBFGS": "training",
    "SoftmaxRegression": "softmax",
    "fit": "training", "evaluate": "training", "History": "training",
    "Engine": "training", "Checkpoints": "training", "DeadUnits": "training",
    "Stream": "training",
    "save": "files", "load": "files", "Checkpoint": "files",
    "PRESETS": "presets",
}
_SUBMODULES = ("errors", "checks", "backend", "functional", "layers", "losses", "config",
               "model", "optim", "gradcheck", "softmax", "presets", "normalize", "comm",
               "distributed", "fast", "training", "data", "files", "apps")

__all__ = ["__version__", *_PUBLIC, "MinisaeError", "ConfigError", "InputError", "BackendError",
           "DatasetError", "CheckpointError", "TrainingError", "CommError", "GradientCheckError"]


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
