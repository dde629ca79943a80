"""The `minisae` command: train | show | gradcheck | bench | data | selftaught | inspect.

Errors a user can cause (MinisaeError) print as one line on stderr and exit with status 2, as
a misspelt flag does (with the subcommand's usage and the closest flag); Ctrl-C says what was
saved and the exact command that resumes (status 130). A gradient check that fails exits 1.

The model's flags are made from minisae.config.FIELDS, the optimizers', data sets' and
presets' choices from their own modules: a new choice there is a new choice here.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass

from .. import __version__
from .. import backend as B
from ..config import FIELDS, MECHANISMS, Config, applies
from .argtypes import count as _count
from .argtypes import positive_int as _positive_int
from .argtypes import positive_real as _positive_float
from ..data import DATASETS, IDX_DATASETS
from ..comm import Alone
from ..errors import CommError, ConfigError, MinisaeError
from ..files.atomic import atomic_write
from ..files.lock import RunLock
from ..presets import MECHANISM_PRESETS, PRESETS, SIZING, default_preset, get_preset
from ..training import OPTIMIZERS

FIGURES = ("features.png", "reconstructions.png", "activations.png", "curves.png",
           "density.png")
_DEFAULTS = Config(1, 1)

MODEL_KEYS = {f.flag[2:].replace("-", "_"): name for name, f in FIELDS.items()}
"""The CLI's setting names (a run's saved settings) -> SparseAutoencoder's arguments."""


@dataclass(frozen=True)
class Setting:
    """A training setting: its type, choices, lowest value, default, and help."""

    type: type
    help: str
    default: object = None
    choices: tuple | None = None
    low: float | None = None


TRAINING = {
    "dataset": Setting(str, "data to train on", "mnist", DATASETS),
    "optimizer": Setting(str, "adam, sgd (with momentum) or lbfgs (full batch, SciPy's "
                              "L-BFGS-B)", "adam", tuple(OPTIMIZERS)),
    "lr": Setting(float, "learning rate of adam and sgd", 0.01),
    "momentum": Setting(float, "sgd's momentum", 0.9),
    "epochs": Setting(int, "total epochs of adam or sgd; with --resume, up to this many", 100,
                      low=1),
    "batch_size": Setting(int, "samples per step of adam or sgd", 1000, low=1),
    "max_iter": Setting(int, "total iterations of lbfgs; with --resume, up to this many", 400,
                        low=1),
    "memory": Setting(int, "lbfgs's curvature pairs", 10, low=1),
    "n_patches": Setting(int, "patches to sample for --dataset patches", 10_000, low=1),
    "patch_size": Setting(int, "patch side in pixels for --dataset patches", 8, low=1),
    "seed": Setting(int, "weights, shuffling and patches", 42, low=0),
    "data": Setting(str, "your own data: a .npy, an .npz (see --data-key) or a folder of .npy "
                         "shards; rows are samples (sets --dataset files); unset: none", None),
    "data_key": Setting(str, "the array of an .npz to train on; unset: its only array", None),
    "val_fraction": Setting(float, "the share of --data's last rows held out for validation "
                                   "(shuffle the file first if its order means something)",
                            0.05),
    "val_data": Setting(str, "a file or folder of rows to validate on instead of "
                             "--val-fraction; unset: none", None),
    "normalize": Setting(str, "normalise --data: norm (centred, scaled so a row's mean squared "
                              "norm is its width: SAE trainers' choice for activations), "
                              "standard (per feature) or none", "none",
                         ("none", "norm", "standard")),
    "checkpoint_every": Setting(int, "also save a checkpoint every N steps, mid-epoch (resumed "
                                     "exactly); unset: at each epoch's end only", None, low=1),
    "image_shape": Setting(str, "HxW: draw features and reconstructions as images of this "
                                "shape; unset: MNIST's 28x28, the patches' own, else vectors (no "
                                "image figures)", None),
    "chunk_rows": Setting(int, "rows read at a time from --data (stream's chunk); unset: 1 MiB",
                          None, low=1),
    "buffer_rows": Setting(int, "rows of --data in the shuffle buffer; unset: 256 MiB", None,
                           low=1),
    "dead_window": Setting(int, "training samples a unit may stay silent before it counts as "
                                "dead (AuxK, resampling; ReLU codes)", 10_000, low=1),
    "resample_every": Setting(int, "resample dead units every N steps (Anthropic 2023; ReLU "
                                   "codes); unset: never", None, low=1),
}
"""The settings of `minisae train` that are not the model's (those come from FIELDS)."""
TRAINING_DEFAULTS = {name: s.default for name, s in TRAINING.items()}

FLAGS = {**{name: f.flag for name, f in FIELDS.items()},
         **{name: "--" + name.replace("_", "-") for name in TRAINING},
         "threads": "--threads"}
"""Names in the library's messages -> the flag a CLI user types."""
KEPT_ON_RESUME = ("preset", *MODEL_KEYS, *(n for n in TRAINING if n not in (
    "epochs", "max_iter", "data", "val_data", "checkpoint_every", "image_shape")))
"""Settings a resumed run must keep (a changed one would make it another run). The data's
paths may change (a moved folder): the data themselves are compared, by fingerprint."""
CHANGEABLE_ON_RESUME = ("epochs", "max_iter", "data", "val_data", "checkpoint_every",
                        "image_shape")


def flag_names(message):
    """A library message with its argument names replaced by the CLI's flags: a name as an
    argument ("n_hidden must be", "output_activation='linear'"), not as an English word
    ("more than this machine's memory")."""
    return re.sub(r"(?<![-\w])(" + "|".join(FLAGS) + r")\b(?=\s+must\b|\s*=)",
                  lambda m: FLAGS[m.group(1)], message)


# ----------------------------------------------------------------------------- argument types

def _threads(text):
    if text in ("auto", "adaptive"):
        return text
    return _positive_int(text)


