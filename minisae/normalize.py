"""Normalisation of data not in [0, 1] (activations), computed in one streaming pass.

A model holds its normaliser (`model.normalizer`) and applies it wherever data come in
(every method that takes x takes the data in their own units), so encode and reconstruct
of a trained model need nothing more than the checkpoint.

    norm = Normalizer.fit(source)                  # one pass over a row source (or an array)
    x = norm.apply(x)                              # (x - mean) * scale, in x's dtype
    x_back = norm.undo(y)                          # y / scale + mean: back to the data's units
    state = norm.state()                           # {"mode", "center", "rows", "mean", "scale"}
    norm = Normalizer.from_state(state)            # checked

Two modes:
- "norm" (the default): centred (the mean row subtracted) and scaled by one number, so that
  the mean squared norm of a row is the input width: E ||(x - mean) * scale||^2 = n_features.
  This is what SAE trainers do for language-model activations (Anthropic's "scale so that
  E ||x||^2 = n", SAELens' normalize_activations), and the one argued for here: one scale
  keeps the geometry of the space, so the directions a dictionary learns are directions of
  the model's activations (a decoder column maps back with one number), the L2 reconstruction
  error weighs every direction as the model's own inner products do, and sparsity and
  learning-rate settings carry over between layers and models of other widths and scales.
  Per-feature scaling instead stretches each axis by 1/std: a feature direction d becomes
  D^-1 d, so what the SAE finds are not the model's directions; near-constant dimensions are
  blown up to unit variance (noise amplified to the size of signal), and the few "massive
  activation" dimensions of transformers are shrunk to the size of the rest.
- "standard": per-feature standardisation, (x - mean_j) / std_j; for tabular data whose
  columns are in unrelated units (a feature constant on the data keeps scale 1).
center=False (either mode) keeps the origin: scale only (the mean is recorded as zeros).

The pass: each chunk of rows is taken to float64 and reduced to (count, mean, sum of squared
deviations from its mean) per feature, and chunks are combined with Chan, Golub and LeVeque's
pairwise update (Welford's, a chunk at a time): no sum of squares about zero, so no
cancellation when the mean is large next to the spread. The scale is computed in float64;
apply and undo work in the dtype of the array they are given (the mean and scale cast to it).

The state is plain: mode (str), center (bool), rows (int), mean and scale (float64 arrays of
shape (n_features,); in "norm" mode every scale is the same number, `norm.scale_value`).
"""
from __future__ import annotations

import math

import numpy as np

from . import checks
from .backend import device_of, namespace, to_numpy
from .comm import Alone
from .errors import ConfigError, InputError

__all__ = ["MODES", "Normalizer"]

MODES = ("norm", "standard")
"""The normalisations: one scale for the whole row, or one per feature."""
PASS_BYTES = 1 << 23
"""Bytes of float64 rows a pass converts at a time."""


