"""minisae: a from-scratch sparse autoencoder with hand-written backprop, on NumPy or CuPy."""

__version__ = "0.1.0"

from .backend import Backend, get_backend, to_numpy  # noqa: E402
from .errors import (BackendError, CheckpointError, ConfigError, DatasetError,  # noqa: E402
                     GradientCheckError, InputError, MinisaeError, TrainingError)
from .model import Loss, SparseAutoencoder  # noqa: E402
from .optim import SGD, Adam  # noqa: E402

__all__ = [
    "__version__", "Backend", "get_backend", "to_numpy", "SparseAutoencoder", "Loss", "Adam", "SGD",
    "MinisaeError", "ConfigError", "InputError", "BackendError", "DatasetError", "CheckpointError",
    "TrainingError", "GradientCheckError",
]