def _folder(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return text


def _add_backend(p):
    p.add_argument("--backend", default=None, choices=B.choices(),
                   help="array backend (default: $MINISAE_BACKEND, else auto: CuPy when a GPU "
                        "answers, else PyTorch on a GPU, else NumPy)")


def _add_data_source(p):
    p.add_argument("--data-dir", default=None, type=_folder,
                   help="folder with the four IDX files (default: $MINISAE_DATA, then the "
                        "cache, then a download)")
    p.add_argument("--no-download", action="store_true",
                   help="never try the internet (offline, MNIST falls back to its 5,000-digit "
                        "subset)")


# ----------------------------------------------------------------------------- train

SIZED = {"hidden": "n_hidden", "k": "k", "aux_k": "aux_k", "epochs": "epochs"}
"""The settings a sizing (presets.Sizing) sets from the data: the CLI's name -> the rule's."""


def _preset_values(key):
    """"book: 1000, ufldl: 196, ufldl-patches: 25" for a setting, from the presets (one value
    where they all agree; "" where none sets it); a sized preset's rule in words."""
    values = {}
    for name, preset in PRESETS.items():
        value = preset_settings(preset).get(key)
        if preset.sizing is not None and key in SIZED and value is not None:
            value = preset.sizing.describe(SIZED[key])
        values[name] = value
    values = {name: v for name, v in values.items() if v is not None}
    if len(set(map(repr, values.values()))) == 1:
        return f"{next(iter(values.values()))}"
    return ", ".join(f"{name}: {v}" for name, v in values.items())


def preset_settings(preset):
    """A preset as the CLI's settings (its names, the defaults filled in)."""
    settings = {cli: getattr(_DEFAULTS, arg) for cli, arg in MODEL_KEYS.items()}
    settings.update(TRAINING_DEFAULTS)
    settings.update({cli: preset.model[arg] for cli, arg in MODEL_KEYS.items() if arg in preset.model})
    settings.update(preset.training)
    if "dtype" not in preset.model:
        settings["dtype"] = "float64" if settings["optimizer"] == "lbfgs" else "float32"
    settings["preset"] = preset.name
    return settings


def _add_train(sub):
    p = sub.add_parser(
        "train", help="train a sparse autoencoder (MNIST, Fashion-MNIST or image patches)",
        description="Train a sparse autoencoder; write checkpoint.npz, metrics.json and figures "
                    "into --out. A preset sets every value; each flag overrides one. Defaults "
                    "shown as 'preset' come from the chosen preset. Without --preset: the "
                    "mechanism's own preset where --sparsity names one, else activations for "
                    "--data and book for MNIST; a --data run without --preset has its hidden "
                    "units, k, AuxK's k and epochs sized to the data (" + "; ".join(
                        f"{cli}: {SIZING.describe(rule)}" for cli, rule in SIZED.items())
                    + ") and its data normalized (norm) when its output is linear.")
    _add_backend(p)
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="a setting's values: " + "; ".join(
                       f"{name}: {preset.description}" for name, preset in PRESETS.items())
                   + " (default: the preset of --sparsity's mechanism (" + ", ".join(
                       f"{m}: {n}" for m, n in MECHANISM_PRESETS.items()) + "); else "
                   "activations with --data, book otherwise)")
    for name, f in FIELDS.items():
        key = f.flag[2:].replace("-", "_")
        values = _preset_values(key)
        default = f"preset, {values}" if values else f"preset, else {getattr(_DEFAULTS, name)}"
        if name == "dtype":
            default = "preset, else float64 with lbfgs, float32 otherwise"
        if name == "k":
            default = (f"preset, {values}; a preset that sets none (book, ufldl, l1, ...) "
                       f"needs --k with --sparsity topk or batchtopk")
            f = dataclasses.replace(f, help="units kept per sample by sparsity topk (per sample "
                                            "on average by batchtopk)")
        if f.type is bool:
            p.add_argument(f.flag, dest=key, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{f.help} (default: {default})")
            continue
        kind = _count if name == "aux_k" else _positive_int if f.type is int else f.type
        p.add_argument(f.flag, dest=key, type=kind, choices=f.choices, metavar=f.metavar,
                       help=f"{f.help} (default: {default})")
    _add_data_source(p)
    for name, s in TRAINING.items():
        values = _preset_values(name)
        default = f"preset, {values}" if values else f"{s.default}"
        if name == "normalize":
            default = "norm where the output is linear, none where it is a sigmoid"
        kind = _positive_int if s.type is int and s.low == 1 else \
            _count if s.type is int else s.type
        p.add_argument("--" + name.replace("_", "-"), type=kind, choices=s.choices,
                       help=f"{s.help} (default: {default})")
    p.add_argument("--threads", type=_threads, default="auto",
                   help="CPU threads: a number; auto, chosen once when the run starts by "
                        "timing its step on one thread and on every core, recorded and kept on "
                        "resume (a run repeats bit for bit with --threads set to the count it "
                        "recorded); or adaptive, which keeps following the load "
                        "(default: auto)")
    p.add_argument("--reference", action="store_true",
                   help="run the readable reference path end to end (model.loss_and_grads and "
                        "Adam.step, not the fast engine): slower, for study and stepping "
                        "through in a debugger")
    p.add_argument("--out", default=None, type=_folder,
                   help="output folder (default: runs/<preset>)")
    p.add_argument("--force", action="store_true",
                   help="replace a run already in --out (default: refuse; --resume continues one)")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a run: its folder, or its checkpoint.npz (default: start a "
                        "new run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="train on N processes of this machine, data parallel over "
                        "torch.distributed (needs PyTorch), as `torchrun --nproc-per-node N -m "
                        "minisae train ...` does; --batch-size stays the whole batch, shared "
                        "by the processes, so the run is the same on any number of them "
                        "(default: one process)")
    p.add_argument("--shard", action="store_true",
                   help="on several processes: split the dictionary's units over them instead "
                        "of the batch's rows (each holds n_hidden / N units and takes every "
                        "batch whole), for a dictionary too large for one; the run and its "
                        "checkpoint are the same (default: data parallel)")
    p.add_argument("--comm-timeout", type=_positive_float, default=None, metavar="SECONDS",
                   help="on several processes: how long one may wait for the others before "
                        "every one stops (one that died is noticed at once) (default: 300)")
    p.set_defaults(func=cmd_train)


def resolve_settings(args):
    """The preset's values with explicit flags on top (the CLI's setting names). The preset is
    --preset's, else the mechanism's own where --sparsity names one, else activations for
    --data and book for MNIST (presets.default_preset). A --data run is sized to its data
    once they are read (size_to_data)."""
    own = getattr(args, "data", None) is not None
    preset = get_preset(args.preset or default_preset(args.sparsity, own))
    settings = preset_settings(preset)
    for name in settings:
        value = getattr(args, name, None)
        if name != "preset" and value is not None:
            settings[name] = value
    if args.optimizer == "lbfgs" and args.dtype is None and "dtype" not in preset.model:
        settings["dtype"] = "float64"  # L-BFGS's line search wants float64
    if settings.get("aux_k") == 0:  # --aux-k 0: AuxK off (a preset's too)
        settings["aux_k"] = None
    if args.aux_k is None and settings.get("aux_k") is not None:  # a preset's AuxK: in fewer
        if args.hidden is not None:                                # units, capped; with codes
            settings["aux_k"] = min(settings["aux_k"], args.hidden)  # that are not ReLU, off
        if settings["hidden_activation"] != "relu":
            settings["aux_k"] = None
    if args.data is not None:
        if args.dataset not in (None, "files"):
            raise ConfigError(f"--data trains on your files; drop --dataset {args.dataset}")
        settings["dataset"] = "files"
        if args.normalize is None:  # activations want it; a sigmoid's [0, 1] data do not
            settings["normalize"] = "norm" if settings["output"] == "linear" else "none"
    elif settings["dataset"] == "files":
        what = "--dataset files" if args.dataset == "files" else f"--preset {preset.name}"
        raise ConfigError(f"{what} trains on your own data: give --data PATH (a .npy, an .npz "
                          f"or a folder of .npy shards)")
    for flag in ("data_key", "val_data", "normalize", "chunk_rows", "buffer_rows"):
        if getattr(args, flag, None) not in (None, "none") and args.data is None:
            raise ConfigError(f"{FLAGS[flag]} applies to --data; give --data PATH or drop it")
    refuse_flags_that_do_not_apply(args, settings)
    return settings


_MINIBATCH = ("adam", "sgd")
APPLIES = {  # setting -> (does it apply to these settings?, what it applies to)
    "lr": (lambda s: s["optimizer"] in _MINIBATCH, "--optimizer adam or sgd"),
    "batch_size": (lambda s: s["optimizer"] in _MINIBATCH, "--optimizer adam or sgd"),
    "epochs": (lambda s: s["optimizer"] in _MINIBATCH,
               "--optimizer adam or sgd (lbfgs counts --max-iter)"),
    "momentum": (lambda s: s["optimizer"] == "sgd", "--optimizer sgd"),
    "max_iter": (lambda s: s["optimizer"] == "lbfgs",
                 "--optimizer lbfgs (adam and sgd count --epochs)"),
    "memory": (lambda s: s["optimizer"] == "lbfgs", "--optimizer lbfgs"),
    "n_patches": (lambda s: s["dataset"] == "patches", "--dataset patches"),
    "patch_size": (lambda s: s["dataset"] == "patches", "--dataset patches"),
    "dead_window": (lambda s: s.get("aux_k") is not None or s.get("resample_every") is not None,
                    "dead units, which AuxK (--aux-k) and resampling (--resample-every) read"),
    "val_fraction": (lambda s: s["dataset"] == "files" and s.get("val_data") is None,
                     "--data without --val-data (the share of its rows held out)"),
}
APPLIES.update({  # the model's: which mechanism reads which setting is config's to say, once
    name: (lambda s, name=name: applies(name, s),
           "AuxK, which --aux-k turns on" if name == "aux_weight" else "--sparsity " + " or ".join(
               m for m, mech in MECHANISMS.items() if name in mech.reads))
    for name in {n for mech in MECHANISMS.values() for n in mech.reads}})
"""Flags that only some runs use: given to another run, they are refused, never ignored."""


def refuse_flags_that_do_not_apply(args, settings):
    """A ConfigError for the first flag given on the command line that this run would not use."""
    for name, (applies, what) in APPLIES.items():
        if getattr(args, name, None) is not None and not applies(settings):
            raise ConfigError(f"{FLAGS[name]} applies to {what}, which this run is not; drop "
                              f"the flag")
    if getattr(args, "data_dir", None) is not None and settings["dataset"] == "files":
        raise ConfigError("--data-dir is where MNIST and Fashion-MNIST are kept; this run trains "
                          "on --data; drop --data-dir")


def sizing_of(args, settings):
    """The presets.Sizing a new run is sized to its data by: its preset's own (activations),
    or for a --data run that names no preset, presets.SIZING; None for the others."""
    preset = get_preset(settings["preset"])
    if preset.sizing is not None:
        return preset.sizing
    return SIZING if settings["dataset"] == "files" and args.preset is None else None


def size_to_data(args, settings, n_inputs, n_train):
    """The settings of a new run with what its sizing sets from the data (n_inputs wide,
    n_train rows to train on) filled in where no flag set it: hidden units, k and AuxK's k
    (where the preset keeps k units), and epochs (adam and sgd). Returns the sized names."""
    sizing = sizing_of(args, settings)
    if sizing is None:
        return []
    model = get_preset(settings["preset"]).model_for(n_inputs, sizing, args.hidden)
    sized = []
    for cli in ("hidden", "k", "aux_k"):
        if getattr(args, cli) is None and SIZED[cli] in model and settings[cli] is not None:
            settings[cli] = model[SIZED[cli]]
            sized.append(cli)
    if args.epochs is None and settings["optimizer"] in _MINIBATCH:
        settings["epochs"] = sizing.epochs(n_train)
        sized.append("epochs")
    return sized


class Interruption:
    """What Ctrl-C should say: updated by `minisae train` as it saves."""

    note = ""


def resume_command(args, run_folder, settings, out=None):
    """The exact command that continues the run saved in run_folder (into out, if another)."""
    unit = "--max-iter" if settings.get("optimizer") == "lbfgs" else "--epochs"
    target = settings["max_iter"] if unit == "--max-iter" else settings["epochs"]
    argv = ["minisae", "train", "--resume", run_folder, unit, str(target)]
    if out is not None and os.path.abspath(out) != os.path.abspath(run_folder):
        argv += ["--out", out]
    for flag, value in (("--backend", args.backend), ("--data-dir", args.data_dir),
                        ("--threads", None if args.threads == "auto" else args.threads),
                        ("--workers", getattr(args, "workers", None))):
        if value is not None:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--shard", getattr(args, "shard", False)),
                                   ("--no-download", args.no_download),
                                   ("--reference", args.reference),
                                   ("--no-progress", args.no_progress)) if on]
    return shlex.join(argv)


