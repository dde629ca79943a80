"""Which inputs make a feature fire: `minisae inspect RUN`, and the library function under it.

For each chosen feature (a hidden unit j; or n_features of them drawn at random from a seed):

    top rows     the rows of the data on which unit j is most active: row index, h_j, and the
                 row's label where a labels file gives one (one string per row, e.g. the token
                 each activation came from); only rows where the unit fires count
    density      the share of the rows on which unit j fires (0: dead on these data)
    neighbours   the features whose decoder directions W2[i, :] are nearest W2[j, :] by cosine
                 similarity: features that write the same thing into the reconstruction

as SAELens, Neuronpedia and Anthropic's feature browsers show them. "Fires" is the rule of the
rest of minisae (losses.active): h > 0 for ReLU codes, h != 0 for linear TopK codes, h > 0.5
for sigmoid ones.

    report = inspect_features(model, x, features=[3, 17], top=10, labels="tokens.txt")
    print(format_report(report));  json.dumps(report.as_dict())

It streams: the data (an array, or a minisae.data.ArrayFiles source of rows larger than
memory) are encoded batch_size rows at a time, and each chosen feature keeps a running top
list (numpy.argpartition over the list and the new batch: a partial selection, never a sort of
all the rows); memory is one batch of codes plus the lists, whatever the number of rows. A
labels file is read twice, a line at a time: once to count its lines (which must equal the
rows), once for the lines of the rows shown. Ties between equal activations go to the
earlier row, so the answer does not depend on the batch size.

unit_activity(model, data) is the same pass without the lists: each unit's firing frequency
and mean activation (the figures of a run draw them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from .. import checks, losses
from ..backend import namespace, to_numpy
from ..errors import CheckpointError, ConfigError, DatasetError, InputError, MinisaeError
from .argtypes import count as _count
from .argtypes import positive_int as _positive

__all__ = ["Activity", "Feature", "Inspection", "Neighbour", "TopRow", "format_report",
           "inspect_features", "unit_activity", "add_parser", "run"]

BATCH_BYTES = 1 << 26
"""Default batch: as many rows as fit in 64 MiB of inputs and codes (float64)."""
MAX_LABEL = 200
"""Characters of a label kept in a report (a longer one is cut, with "...")."""


# ----------------------------------------------------------------------------- records

@dataclasses.dataclass(frozen=True)
class TopRow:
    """One of a feature's top rows: its index in the data, h_j there, its label (or None)."""

    row: int
    value: float
    label: str | None = None


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """A feature whose decoder direction is near another's: its index and the cosine."""

    feature: int
    cosine: float


@dataclasses.dataclass(frozen=True)
class Feature:
    """What inspect_features found for one feature (hidden unit)."""

    index: int
    density: float              # share of the rows on which it fires
    n_active: int               # rows on which it fires
    top: tuple                  # TopRow, most active first (at most `top`; none if dead)
    neighbours: tuple           # Neighbour, nearest first

    @property
    def dead(self):
        return self.n_active == 0


@dataclasses.dataclass(frozen=True)
class Inspection:
    """inspect_features' answer: the features, and what they were measured on."""

    features: tuple             # Feature, in the order asked for
    n_rows: int                 # rows of the data
    n_hidden: int
    fires: str                  # the rule: "h > 0", "h != 0" or "h > 0.5"
    dead_units: int             # units (of all n_hidden) that fire on no row
    data: str                   # what the rows are, for people
    labels: str | None          # where the labels came from, or None

    def as_dict(self):
        """A JSON-able dict (json.dumps(report.as_dict()) is the --json form)."""
        return {"n_rows": self.n_rows, "n_hidden": self.n_hidden, "fires": self.fires,
                "dead_units": self.dead_units, "data": self.data, "labels": self.labels,
                "features": [dict(dataclasses.asdict(f), dead=f.dead) for f in self.features]}


@dataclasses.dataclass(frozen=True)
class Activity:
    """unit_activity's answer: per unit (n_hidden,) float64 NumPy arrays."""

    n_rows: int
    frequency: np.ndarray       # share of the rows on which each unit fires
    mean_activation: np.ndarray  # rho_hat: each unit's mean activation over the rows


