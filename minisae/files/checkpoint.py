"""Save and load a model, its optimizer state, its history and the run's settings as one .npz.

No pickle: arrays are stored as arrays, everything else as JSON text. A save goes through
atomic.atomic_write, so a crash mid-write never replaces a good checkpoint; and it first
checks everything it is given with the checks `load` runs (state.py), so a save that would
write a file `load` refuses is refused instead, and the old file stays.

Members (np.savez adds ".npy" to each name): "format_version", "config" (JSON),
"param/<name>", "units/silent" (training samples since each unit last fired), "normalizer"
(JSON: mode, center, rows) with "normalizer/mean" and "normalizer/scale" (float64), "optimizer"
(JSON: type and settings), "optim/<key>" (the optimizer's state: "t", "lr",
"<slot>.<param name>"), "history" (JSON), "extra" (JSON).

Loading trusts nothing in the file, and spends no memory on what it has not checked:
  1. the zip directory: only the names above, stored or deflated, not encrypted;
  2. the small JSON members, each under a size cap: format_version, config, optimizer;
  3. every array's .npy header: the shape and dtype the config implies, and a member size
     that matches that header (a header's declared length is checked before it is read);
  4. history and extra (their JSON types);
Every JSON member is refused before what it would cost in memory once parsed passes its
bound (_JSON_BOUNDS: 16 MiB for the history, about 9,000 epochs of a run's records; less for
the others), counted as it is read, a chunk at a time: twice its text (the chunks, then the
whole) and 64 bytes for each value it can hold (each comes after a "[", "{", "," or ":"; a
Python float in a list costs 32, a dict's entry or a short string up to 64). The file's member
may be at most twice that in bytes (NumPy stores text as UTF-32, 4 bytes a character, and a
character counts 2 bytes). save() refuses what load() would.
  5. every array's data, streamed in chunks and dropped: finite (Adam's v also >= 0), CRC;
and only then builds the model and copies the arrays into it, one at a time.
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from .. import checks
from ..backend import get_backend, to_numpy
from ..config import Config, param_shapes
from ..errors import CheckpointError, ConfigError, MinisaeError
from ..model import SparseAutoencoder
from ..training.history import History
from . import state as S
from .atomic import atomic_write
from .npyheader import read_npy_header

FORMAT_VERSION = 1
PARAMS = ("encoder.W", "encoder.b", "decoder.W", "decoder.b", "coding.log_theta")
"""Every parameter name a checkpoint may hold (a model holds those its config implies)."""
_JSON_MEMBERS = ("format_version", "config", "optimizer", "history", "extra")
_JSON_BOUNDS = {"config": 32 << 10, "optimizer": 32 << 10, "extra": 8 << 20,
                "history": 16 << 20, "normalizer": 8 << 10}
"""The most memory each JSON member may cost once read and parsed, in bytes (_json_cost)."""
_PER_VALUE = 64            # bytes counted for each JSON value (see the module's doc)
# Largest member data allowed for each JSON member, in bytes: NumPy stores 4 per character,
# and a character costs at least 2 bytes of the bound.
_TEXT_LIMITS = {key: 2 * bound for key, bound in _JSON_BOUNDS.items()}
_MAX_DIRECTORY = 1 << 16   # bytes of zip directory: a checkpoint has a couple of dozen members
_MAX_DEPTH = 16            # nesting of extra's JSON
_CHUNK = 1 << 20
_DTYPES = ("float32", "float64")
_KNOWN = {"format_version", "config", "optimizer", "history", "extra", "units/silent",
          "units/threshold",
          "normalizer", "normalizer/mean", "normalizer/scale",
          *(f"optim/{k}" for scalars in S.SCALARS.values() for k in scalars),
          *(f"param/{p}" for p in PARAMS),
          *(f"optim/{key}" for kind in S.OPTIMIZERS for key in S.slot_keys(kind, PARAMS))}
WRITTEN_BY = "a .npz written by `minisae train` or minisae.save"


@dataclass
class Checkpoint:
    model: SparseAutoencoder
    optimizer: object | None
    history: History
    extra: dict


# ----------------------------------------------------------------------------- save

def _chunk_cost(part):
    """What one chunk of a JSON text read from a checkpoint costs once parsed, at most
    (bytes): twice its text (the chunk, then the whole it is joined into) and _PER_VALUE for
    each value it can hold."""
    return 2 * sys.getsizeof(part) + _PER_VALUE * sum(part.count(c) for c in "[{,:")


def _json_cost(text):
    """What load() counts for the JSON text: its chunks' costs, as it reads them."""
    step = _CHUNK // 4
    return _PER_VALUE + sum(_chunk_cost(text[i:i + step]) for i in range(0, len(text), step))