def cmd_train(args):
    """The settings, then the data (read and checked before the output folder is looked at:
    a missing --data file is reported as missing), then the folder, under its lock. With
    --workers N, N processes of this command (minisae.distributed.launch); in a process that
    torchrun or --workers started, one rank of the run: rank 0 writes the run's folder and
    prints, the others train in silence."""
    from .. import distributed
    if args.workers is not None and args.workers > 1 and not distributed.launched():
        return distributed.launch(args.argv, args.workers,
                                  grace=args.comm_timeout or distributed.TIMEOUT)
    if args.shard and not distributed.launched():
        raise ConfigError("--shard splits the dictionary over several processes: give "
                          "--workers N (N > 1), or start the command with torchrun")
    comm = distributed.join(args.comm_timeout or distributed.TIMEOUT, _comm_backend(args),
                            shard=args.shard)
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")
        args.no_progress = True
    try:
        return _train_ranks(args, comm)
    finally:
        getattr(comm, "close", lambda: None)()


def _comm_backend(args):
    """NCCL for a run on GPUs, gloo on the CPU. On several ranks, each first selects its own
    GPU (LOCAL_RANK's), before the backend's probe makes a CUDA context."""
    from .. import distributed
    if not distributed.launched() or \
            (args.backend or os.environ.get(B.ENV_VAR, "").strip() or "auto") == "numpy":
        return "gloo"  # one process needs none; NumPy's ranks talk over gloo
    distributed.use_local_gpu()
    be = B.get_backend(args.backend)
    return "nccl" if be.name == "cupy" or str(be.device).startswith("cuda") else "gloo"


def _train_ranks(args, comm):
    from ..files import checkpoint
    from ..training import History

    if args.resume:  # a sharded run's ranks read the whole checkpoint to the host, and keep
        # their part on the device (distributed.shard)
        ck = checkpoint.load(args.resume, backend=B.get_backend(
            "numpy" if comm.splits == "units" else args.backend))
        settings = _resumed_settings(args, ck)
        history, saved_in = ck.history, _run_folder(args.resume)
        out = args.out or saved_in
    else:
        settings = resolve_settings(args)
        out = args.out or os.path.join("runs", settings["preset"])
        ck, history, saved_in = None, History(), None
    position = ck.extra.get("position") if ck is not None else None
    Interruption.note = _saved_note(args, settings, out, saved_in, len(history), position) \
        if saved_in else (f"nothing was saved yet (the first checkpoint is written after "
                          f"{_unit(settings, 1)} 1)")
    data, record = _run_data(args, ck, settings)
    if comm.rank != 0:  # rank 0 writes the folder; the others' Ctrl-C line says so
        Interruption.note = f"rank {comm.rank} of {comm.size}: rank 0 says what was saved"
        if not comm.agree(True):
            raise ConfigError(f"rank {comm.rank} of {comm.size}: rank 0 could not start the "
                              f"run (its line says why)")
        return _train(args, ck, settings, history, saved_in, out, data, record, comm)
    ready = False
    try:
        with RunLock(out):  # one writer at a time; checked, then written, under the lock
            if saved_in is None or os.path.abspath(out) != saved_in:
                _refuse_to_overwrite(out, args.force)
            ready = True
            comm.agree(True)  # every rank waits here for the folder (a barrier)
            return _train(args, ck, settings, history, saved_in, out, data, record, comm)
    finally:
        if not ready:  # the folder was refused: the other ranks stop too
            comm.agree(False)


def _saved_note(args, settings, out, folder, n, at=None):
    """What Ctrl-C says once `folder` holds a checkpoint of n epochs (or iterations), or one
    in the middle of an epoch (at: a position)."""
    target, unit = _target(settings), _unit(settings)
    held = f"{n} of {target} {unit}" if at is None else \
        f"{at['epoch'] - 1} of {target} {unit} and {at['step']} steps of the next"
    return (f"the checkpoint in {folder} holds {held}; continue with: "
            f"{resume_command(args, folder, settings, out)}")


