"""Self-taught learning (UFLDL's exercise; Raina et al., 2007): features learned from
unlabelled data help a classifier on other, labelled data.

    result = self_taught("mnist", autoencoder=AutoencoderTraining(n_hidden=196),
                         split=DataSplit(splits=5), seeds=(0, 1, 2))
    print(result.format_table());  result.write_json("selftaught.json")

Its settings come in three objects, each checked when made: AutoencoderTraining (the
autoencoder's size and optimizer), SoftmaxTraining (the classifier's), DataSplit (which
classes lose their labels, how many random halvings, subsets for quick runs).

1. Split the data by class: the digits 5-9 lose their labels and train a sparse autoencoder
   (UFLDL's settings: rho 0.1, beta 3, lambda 3e-3, halfsum, sigmoid output; by L-BFGS for
   400 iterations, or by Adam); the digits 0-4 keep theirs.
2. Split the labelled digits in two halves at random, train a softmax regression on one and
   measure its accuracy on the other, for three inputs:
     codes       the trained autoencoder's codes h = sigmoid(x @ W1 + b1)
     raw         the pixels themselves
     untrained   the codes of a freshly initialised autoencoder of the same size: how much of
                 the gain is the learned weights, not the sigmoid layer itself
3. Repeat for several random splits and autoencoder seeds; report the mean accuracy of each
   input, its spread, and the paired differences (the same split for all three inputs).

The autoencoder never sees a labelled digit, and the classifier never sees a 5-9.
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field

import numpy as np

from .. import checks
from ..backend import get_backend, namespace, to_numpy
from ..config import MAX_WEIGHT
from ..errors import ConfigError, InputError
from ..files.atomic import atomic_write
from ..model import SparseAutoencoder
from ..optim import Adam
from ..softmax import SoftmaxRegression
from ..training import LBFGS, fit
from ..training.fit import moved

UFLDL_AUTOENCODER = dict(sparsity_target=0.1, sparsity_weight=3.0, weight_decay=3e-3,
                         output_activation="sigmoid", reconstruction_loss="mse",
                         reduction="halfsum")
"""The sparse autoencoder's settings in UFLDL's exercises (sparseae and stl)."""

INPUTS = {"codes": "codes (trained)", "raw": "raw pixels", "untrained": "codes (untrained)"}
"""The classifier's three inputs: key -> label in the table."""

COMPARISONS = (("codes", "raw"), ("codes", "untrained"))
"""Paired differences reported (same split, same seed)."""

MAX_SPLITS = 10_000
"""More random splits than any estimate of the spread needs (refused: a typo, not a plan)."""


# ----------------------------------------------------------------------------- the pieces

def split_by_class(x, y, unlabelled_classes, labelled_classes):
    """(x_unlabelled, x_labelled, y_labelled): the rows of x whose class is in
    unlabelled_classes (their labels dropped), and those in labelled_classes with their labels
    mapped to 0..L-1 in the order given (for MNIST 0-4 stay 0-4)."""
    x = checks.as_samples(x, "x")
    y = _labels(y, len(x), "y", "x")
    unlabelled, labelled = _classes_checked(unlabelled_classes, labelled_classes)
    is_unlabelled = np.isin(y, unlabelled)
    is_labelled = np.isin(y, labelled)
    for name, mask, classes in (("unlabelled_classes", is_unlabelled, unlabelled),
                                ("labelled_classes", is_labelled, labelled)):
        if not mask.any():
            raise InputError(f"no samples of the {name} {classes} in the data "
                             f"(its labels y run {y.min()}..{y.max()})")
    order = np.argsort(labelled)            # each labelled class -> its place in the list
    code = order[np.searchsorted(np.asarray(labelled)[order], y[is_labelled])]
    return x[is_unlabelled], x[is_labelled], code.astype(np.int64)