class Normalizer:
    """x -> (x - mean) * scale, its inverse, and its state (see the module's doc)."""

    def __init__(self, mean, scale, mode="norm", center=True, rows=0):
        self.mode = checks.check_choice(mode, "mode", MODES)
        self.center = checks.check_bool(center, "center")
        self.rows = checks.check_int(rows, "rows", 0)
        mean = np.array(to_numpy(checks.as_numeric(mean, "mean")), dtype=np.float64, ndmin=1)
        scale = np.array(to_numpy(checks.as_numeric(scale, "scale")), dtype=np.float64, ndmin=1)
        if mean.ndim != 1 or scale.shape != mean.shape or len(mean) == 0:
            raise ConfigError(f"normaliser mean and scale must be two 1-D arrays of one length, "
                              f"got shapes {mean.shape} and {scale.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ConfigError("normaliser mean must be finite and its scale finite and > 0")
        if self.mode == "norm" and not (scale == scale[0]).all():
            raise ConfigError("a 'norm' normaliser has one scale for every feature")
        if not self.center and (mean != 0).any():
            raise ConfigError("a normaliser with center=False has a zero mean")
        self.mean, self.scale = mean, scale
        self._cast = {}

    @property
    def n_features(self):
        return len(self.mean)

    @property
    def scale_value(self):
        """The one scale of a "norm" normaliser (None in "standard" mode)."""
        return float(self.scale[0]) if self.mode == "norm" else None

    # ------------------------------------------------------------------------- the pass

    @classmethod
    def fit(cls, source, mode="norm", center=True, chunk_rows=None, unit_range=False,
            comm=None):
        """Statistics of every row of `source` (a row source, e.g. minisae.data.ArrayFiles,
        or a 2-D float NumPy array), in one pass; the rows are checked as they are read
        (NaN/inf, named by file and row).

        comm: a data-parallel run's communicator (minisae/comm.py): each rank reads its part
        of the rows (comm.part) and the ranks' moments are put together, every rank getting
        the same normaliser; alone (None), every row is this process's."""
        mode = checks.check_choice(mode, "mode", MODES)
        center = checks.check_bool(center, "center")
        unit_range = checks.check_bool(unit_range, "unit_range")
        comm = Alone() if comm is None else comm
        if not all(hasattr(source, a) for a in ("n_rows", "n_features", "read", "check_rows")):
            source = _Rows(source)
        n, w = source.n_rows, source.n_features
        if chunk_rows is None:
            chunk_rows = max(1, PASS_BYTES // (8 * w))
        chunk_rows = checks.check_int(chunk_rows, "chunk_rows", 1)
        first, last = comm.part(n)
        buf = np.empty((max(1, min(chunk_rows, last - first)), w), np.float64)
        count, mean, m2 = 0, np.zeros(w), np.zeros(w)
        for a in range(first, last, chunk_rows):
            b = min(last, a + chunk_rows)
            x = source.read(a, b, out=buf[:b - a])
            source.check_rows(x, a, unit_range)
            count, mean, m2 = combine((count, mean, m2), moments(x, "source"))
        return cls.from_moments(*_every_ranks(comm, count, mean, m2), mode, center)

    @classmethod
    def from_moments(cls, count, mean, m2, mode="norm", center=True):
        """The normaliser of data with `count` rows, per-feature `mean`, and per-feature
        sums of squared deviations from it `m2` (what the pass accumulates)."""
        mode = checks.check_choice(mode, "mode", MODES)
        center = checks.check_bool(center, "center")
        count = checks.check_int(count, "count", 1)
        mean, m2 = (np.asarray(to_numpy(checks.as_numeric(a, name)), dtype=np.float64)
                    for a, name in ((mean, "mean"), (m2, "m2")))
        if mean.ndim != 1 or m2.shape != mean.shape or not (
                np.isfinite(mean).all() and np.isfinite(m2).all() and (m2 >= 0).all()):
            raise ConfigError(f"mean and m2 must be two 1-D arrays of one length, finite, m2 "
                              f">= 0; got shapes {mean.shape} and {m2.shape}")
        var = m2 / count                        # per feature, population variance
        if not center:                          # E x^2 = var + mean^2
            var = var + mean * mean
            mean = np.zeros_like(mean)
        if mode == "norm":
            total = float(var.sum())            # E ||x - mean||^2 (or E ||x||^2)
            scale = np.full(len(mean), math.sqrt(len(mean) / total) if total > 0 else 1.0)
        else:
            std = np.sqrt(var)
            scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
        return cls(mean, scale, mode, center, count)

    # ------------------------------------------------------------------------- use

    def _for(self, x):
        """mean and scale as arrays of x's library, dtype and device (NumPy ones cached)."""
        if isinstance(x, np.ndarray):
            key = x.dtype
            if key not in self._cast:
                self._cast[key] = (self.mean.astype(x.dtype), self.scale.astype(x.dtype))
            return self._cast[key]
        xp = namespace(x)
        return tuple(xp.asarray(a, dtype=x.dtype, device=device_of(x))
                     for a in (self.mean, self.scale))

    def _check(self, x, out, name):
        """x (rows of n_features floats) and out (None, or a writable NumPy array of x's
        shape for a NumPy x), or an InputError naming them."""
        x = checks.as_numeric(x, name)
        if len(x.shape) == 0 or x.shape[-1] != self.n_features or _kind(x) != "f":
            raise InputError(f"{name} must be float rows of {self.n_features} features (what "
                             f"the normaliser is for), got {x.dtype} of shape {tuple(x.shape)}")
        if out is not None and not (isinstance(x, np.ndarray) and isinstance(out, np.ndarray)
                                    and out.shape == x.shape and out.dtype == x.dtype
                                    and out.flags.writeable):
            raise InputError(f"out must be None or a writable NumPy array like {name} ({x.dtype} "
                             f"{tuple(x.shape)}), got {checks.shown(out)}")
        return x

    def apply(self, x, out=None):
        """(x - mean) * scale, in x's dtype (into out, which may be x, for NumPy arrays)."""
        x = self._check(x, out, "x")
        mean, scale = self._for(x)
        if isinstance(x, np.ndarray):
            out = np.subtract(x, mean, out=out)
            return np.multiply(out, scale, out=out)
        return (x - mean) * scale

    def undo(self, y, out=None):
        """y / scale + mean: rows back in the data's units (reconstructions, for people)."""
        y = self._check(y, out, "y")
        mean, scale = self._for(y)
        if isinstance(y, np.ndarray):
            out = np.divide(y, scale, out=out)
            return np.add(out, mean, out=out)
        return y / scale + mean

    # ------------------------------------------------------------------------- state

    def state(self):
        """{"mode": str, "center": bool, "rows": int, "mean": float64 (n_features,),
        "scale": float64 (n_features,)}: the numbers for the JSON, the arrays for members."""
        return {"mode": self.mode, "center": self.center, "rows": self.rows,
                "mean": self.mean.copy(), "scale": self.scale.copy()}

    @classmethod
    def from_state(cls, state):
        """The normaliser of a state() (checked: a ConfigError for one that cannot be)."""
        if not isinstance(state, dict) or not {"mode", "mean", "scale"} <= set(state):
            raise ConfigError("a normaliser state is a dict with mode, mean and scale")
        try:
            return cls(state["mean"], state["scale"], state["mode"], state.get("center", True),
                       state.get("rows", 0))
        except (ConfigError, InputError) as e:
            raise ConfigError(f"a normaliser state: {e}") from None

    def __repr__(self):
        scale = f"scale={self.scale_value:.6g}" if self.mode == "norm" else \
            f"scale in [{self.scale.min():.4g}, {self.scale.max():.4g}]"
        return (f"Normalizer(mode={self.mode!r}, center={self.center}, rows={self.rows:,}, "
                f"{self.n_features} features, {scale})")


def moments(x, what="x"):
    """(count, mean, m2) of the rows of x in float64: m2 the per-feature sum of squared
    deviations from the mean. what: how messages call x."""
    x = np.asarray(to_numpy(checks.as_numeric(x, what)), dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise InputError(f"{what} must be finite rows (n, n_features), got shape {x.shape}")
    if len(x) == 0:
        return 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):  # refused below
        mean = x.mean(axis=0)
        d = x - mean
        m2 = np.einsum("ij,ij->j", d, d)
    if not (np.isfinite(mean).all() and np.isfinite(m2).all()):
        raise InputError(f"{what} holds values too large for their squares to be summed in "
                         f"float64 (near 1e154 or more); scale the data first")
    return len(x), mean, m2



def _every_ranks(comm, count, mean, m2):
    """(count, mean, m2) of every rank's rows, from each rank's own: the counts added, the
    mean the count-weighted mean of the ranks' means, and the sums of squared deviations
    taken about that mean (each rank's m2 plus its count times its mean's squared distance
    from it: Chan et al.'s update, for N parts at once). Alone: what was given, to the bit."""
    total = int(comm.sum(np.array(float(count))))
    if total == 0:
        return total, mean, m2
    mean_all = comm.sum(mean * (count / total))
    return total, mean_all, comm.sum(m2 + count * (mean - mean_all) ** 2)


def combine(a, b):
    """The moments of two sets of rows from each's (Chan, Golub and LeVeque)."""
    na, ma, sa = _moments(a, "a")
    nb, mb, sb = _moments(b, "b")
    if ma.shape != mb.shape:
        raise InputError(f"a and b are moments of rows of {ma.shape} and {mb.shape} features")
    if na == 0:
        return b
    if nb == 0:
        return a
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta * delta * (na * nb / n)


def _moments(m, name):
    """(count, mean, m2) checked: a count >= 0 and two float64 vectors of one length."""
    try:
        count, mean, m2 = m
    except (TypeError, ValueError):
        raise InputError(f"{name} must be moments (count, mean, m2), as moments(x) gives, got "
                         f"{checks.shown(m)}") from None
    count = checks.check_int(count, f"{name}'s count", 0, error=InputError)
    mean, m2 = (np.asarray(to_numpy(checks.as_numeric(v, name)), dtype=np.float64)
                for v in (mean, m2))
    if mean.ndim != 1 or m2.shape != mean.shape:
        raise InputError(f"{name}'s mean and m2 must be two 1-D arrays of one length, got "
                         f"{mean.shape} and {m2.shape}")
    return count, mean, m2


def _kind(a):
    return np.dtype(a.dtype).kind if isinstance(a, np.ndarray) else \
        "f" if "float" in str(a.dtype) else "?"


class _Rows:
    """A 2-D NumPy array of numbers seen through the row-source interface fit() reads
    (n_rows, n_features, read, check_rows), so that arrays and files (minisae.data.ArrayFiles)
    are normalised by one pass."""

    def __init__(self, x):
        self.x = checks.as_samples(to_numpy(checks.as_numeric(x, "source")), "source",
                                   finite=False)
        self.n_rows, self.n_features = self.x.shape

    def read(self, start, stop, out):
        out[...] = self.x[start:stop]
        return out

    def check_rows(self, x, start, unit_range=False):
        bad = ~np.isfinite(x).all(axis=1)
        if unit_range:
            bad |= ((x < 0) | (x > 1)).any(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise InputError(f"source row {row:,} holds NaN or inf"
                             + (" or a value outside [0, 1]" if unit_range else "")
                             + "; clean the data first")