def _run_data(args, ck, settings):
    """(data, what the checkpoint records of them): the run's data, read and checked; a new
    run sized to them (size_to_data), a resumed one compared with those it started on."""
    data = load_data(settings, args)
    n_train, width = n_rows(data.x_train), int(data.x_train.shape[1] if hasattr(
        data.x_train, "shape") else data.x_train.n_features)
    print(f"data: {data.name}, {n_train:,} train / {n_rows(data.x_test):,} test, from "
          f"{data.source}")
    record = {"data_source": data.source, "subset": data.subset, "data_shape": [n_train, width]}
    if getattr(data, "fingerprint", None) is not None:
        record["data_fingerprint"] = data.fingerprint
    if ck is not None:
        _check_same_data(ck.extra, record, args)
    else:
        sized = size_to_data(args, settings, width, n_train)
        if sized:
            print(f"preset: {settings['preset']}, sized to {width} features and {n_train:,} "
                  f"rows: " + ", ".join(f"--{name.replace('_', '-')} {settings[name]}"
                                        for name in sized)
                  + (f"; --normalize {settings['normalize']}" if settings["dataset"] == "files"
                     else ""))
    image_shape_of(settings, width)  # a wrong --image-shape is refused now, not after training
    return data, record


def _train(args, ck, settings, history, saved_in, out, data, record, comm):
    from ..files import checkpoint
    from ..training import Checkpoints, DeadUnits, Engine, Stream, fit
    done, target, unit = len(history), _target(settings), _unit(settings)
    position = ck.extra.get("position") if ck is not None else None

    def saved(folder, n, at=None):
        return _saved_note(args, settings, out, folder, n, at)

    width = record["data_shape"][1]
    sharded = comm.splits == "units"  # a new sharded run builds this rank's units alone
    model = ck.model if ck is not None else _build_model(settings, width, args,
                                                         comm if sharded else None)
    if not sharded:
        model.comm = comm
    if ck is None and settings["normalize"] != "none":
        from ..normalize import Normalizer
        print(f"normalising ({settings['normalize']}): one pass over {data.source}")
        model.normalizer = Normalizer.fit(data.x_train, settings["normalize"], comm=comm)
    optimizer = _optimizer(settings, model, ck)
    print(f"model: {model}" + (" (the reference path)" if args.reference else ""))
    if sharded and ck is not None:  # every rank keeps its units of the checkpoint's model
        from ..distributed import shard
        model, optimizer = shard(model, optimizer, comm, B.get_backend(args.backend))
        ck.model = ck.optimizer = None  # the whole model is not held for the run
    if sharded:
        print(f"sharded: the {model.config.n_hidden:,} units split over {comm.size} ranks "
              f"({model.units[1] - model.units[0]:,} on rank 0), every batch whole on each")
    print(f"optimizer: {_describe_optimizer(settings)}")

    ckpt_path = os.path.join(out, "checkpoint.npz")
    extra = {"settings": settings, **record}
    every = 10 if settings["optimizer"] == "lbfgs" else 1

    def save(history, at):
        """After each epoch (at None; every 10th L-BFGS iteration, and the last), and every
        --checkpoint-every steps mid-epoch (at: the position in the epoch). An epoch whose
        numbers say the run is failing gets a line after its own."""
        n = len(history)
        if at is None and not args.no_progress:
            _say_failing(history, settings)
        if at is None and n % every and n != target:
            return
        checkpoint.save(ckpt_path, model, optimizer, history,
                        extra if at is None else {**extra, "position": at})
        Interruption.note = saved(out, n, at)

    if done >= target:
        print(f"the checkpoint already has {done} {unit} (target {target}); nothing to train")
    t0 = time.perf_counter()
    try:
        x_train = data.x_train if settings["dataset"] != "files" else \
            Stream(data.x_train, settings["chunk_rows"], settings["buffer_rows"])
        fit(model, optimizer, x_train, target,
            None if settings["optimizer"] == "lbfgs" else settings["batch_size"],
            seed=settings["seed"], x_val=data.x_test, progress=not args.no_progress,
            history=history,
            checkpoints=Checkpoints(save, settings["checkpoint_every"],
                                    position if done < target else None),
            dead_units=DeadUnits(settings["dead_window"], settings["resample_every"]),
            engine=Engine(fast=not args.reference, threads=args.threads))
    except ConfigError as e:
        raise ConfigError(flag_names(str(e))) from None
    except CommError as e:  # another rank stopped: say what this one knows of the saves
        raise CommError(f"{e}; {Interruption.note}") from None
    except KeyboardInterrupt:
        if not args.no_progress:
            print(file=sys.stderr)  # after the progress bar's line
        raise
    if comm.splits == "units":  # the ranks' units, together on rank 0
        from ..distributed import whole
        model, optimizer = whole(model, optimizer)
    if comm.rank != 0:  # rank 0 writes the results
        return 0
    model.comm = Alone()  # what follows (the results, the figures) runs on rank 0 alone
    if len(history) > done and len(history) % every:  # L-BFGS converged between saves
        checkpoint.save(ckpt_path, model, optimizer, history, extra)
    wall = time.perf_counter() - t0
    Interruption.note = (f"training was done: the checkpoint in {out} holds {len(history)} "
                         f"{unit}; remake the figures with: minisae show {shlex.quote(out)}")
    metrics = write_results(model, history, data, out, settings)
    metrics["wall_seconds_this_run"] = wall
    print(summary_table(metrics, out, written=("checkpoint.npz", "metrics.json",
                                               *metrics["figures"])))
    verdict = failure(metrics, settings)
    if verdict:
        print(f"minisae: this run failed: {verdict}", file=sys.stderr)
    return 0


FAILED = {"dead": 0.9, "l0": 1.0, "fvu": 0.99}
"""A run has failed when more than 90% of its units are dead, when its codes have fewer than
one active unit per sample (L0), or when it explains (almost) none of the variance (FVU)."""


def failure(figures, settings):
    """What failed and the flag to change, in one line (None when nothing did). figures:
    a run's metrics ({"dead_fraction", "l0", "fvu", "train_dead_fraction"}) or an epoch's
    record ("val_" names). Dead units are those training tracked (ReLU codes with AuxK or
    resampling: silent for --dead-window samples) where it did, else those active on no
    held-out sample."""
    def get(name):
        value = figures.get(name, figures.get(f"val_{name}"))
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None
    dead = get("train_dead_fraction")
    dead = get("dead_fraction") if dead is None else dead
    l0, fvu = get("l0"), get("fvu")
    problems = []
    if dead is not None and dead > FAILED["dead"]:
        problems.append(("dead", f"{100 * dead:.1f}% of its units are dead"))
    if l0 is not None and l0 < FAILED["l0"]:
        problems.append(("l0", f"its L0 is {l0:.2f}, less than one active unit per sample"))
    if fvu is not None and fvu >= FAILED["fvu"]:
        problems.append(("fvu", f"its FVU is {fvu:.3f}: it reconstructs (almost) nothing but "
                                f"the mean"))
    if not problems:
        return None
    return "; ".join(p for _, p in problems) + "; " + _remedy(problems[0][0], settings)


def _remedy(problem, s):
    """The flag to change for a run that failed by `problem` ("dead", "l0" or "fvu")."""
    mechanism = s.get("sparsity", "kl")
    if s.get("dataset") == "files" and s.get("normalize") == "none" and \
            s.get("output") == "linear":
        return "normalize the data (--normalize norm)"
    if applies("sparsity_weight", {"sparsity": mechanism, "aux_k": s.get("aux_k")}):
        lower = f"lower --sparsity-weight (now {s.get('sparsity_weight'):g})"
        if problem == "dead" and mechanism in ("kl", "squared", "absolute"):
            return f"{lower}, or raise --sparsity-target (now {s.get('sparsity_target'):g})"
        return lower
    if problem == "dead" and s.get("aux_k") is None and s.get("hidden_activation") == "relu":
        return "turn AuxK on (--aux-k N, e.g. half the width), which revives dead units"
    return f"lower --lr (now {s.get('lr'):g}), or train longer (--epochs)"