# ----------------------------------------------------------------------------- reading rows

def _is_source(x):
    return all(hasattr(x, a) for a in ("n_rows", "n_features", "read", "check_rows"))


class _Rows:
    """The data as a row source: an ArrayFiles (or any object with its interface), or an
    in-memory array; `batch(start, stop)` gives rows [start, stop) checked for NaN/inf (and
    [0, 1] where the model needs it), each error naming the row."""

    def __init__(self, data, model):
        n_inputs = model.config.n_inputs
        self.unit_range = model.needs_unit_range
        if _is_source(data):
            self.source, self.n_rows = data, int(data.n_rows)
            if data.n_features != n_inputs:
                raise InputError(f"data: {self.describe()} has rows of {data.n_features} "
                                 f"features, but the model takes n_inputs={n_inputs}; give the "
                                 f"data it was trained on")
            if self.n_rows == 0:
                raise InputError(f"data: {self.describe()} holds no rows")
            return
        self.source = None
        x = checks.as_numeric(data, "data")
        checks.check_matrix(x, n_inputs, "data")
        self.x, self.n_rows = x, int(x.shape[0])

    def batch(self, start, stop):
        if self.source is not None:
            x = self.source.read(start, stop)
            self.source.check_rows(x, start, unit_range=self.unit_range)
            return x
        x = self.x[start:stop]
        if isinstance(x, np.ndarray):  # (another library's array: the model's own check)
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(x)
                if self.unit_range:
                    bad |= (x < 0) | (x > 1)
            if bad.any():
                r, c = (int(i) for i in np.argwhere(bad)[0])
                v = float(x[r, c])
                what = "NaN or inf" if not math.isfinite(v) else f"{v:.6g}, outside [0, 1]"
                raise InputError(f"data row {start + r:,} holds {what} in column {c}; clean the "
                                 f"data first")
        return x

    def describe(self):
        if self.source is not None:
            describe = getattr(self.source, "describe", None)
            return describe() if callable(describe) else f"{self.n_rows:,} rows"
        return f"an array of {self.n_rows:,} rows in memory"


