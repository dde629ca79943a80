"""Save and load a model, its optimizer state, its history and the run's settings as one .npz.

No pickle: arrays are stored as arrays, everything else as JSON text, and loading uses
np.load(allow_pickle=False). A save goes to a temporary file in the same folder that is then
renamed over the target, so a crash mid-write never replaces a good checkpoint.

Keys: "format_version", "config" (JSON), "param/<name>", "optimizer" (JSON: type and
hyperparameters), "optim/<slot>.<name>", "history" (JSON), "extra" (JSON).
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass

import numpy as np

from .errors import CheckpointError
from .fileio import atomic_write
from .model import Config, SparseAutoencoder
from .optim import SGD, Adam
from .train import History

FORMAT_VERSION = 1
OPTIMIZERS = {"Adam": Adam, "SGD": SGD}


@dataclass
class Checkpoint:
    model: SparseAutoencoder
    optimizer: object | None
    history: History
    extra: dict


def _optimizer_settings(opt):
    if isinstance(opt, Adam):
        return {"type": "Adam", "lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps}
    if isinstance(opt, SGD):
        return {"type": "SGD", "lr": opt.lr, "momentum": opt.momentum}
    raise CheckpointError(f"cannot save optimizer of type {type(opt).__name__}")


def save(path, model, optimizer=None, history=None, extra=None):
    """Write the checkpoint to `path` (a .npz) atomically; returns the path."""
    path = os.fspath(path)
    arrays = {"format_version": np.array(FORMAT_VERSION),
              "config": np.array(json.dumps(asdict(model.config))),
              "history": np.array(json.dumps((history or History()).as_dict())),
              "extra": np.array(json.dumps(extra or {}))}
    for name, p in model.params.items():
        arrays[f"param/{name}"] = np.asarray(_host(p))
    if optimizer is not None:
        arrays["optimizer"] = np.array(json.dumps(_optimizer_settings(optimizer)))
        for key, value in optimizer.state_dict().items():
            arrays[f"optim/{key}"] = np.asarray(value)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, fsync=True) as f:
        np.savez(f, **arrays)
    return path


def _host(a):
    from .backend import to_numpy
    return to_numpy(a)


def load(path, backend=None):
    """Read a checkpoint saved by save(). backend overrides the saved model's ("numpy",
    "cupy", "auto"); default numpy. Raises CheckpointError for a missing, corrupt, or
    incompatible file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}; check the path (a run writes "
                              f"<out>/checkpoint.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"{path} is not a readable minisae checkpoint ({e}); it may be "
                              f"truncated or another kind of file") from None
    where = f"checkpoint {path}"
    if "format_version" not in data or "config" not in data:
        raise CheckpointError(f"{where} has no format_version/config: not a minisae checkpoint")
    try:
        version = int(data["format_version"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{where} has an unreadable format_version") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where} has format version {version}; this minisae reads "
                              f"version {FORMAT_VERSION} (save it again with a matching minisae)")
    try:
        config = Config(**json.loads(str(data["config"])))
        config.validate()
        model = SparseAutoencoder(**{k: v for k, v in asdict(config).items()},
                                  backend=backend or "numpy")
        for name, p in model.params.items():
            src = data.get(f"param/{name}")
            if src is None:
                raise CheckpointError(f"{where} has no parameter {name!r}")
            if src.shape != p.shape:
                raise CheckpointError(f"{where}: parameter {name!r} has shape {src.shape}, but its "
                                      f"config implies {p.shape}")
            if not np.isfinite(src).all():
                raise CheckpointError(f"{where}: parameter {name!r} holds NaN or inf")
            p[...] = model.backend.asarray(src)
        optimizer = None
        if "optimizer" in data:
            settings = json.loads(str(data["optimizer"]))
            kind = settings.pop("type")
            if kind not in OPTIMIZERS:
                raise CheckpointError(f"{where}: unknown optimizer {kind!r}")
            if "betas" in settings:
                settings["betas"] = tuple(settings["betas"])
            optimizer = OPTIMIZERS[kind](model.params, model.grads, **settings)
            optimizer.load_state_dict({k[len("optim/"):]: v for k, v in data.items()
                                       if k.startswith("optim/")})
        history = History.from_dict(json.loads(str(data["history"])))
        extra = json.loads(str(data["extra"])) if "extra" in data else {}
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError) as e:  # bad JSON, unknown fields, bad values
        raise CheckpointError(f"{where} is damaged or from an incompatible version: {e}") from None
    return Checkpoint(model, optimizer, history, extra)