def _say_failing(history, settings):
    """After an epoch's progress line: one line if the epoch's numbers say the run fails. An
    FVU still falling by more than 1% an epoch is a run that is learning, not failing (the
    book's model starts above FVU 1 and takes a dozen epochs to come under it): its units and
    L0 are still judged, its FVU only once it stalls (and always at the end)."""
    record = history.last()
    verdict = failure(record, settings)
    if not verdict:
        return
    fvu = history.as_dict().get("val_fvu", [])
    learning = len(fvu) >= 2 and None not in fvu[-2:] and fvu[-1] < 0.99 * fvu[-2]
    if learning and failure({**record, "val_fvu": None}, settings) is None:
        return
    line = f"epoch {record.get('epoch')}: failing so far: {verdict}"
    if sys.stderr.isatty():   # above tqdm's bar, which redraws below it
        from tqdm.auto import tqdm
        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def _check_same_data(saved, now, args):
    """A resumed run trains on the data it started on: the source and shape the checkpoint
    recorded (where it recorded them) must match, unless --force. Files are compared by
    their fingerprint (sizes, shapes and samples of their bytes), not their paths."""
    keys = ("data_fingerprint",) if "data_fingerprint" in now else ("data_source", "subset",
                                                                      "data_shape")
    differs = [f"{key} {saved[key]!r} -> {now[key]!r}" for key in keys
               if key in saved and saved[key] != now[key]]
    if "data_fingerprint" in now and "data_fingerprint" in saved and differs:
        differs = ["the files' sizes, shapes or contents differ from those it was trained on"]
    if differs and not args.force:
        raise ConfigError(f"the resumed run was trained on other data ({'; '.join(differs)}); "
                          f"point --data, --data-dir (or the environment) at the data it used, "
                          f"or pass --force to continue on this data")


def _run_folder(path):
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)


def _target(settings):
    return settings["max_iter"] if settings["optimizer"] == "lbfgs" else settings["epochs"]


def _unit(settings, n=2):
    word = "iteration" if settings["optimizer"] == "lbfgs" else "epoch"
    return word if n == 1 else word + "s"


def _refuse_to_overwrite(out, force):
    """A folder holding a run is not replaced unless --force."""
    existing = [name for name in ("checkpoint.npz", "metrics.json")
                if os.path.exists(os.path.join(out, name))]
    if existing and not force:
        raise ConfigError(f"{out} already holds a run ({', '.join(existing)}); continue it with "
                          f"`minisae train --resume {out}`, choose another --out, or pass "
                          f"--force to replace it")


def _setting_ok(name, value):
    """A saved setting is of its kind: the model's from FIELDS, the others from TRAINING."""
    if name == "preset":
        return value in PRESETS
    if name in MODEL_KEYS:
        f = FIELDS[MODEL_KEYS[name]]
        kind, choices, low = f.type, f.choices, 1 if f.type is int else None
        default = getattr(_DEFAULTS, MODEL_KEYS[name])
    elif name in TRAINING:
        t = TRAINING[name]
        kind, choices, low, default = t.type, t.choices, t.low, t.default
    else:
        return False
    if value is None:
        return default is None
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if choices is not None:
        return value in choices
    return isinstance(value, (int, float) if kind is float else kind) and \
        (low is None or value >= low)


def run_settings(ck, where):
    """The settings `minisae train` saved with a checkpoint, checked (a damaged or edited file
    gets a CheckpointError, not a crash later), with what older runs did not record filled in."""
    from ..errors import CheckpointError
    settings = ck.extra.get("settings")
    if settings is None:
        raise ConfigError(f"{where} was not written by `minisae train`; it has no settings")
    if not isinstance(settings, dict):
        raise CheckpointError(f"{where}: its settings are a JSON {type(settings).__name__}, not "
                              f"an object; the file is damaged")
    for name, value in settings.items():
        if not _setting_ok(name, value):
            raise CheckpointError(f"{where}: its setting {name!r} = {value!r} is unknown or of "
                                  f"the wrong type; the file is damaged or from another version")
    config = ck.model.config
    filled = {cli: getattr(config, arg) for cli, arg in MODEL_KEYS.items()}  # older runs
    return {**TRAINING_DEFAULTS, **filled, **settings}


def _resumed_settings(args, ck):
    settings = run_settings(ck, args.resume)
    for name in KEPT_ON_RESUME:
        value = getattr(args, name, None)
        if value is not None and value != settings.get(name):
            raise ConfigError(f"--{name.replace('_', '-')} {value} differs from the resumed "
                              f"run's {settings.get(name)}; drop the flag or start a new run")
    for name in CHANGEABLE_ON_RESUME:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    refuse_flags_that_do_not_apply(args, settings)
    return settings


def _build_model(settings, n_inputs, args, comm=None):
    from ..model import SparseAutoencoder
    kwargs = {arg: settings[cli] for cli, arg in MODEL_KEYS.items()}
    try:
        return SparseAutoencoder(n_inputs=n_inputs, backend=args.backend, seed=settings["seed"],
                                 comm=comm, **kwargs)
    except ConfigError as e:
        raise ConfigError(flag_names(str(e))) from None


def _optimizer(settings, model, ck):
    """The run's optimizer: the checkpoint's, or a new one from the settings."""
    kind = settings["optimizer"]
    if ck is not None and ck.optimizer is not None:
        if type(ck.optimizer) is not OPTIMIZERS[kind]:
            raise ConfigError(f"the checkpoint holds a {type(ck.optimizer).__name__} optimizer, "
                              f"but the run's settings say {kind}")
        if kind == "lbfgs":
            ck.optimizer.max_iter = settings["max_iter"]
        return ck.optimizer
    try:
        if kind == "lbfgs":
            return OPTIMIZERS[kind](model.params, model.grads, max_iter=settings["max_iter"],
                                    memory=settings["memory"])
        if kind == "sgd":
            return OPTIMIZERS[kind](model.params, model.grads, lr=settings["lr"],
                                    momentum=settings["momentum"])
        return OPTIMIZERS[kind](model.params, model.grads, lr=settings["lr"])
    except ConfigError as e:
        raise ConfigError(flag_names(str(e))) from None


def _describe_optimizer(settings):
    if settings["optimizer"] == "lbfgs":
        return f"L-BFGS, full batch, up to {settings['max_iter']} iterations"
    if settings["optimizer"] == "sgd":
        return (f"SGD, lr {settings['lr']}, momentum {settings['momentum']}, batch "
                f"{settings['batch_size']}, {settings['epochs']} epochs")
    return f"Adam, lr {settings['lr']}, batch {settings['batch_size']}, {settings['epochs']} epochs"


@dataclass
class FileData:
    """Your own data as `minisae train` trains on them: sources of rows, not arrays."""

    x_train: object
    x_test: object
    name: str
    source: str
    subset: bool = False
    fingerprint: dict = None


def n_rows(x):
    return x.n_rows if hasattr(x, "n_rows") else len(x)