def _mib(n):
    """n bytes in MiB, or KiB below one MiB."""
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / (1 << 10):g} KiB"


def _text(key, value):
    """value as JSON in a 0-d string array, refused here if load() would refuse it."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot save {key}: {e}; keep it to JSON types (dict, list, "
                              f"str, numbers, None)") from None
    bound = _JSON_BOUNDS.get(key, 32 << 10)
    if _json_cost(text) > bound:
        raise CheckpointError(f"cannot save {key}: {len(text):,} characters of JSON would cost "
                              f"{_mib(_json_cost(text))} of memory to load, more than the "
                              f"{_mib(bound)} a checkpoint's {key} may; keep it smaller"
                              + (" (fewer epochs per run: continue in a new run from this "
                                 "model)" if key == "history" else ""))
    return np.array(text)


def save(path, model, optimizer=None, history=None, extra=None):
    """Write the checkpoint to `path` (a .npz) atomically; returns the path.

    Everything is checked first, with the checks load() runs: a state load() would refuse
    (NaN or negative moments, an optimizer of another model, an extra that is not plain
    JSON, ...) is refused with a CheckpointError, and whatever was at `path` stays.

    A rank of a sharded dictionary (minisae.distributed.Shards): every rank calls save, the
    ranks' units are put together (distributed.whole) and rank 0 writes the whole model, the
    checkpoint one process would write; it loads into any number of ranks."""
    path = checks.check_path(path, "path", CheckpointError)
    if os.path.isdir(path):
        raise CheckpointError(f"cannot save the checkpoint to {path}: it is a folder; give a file "
                              f"name, like {os.path.join(path, 'checkpoint.npz')}")
    if not isinstance(model, SparseAutoencoder):
        raise CheckpointError(f"save: model must be a SparseAutoencoder, got "
                              f"{type(model).__name__}")
    if history is not None and not isinstance(history, History):
        raise CheckpointError(f"history must be a History (what fit returned), got "
                              f"{type(history).__name__}")
    if model.units != (0, model.config.n_hidden):  # a rank of a sharded dictionary: every
        from ..distributed import whole          # rank's units to rank 0, which writes them
        try:
            model, optimizer = whole(model, optimizer)
        except ConfigError as e:
            raise CheckpointError(f"cannot save: {e}") from None
        if model is None:
            return path
    extra = {} if extra is None else extra
    _check_extra(extra, CheckpointError, "cannot save: extra")
    arrays = {"format_version": np.array(FORMAT_VERSION),
              "config": _text("config", model.config.as_dict()),
              "history": _text("history", (history or History()).as_dict()),
              "extra": _text("extra", extra)}
    for name, p in model.params.items():
        arrays[f"param/{name}"] = to_numpy(p)
        if not np.isfinite(arrays[f"param/{name}"]).all():  # load() would refuse the file
            raise CheckpointError(f"cannot save: parameter {name!r} holds NaN or inf (training "
                                  f"diverged); keep the last good checkpoint")
    arrays["units/silent"] = _silent(model.silent, model.config.n_hidden, CheckpointError,
                                     "cannot save: model.silent")
    if model.config.sparsity == "batchtopk":  # its inference threshold, estimated in training
        arrays["units/threshold"] = to_numpy(model.coding.threshold).reshape(1)
    if model.normalizer is not None:
        state = model.normalizer.state()
        if state["mean"].shape != (model.config.n_inputs,) or not (
                np.isfinite(state["mean"]).all() and np.isfinite(state["scale"]).all()
                and (state["scale"] > 0).all()):
            raise CheckpointError(f"cannot save: the model's normalizer is not one of "
                                  f"{model.config.n_inputs} finite means and positive scales")
        arrays["normalizer"] = _text("normalizer", {k: state[k] for k in ("mode", "center",
                                                                           "rows")})
        arrays["normalizer/mean"], arrays["normalizer/scale"] = state["mean"], state["scale"]
    if optimizer is not None:
        S.kind_of(optimizer)
        S.check_belongs(optimizer, model)
        settings = S.optimizer_settings(optimizer)
        state = S.optimizer_state(optimizer)
        kind = settings.pop("type")
        try:
            S.check_settings(kind, settings)
            S.check_state(kind, state, param_shapes(model.config), model.config.dtype)
        except CheckpointError as e:
            raise CheckpointError(f"cannot save: {e}") from None
        arrays["optimizer"] = _text("optimizer", {"type": kind, **settings})
        for key, value in state.items():
            arrays[f"optim/{key}"] = np.asarray(value)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path, fsync=True) as f:
            np.savez(f, **arrays)
    except MinisaeError:
        raise
    except OSError as e:
        raise CheckpointError(f"cannot write the checkpoint {path}: {e.strerror or e}; check that "
                              f"its folder is writable and has space") from None
    return path


def _silent(a, n_hidden, error, what):
    """Training samples since each unit last fired: (n_hidden,) integers >= 0."""
    a = np.asarray(a)
    if a.shape != (n_hidden,) or a.dtype.kind not in "iu" or (a < 0).any():
        raise error(f"{what} must be {n_hidden} counts >= 0 (samples since each unit last "
                    f"fired), got {a.shape} {a.dtype}")
    return a.astype(np.int64)


def _check_extra(value, error, what, depth=0):
    """extra: a JSON object of plain values (str keys; str, numbers, bools, None, lists and
    objects of them, nested at most _MAX_DEPTH deep). The same check for save and load."""
    if depth == 0 and not isinstance(value, dict):
        raise error(f"{what} must be a dict of JSON values, got {type(value).__name__}")
    if depth > _MAX_DEPTH:
        raise error(f"{what} is nested more than {_MAX_DEPTH} levels deep; flatten it")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise error(f"{what} has a key {k!r} that is not a string")
            _check_extra(v, error, what, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_extra(v, error, what, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise error(f"{what} holds {value!r}, which JSON cannot store")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise error(f"{what} holds a {type(value).__name__}; keep it to JSON types (dict, "
                    f"list, str, numbers, None)")


# ----------------------------------------------------------------------------- load

class _Members:
    """The members of one open checkpoint zip, each read only after its header is checked."""

    def __init__(self, zf, where):
        self.zf, self.where = zf, where
        self.infos = {}
        for info in zf.infolist():
            key = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else None
            if key not in _KNOWN:
                raise self.error(f"is not a minisae checkpoint ({WRITTEN_BY}): it holds "
                                 f"{info.filename!r}, which minisae never writes")
            if key in self.infos:
                raise self.error(f"holds {info.filename!r} twice; it is damaged")
            if info.flag_bits & 0x1:
                raise self.error(f"member {info.filename!r} is encrypted; minisae writes "
                                 f"plain checkpoints, use one it wrote")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self.error(f"member {info.filename!r} uses compression method "
                                 f"{info.compress_type}; only stored and deflated are read "
                                 f"(re-save it with numpy.savez)")
            self.infos[key] = info

    def error(self, problem):
        return CheckpointError(f"{self.where} {problem}")

    def __contains__(self, key):
        return key in self.infos

    def open(self, key, shape=None, dtypes=None):
        """The member's file object positioned at its data, and the (shape, dtype) its header
        declares; checks them against shape and dtypes (a tuple of dtypes) when given, and
        that the member's size is the header's size plus shape's data."""
        if key not in self.infos:
            raise self.error(f"has no {key!r}; it is damaged or not a minisae checkpoint "
                             f"({WRITTEN_BY})")
        info = self.infos[key]
        f = self.zf.open(info)
        try:
            got_shape, fortran, dtype, at = read_npy_header(
                f, info.file_size, lambda problem: self.error(f"member {key!r} {problem}"))
            if fortran and len(got_shape) > 1:
                raise self.error(f"member {key!r} is in Fortran order; minisae writes C order")
            if shape is not None and got_shape != shape:
                raise self.error(f"member {key!r} has shape {got_shape}, but its config implies "
                                 f"{shape}; the file is damaged or was edited")
            if dtypes is not None and dtype not in dtypes:
                want = " or ".join(sorted({d.name for d in dtypes}))
                raise self.error(f"member {key!r} holds {dtype}, expected {want}; the file is "
                                 f"damaged or was edited")
            if info.file_size != at + math.prod(got_shape) * dtype.itemsize:
                raise self.error(f"member {key!r} is {info.file_size:,} bytes, but its header "
                                 f"declares {got_shape} {dtype}; the file is damaged")
        except BaseException:
            f.close()
            raise
        return f, got_shape, dtype

    def _exact(self, f, n, key):
        data = f.read(n)
        if len(data) != n:
            raise self.error(f"member {key!r} ends early; the file is truncated")
        return data

    def text(self, key):
        """A 0-d string member (a JSON text), at most _TEXT_LIMITS[key] bytes, refused as soon
        as what it would cost once parsed passes _JSON_BOUNDS[key] (counted chunk by chunk)."""
        limit, bound = _TEXT_LIMITS.get(key, 64 << 10), _JSON_BOUNDS.get(key, 32 << 10)
        if self.infos.get(key) and self.infos[key].file_size > limit + 1024:
            raise self.error(f"member {key!r} is {self.infos[key].file_size:,} bytes, more than "
                             f"the {limit:,} minisae allows; the file is damaged or hostile")
        f, _, dtype = self.open(key, shape=())
        with f:
            if dtype.kind != "U" or dtype.shape or dtype.itemsize > limit:
                raise self.error(f"member {key!r} should be a string of at most {limit:,} bytes, "
                                 f"found {dtype}; the file is damaged or was edited")
            codec = "utf-32-be" if dtype.byteorder == ">" else "utf-32-le"
            parts, left, cost = [], dtype.itemsize, _PER_VALUE
            while left:
                n = min(_CHUNK, left)
                part = self._exact(f, n, key).decode(codec)
                cost += _chunk_cost(part)
                if cost > bound:
                    raise self.error(f"member {key!r} would cost more than the {_mib(bound)} of "
                                     f"memory minisae allows it once parsed ({dtype.itemsize // 4:,}"
                                     f" characters of JSON); the file is damaged or hostile")
                parts.append(part)
                left -= n
        return "".join(parts).rstrip("\0")

    def json(self, key):
        try:
            return json.loads(self.text(key))
        except (ValueError, RecursionError) as e:     # JSONDecodeError, UnicodeDecodeError
            raise self.error(f"member {key!r} is not readable JSON ({_one_line(e)}); the file "
                             f"is damaged") from None

    def number(self, key, kinds):
        """A 0-d numeric member whose dtype kind is in kinds ("iu": integer, "f": float)."""
        f, _, dtype = self.open(key, shape=())
        with f:
            if dtype.kind not in kinds or dtype.shape or dtype.fields or dtype.itemsize > 8:
                what = "a float" if kinds == "f" else "an integer"
                raise self.error(f"member {key!r} should be {what}, found {dtype}; the file is "
                                 f"damaged or was edited")
            return np.frombuffer(self._exact(f, dtype.itemsize, key), dtype)[0].item()

    def floats(self, key, shape, dtype, out=None):
        """Stream a float array member in chunks, checking its values as they come (every
        value finite; an optimizer's state with the very check save() runs); copy it into out
        (a NumPy array of shape) when given, else keep nothing."""
        f, _, stored = self.open(key, shape, (dtype.newbyteorder("<"), dtype.newbyteorder(">")))
        flat = None if out is None else out.reshape(-1)
        with f:
            done, total, step = 0, math.prod(shape), max(1, _CHUNK // dtype.itemsize)
            while done < total:
                n = min(step, total - done)
                x = np.frombuffer(self._exact(f, n * dtype.itemsize, key), stored)
                self._check_values(key, x)
                if flat is not None:
                    flat[done:done + n] = x
                done += n
            if f.read(1):
                raise self.error(f"member {key!r} has bytes after its data; the file is damaged")
        return out

    def counts(self, key, n):
        """An (n,) array member of integers >= 0 (at most 8 bytes each)."""
        f, _, dtype = self.open(key, (n,))
        with f:
            if dtype.kind not in "iu" or dtype.itemsize > 8:
                raise self.error(f"member {key!r} should hold integers, found {dtype}; the file "
                                 f"is damaged")
            a = np.frombuffer(self._exact(f, n * dtype.itemsize, key), dtype)
        if (a < 0).any():
            raise self.error(f"member {key!r} holds negative counts; the file is damaged")
        return a.astype(np.int64)

    def _check_values(self, key, x):
        if key.startswith("optim/"):
            try:
                S.check_values(key[len("optim/"):], x)
            except CheckpointError as e:
                raise self.error(f"has {_one_line(e)}") from None
        elif not np.isfinite(x).all():
            raise self.error(f"member {key!r} holds NaN or inf; the run had diverged or the file "
                             f"is damaged, use an earlier checkpoint")


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def _config(m):
    d = m.json("config")
    if not isinstance(d, dict):
        raise m.error(f"has a config that is a JSON {type(d).__name__}, not an object; the file is "
                      f"damaged or from an incompatible version")
    unknown = set(d) - set(Config.field_names())
    if unknown:
        raise m.error(f"has a config with unknown fields {sorted(unknown)}; it is damaged or from "
                      f"a newer minisae (upgrade minisae)")
    try:
        return Config(**d).validated()    # fields an older minisae did not write: defaults
    except (TypeError, ConfigError) as e:
        raise m.error(f"has a damaged config, or one from an incompatible version: "
                      f"{_one_line(e)}") from None


def _optimizer(m):
    """(type name, constructor keywords) from the optimizer JSON, every value checked."""
    d = m.json("optimizer")
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in S.OPTIMIZERS:
        raise m.error(f"has optimizer settings of unknown type {kind!r} (known: "
                      f"{', '.join(S.OPTIMIZERS)}); the file is damaged or from a newer minisae")
    settings = {k: v for k, v in d.items() if k != "type"}
    try:
        S.check_settings(kind, settings)
    except CheckpointError as e:
        raise m.error(f"has {_one_line(e)}; the file is damaged") from None
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    return kind, settings


def _history(m):
    try:
        return History.from_dict(m.json("history"))
    except ConfigError as e:
        raise m.error(f"has a damaged history ({_one_line(e)})") from None


def _normalizer(m, config):
    """The model's normaliser: its JSON (mode, center, rows) and its two float64 arrays."""
    from ..normalize import Normalizer
    d = m.json("normalizer")
    if not isinstance(d, dict):
        raise m.error("has a normalizer that is not a JSON object; the file is damaged")
    n, f64 = config.n_inputs, np.dtype(np.float64)
    state = dict(d, mean=m.floats("normalizer/mean", (n,), f64, out=np.empty(n)),
                 scale=m.floats("normalizer/scale", (n,), f64, out=np.empty(n)))
    try:
        return Normalizer.from_state(state)
    except MinisaeError as e:
        raise m.error(f"has a damaged normalizer ({_one_line(e)})") from None


def _extra(m):
    if "extra" not in m:
        return {}
    d = m.json("extra")
    _check_extra(d, m.error, "has extra settings that")
    return d


def _checkpoint_path(path):
    """The checkpoint file: path, or the checkpoint.npz in the run folder path. Nothing there
    and a place the OS will not let minisae look at (its permissions, or a folder's above
    it) are each a CheckpointError naming it."""
    path = checks.check_path(path, "path (a checkpoint file or a run's folder)", CheckpointError)
    if _stat(path) is not None and stat.S_ISDIR(_stat(path).st_mode):
        inside = os.path.join(path, "checkpoint.npz")
        if _stat(inside) is None:
            raise CheckpointError(f"no checkpoint.npz in the folder {path}; give a run's folder "
                                  f"(`minisae train --out`) or a checkpoint file")
        return inside
    if _stat(path) is None:
        raise CheckpointError(f"no checkpoint at {path}; check the path (a run writes "
                              f"<out>/checkpoint.npz)")
    return path


def _stat(path):
    """os.stat(path), None where nothing is there; a CheckpointError naming path where the OS
    refuses to say."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be looked at ({e.strerror or e}); check its "
                              f"permissions and those of the folders above it") from None


def _check_container(f, where):
    """Refuse what is not a zip, and a zip directory larger than a checkpoint's, before
    zipfile reads that directory into memory."""
    head = f.read(6)
    if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
        kind = ("a single NumPy array (.npy)" if head == b"\x93NUMPY" else
                "empty" if not head else "not a zip archive")
        raise CheckpointError(f"{where} is not a minisae checkpoint ({WRITTEN_BY}): it is {kind}")
    end = getattr(zipfile, "_EndRecData", lambda f: None)(f)   # zipfile's own reader of it
    if end and (end[4] > len(_KNOWN) or end[5] > _MAX_DIRECTORY):
        raise CheckpointError(f"{where} is not a minisae checkpoint: its zip directory declares "
                              f"{end[4]:,} members in {end[5]:,} bytes")
    f.seek(0)


# Everything a damaged file can make zipfile, zlib, NumPy's header parser or a decoder raise.
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, TypeError, KeyError,
           IndexError, struct.error, NotImplementedError, RecursionError, OverflowError)


def load(path, backend=None):
    """Read a checkpoint saved by save(), or the checkpoint.npz in a run's folder. backend:
    where to put the loaded model ("numpy", "cupy", "torch", "auto"; a checkpoint holds NumPy
    arrays and no backend); default numpy. Raises CheckpointError for a missing, corrupt,
    hostile or incompatible file."""
    path = _checkpoint_path(path)
    backend = get_backend("numpy" if backend is None else backend)  # before the file is read
    where = f"checkpoint {path}"
    f = checks.open_regular(path, "checkpoint", CheckpointError)
    try:
        with f:
            _check_container(f, where)
            with zipfile.ZipFile(f) as zf:
                return _load(_Members(zf, where), backend)
    except MinisaeError:
        raise
    except MemoryError:
        raise CheckpointError(f"not enough memory to load {where}; free some, or load it on a "
                              f"machine with more") from None
    except _DAMAGE as e:
        raise CheckpointError(f"{where} is damaged or not a minisae checkpoint ({WRITTEN_BY}): "
                              f"{_one_line(e)}; it may be truncated, use another copy") from None


def _load(m, backend):
    if "format_version" not in m or "config" not in m:
        raise m.error(f"has no format_version/config: not a minisae checkpoint ({WRITTEN_BY})")
    version = m.number("format_version", "iu")
    if version != FORMAT_VERSION:
        raise m.error(f"has format version {version}; this minisae reads version "
                      f"{FORMAT_VERSION} (save it again with a matching minisae)")
    # 1. what costs nothing: the config and the optimizer's settings, and from them every
    #    array the file must hold, with its shape
    config = _config(m)
    dtype = np.dtype(config.dtype)
    shapes = param_shapes(config)
    arrays = {f"param/{name}": shape for name, shape in shapes.items()}
    kind, settings = _optimizer(m) if "optimizer" in m else (None, None)
    if kind is not None:
        arrays.update({f"optim/{key}": shapes[key.split(".", 1)[1]]
                       for key in S.slot_keys(kind, shapes)})
    checks.check_fits(sum(math.prod(shape) for shape in arrays.values()) * 2 * dtype.itemsize,
                      checks.physical_memory(), f"the model and optimizer state of {m.where} "
                      f"({config.n_inputs} inputs, {config.n_hidden:,} hidden units)",
                      "load it on a machine with more memory")
    if "normalizer" in m:
        arrays.update({"normalizer/mean": (config.n_inputs,),
                       "normalizer/scale": (config.n_inputs,)})
    if config.sparsity == "batchtopk" and "units/threshold" in m:
        arrays["units/threshold"] = (1,)
    expected = set(arrays) | {"format_version", "config", "history", "extra", "optimizer",
                              "units/silent", "normalizer"}
    expected |= {f"optim/{k}" for k in S.SCALARS[kind]} if kind else set()
    for key in sorted(set(m.infos) - expected):
        raise m.error(f"holds {key!r}, which does not belong with "
                      f"{'a ' + kind if kind else 'no'} optimizer; the file is damaged")
    # 2. every header before any data, then the JSON and the state's numbers
    for key, shape in arrays.items():
        want = np.dtype(np.float64) if key.startswith("normalizer/") else dtype
        m.open(key, shape, (want.newbyteorder("<"), want.newbyteorder(">")))[0].close()
    history, extra = _history(m), _extra(m)
    normalizer = _normalizer(m, config) if "normalizer" in m else None
    silent = m.counts("units/silent", config.n_hidden) if "units/silent" in m else None
    scalars = {}
    for key, what in (S.SCALARS[kind].items() if kind else ()):
        try:
            scalars[key] = S.check_scalar(key, m.number(f"optim/{key}", "iuf"), what)
        except CheckpointError as e:
            raise m.error(f"has {_one_line(e)}; the file is damaged") from None
    # 3. every array's data, checked and dropped: a bad file is refused before memory is spent
    for key, shape in arrays.items():
        if not key.startswith("normalizer/") and key != "units/threshold":
            m.floats(key, shape, dtype)
    # 4. only now the model and optimizer, filled one array at a time
    model = SparseAutoencoder(**config.as_dict(), backend=backend)
    for name, p in model.params.items():
        host = m.floats(f"param/{name}", tuple(p.shape), dtype, out=np.empty(p.shape, dtype))
        p[...] = model.backend.asarray(host)
    if silent is not None:
        model.silent[...] = silent
    if "units/threshold" in arrays:
        threshold = m.floats("units/threshold", (1,), dtype, out=np.empty(1, dtype))
        model.coding.threshold[...] = model.backend.asarray(threshold.reshape(()))
    model.normalizer = normalizer
    optimizer = None
    if kind is not None:
        try:
            optimizer = S.OPTIMIZERS[kind](model.params, model.grads, **settings)
        except ConfigError as e:
            raise m.error(f"has {kind} settings out of range: {_one_line(e)}") from None
        state = dict(scalars)
        for key, shape in arrays.items():
            if key.startswith("optim/"):
                state[key[len("optim/"):]] = m.floats(key, shape, dtype, out=np.empty(shape, dtype))
        S.restore(optimizer, state)
    return Checkpoint(model, optimizer, history, extra)