def _batch_size(batch_size, model):
    if batch_size is None:
        c = model.config
        return max(1, BATCH_BYTES // (8 * (c.n_inputs + c.n_hidden)))
    return checks.check_int(batch_size, "batch_size", 1)


def _check_model(model):
    from ..model import SparseAutoencoder
    if not isinstance(model, SparseAutoencoder):
        raise ConfigError(f"model must be a minisae SparseAutoencoder (checkpoint.load(...).model),"
                          f" got {type(model).__name__}")


# ----------------------------------------------------------------------------- the pass

def _merge_top(values, rows, top):
    """The `top` largest of each column of values (m, F), with their rows (m, F): a partial
    selection (argpartition), ties at the cut going to the smaller row (so the answer does not
    depend on how the rows were batched). Unordered; -inf marks "does not fire"."""
    m = values.shape[0]
    if m <= top:
        return values, rows
    keep = np.argpartition(values, m - top, axis=0)[m - top:]
    kept_v = np.take_along_axis(values, keep, axis=0)
    kept_r = np.take_along_axis(rows, keep, axis=0)
    cut = kept_v.min(axis=0)
    # a column whose cut value is shared by a row left out: pick among the ties by row
    tied = np.isfinite(cut) & ((values == cut).sum(axis=0) > (kept_v == cut).sum(axis=0))
    for j in np.flatnonzero(tied):
        order = np.lexsort((rows[:, j], -values[:, j]))[:top]  # the tied columns only
        kept_v[:, j], kept_r[:, j] = values[order, j], rows[order, j]
    return kept_v, kept_r


def _scan(model, rows, batch_size, features=(), top=0):
    """One pass over the rows: per unit the rows it fires on and its summed activation, and
    for the chosen features their running top lists (values, rows), -inf where none."""
    n_hidden, c = model.config.n_hidden, model.config
    counts, sums = np.zeros(n_hidden, np.int64), np.zeros(n_hidden, np.float64)
    features = np.asarray(features, dtype=np.int64)
    best_v = np.full((0, len(features)), -np.inf)
    best_r = np.zeros((0, len(features)), np.int64)
    for start in range(0, rows.n_rows, batch_size):
        stop = min(start + batch_size, rows.n_rows)
        h = model.encode(rows.batch(start, stop))
        xp = namespace(h)
        fires = losses.active(c, h)
        counts += to_numpy(xp.sum(xp.astype(fires, xp.int64), axis=0)).astype(np.int64)
        sums += to_numpy(xp.sum(h, axis=0)).astype(np.float64)
        if len(features) and top:
            hj = to_numpy(h)[:, features].astype(np.float64)
            hj[~to_numpy(fires)[:, features]] = -np.inf  # a row where it is silent: never shown
            r = np.broadcast_to(np.arange(start, stop)[:, None], hj.shape)
            best_v, best_r = _merge_top(np.concatenate([best_v, hj]),
                                        np.concatenate([best_r, r]), top)
    return counts, sums, best_v, best_r


def unit_activity(model, data, batch_size=None):
    """Each unit's firing frequency (share of the rows where losses.active) and mean
    activation rho_hat over data (an array (n, n_inputs) or an ArrayFiles source), in one
    streaming pass of batch_size rows (default: 64 MiB of rows and codes)."""
    _check_model(model)
    rows = _Rows(data, model)
    counts, sums, _, _ = _scan(model, rows, _batch_size(batch_size, model))
    return Activity(rows.n_rows, counts / rows.n_rows, sums / rows.n_rows)


def _choose(features, n_features, seed, n_hidden):
    """The features to inspect: those given (in their order, repeats dropped), or n_features
    drawn without replacement from a generator seeded with seed (sorted)."""
    if features is None:
        n = checks.check_int(n_features, "n_features", 1)
        seed = checks.check_int(seed, "seed", 0)
        rng = np.random.default_rng(seed)
        return sorted(int(j) for j in rng.choice(n_hidden, size=min(n, n_hidden), replace=False))
    if isinstance(features, (str, bytes)) or not isinstance(features, (Sequence, np.ndarray)) \
            or np.ndim(features) != 1 or len(features) == 0:
        raise ConfigError(f"features must be a non-empty list of unit numbers such as [3, 17], "
                          f"got {checks.shown(features)}")
    for j in features:
        if not checks.is_int(j) or not 0 <= j < n_hidden:
            raise ConfigError(f"features must be unit numbers from 0 to {n_hidden - 1} (the "
                              f"model has {n_hidden} hidden units), got {checks.shown(j)}")
    return list(dict.fromkeys(int(j) for j in features))


def _neighbours(model, features, n):
    """For each feature j, the n other features whose decoder rows W2[i, :] have the largest
    cosine with W2[j, :], ties to the lower index (rows of norm 0 have no direction: left
    out). The decoder is read in its own dtype (no float64 copy of a large one)."""
    W2 = to_numpy(model.decoder.W)                              # (n_hidden, n_inputs)
    norms = np.linalg.norm(W2, axis=1).astype(np.float64)
    dots = (W2 @ W2[features].T).astype(np.float64)            # (n_hidden, len(features))
    index = np.arange(len(norms))
    found = []
    for i, j in enumerate(features):
        if norms[j] == 0 or n == 0:
            found.append(())
            continue
        cos = np.clip(dots[:, i] / np.where(norms > 0, norms, 1.0) / norms[j], -1.0, 1.0)
        cos[(norms == 0) | (index == j)] = -np.inf
        near = np.lexsort((index, -cos))[:min(n, int(np.isfinite(cos).sum()))]
        found.append(tuple(Neighbour(int(k), float(cos[k])) for k in near))
    return found


# ----------------------------------------------------------------------------- labels

def _short(label):
    return label if len(label) <= MAX_LABEL else label[:MAX_LABEL] + "..."


def _line(raw):
    """A labels file's line as text: a trailing CR dropped, invalid UTF-8 shown escaped."""
    return raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "backslashreplace")