def load_data(settings, args):
    """The run's data set: MNIST, Fashion-MNIST, natural-image patches (sampled with the
    run's seed, and a held-out set of a tenth as many with the next seed), or your own files
    (--data), with their last --val-fraction of rows, or --val-data, held out."""
    from .. import checks
    from ..data import datasets
    if settings["dataset"] == "files":
        return _files(settings)
    if settings["dataset"] != "patches":
        return datasets.load(settings["dataset"], args.data_dir, download=not args.no_download,
                             progress=not args.no_progress)
    from ..data.patches import natural_patches
    n, size, seed = settings["n_patches"], settings["patch_size"], settings["seed"]
    need = 1.1 * n * size * size * (4 if settings["dtype"] == "float32" else 8)
    have = checks.physical_memory()
    checks.check_fits(need, None if have is None else have / 2,
                      f"--n-patches {n:,} of --patch-size {size}", "ask for fewer",
                      "half this machine's memory")
    try:
        x_train = natural_patches(n, size, seed=seed, dtype=settings["dtype"])
        x_test = natural_patches(max(100, n // 10), size, seed=seed + 1, dtype=settings["dtype"])
    except MinisaeError as e:
        raise type(e)(f"--dataset patches (--n-patches {n}, --patch-size {size}): "
                      f"{flag_names(str(e))}") from None
    source = f"{size}x{size} whitened patches of natural photographs (scikit-learn, scikit-image)"
    return datasets.Dataset(x_train, None, x_test, None, "patches", source)


def _files(settings):
    from ..data import ArrayFiles, RowRange
    source = ArrayFiles(settings["data"], settings["data_key"])
    fingerprint = {"train": source.fingerprint()}
    if settings["val_data"]:
        val = ArrayFiles(settings["val_data"], settings["data_key"])
        fingerprint["val"] = val.fingerprint()
        return FileData(source, val, "files", source.describe(), False, fingerprint)
    fraction = settings["val_fraction"]
    if not 0 < fraction < 1:
        raise ConfigError(f"--val-fraction must be between 0 and 1, got {fraction}")
    held = max(1, round(fraction * source.n_rows))
    if held >= source.n_rows:
        raise ConfigError(f"{source.describe()} has too few rows to hold {fraction:g} of them "
                          f"out for validation; give --val-data, or more rows")
    train = RowRange(source, 0, source.n_rows - held, name=f"the first "
                     f"{source.n_rows - held:,} rows of {settings['data']}")
    val = RowRange(source, source.n_rows - held, source.n_rows, name=f"the last {held:,} rows "
                   f"of {settings['data']}")
    fingerprint["val_rows"] = held
    return FileData(train, val, "files", source.describe(), False, fingerprint)


def image_shape_of(settings, n_inputs):
    """The (H, W) that features and reconstructions are drawn in: --image-shape, else MNIST's
    28x28 or the patches' own, else None: the rows are vectors (no image figures)."""
    text = settings.get("image_shape")
    if text:
        try:
            h, w = (int(v) for v in str(text).lower().split("x"))
        except ValueError:
            raise ConfigError(f"--image-shape takes HxW, e.g. 28x28, got {text!r}") from None
        if h * w != n_inputs:
            raise ConfigError(f"--image-shape {text} holds {h * w} pixels, but the rows have "
                              f"{n_inputs} features")
        return h, w
    if settings.get("dataset") in IDX_DATASETS:  # MNIST, Fashion-MNIST: 28x28 images
        return 28, 28
    if settings.get("dataset") == "patches":
        return settings["patch_size"], settings["patch_size"]
    return None


def write_results(model, history, data, out, settings):
    """metrics.json and the figures for a trained model; returns the metrics."""
    from .. import losses
    from ..backend import to_numpy
    from ..training import evaluate
    from ..training.fit import reconstruction_mse
    from . import plots
    x_test = data.x_test
    val = evaluate(model, x_test)
    image_shape = image_shape_of(settings, model.config.n_inputs)
    parts = ("total",) + losses.part_names(model.config)
    mse = reconstruction_mse(model, x_test)
    metrics = {
        "dataset": data.name, "data_source": data.source, "subset": data.subset,
        "n_train": n_rows(data.x_train), "n_test": n_rows(x_test), "settings": settings,
        "epochs": len(history), "train_seconds": float(sum(s or 0.0 for s in history.seconds)),
        # in the data's own units (the test loss is where the model works: after --normalize)
        "test_mse_per_feature": mse,
        **({"test_mse_per_pixel": mse} if image_shape else {}),  # 0.3's name, for images
        "image_shape": list(image_shape) if image_shape else None,
        "normalize": "none" if model.normalizer is None else model.normalizer.mode,
        "test_loss": {k: val[k] for k in parts},
        "mean_activation": val["mean_activation"], "sparsity_target": model.config.sparsity_target,
        "sparsity": model.config.sparsity, "l0": val["l0"], "dead_fraction": val["dead_fraction"],
        "dense_fraction": val["dense_fraction"], "fvu": val["fvu"],
        "log10_density": val["log10_density"],
        "train_dead_fraction": (history.last().get("train_dead_fraction")
                                if len(history) else None),
        "active": "h > 0.5" if model.config.hidden_activation == "sigmoid" else "h > 0",
        "backend": model.backend.name,
        # the held-out set is the test set: its records are named so
        "history": {k.replace("val_", "test_"): v for k, v in history.as_dict().items()},
    }
    W = to_numpy(model.params["encoder.W"])
    if settings.get("dataset") == "patches":
        from ..data.patches import orientation_score
        metrics["filter_score"] = orientation_score(W, image_shape).as_dict()
    metrics["figures"] = list(plots.figure_names(image_shape))
    with atomic_write(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    plots.run_figures(model, history.as_dict(), x_test, out, image_shape=image_shape,
                      title=f"encoder weights ({settings.get('preset', '')})", val_label="test")
    return metrics


def _mse_row(m):
    """The test MSE in the data's own units: per pixel for images, per feature otherwise
    (metrics of 0.3 and earlier: test_mse_per_pixel, and no image_shape)."""
    value = m.get("test_mse_per_feature", m.get("test_mse_per_pixel"))
    images = m.get("image_shape") is not None if "image_shape" in m else m["dataset"] != "files"
    scaled = m.get("normalize", "none") != "none"
    return (f"test MSE per {'pixel' if images else 'feature'}" + (
        ", the data's units" if scaled else ""), f"{value:.4f}")


BOOK_NOTE = ("the book preset's features stay noise-like: its MSE is averaged over the pixels, "
             "so the sparsity term outweighs the reconstruction; for pen-stroke features try "
             "`minisae train --preset ufldl` (README: \"Why the book's and UFLDL's settings "
             "differ\")")


def summary_table(m, out, written=("checkpoint.npz", "metrics.json") + FIGURES):
    unit = "iterations" if m["settings"].get("optimizer") == "lbfgs" else "epochs"
    rows = [
        ("data", f"{m['dataset']} ({m['data_source']})"),
        (unit, f"{m['epochs']}"),
        ("training time", f"{m['train_seconds']:.1f} s"),
        _mse_row(m),
        ("test loss" + (f", after --normalize {m['normalize']}" if m.get("normalize", "none")
                        != "none" else ""),
         f"{m['test_loss']['total']:.4f} (" + ", ".join(
             f"{k.replace('_', ' ')} {v:.4f}" for k, v in m["test_loss"].items() if k != "total")
         + ")"),
        ("mean activation", f"{m['mean_activation']:.4f}" + (
            f" (target {m['sparsity_target']})" if m.get("sparsity") in
            ("kl", "squared", "absolute", None) else "")),
    ]
    if "l0" in m:
        trained = m.get("train_dead_fraction")
        rows += [("active units", f"L0 {m['l0']:.1f} per sample ({m.get('active', 'h > 0')}); "
                                  f"dead {100 * m['dead_fraction']:.1f}% on the test set" + (
                                      f" ({100 * trained:.1f}% silent in training's last "
                                      f"{m['settings'].get('dead_window', 0):,} samples)"
                                      if trained is not None else "")
                                  + f", dense {100 * m['dense_fraction']:.1f}% of the units"
                                  + (f"; a living unit fires on {100 * 10 ** density:.2g}% of "
                                     f"the samples (median, density.png)"
                                     if math.isfinite(density := m.get("log10_density",
                                                                       math.nan)) else "")),
                 ("unexplained variance", f"FVU {m['fvu']:.4f}")]
    else:  # metrics of an older run
        rows.append(("dead units", f"{100 * m['dead_fraction']:.1f}%"))
    if "filter_score" in m:
        s = m["filter_score"]
        rows.append(("edge filters", f"orientation {s['orientation']:.3f} vs {s['orientation_random']:.3f} "
                                     f"for shuffled filters (x{s['orientation_ratio']:.2f}), coherence "
                                     f"x{s['coherence_ratio']:.2f}, localization "
                                     f"x{s['localization_ratio']:.2f}"))
    rows.append(("written", ", ".join(written) + f" in {out}"))
    if m["settings"].get("preset") == "book" and m["settings"].get("reduction") == "mean" \
            and m["dataset"] in ("mnist", "fashion-mnist") and m.get("sparsity", "kl") == "kl":
        rows.append(("note", BOOK_NOTE))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# ----------------------------------------------------------------------------- show

def _add_show(sub):
    p = sub.add_parser("show", help="remake a run's figures and metrics from its checkpoint")
    p.add_argument("checkpoint", help="a run folder, or the checkpoint.npz `minisae train` wrote")
    p.add_argument("--out", default=None, type=_folder,
                   help="folder for the figures (default: the run's own)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that holds another run's files (default: refuse)")
    _add_data_source(p)
    _add_backend(p)
    p.set_defaults(func=cmd_show)


def cmd_show(args):
    from ..files import checkpoint
    ck = checkpoint.load(args.checkpoint, backend=B.get_backend(args.backend))
    if ck.extra.get("settings") is None:  # a checkpoint saved from Python: MNIST, by default
        ck.extra["settings"] = {"dataset": "mnist"}
    settings = run_settings(ck, args.checkpoint)
    own = _run_folder(args.checkpoint)
    out = args.out or own
    args.no_progress = False
    with RunLock(out):
        if os.path.abspath(out) != own:  # another folder: never over another run's files
            _refuse_to_overwrite(out, args.force)
        data = load_data(settings, args)
        metrics = write_results(ck.model, ck.history, data, out, settings)
    print(summary_table(metrics, out, written=("metrics.json", *metrics["figures"])))
    return 0


# ----------------------------------------------------------------------------- gradcheck

def _add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="check every gradient, on both paths, against "
                                         "central differences")
    _add_backend(p)
    p.add_argument("--seed", type=_count, default=0, help="weights and inputs (default: 0)")
    p.set_defaults(func=cmd_gradcheck)


def gradcheck_combinations():
    """[(output, loss, reduction, problem)]: every combination of the reconstruction's
    choices, problem None when valid."""
    from ..config import OUTPUT_ACTIVATIONS, RECONSTRUCTION_LOSSES, REDUCTIONS, Config, \
        combination_problem
    return [(o, lo, r, combination_problem(Config(6, 4, output_activation=o,
                                                  reconstruction_loss=lo, reduction=r)))
            for o in OUTPUT_ACTIVATIONS for lo in RECONSTRUCTION_LOSSES for r in REDUCTIONS]


PATHS = ("reference", "fast")


SPARSITY_VARIANTS = [
    ("kl (sigmoid codes)", dict()),
    ("squared", dict(sparsity="squared")),
    ("absolute", dict(sparsity="absolute")),
    ("l1 (relu codes)", dict(sparsity="l1", hidden_activation="relu")),
    ("l1 x decoder norms", dict(sparsity="l1", hidden_activation="relu", l1_decoder_norm=True)),
    ("topk, relu", dict(sparsity="topk", k=2, hidden_activation="relu")),
    ("topk, linear, tied", dict(sparsity="topk", k=2, hidden_activation="linear",
                                tied_weights=True, output_activation="linear")),
    ("kl, tied weights", dict(tied_weights=True)),
    ("l1, x - b2 encoded", dict(sparsity="l1", hidden_activation="relu",
                                subtract_decoder_bias=True)),
    ("topk + AuxK", dict(sparsity="topk", k=2, hidden_activation="relu", aux_k=2,
                         output_activation="linear")),
    ("batchtopk + AuxK", dict(sparsity="batchtopk", k=2, hidden_activation="relu", aux_k=2,
                              output_activation="linear")),
    ("jumprelu (theta: STE)", dict(sparsity="jumprelu", hidden_activation="relu",
                                   jump_threshold=0.3, jump_bandwidth=1.0,
                                   output_activation="linear")),
]
"""The sparsity mechanisms and options `minisae gradcheck` checks, each on a tiny model."""


def _sparsity_model(kwargs, backend, seed, x):
    """A float64 model of one SPARSITY_VARIANTS entry, ready to check: AuxK gets dead units
    and its stop-gradient residual held fixed; a subtracted decoder bias a nonzero b2."""
    import numpy as np

    from ..model import SparseAutoencoder
    model = SparseAutoencoder(6, 4, sparsity_target=0.1, sparsity_weight=0.7, weight_decay=1e-2,
                              backend=backend, dtype="float64", seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    if model.config.subtract_decoder_bias:
        model.params["decoder.b"][...] = model.backend.asarray(rng.random(6))
    if model.config.aux_k:
        model.dead[...] = model.backend.asarray(np.array([True, False, True, True]),
                                                dtype=model.backend.xp.bool)
        model.frozen_residual = model.backend.asarray(x) - model.reconstruct(x)
    return model


def cmd_gradcheck(args):
    import numpy as np

    from .. import fast
    from ..gradcheck import THRESHOLD, check_model, format_table
    from ..model import SparseAutoencoder
    x = np.random.default_rng(args.seed).random((5, 6))
    failed, skipped = [], []
    print(f"central differences in float64, threshold {THRESHOLD:.0e} on "
          f"||num - ana|| / ||num + ana||; 5 samples, 6 inputs, 4 hidden units, beta 3, "
          f"lambda 0.01; each valid combination on both paths: the reference "
          f"(model.loss_and_grads) and the fast engine (minisae.fast.loss_and_grads)\n")
    for output, loss, reduction, problem in gradcheck_combinations():
        if problem is not None:
            skipped.append(f"output={output}, loss={loss}, reduction={reduction}: {problem}")
            continue
        model = SparseAutoencoder(6, 4, sparsity_target=0.1, sparsity_weight=3.0,
                                  weight_decay=1e-2, output_activation=output,
                                  reconstruction_loss=loss, reduction=reduction,
                                  backend=args.backend, dtype="float64", seed=args.seed)
        for path in PATHS:
            rows = check_model(model, x) if path == "reference" else fast.check_model(model, x)
            engine = "" if path == "reference" or fast.fused(model) is None else \
                " = the reference: " + fast.fused(model)
            print(format_table(rows, f"output={output}, loss={loss}, reduction={reduction}, "
                                     f"path={path} ({model.backend.name}){engine}"))
            print()
            failed += [(f"{output}/{loss}/{reduction}", path, r) for r in rows if not r.ok]
    print("not valid, so not checked:")
    for line in skipped:
        print(f"  {line}")
    print("\nthe sparsity family (beta 0.7, lambda 0.01; largest relative error per parameter; "
          "AuxK with its residual held fixed, the constant it is):")
    names = ("encoder.W", "encoder.b", "decoder.W", "decoder.b")
    print(f"  {'mechanism':<22} {'path':<10}" + "".join(f" {n:>10}" for n in names) + "  ok")
    for label, kwargs in SPARSITY_VARIANTS:
        model = _sparsity_model(kwargs, args.backend, args.seed, x)
        for path in PATHS:
            rows = check_model(model, x) if path == "reference" else fast.check_model(model, x)
            errors = {r.name: r.rel_error for r in rows}
            via = "" if path == "reference" or fast.fused(model) is None else " (= reference)"
            print(f"  {label:<22} {path:<10}" + "".join(
                f" {errors[n]:>10.1e}" if n in errors else f" {'(tied)':>10}" for n in names)
                + f"  {'yes' if all(r.ok for r in rows) else 'NO'}{via}")
            failed += [(label, path, r) for r in rows if not r.ok]
    print()
    if failed:
        worst = max(failed, key=lambda f: f[-1].rel_error)
        print(f"FAILED: {len(failed)} parameter(s); worst {worst[-1].name} of {worst[0]} on the "
              f"{worst[1]!r} path: {worst[-1].rel_error:.2e}", file=sys.stderr)
        return 1
    print("all gradients match, on both paths")
    return 0


# ----------------------------------------------------------------------------- data

def _add_data(sub):
    p = sub.add_parser("data", help="show where each dataset would load from; --fetch downloads")
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist", "all"), default="all",
                   help="which dataset (default: all)")
    p.add_argument("--data-dir", default=None, type=_folder,
                   help="a folder to look in first (default: $MINISAE_DATA)")
    p.add_argument("--fetch", action="store_true", help="download into the cache")
    p.set_defaults(func=cmd_data)


def cmd_data(args):
    from ..data import datasets
    names = datasets.IDX_DATASETS if args.dataset == "all" else (args.dataset,)
    errors = 0
    for name in names:
        if args.fetch:
            print(f"{name}: fetched into {datasets.fetch(name)}")
        print(f"{name}:")
        for where, status in datasets.describe(name, args.data_dir):
            print(f"  {status:<12} {where}")
            errors += status.startswith("error")
    return 1 if errors else 0


# ----------------------------------------------------------------------------- selftaught

def _add_selftaught(sub):
    p = sub.add_parser(
        "selftaught", help="self-taught learning: autoencoder codes of 5-9 as features for 0-4",
        description="UFLDL's self-taught learning: a sparse autoencoder learns from the classes "
                    "5-9 without their labels; softmax regressions learn the classes 0-4 from "
                    "half of them and are tested on the other half, on the autoencoder's codes, "
                    "the raw pixels and an untrained autoencoder's codes. Prints the table and "
                    "writes <out>/<dataset>.json.")
    p.add_argument("--dataset", nargs="+", default=["mnist"], choices=("mnist", "fashion-mnist"),
                   help="one or more data sets (default: mnist)")
    p.add_argument("--out", default="runs/selftaught", type=_folder,
                   help="folder for <dataset>.json (default: runs/selftaught)")
    p.add_argument("--hidden", type=_positive_int, default=None,
                   help="autoencoder units (default: 196)")
    p.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "adam"),
                   help="how the autoencoder trains (default: lbfgs)")
    p.add_argument("--max-iter", type=_positive_int, default=None,
                   help="L-BFGS iterations of the autoencoder (default: 400)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="Adam epochs of the autoencoder (default: 400)")
    p.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default: 0.01)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="Adam's batch size (default: 1000)")
    p.add_argument("--softmax-max-iter", type=_positive_int, default=None,
                   help="L-BFGS iterations of each softmax regression (default: 100)")
    p.add_argument("--softmax-weight-decay", type=float, default=1e-4,
                   help="the softmax regression's lambda (default: 1e-4)")
    p.add_argument("--seeds", type=_count, nargs="+", default=None,
                   help="autoencoder seeds, one trained and one untrained model each "
                        "(default: 0 1 2)")
    p.add_argument("--splits", type=_positive_int, default=None,
                   help="random halvings of the labelled classes per seed (default: 5)")
    p.add_argument("--max-unlabelled", type=_positive_int, default=None,
                   help="train the autoencoder on a random subset of this many samples "
                        "(default: all)")
    p.add_argument("--max-labelled", type=_positive_int, default=None,
                   help="classify a random subset of this many labelled samples (default: all)")
    _add_backend(p)
    _add_data_source(p)
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke run: 1 seed, 2 halvings, 32 units, 20 iterations, "
                        "600 samples each (the flags above, where given, still win)")
    p.set_defaults(func=cmd_selftaught)