def _labels(y, n, name, rows):
    """y as n integer labels >= 0 (a NumPy int64 array), or an InputError naming it."""
    y = to_numpy(checks.as_numeric(y, name))
    if y.shape != (n,) or y.dtype.kind not in "iu" or (n and y.min() < 0):
        raise InputError(f"{name} must be {n} labels, integers >= 0 (one per row of {rows}), "
                         f"got {y.dtype} of shape {y.shape}")
    return y.astype(np.int64)


def _classes_checked(unlabelled_classes, labelled_classes):
    """(unlabelled, labelled): two lists of distinct classes, apart, the labelled at least
    two; or a ConfigError naming them."""
    unlabelled = _class_list(unlabelled_classes, "unlabelled_classes")
    labelled = _class_list(labelled_classes, "labelled_classes")
    if set(unlabelled) & set(labelled):
        raise ConfigError(f"a class cannot be both unlabelled and labelled: "
                          f"{sorted(set(unlabelled) & set(labelled))} are in unlabelled_classes "
                          f"and labelled_classes")
    if len(labelled) < 2 or not unlabelled:
        raise ConfigError("self-taught learning needs some unlabelled classes and at least two "
                          f"labelled ones; got unlabelled_classes {unlabelled}, "
                          f"labelled_classes {labelled}")
    return unlabelled, labelled


def _class_list(classes, name):
    """A list of distinct class labels (integers >= 0), or a ConfigError naming it."""
    out = [checks.check_int(c, f"{name}'s labels", 0) for c in _sequence(classes, name)]
    if len(set(out)) != len(out):
        raise ConfigError(f"{name} lists a class twice: {out}")
    return out


class AutoencoderTraining:
    """The autoencoder's size and training: what self_taught takes as autoencoder.

    n_hidden: its units (UFLDL: 196). optimizer: "lbfgs", full batch for max_iter iterations
    (UFLDL's), or "adam", `epochs` epochs of minibatches of batch_size at learning rate lr
    (minisae.fit). The other optimizer's settings are kept but not used."""

    def __init__(self, n_hidden=196, optimizer="lbfgs", max_iter=400, epochs=400, lr=0.01,
                 batch_size=1000):
        self.n_hidden = checks.check_int(n_hidden, "n_hidden", 1)
        self.optimizer = checks.check_choice(optimizer, "optimizer", ("lbfgs", "adam"))
        self.max_iter = checks.check_int(max_iter, "max_iter", 0)
        self.epochs = checks.check_int(epochs, "epochs", 0)
        self.lr = checks.check_real(lr, "lr", 0.0, low_open=True)
        self.batch_size = checks.check_int(batch_size, "batch_size", 1)

    def __repr__(self):
        return (f"AutoencoderTraining(n_hidden={self.n_hidden}, optimizer={self.optimizer!r}, "
                f"max_iter={self.max_iter}, epochs={self.epochs}, lr={self.lr:g}, "
                f"batch_size={self.batch_size})")


class SoftmaxTraining:
    """The classifier's training: what self_taught takes as softmax. A softmax regression
    with weight decay lambda = weight_decay, trained by L-BFGS for max_iter iterations (full
    batch, as UFLDL's softmaxTrain)."""

    def __init__(self, weight_decay=1e-4, max_iter=100):
        self.weight_decay = checks.check_real(weight_decay, "weight_decay", 0.0, MAX_WEIGHT)
        self.max_iter = checks.check_int(max_iter, "max_iter", 0)

    def __repr__(self):
        return f"SoftmaxTraining(weight_decay={self.weight_decay:g}, max_iter={self.max_iter})"


