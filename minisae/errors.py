"""Errors a user can cause. Each says what was wrong and what to do about it.

The CLI catches MinisaeError, prints its message on one line and exits non-zero.
"""


class MinisaeError(Exception):
    """Base class of every error minisae raises on purpose."""


class ConfigError(MinisaeError, ValueError):
    """A hyperparameter or option is out of range or unknown."""


class InputError(MinisaeError, ValueError):
    """An input array has the wrong shape, is empty, or holds NaN/inf."""


class BackendError(MinisaeError, RuntimeError):
    """The requested array backend cannot run here (CuPy or a GPU is missing)."""


class DatasetError(MinisaeError, OSError):
    """A dataset file is missing, truncated, corrupt, or could not be downloaded."""


class CheckpointError(MinisaeError, OSError):
    """A checkpoint file is corrupt, of another format version, or does not fit the model."""


class TrainingError(MinisaeError, RuntimeError):
    """Training diverged (a non-finite loss) or cannot go on."""


class CommError(TrainingError):
    """A rank of a data-parallel run could not reach the others (one stopped, or none answered
    in time): every rank stops, and the last checkpoint is kept."""


class GradientCheckError(MinisaeError, AssertionError):
    """An analytic gradient disagrees with central differences."""