SELFTAUGHT = dict(n_hidden=196, max_iter=400, epochs=400, softmax_max_iter=100, seeds=[0, 1, 2],
                  splits=5, max_unlabelled=None, max_labelled=None)
"""The settings --quick changes, and their values without it."""
SELFTAUGHT_QUICK = dict(n_hidden=32, max_iter=20, epochs=2, softmax_max_iter=30, seeds=[0],
                        splits=2, max_unlabelled=600, max_labelled=600)


def cmd_selftaught(args):
    from .selftaught import AutoencoderTraining, DataSplit, SoftmaxTraining, self_taught
    given = dict(n_hidden=args.hidden, max_iter=args.max_iter, epochs=args.epochs,
                 softmax_max_iter=args.softmax_max_iter, seeds=args.seeds, splits=args.splits,
                 max_unlabelled=args.max_unlabelled, max_labelled=args.max_labelled)
    defaults = SELFTAUGHT_QUICK if args.quick else SELFTAUGHT
    config = {k: defaults[k] if v is None else v for k, v in given.items()}  # a flag wins
    for name, kind in (("max_iter", "lbfgs"), ("epochs", "adam"), ("lr", "adam"),
                       ("batch_size", "adam")):
        if getattr(args, name) is not None and args.optimizer != kind:  # never ignored
            raise ConfigError(f"--{name.replace('_', '-')} applies to --optimizer {kind}, and "
                              f"this run uses {args.optimizer}; drop the flag")
    autoencoder = AutoencoderTraining(
        config["n_hidden"], args.optimizer, config["max_iter"], config["epochs"],
        lr=0.01 if args.lr is None else args.lr,
        batch_size=1000 if args.batch_size is None else args.batch_size)
    softmax = SoftmaxTraining(args.softmax_weight_decay, config["softmax_max_iter"])
    split = DataSplit(splits=config["splits"], max_unlabelled=config["max_unlabelled"],
                      max_labelled=config["max_labelled"])
    for name in args.dataset:
        print(f"\n== {name}")
        result = self_taught(name, autoencoder=autoencoder, softmax=softmax, split=split,
                             seeds=config["seeds"], backend=args.backend, data_dir=args.data_dir,
                             download=not args.no_download, progress=args.progress, log=print)
        print("\n" + result.format_table())
        print(f"wrote {result.write_json(os.path.join(args.out, f'{name}.json'))}")
    return 0