class DataSplit:
    """Which samples go where: what self_taught takes as split.

    unlabelled_classes: the classes whose labels are dropped, on which the autoencoder
    trains; labelled_classes: those the classifier learns (at least two; their labels become
    0..L-1 in the order given). splits: random halvings of the labelled samples into a
    training and a test half, per autoencoder seed. pool: use the data set's train and test
    files together (True) or the training file only. max_unlabelled, max_labelled: keep a
    random subset of that many (for quick runs); None: all."""

    def __init__(self, unlabelled_classes=(5, 6, 7, 8, 9), labelled_classes=(0, 1, 2, 3, 4),
                 splits=5, pool=True, max_unlabelled=None, max_labelled=None):
        unlabelled, labelled = _classes_checked(unlabelled_classes, labelled_classes)
        self.unlabelled_classes, self.labelled_classes = tuple(unlabelled), tuple(labelled)
        self.splits = checks.check_int(splits, "splits", 1, MAX_SPLITS)
        self.pool = checks.check_bool(pool, "pool")
        self.max_unlabelled = checks.check_optional(max_unlabelled, checks.check_int,
                                                    "max_unlabelled", 1)
        self.max_labelled = checks.check_optional(max_labelled, checks.check_int,
                                                  "max_labelled", 1)

    def __repr__(self):
        return (f"DataSplit(unlabelled_classes={self.unlabelled_classes}, labelled_classes="
                f"{self.labelled_classes}, splits={self.splits}, pool={self.pool}, "
                f"max_unlabelled={self.max_unlabelled}, max_labelled={self.max_labelled})")


def build_autoencoder(n_inputs, n_hidden, seed, backend="numpy", dtype="float64"):
    """A freshly initialised sparse autoencoder with UFLDL's settings."""
    return SparseAutoencoder(n_inputs=n_inputs, n_hidden=n_hidden, backend=backend, dtype=dtype,
                             seed=seed, **UFLDL_AUTOENCODER)