class _Labels:
    """The labels of the rows, checked before the pass (a file's lines counted, a line at a
    time); `of(rows)` reads those of the rows shown."""

    def __init__(self, labels, n_rows):
        self.labels, self.path, self.where = labels, None, None
        if labels is None:
            return
        if isinstance(labels, (str, os.PathLike)):
            self.path = checks.check_path(labels, "labels", InputError)
            with checks.open_regular(self.path, "labels file", InputError) as f:
                n_lines, last = 0, b"\n"
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    n_lines, last = n_lines + chunk.count(b"\n"), chunk[-1:]
            n_lines += last != b"\n"  # a last line without its newline
            if n_lines != n_rows:
                raise InputError(f"labels file {self.path} has {n_lines:,} "
                                 f"line{'s' if n_lines != 1 else ''}, but the data "
                                 f"have {n_rows:,} rows; give one label per row, in the rows' "
                                 f"order")
            self.where = str(self.path)
            return
        if isinstance(labels, (bytes, bytearray)) or \
                not isinstance(labels, (Sequence, np.ndarray)) or np.ndim(labels) != 1:
            raise InputError(f"labels must be a text file's path (one label per row) or a list "
                             f"with one label per row, got {checks.shown(labels)}")
        if len(labels) != n_rows:
            raise InputError(f"labels has {len(labels):,} entries, but the data have "
                             f"{n_rows:,} rows; give one label per row")
        self.where = f"a list of {n_rows:,} labels"

    def of(self, wanted):
        """{row: label} for the rows wanted ({} without labels)."""
        if self.labels is None:
            return {}
        if self.path is None:
            return {i: _short(str(self.labels[i])) for i in wanted}
        found = {}
        with checks.open_regular(self.path, "labels file", InputError) as f:
            for i, raw in enumerate(f):
                if i in wanted:
                    found[i] = _short(_line(raw))
        return found


# ----------------------------------------------------------------------------- the door

def inspect_features(model, data, features=None, n_features=8, top=10, labels=None, seed=0,
                     batch_size=None, neighbours=5):
    """For each feature (unit numbers; None: n_features drawn with seed), the `top` rows of
    data on which it is most active, its density over data, and its `neighbours` nearest
    features by decoder direction; an Inspection (see the module's doc).

    data: an array (n, n_inputs) or a row source (minisae.data.ArrayFiles), read batch_size
    rows at a time. labels: a text file with one label per row, or a list of n labels."""
    _check_model(model)
    top = checks.check_int(top, "top", 1)
    neighbours = checks.check_int(neighbours, "neighbours", 0)
    n_hidden = model.config.n_hidden
    chosen = _choose(features, n_features, seed, n_hidden)
    batch_size = _batch_size(batch_size, model)
    rows = _Rows(data, model)
    named = _Labels(labels, rows.n_rows)  # a wrong count is refused before the pass
    counts, _, best_v, best_r = _scan(model, rows, batch_size, chosen, top)
    order = np.lexsort((best_r, -best_v), axis=0)  # per column: most active, then first row
    best_v = np.take_along_axis(best_v, order, axis=0)
    best_r = np.take_along_axis(best_r, order, axis=0)
    wanted = {int(r) for r, v in zip(best_r.ravel(), best_v.ravel()) if np.isfinite(v)}
    found = named.of(wanted)
    near = _neighbours(model, chosen, neighbours)
    report = []
    for i, j in enumerate(chosen):
        tops = tuple(TopRow(int(r), float(v), found.get(int(r)))
                     for v, r in zip(best_v[:, i], best_r[:, i]) if np.isfinite(v))
        report.append(Feature(j, float(counts[j] / rows.n_rows), int(counts[j]), tops, near[i]))
    fires = {"linear": "h != 0", "sigmoid": "h > 0.5"}.get(model.config.hidden_activation,
                                                          "h > 0")
    return Inspection(tuple(report), rows.n_rows, n_hidden, fires, int((counts == 0).sum()),
                      rows.describe(), named.where)