# ----------------------------------------------------------------------------- main

class _Parser(argparse.ArgumentParser):
    """Keeps the line breaks of descriptions and help texts as written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser():
    parser = _Parser(prog="minisae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minisae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_train(sub)
    _add_show(sub)
    _add_gradcheck(sub)
    from .bench import add_parser as add_bench
    add_bench(sub)
    from .inspect import add_parser as add_inspect
    add_inspect(sub)
    _add_data(sub)
    _add_selftaught(sub)
    return parser


def _parse(parser, argv):
    """Parse argv; an unknown flag is reported by its subcommand, with the closest flag."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = parser._subparsers._group_actions[0].choices[args.command]
        flags = [s for action in sub._actions for s in action.option_strings]
        close = difflib.get_close_matches(extras[0].split("=")[0], flags, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; see `minisae {args.command} --help`"
        sub.error(f"unrecognized argument{'s' if len(extras) > 1 else ''}: "
                  f"{' '.join(extras)}{hint}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --workers starts it again
    return args


def _last_line(line):
    """The command's one line on stderr, written whole in one write (the ranks of a run share
    the terminal: two lines must not interleave)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv=None):
    Interruption.note = ""
    try:
        args = _parse(build_parser(), argv)
        return args.func(args) or 0
    except MinisaeError as e:
        _last_line(f"minisae: error: {' '.join(flag_names(str(e)).split())}")
        return 2
    except MemoryError:
        _last_line("minisae: error: out of memory; use a smaller model, batch or data set, or "
                   "a machine with more memory")
        return 2
    except OSError as e:  # a folder we cannot write, a full disk: the OS says which file
        _last_line(f"minisae: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "))
        return 2
    except KeyboardInterrupt:
        note = f"; {Interruption.note}" if Interruption.note else ""
        _last_line(f"minisae: interrupted{note}")
        return 130