def train_autoencoder(x, n_hidden=196, seed=0, optimizer="lbfgs", max_iter=400, epochs=400,
                      lr=0.01, batch_size=1000, backend="numpy", dtype="float64", progress=False):
    """Train build_autoencoder(...) on x (n, n_inputs), NumPy. optimizer "lbfgs": full batch,
    max_iter iterations; "adam": `epochs` epochs of minibatches (minisae.fit).
    Returns (model, info), info a dict: loss, steps, evaluations, seconds, message."""
    x = checks.as_samples(x, "x")
    t = AutoencoderTraining(n_hidden, optimizer, max_iter, epochs, lr, batch_size)
    optimizer, max_iter, epochs, lr, batch_size = t.optimizer, t.max_iter, t.epochs, t.lr, \
        t.batch_size
    progress = checks.check_bool(progress, "progress")
    model = build_autoencoder(x.shape[1], n_hidden, seed, backend, dtype)
    t0 = time.perf_counter()
    if optimizer == "lbfgs":
        x_dev = model.backend.asarray(x)  # once: every evaluation uses the whole set
        opt = LBFGS(model.flat_params, model.flat_grads, max_iter=max_iter)
        r = opt.minimize(lambda: model.loss_and_grads(x_dev), progress=progress)
        info = {"loss": r.loss, "steps": r.iterations, "evaluations": r.evaluations,
                "message": r.message}
    elif optimizer == "adam":
        opt = Adam(model.params, model.grads, lr=lr)
        history = fit(model, opt, np.asarray(x, dtype=model.dtype), epochs, batch_size, seed=seed,
                      progress=progress)
        steps = len(history) * (len(x) // min(batch_size, len(x)))
        info = {"loss": history.train_total[-1] if len(history) else float("nan"),
                "steps": steps, "evaluations": steps, "message": f"{len(history)} epochs"}
    else:
        raise ConfigError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    info["seconds"] = time.perf_counter() - t0
    return model, info


def features(x, trained, untrained):
    """The classifier's three inputs for the rows x (NumPy): {"codes": trained.encode(x),
    "raw": x, "untrained": untrained.encode(x)}, each on the trained model's backend."""
    for name, model in (("trained", trained), ("untrained", untrained)):
        checks.check_type(model, name, SparseAutoencoder, "a SparseAutoencoder")
        if model.config.n_inputs != trained.config.n_inputs:
            raise ConfigError(f"untrained has n_inputs={model.config.n_inputs}, trained "
                              f"{trained.config.n_inputs}: build them alike")
    x = checks.as_numeric(x, "x")
    checks.check_matrix(x, trained.config.n_inputs, "x")
    x_dev = trained.backend.asarray(x)
    return {"codes": trained.encode(x_dev), "raw": x_dev, "untrained": untrained.encode(x_dev)}


def split_halves(n, seed, split):
    """(train, test) row indices: a random half of range(n) (UFLDL's round(n / 2), MATLAB's
    round, which takes 4.5 up) and the rest, drawn from a generator seeded by (seed, split)."""
    n = checks.check_int(n, "n", 0)
    checks.check_fits(16 * n, checks.physical_memory(), f"splitting n={n:,} rows", "use fewer")
    seed, split = checks.check_int(seed, "seed", 0), checks.check_int(split, "split", 0)
    order = np.random.default_rng([seed, split]).permutation(n)
    n_train = (n + 1) // 2
    return order[:n_train], order[n_train:]


def softmax_accuracy(x_train, y_train, x_test, y_test, n_classes, weight_decay=1e-4, max_iter=100,
                     seed=0, backend="numpy", dtype="float64"):
    """Train a SoftmaxRegression on (x_train, y_train) by L-BFGS (full batch, max_iter
    iterations, as UFLDL's softmaxTrain) and return its accuracy on (x_test, y_test)."""
    n_inputs = checks.as_samples(x_train, "x_train", finite=False).shape[1]
    clf = SoftmaxRegression(n_inputs, n_classes, weight_decay=weight_decay,
                            backend=backend, dtype=dtype, seed=seed)
    x_train = clf._check_x(x_train, "x_train")      # once: every evaluation uses them all
    y_train = clf._check_y(y_train, x_train.shape[0], "y_train", "x_train")
    x_test = clf._check_x(x_test, "x_test")
    y_test = clf._check_y(y_test, x_test.shape[0], "y_test", "x_test")
    LBFGS(clf.flat_params, clf.flat_grads, max_iter=max_iter).minimize(
        lambda: clf.loss_and_grads(x_train, y_train, validate=False))
    return clf.score(x_test, y_test)


# ----------------------------------------------------------------------------- the result

@dataclass
class SelfTaughtResult:
    """Accuracies of every (seed, split) run, and what produced them.

    runs: one dict per run: {"seed", "split", "codes", "raw", "untrained"} (accuracies in
    [0, 1]); autoencoders: one dict per seed (loss, steps, evaluations, seconds, message,
    mean_activation); settings: every knob of the run."""

    dataset: str
    source: str
    subset: bool
    settings: dict
    n_unlabelled: int
    n_labelled: int
    n_train: int
    n_test: int
    n_features: dict
    runs: list = field(default_factory=list)
    autoencoders: list = field(default_factory=list)
    softmax_seconds: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self):
        """{key: {"label", "n_features", "mean", "std", "min", "max", "runs"}} for each input
        (accuracy, in percent) and each paired difference "a-b" (percentage points)."""
        rows = {}
        for key, label in INPUTS.items():
            rows[key] = dict(label=label, n_features=self.n_features[key],
                             **_stats([100 * r[key] for r in self.runs]))
        for a, b in COMPARISONS:
            rows[f"{a}-{b}"] = dict(label=f"{INPUTS[a]} - {INPUTS[b]}", n_features=None,
                                    **_stats([100 * (r[a] - r[b]) for r in self.runs]))
        return rows

    def format_table(self):
        s = self.settings
        opt = (f"L-BFGS, {s['max_iter']} iterations" if s["optimizer"] == "lbfgs"
               else f"Adam lr {s['lr']:g}, {s['epochs']} epochs of {s['batch_size']}")
        ae_s = sum(a["seconds"] for a in self.autoencoders)
        lines = [
            f"Self-taught learning on {self.dataset} ({self.source}):",
            f"  autoencoder: {s['n_hidden']} units, rho {s['sparsity_target']:g}, "
            f"beta {s['sparsity_weight']:g}, lambda {s['weight_decay']:g}, {s['reduction']}, "
            f"{opt}, on {self.n_unlabelled:,} unlabelled samples of classes "
            f"{_classes(s['unlabelled_classes'])}",
            f"  softmax: lambda {s['softmax_weight_decay']:g}, L-BFGS {s['softmax_max_iter']} "
            f"iterations, on {self.n_labelled:,} labelled samples of classes "
            f"{_classes(s['labelled_classes'])}, {self.n_train:,} train / {self.n_test:,} test "
            "per split",
            f"  {len(s['seeds'])} autoencoder seed(s) x {s['splits']} split(s) = {len(self.runs)} "
            f"runs; autoencoder training {ae_s:.1f} s, classifiers "
            f"{sum(self.softmax_seconds.values()):.1f} s, total {self.seconds:.1f} s",
            "",
            f"{'input':<16} {'features':>8} {'accuracy':>9} {'std':>6} {'min':>7} {'max':>7}",
        ]
        lines.append("-" * len(lines[-1]))
        for key, r in self.summary().items():
            if r["n_features"] is None:
                lines.append(f"{key:<16} {'':>8} {r['mean']:>+8.2f}p {r['std']:>6.2f} "
                             f"{r['min']:>+7.2f} {r['max']:>+7.2f}")
            else:
                lines.append(f"{key:<16} {r['n_features']:>8} {r['mean']:>8.2f}% {r['std']:>6.2f} "
                             f"{r['min']:>7.2f} {r['max']:>7.2f}")
        lines.append("accuracy in % on the test half (mean, std, min, max over runs); the "
                     "differences in points, per run on the same split (p)")
        return "\n".join(lines)

    def as_dict(self):
        return {"dataset": self.dataset, "source": self.source, "subset": self.subset,
                "settings": self.settings, "n_unlabelled": self.n_unlabelled,
                "n_labelled": self.n_labelled, "n_train": self.n_train, "n_test": self.n_test,
                "n_features": self.n_features, "summary": self.summary(), "runs": self.runs,
                "autoencoders": self.autoencoders, "softmax_seconds": self.softmax_seconds,
                "seconds": self.seconds}

    def write_json(self, path):
        """Write as_dict() to path as JSON (its folder is created); returns path."""
        import os
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path) as f:
            f.write(json.dumps(self.as_dict(), indent=2).encode())
        return path