def format_report(report):
    """The Inspection as text for people: one block per feature."""
    if not isinstance(report, Inspection):
        raise InputError(f"report must be what inspect_features returns, got "
                         f"{type(report).__name__}")
    lines = [f"data: {report.data}" + (f"; labels from {report.labels}" if report.labels else ""),
             f"a feature fires where {report.fires}; {report.dead_units:,} of "
             f"{report.n_hidden:,} features fire on no row"]
    for f in report.features:
        lines += ["", f"feature {f.index}: density {f.density:.4g} (fires on {f.n_active:,} of "
                      f"{report.n_rows:,} rows)" + (": dead on these rows" if f.dead else "")]
        if f.top:
            width = max(len(f"{t.row:,}") for t in f.top)
            lines.append(f"  {'row':>{width}}  {'activation':>10}" +
                         ("  label" if report.labels else ""))
            for t in f.top:
                label = "" if t.label is None else "  " + json.dumps(t.label, ensure_ascii=False)
                lines.append(f"  {t.row:>{width},}  {t.value:>10.4g}{label}")
        if f.neighbours:
            lines.append("  nearest by decoder direction (cosine): " + ", ".join(
                f"{n.feature} ({n.cosine:.3f})" for n in f.neighbours))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command

def _features(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected unit numbers separated by commas, e.g. "
                                         f"3,17,250; got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected unit numbers (0 or more) separated by "
                                         f"commas, e.g. 3,17,250; got {text!r}")
    return values


def add_parser(subparsers):
    """Register `minisae inspect` on an argparse subparsers object."""
    from .. import backend as B
    p = subparsers.add_parser(
        "inspect", help="the rows that make chosen features fire, their density and nearest "
                        "features",
        description="For chosen features (--features), or --n-features drawn at random with "
                    "--seed: the rows of the data on which each is most active (row, "
                    "activation, and the row's label from --labels), its density (the share of "
                    "rows it fires on), and the features whose decoder directions are nearest "
                    "(cosine). The data default to the run's own: its --data file, or the "
                    "training set of its dataset (MNIST's digits as labels). Streams: data "
                    "larger than memory are read in batches.")
    p.add_argument("run", help="a run folder, or the checkpoint.npz `minisae train` wrote")
    p.add_argument("--data", default=None,
                   help="rows to inspect: a .npy, an .npz (see --data-key) or a folder of .npy "
                        "shards (default: the run's data)")
    p.add_argument("--data-key", default=None,
                   help="the array of an .npz to read (default: the run's, else its only one)")
    p.add_argument("--labels", default=None,
                   help="a text file with one label per row of the data (e.g. the token each "
                        "activation came from; default: none, an MNIST run's digits)")
    p.add_argument("--features", type=_features, default=None,
                   help="unit numbers separated by commas, e.g. 3,17,250 (default: random)")
    p.add_argument("--n-features", type=_positive, default=None,
                   help="how many random features to show (default 8)")
    p.add_argument("--seed", type=_count, default=None,
                   help="the seed the random features are drawn with (default 0)")
    p.add_argument("--top", type=_positive, default=10, help="rows shown per feature (default 10)")
    p.add_argument("--neighbours", type=_count, default=5,
                   help="nearest features shown per feature (default 5)")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="rows encoded at a time (default: 64 MiB of rows and codes)")
    p.add_argument("--json", action="store_true", help="print JSON for tools instead of text")
    p.add_argument("--data-dir", default=None,
                   help="folder with the IDX files of an MNIST run (default: $MINISAE_DATA, "
                        "then the cache, then a download)")
    p.add_argument("--no-download", action="store_true",
                   help="never try the internet for an MNIST run's data")
    p.add_argument("--backend", default=None, choices=B.choices(),
                   help="array backend to encode on (default: $MINISAE_BACKEND, else auto)")
    p.set_defaults(func=run)
    return p


FLAGS = {"features": "--features", "n_features": "--n-features", "top": "--top",
         "labels": "--labels", "seed": "--seed", "batch_size": "--batch-size",
         "neighbours": "--neighbours", "data": "--data"}


def _flag_names(message):
    """A library message with its argument names written as this command's flags."""
    return re.sub(r"(?<![-\w])(" + "|".join(FLAGS) + r")\b(?=\s+(?:must|has)\b)",
                  lambda m: FLAGS[m.group(1)], message)


def run(args):
    """`minisae inspect` on parsed flags: print the report (text, or JSON with --json)."""
    from .. import backend as B
    from ..files import checkpoint
    if args.features is not None:
        given = [f for f, v in (("--n-features", args.n_features), ("--seed", args.seed))
                 if v is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} choose random features; with --features, "
                              f"leave {'them' if len(given) > 1 else 'it'} out")
    ck = checkpoint.load(args.run, backend=B.get_backend(args.backend))
    data, labels, close, names = _run_data(ck, args)
    try:
        report = inspect_features(
            ck.model, data, features=args.features,
            n_features=8 if args.n_features is None else args.n_features, top=args.top,
            labels=labels, seed=0 if args.seed is None else args.seed,
            batch_size=args.batch_size, neighbours=args.neighbours)
    except MinisaeError as e:
        raise type(e)(_flag_names(str(e))) from None
    finally:
        close()
    report = dataclasses.replace(report, **names)
    print(json.dumps(report.as_dict(), indent=1) if args.json else format_report(report))
    return 0


def _run_data(ck, args):
    """(data, labels, close, names) for the run: --data, else the run's --data file, else its
    dataset's training set (with its digits as labels where --labels is not given); names:
    how the report calls the data and labels, where an array's own description says less."""
    from ..data import ArrayFiles
    settings = ck.extra.get("settings")
    where = f"checkpoint {args.run}"
    if args.data is not None:
        source = ArrayFiles(args.data, args.data_key)
        return source, args.labels, source.close, {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where} records no data it was trained on (it was saved from "
                          f"Python, not by `minisae train`); give --data FILE")
    dataset = settings.get("dataset", "mnist")
    if dataset == "files" or settings.get("data"):
        path, key = settings.get("data"), args.data_key or settings.get("data_key")
        if not isinstance(path, str) or not (key is None or isinstance(key, str)):
            raise CheckpointError(f"{where}: its settings' data {path!r} is not a path; the "
                                  f"file is damaged; give --data FILE")
        try:
            source = ArrayFiles(path, key)
        except DatasetError as e:
            raise DatasetError(f"the run's data {path} cannot be opened now ({e}); give "
                               f"--data FILE") from None
        return source, args.labels, source.close, {}
    if dataset == "patches":
        x = _patches(settings, where)
        return x, args.labels, lambda: None, {"data": f"the run's {len(x):,} training patches "
                                                      f"(made again from its seed)"}
    from ..data import IDX_DATASETS, datasets
    if dataset not in IDX_DATASETS:
        raise CheckpointError(f"{where}: its settings name the dataset {dataset!r}, which this "
                              f"minisae does not know; give --data FILE")
    ds = datasets.load(dataset, args.data_dir, download=not args.no_download, progress=False)
    names = {"data": f"{dataset}'s training set, {len(ds.x_train):,} images ({ds.source})"}
    if args.labels is not None:
        return ds.x_train, args.labels, lambda: None, names
    names["labels"] = f"{dataset}'s classes" + (" (the digits)" if dataset == "mnist" else "")
    return ds.x_train, [str(int(y)) for y in ds.y_train], lambda: None, names


def _patches(settings, where):
    from ..data.patches import natural_patches
    n, size, seed = (settings.get(k) for k in ("n_patches", "patch_size", "seed"))
    if not all(checks.is_int(v) and v >= 0 for v in (n, size, seed)):
        raise CheckpointError(f"{where}: its settings do not say which patches it was trained "
                              f"on; give --data FILE")
    return natural_patches(n, size, seed=seed, dtype=settings.get("dtype", "float32"))