def _stats(values):
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "runs": len(v)}


def _classes(classes):
    c = list(classes)
    return f"{c[0]}-{c[-1]}" if c == list(range(c[0], c[-1] + 1)) else ",".join(map(str, c))


# ----------------------------------------------------------------------------- the experiment

MOVED = {
    **{name: f"autoencoder=AutoencoderTraining({name}=...)" for name in (
        "n_hidden", "optimizer", "max_iter", "epochs", "lr", "batch_size")},
    **{f"softmax_{name}": f"softmax=SoftmaxTraining({name}=...)" for name in (
        "weight_decay", "max_iter")},
    **{name: f"split=DataSplit({name}=...)" for name in (
        "unlabelled_classes", "labelled_classes", "splits", "pool", "max_unlabelled",
        "max_labelled")}}
"""self_taught's keywords before 0.4 -> where they went (a call with one is told so)."""


@moved(**MOVED)
def self_taught(dataset="mnist", *, data=None, autoencoder=None, softmax=None, split=None,
                seeds=(0,), backend="numpy", dtype="float64", data_dir=None, download=True,
                progress=False, log=None):
    """Run the experiment (see the module's docstring) and return a SelfTaughtResult.

    dataset: "mnist" or "fashion-mnist", loaded by minisae.data.load from data_dir (offline
        MNIST is the 5,000-digit subset; download=False: never from the internet); or pass
        `data`: a Dataset, or a tuple (x, y) of NumPy arrays.
    autoencoder: an AutoencoderTraining (its size, and L-BFGS or Adam); softmax: a
        SoftmaxTraining (the classifier's lambda and iterations); split: a DataSplit (the
        unlabelled and labelled classes, random halvings, subsets). None: UFLDL's settings.
    seeds: one autoencoder per seed (and its untrained twin, same seed), each with the
        split's halvings. log: a function called with one line per stage (e.g. print)."""
    t_start = time.perf_counter()
    say = checks.check_optional(log, checks.check_function, "log", 1, "a function of one line "
                                "of text (e.g. print)") or (lambda line: None)
    ae = _settings(autoencoder, "autoencoder", AutoencoderTraining)
    sm = _settings(softmax, "softmax", SoftmaxTraining)
    plan = _settings(split, "split", DataSplit)
    seeds = [checks.check_int(s, "seeds", 0, 2**63 - 1) for s in
             ((seeds,) if checks.is_int(seeds) else _sequence(seeds, "seeds"))]
    if not seeds:
        raise ConfigError("seeds must hold at least one seed, e.g. (0,)")
    download, progress = (checks.check_bool(v, name) for v, name in (
        (download, "download"), (progress, "progress")))
    checks.check_type(dataset, "dataset", str, "a data set's name, e.g. 'mnist'")
    checks.check_optional(data_dir, checks.check_path, "data_dir")
    backend = get_backend(backend, dtype=dtype).name  # a bad one fails here, before any work

    x, y, name, source, subset = _load(dataset, data, plan.pool, data_dir, download, progress)
    x_unlab, x_lab, y_lab = split_by_class(x, y, plan.unlabelled_classes,
                                           plan.labelled_classes)
    pick = np.random.default_rng(0)
    if plan.max_unlabelled is not None and len(x_unlab) > plan.max_unlabelled:
        x_unlab = x_unlab[np.sort(pick.choice(len(x_unlab), plan.max_unlabelled, replace=False))]
    if plan.max_labelled is not None and len(x_lab) > plan.max_labelled:
        keep = np.sort(pick.choice(len(x_lab), plan.max_labelled, replace=False))
        x_lab, y_lab = x_lab[keep], y_lab[keep]
    if len(x_lab) < 2:
        raise InputError(f"data holds {len(x_lab)} sample(s) of the labelled_classes (after "
                         f"max_labelled={plan.max_labelled}); the classifier's two halves "
                         f"need 2")
    x_unlab = np.asarray(x_unlab, dtype=dtype)
    x_lab = np.asarray(x_lab, dtype=dtype)
    n_train = (len(x_lab) + 1) // 2  # as split_halves
    say(f"{name} ({source}): {len(x_unlab):,} unlabelled samples of classes "
        f"{_classes(plan.unlabelled_classes)} for the autoencoder, {len(x_lab):,} labelled of "
        f"classes {_classes(plan.labelled_classes)} for the classifier ({n_train:,} train / "
        f"{len(x_lab) - n_train:,} test per split)")

    settings = dict(dataset=name, n_hidden=ae.n_hidden, optimizer=ae.optimizer,
                    max_iter=ae.max_iter, epochs=ae.epochs, lr=ae.lr, batch_size=ae.batch_size,
                    **UFLDL_AUTOENCODER, softmax_weight_decay=sm.weight_decay,
                    softmax_max_iter=sm.max_iter, seeds=seeds, splits=plan.splits,
                    unlabelled_classes=list(plan.unlabelled_classes),
                    labelled_classes=list(plan.labelled_classes), pool=plan.pool,
                    max_unlabelled=plan.max_unlabelled, max_labelled=plan.max_labelled,
                    backend=backend, dtype=dtype)
    result = SelfTaughtResult(name, source, subset, settings, len(x_unlab), len(x_lab), n_train,
                              len(x_lab) - n_train,
                              {"codes": ae.n_hidden, "raw": x.shape[1], "untrained": ae.n_hidden})
    result.softmax_seconds = dict.fromkeys(INPUTS, 0.0)
    n_classes = len(plan.labelled_classes)
    for seed in seeds:
        trained, info = train_autoencoder(x_unlab, ae.n_hidden, seed, ae.optimizer, ae.max_iter,
                                          ae.epochs, ae.lr, ae.batch_size, backend, dtype,
                                          progress)
        info["mean_activation"] = float(to_numpy(trained.encode(x_unlab)).mean())
        result.autoencoders.append(dict(seed=seed, **info))
        say(f"seed {seed}: autoencoder loss {info['loss']:.4g} after {info['steps']} "
            f"{'iterations' if ae.optimizer == 'lbfgs' else 'steps'} ({info['message']}), mean "
            f"activation {info['mean_activation']:.3f}, {info['seconds']:.1f} s")
        untrained = build_autoencoder(x.shape[1], ae.n_hidden, seed, backend, dtype)
        inputs = features(x_lab, trained, untrained)
        for half in range(plan.splits):
            train, test = split_halves(len(x_lab), seed, half)
            run = {"seed": seed, "split": half}
            for key, f in inputs.items():
                t0 = time.perf_counter()
                run[key] = softmax_accuracy(
                    f[_index(f, train)], y_lab[train], f[_index(f, test)], y_lab[test], n_classes,
                    sm.weight_decay, sm.max_iter, seed=seed, backend=backend, dtype=dtype)
                result.softmax_seconds[key] += time.perf_counter() - t0
            result.runs.append(run)
            say(f"seed {seed}, split {half}: " + ", ".join(
                f"{key} {100 * run[key]:.2f}%" for key in INPUTS))
    result.seconds = time.perf_counter() - t_start
    return result


def _settings(value, name, kind):
    """A settings object self_taught takes (None: its defaults), or a ConfigError."""
    if value is None:
        return kind()
    return checks.check_type(value, name, kind, f"a {kind.__name__}{inspect.signature(kind)}")


def _index(a, idx):
    """idx as an index array on a's backend (moved to the device for a CuPy array)."""
    if isinstance(a, np.ndarray):
        return idx
    return namespace(a).asarray(idx, device=a.device)


def _load(dataset, data, pool, data_dir, download, progress):
    """(x, y, name, source, subset) from `data` or minisae.data.load(dataset)."""
    if data is None:
        from ..data import datasets
        data = datasets.load(dataset, data_dir, download=download, progress=progress)
    if isinstance(data, tuple):
        if len(data) != 2:
            raise InputError(f"data must be a Dataset or a tuple (x, y), got a tuple of "
                             f"{len(data)}")
        x, y = data
        name, source, subset = dataset, "arrays given", False
    elif all(hasattr(data, a) for a in ("x_train", "y_train", "x_test", "y_test", "name")):
        x, y = data.x_train, data.y_train
        if pool:
            x, y = np.concatenate([x, data.x_test]), np.concatenate([y, data.y_test])
        name, source, subset = data.name, data.source, bool(data.subset)
    else:
        raise InputError(f"data must be a Dataset (minisae.data.load) or a tuple (x, y) of "
                         f"arrays, got {type(data).__name__}")
    x = to_numpy(checks.as_samples(x, "data's x"))
    checks.check_values(x, np, True, "data's x")   # the autoencoder's output is a sigmoid
    return x, _labels(y, len(x), "data's y", "data's x"), name, source, subset


def _sequence(v, name):
    """v as a list (of a list, tuple, range or 1-D array), or a ConfigError naming it."""
    if isinstance(v, (str, bytes, dict, set, frozenset)) or not hasattr(v, "__iter__") or \
            len(getattr(v, "shape", (0,))) != 1:
        raise ConfigError(f"{name} must be a list of integers, got {checks.shown(v)}")
    return list(v)
