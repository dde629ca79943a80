"""The experiments behind the README's sparsity section: the book's three claims measured,
and the sparse autoencoders of today (L1, TopK, BatchTopK, JumpReLU, AuxK, resampling)
compared on MNIST.

Each experiment is a function of the data (NumPy arrays, as minisae.data.load gives) and its
settings; it trains the models it needs with minisae.fit and returns a Table: rows of
numbers, the columns they go in, notes, and the figures it drew. The demos (demos/*.py) run
them with their defaults and print the tables; the tests run them with tiny settings.

    penalties     the book's Figure 15-10 claim: KL against squared and absolute error
    batch_sizes   "the batch size must not be too small, or else the mean will not be accurate"
    weight_sweep  a sparsity weight too high or too low, with the features' stroke scores
    frontier      fraction of variance unexplained against L0, for KL, L1, TopK, BatchTopK
                  and JumpReLU
    classification  a softmax on TopK codes, KL codes and raw pixels
    dead_units    dead units with and without AuxK, resampling, a subtracted decoder bias,
                  Gao et al.'s start and tied weights
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..backend import to_numpy
from ..data.patches import orientation_score
from ..model import SparseAutoencoder
from ..optim import Adam
from ..presets import PRESETS
from ..softmax import SoftmaxRegression
from ..training import LBFGS, Checkpoints, DeadUnits, Engine, evaluate, fit
from ..training.fit import reconstruction_mse


@dataclass
class Table:
    """An experiment's result: rows (dicts), the columns to print, notes, figures."""

    title: str
    columns: list
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def format(self):
        """A fixed-width text table with the title above and the notes below."""
        cells = [[str(c) for c in self.columns]]
        for row in self.rows:
            cells.append([_cell(row.get(c)) for c in self.columns])
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = [self.title]
        for j, r in enumerate(cells):
            lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines + [f"  {n}" for n in self.notes])

    def as_dict(self):
        return {"title": self.title, "columns": self.columns, "rows": self.rows,
                "notes": self.notes}


def _cell(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def train(model, x_train, epochs, batch_size, lr, seed=0, x_val=None, threads=None,
          **fit_kwargs):
    """Adam on the fast engine: (history, seconds). threads: BLAS threads (None: fit's
    default, "auto"); the experiments redone for issue 25 use 1, which gives the same bits on
    any machine and keeps its speed when other work shares the cores."""
    opt = Adam(model.params, model.grads, lr=lr)
    if threads is not None:
        fit_kwargs["engine"] = Engine(threads=threads)
    t0 = time.perf_counter()
    history = fit(model, opt, x_train, epochs, batch_size, seed=seed, x_val=x_val,
                  progress=False, **fit_kwargs)
    return history, time.perf_counter() - t0


def stroke_score(model, shape=(28, 28)):
    """The encoder's features scored as strokes or edges (data.patches.orientation_score:
    orientation, coherence and localization, each against the same filters shuffled)."""
    return orientation_score(to_numpy(model.params["encoder.W"]), shape, n_random=3)


# ----------------------------------------------------------------------------- (a) penalties

PENALTY_WEIGHTS = {"kl": (0.002, 0.005, 0.01, 0.02, 0.05, 0.2),
                   "squared": (0.01, 0.02, 0.05, 0.1, 0.2, 1.0),
                   "absolute": (0.001, 0.002, 0.005, 0.01, 0.02, 0.1)}
"""The weights tried for each penalty; each one's reported run is the smallest that reaches
the target (final mean |rho_hat_j - rho| under TOLERANCE)."""
TOLERANCE = 0.01


def penalties(x_train, x_test, n_hidden=1000, epochs=100, batch_size=1000, lr=0.01,
              weights=None, rho=0.1, seed=0, common=0.01):
    """The book's claim that KL "has much stronger gradients" than the squared error on the
    mean activation (and its Figure 15-10's absolute error): each penalty trained on the
    book's model at the smallest weight of `weights` that reaches the target, and the gradient
    sizes its argument rests on.

    Per penalty: the weight used, the epoch from which the test set's mean |rho_hat_j - rho|
    stays under TOLERANCE, that deviation at the end, the test reconstruction (MSE per pixel,
    against beta = 0), and |d penalty / d rho_hat_j| at the first epoch's and the last
    epoch's rho_hat (median over units; the gradient the units feel, per unit of beta).
    Then the three at one weight, `common` (None: skipped), in a second table."""
    weights = PENALTY_WEIGHTS if weights is None else weights
    table = Table("the book's penalties on the mean activation (test set)",
                  ["penalty", "beta", "reached", "epoch within", "final |rho_hat - rho|",
                   "MSE/pixel", "|grad| at start", "|grad| at end", "seconds"])
    base = SparseAutoencoder(784, n_hidden, sparsity_weight=0.0, seed=seed)
    train(base, x_train, epochs, batch_size, lr, seed)
    baseline = reconstruction_mse(base, x_test)
    table.notes.append(f"beta = 0 (no penalty): MSE/pixel {baseline:.4f}, mean |rho_hat - rho| "
                       f"{np.abs(evaluate(base, x_test, per_unit=True)[1] - rho).mean():.3f}")
    curves = {}
    for kind, betas in weights.items():
        for beta in betas:
            row, curve = _penalty_run(kind, beta, x_train, x_test, n_hidden, epochs,
                                      batch_size, lr, rho, seed)
            if row["reached"] == "yes" or beta == betas[-1]:
                break
        table.rows.append(row)
        curves[kind] = curve
    table.figures["deviation"] = curves
    table.notes.append("|grad|: median over units of |d penalty / d rho_hat_j| / beta at that "
                       "epoch's rho_hat")
    if common is None:
        return table
    same = Table(f"the three penalties at one weight, beta = {common:g} (test set)",
                 table.columns)
    for kind in weights:
        row, curve = _penalty_run(kind, common, x_train, x_test, n_hidden, epochs, batch_size,
                                  lr, rho, seed)
        same.rows.append(row)
    return table, same


def _penalty_gradient(kind, rho_hat, rho):
    """d penalty / d rho_hat per unit of beta, at rho_hat."""
    rho_hat = np.asarray(rho_hat, dtype=np.float64)
    if kind == "kl":
        return F.kl_penalty_backward(rho_hat, rho, 1.0)
    if kind == "squared":
        return F.squared_penalty_backward(rho_hat, rho, 1.0)
    return F.absolute_penalty_backward(rho_hat, rho, 1.0)


def _penalty_run(kind, beta, x_train, x_test, n_hidden, epochs, batch_size, lr, rho, seed):
    model = SparseAutoencoder(784, n_hidden, sparsity=kind, sparsity_target=rho,
                              sparsity_weight=beta, seed=seed)
    deviation, grads = [], []

    def watch(history, position):  # after each epoch (position None: no mid-epoch saves)
        rho_hat = evaluate(model, x_test, per_unit=True)[1]
        deviation.append(float(np.abs(rho_hat - rho).mean()))
        grads.append(float(np.median(np.abs(_penalty_gradient(kind, rho_hat, rho)))))

    _, seconds = train(model, x_train, epochs, batch_size, lr, seed,
                       checkpoints=Checkpoints(watch))
    within = next((i + 1 for i in range(len(deviation))
                   if all(d < TOLERANCE for d in deviation[i:])), None)
    row = {"penalty": kind, "beta": beta, "reached": "yes" if deviation[-1] < TOLERANCE else "no",
           "epoch within": within, "final |rho_hat - rho|": deviation[-1],
           "MSE/pixel": reconstruction_mse(model, x_test), "|grad| at start": grads[0],
           "|grad| at end": grads[-1], "seconds": seconds}
    return row, deviation


def gradient_curves(rho=0.1, points=200):
    """|d penalty / d rho_hat| of the three penalties (beta = 1) over rho_hat in (0, 1):
    {kind: (rho_hat, |gradient|)}, what the book's argument is about."""
    q = np.linspace(0.005, 0.995, points)
    return {kind: (q, np.abs(_penalty_gradient(kind, q, rho))) for kind in ("kl", "squared",
                                                                            "absolute")}


# ----------------------------------------------------------------------------- (b) batch sizes

def batch_sizes(x_train, x_test, sizes=(10, 30, 100, 300), train_sizes=(10, 100, 1000),
                n_hidden=196, epochs=30, steps=None, samples=200, lr=0.01, reference=1000,
                seed=0, threads=1):
    """"The batch size must not be too small, or else the mean will not be accurate."

    1. The estimate: a model trained with the ufldl preset's settings; for each batch size B,
       `samples` random batches of the test set, and the spread (standard deviation over
       batches, median over units) of rho_hat_j, beside two predictions: the sampling error
       of a mean, sd(h_j) / sqrt(B) (times the finite-population factor), and the binomial
       sqrt(q (1 - q) / B) at q = the unit's mean, which treats the codes as coins.
    2. What training at each of train_sizes gives, with the two confounds of a plain
       comparison kept apart:
       - the learning rate: Adam's `lr` at every batch size ("fixed"), or scaled by
         sqrt(B / reference) below the reference batch ("sqrt");
       - the budget: the same samples seen (`epochs` epochs each), or the same number of
         steps (`steps`, by default what the smallest batch takes in `epochs` epochs; each
         batch size gets the whole epochs nearest to it).
       For each run, on the test set: how far the units' rho_hat_j end from the target rho,
       as the root mean square over units of rho_hat_j - rho, split into its mean (a bias
       common to the units) and its spread over units; the reconstruction (MSE per pixel)
       and the stroke score of the features. A run that two arms share (the reference batch
       under either lr rule; the smallest batch under either budget) is trained once.
    threads: BLAS threads for training (1: the same bits on any machine)."""
    spread = _estimate_spread(x_train, x_test, sizes, n_hidden, epochs, samples, lr, seed,
                              threads)
    n, rho = len(x_train), PRESETS["ufldl"].model["sparsity_target"]
    steps = epochs * (n // min(train_sizes)) if steps is None else steps
    columns = ["batch", "lr rule", "lr", "epochs", "steps", "rms rho_hat - rho",
               "mean rho_hat - rho", "sd over units", "MSE/pixel", "orientation x",
               "coherence x", "seconds"]
    samples_table = Table(f"trained at each batch size, the same samples seen ({epochs} "
                          f"epochs; test set, rho = {rho:g})", columns)
    steps_table = Table(f"trained at each batch size, the same number of steps (about "
                        f"{steps:,}; test set, rho = {rho:g})", columns)
    runs = {}
    for table, budget in ((samples_table, "samples"), (steps_table, "steps")):
        for rule in ("fixed", "sqrt"):
            for B in train_sizes:
                lr_b = lr if rule == "fixed" else lr * min(1.0, B / reference) ** 0.5
                epochs_b = epochs if budget == "samples" else \
                    max(1, round(steps / max(1, n // B)))
                key = (B, lr_b, epochs_b)
                if key not in runs:
                    runs[key] = _batch_run(x_train, x_test, B, lr_b, epochs_b, n_hidden, rho,
                                           seed, threads)
                table.rows.append({"batch": B, "lr rule": rule, **runs[key]})
    for table in (samples_table, steps_table):
        table.notes.append(f"lr rule: fixed = {lr:g} at every batch; sqrt = {lr:g} * "
                           f"sqrt(B / {reference}) below batch {reference}")
    samples_table.notes.append("rms rho_hat - rho: the root mean square over units of "
                               "rho_hat_j - rho; its square is the square of the mean column "
                               "plus the square of the sd column")
    return spread, samples_table, steps_table


def _estimate_spread(x_train, x_test, sizes, n_hidden, epochs, samples, lr, seed, threads):
    """Part 1 of batch_sizes: the spread of a batch's rho_hat_j against its predictions."""
    rng = np.random.default_rng(seed)
    model = SparseAutoencoder.from_preset("ufldl", n_hidden=n_hidden, seed=seed)
    train(model, x_train, epochs, 1000, lr, seed, threads=threads)
    h = to_numpy(model.encode(x_test)).astype(np.float64)
    n = len(h)
    spread = Table("the spread of a batch's rho_hat_j (test set; median over units)",
                   ["batch", "measured sd", "predicted sd(h)/sqrt(B)", "binomial sqrt(q(1-q)/B)",
                    "measured / binomial"])
    for B in sizes:
        estimates = np.stack([h[rng.choice(n, B, replace=False)].mean(axis=0)
                              for _ in range(samples)])
        fpc = np.sqrt((n - B) / (n - 1)) if n > 1 else 1.0
        measured = np.median(estimates.std(axis=0))
        predicted = np.median(h.std(axis=0)) / np.sqrt(B) * fpc
        q = h.mean(axis=0)
        binomial = np.median(np.sqrt(q * (1 - q) / B)) * fpc
        spread.rows.append({"batch": B, "measured sd": measured,
                            "predicted sd(h)/sqrt(B)": predicted,
                            "binomial sqrt(q(1-q)/B)": binomial,
                            "measured / binomial": measured / binomial})
    return spread


def _batch_run(x_train, x_test, B, lr, epochs, n_hidden, rho, seed, threads):
    """One run of batch_sizes' part 2: the ufldl model trained at batch B; its row's numbers."""
    m = SparseAutoencoder.from_preset("ufldl", n_hidden=n_hidden, seed=seed)
    _, seconds = train(m, x_train, epochs, B, lr, seed, threads=threads)
    deviation = evaluate(m, x_test, per_unit=True)[1] - rho
    s = stroke_score(m)
    return {"lr": lr, "epochs": epochs, "steps": epochs * (len(x_train) // B),
            "rms rho_hat - rho": float(np.sqrt(np.mean(deviation ** 2))),
            "mean rho_hat - rho": float(deviation.mean()), "sd over units": float(deviation.std()),
            "MSE/pixel": reconstruction_mse(m, x_test), "orientation x": s.orientation_ratio,
            "coherence x": s.coherence_ratio, "seconds": seconds}


# ----------------------------------------------------------------------------- (c) weights

def weight_sweep(x_train, x_test, weights=(0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0), n_hidden=196,
                 epochs=50, batch_size=1000, lr=0.01, seed=0):
    """The book: too high a sparsity weight gives useless reconstructions, too low one learns
    no interesting features. The ufldl preset's model at each beta: reconstruction, the mean
    activation against the target, L0 and dead units, and the stroke score of its features."""
    table = Table("the sparsity weight (ufldl's model, KL, rho 0.1; test set)",
                  ["beta", "MSE/pixel", "mean rho_hat", "L0", "dead", "orientation x",
                   "coherence x", "localization x", "seconds"])
    models = {}
    for beta in weights:
        model = SparseAutoencoder.from_preset("ufldl", n_hidden=n_hidden, sparsity_weight=beta,
                                              seed=seed)
        _, seconds = train(model, x_train, epochs, batch_size, lr, seed)
        e = evaluate(model, x_test)
        s = stroke_score(model)
        table.rows.append({"beta": beta, "MSE/pixel": reconstruction_mse(model, x_test),
                           "mean rho_hat": e["mean_activation"], "L0": e["l0"],
                           "dead": e["dead_fraction"], "orientation x": s.orientation_ratio,
                           "coherence x": s.coherence_ratio,
                           "localization x": s.localization_ratio, "seconds": seconds})
        models[beta] = to_numpy(model.params["encoder.W"])
    table.figures["features"] = models
    table.notes.append("orientation/coherence/localization: the features' score over the same "
                       "features with their pixels shuffled (1 = no structure)")
    return table


# ----------------------------------------------------------------------------- (d) frontier

RELU_CODES = dict(hidden_activation="relu", output_activation="linear",
                  subtract_decoder_bias=True)
"""What the frontier's ReLU mechanisms share: ReLU codes, a linear output, x - b2 encoded."""
JUMP = dict(sparsity="jumprelu", jump_bandwidth=0.05, sparsity_weight=0.01)
"""JumpReLU as its preset has it: bandwidth 0.05, L0 weight 0.01."""

FRONTIER = {
    "kl": [dict(sparsity="kl", hidden_activation="sigmoid", output_activation="linear",
                reduction="halfsum", sparsity_target=rho, sparsity_weight=3.0)
           for rho in (0.01, 0.03, 0.1, 0.3)],
    "l1": [dict(RELU_CODES, sparsity="l1", l1_decoder_norm=True, sparsity_weight=beta)
           for beta in (3e-4, 1e-3, 3e-3, 1e-2)],
    "topk": [dict(RELU_CODES, sparsity="topk", k=k) for k in (5, 10, 25, 50, 100)],
    "batchtopk": [dict(RELU_CODES, sparsity="batchtopk", k=k) for k in (5, 10, 25, 50, 100)],
    "jumprelu": [dict(RELU_CODES, **JUMP, jump_threshold=theta) for theta in (0.1, 0.2, 0.3, 0.5)]
                + [dict(RELU_CODES, **dict(JUMP, sparsity_weight=w), jump_threshold=0.3)
                   for w in (1e-4, 1.0)],
}
"""The sweeps of the frontier: KL over its target, L1 over its weight, TopK and BatchTopK over
k, JumpReLU over its thresholds' starting value (and, at 0.3, two other L0 weights: with Adam
the weight hardly sets L0 in a short run, the start does; see the README)."""


def _knob(kwargs):
    """The setting a frontier run was swept over, as its row and its figure label name it."""
    kind = kwargs["sparsity"]
    if kind == "kl":
        return f"rho {kwargs['sparsity_target']:g}"
    if kind == "l1":
        return f"beta {kwargs['sparsity_weight']:g}"
    if kind == "jumprelu":
        return f"theta0 {kwargs['jump_threshold']:g}, lambda {kwargs['sparsity_weight']:g}"
    return f"k {kwargs['k']}"


def _label(kwargs):
    """A frontier point's label on the figure: its knob, JumpReLU's shortened (its start,
    or its L0 weight where that is not the preset's)."""
    if kwargs["sparsity"] != "jumprelu":
        return _knob(kwargs)
    if kwargs["sparsity_weight"] != JUMP["sparsity_weight"]:
        return f"lambda {kwargs['sparsity_weight']:g}"
    return f"theta0 {kwargs['jump_threshold']:g}"


def frontier(x_train, x_test, sweeps=None, n_hidden=1000, epochs=30, batch_size=256, lr=1e-3,
             seed=0, threads=1):
    """Gao et al.'s plot: the fraction of variance unexplained (test set) against L0, the
    active units per sample, for each sparsity mechanism swept over its knob. (For KL's
    sigmoid codes, active means h > 0.5; their codes below that still reach the decoder,
    unlike a ReLU's zeros, so KL's L0 understates what it uses. BatchTopK's L0 is that of
    its inference threshold, which the test set is encoded with: not exactly k.)
    threads: BLAS threads for training (1: the same bits on any machine)."""
    sweeps = FRONTIER if sweeps is None else sweeps
    table = Table("fraction of variance unexplained against L0 (test set)",
                  ["mechanism", "knob", "L0", "FVU", "dead", "dense", "seconds"])
    points = {}
    for kind, settings in sweeps.items():
        for kwargs in settings:
            model = SparseAutoencoder(784, n_hidden, seed=seed, **kwargs)
            _, seconds = train(model, x_train, epochs, batch_size, lr, seed, threads=threads)
            e = evaluate(model, x_test)
            knob = _knob(kwargs)
            table.rows.append({"mechanism": kind, "knob": knob, "L0": e["l0"], "FVU": e["fvu"],
                               "dead": e["dead_fraction"], "dense": e["dense_fraction"],
                               "seconds": seconds})
            points.setdefault(kind, []).append((e["l0"], e["fvu"], _label(kwargs)))
    table.figures["frontier"] = points
    return table


# ----------------------------------------------------------------------------- (e) classification

CODES = {
    "KL (ufldl preset, 196 units)": ("ufldl", dict(), 0.01, 1000),
    "KL (book preset, 1000 units)": ("book", dict(), 0.01, 1000),
    "TopK (k-sparse preset, k 25)": ("k-sparse", dict(), 1e-3, 256),
    "TopK + AuxK (topk preset, k 25)": ("topk", dict(), 1e-3, 256),
}
"""The autoencoders whose codes the softmax classifies: (preset, overrides, lr, batch)."""


def classification(x_train, y_train, x_test, y_test, codes=None, epochs=50, softmax_iter=200,
                   weight_decay=1e-4, seeds=(0, 1, 2)):
    """Codes for classification (Makhzani & Frey report 1.35% error at k = 25, 1000 units, on
    full MNIST): each autoencoder learns from x_train without labels; a softmax regression
    (L-BFGS) then learns the labels from its codes of x_train and is tested on x_test, beside
    one on the raw pixels. Test error in %, mean over seeds."""
    codes = CODES if codes is None else codes
    table = Table("test error of a softmax regression on each input (%)",
                  ["input", "error %", "spread", "L0", "autoencoder seconds"])
    raw = [_softmax_error(x_train, y_train, x_test, y_test, softmax_iter, weight_decay, s)
           for s in seeds]
    table.rows.append({"input": "raw pixels", "error %": float(np.mean(raw)),
                       "spread": float(np.ptp(raw)), "L0": None, "autoencoder seconds": None})
    for label, (preset, overrides, lr, batch) in codes.items():
        errors, l0, seconds = [], [], 0.0
        for s in seeds:
            model = SparseAutoencoder.from_preset(preset, seed=s, **overrides)
            _, t = train(model, x_train, epochs, batch, lr, s)
            seconds += t
            c_train = to_numpy(model.encode(x_train, batch_size=1000)).astype(np.float64)
            c_test = to_numpy(model.encode(x_test, batch_size=1000)).astype(np.float64)
            errors.append(_softmax_error(c_train, y_train, c_test, y_test, softmax_iter,
                                         weight_decay, s))
            l0.append(evaluate(model, x_test)["l0"])
        table.rows.append({"input": label, "error %": float(np.mean(errors)),
                           "spread": float(np.ptp(errors)), "L0": float(np.mean(l0)),
                           "autoencoder seconds": seconds / len(seeds)})
    return table


def _softmax_error(x_train, y_train, x_test, y_test, max_iter, weight_decay, seed):
    """Test error (%) of a softmax regression trained by L-BFGS on standardised inputs."""
    mean, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    a, b = (x_train - mean) / sd, (x_test - mean) / sd
    clf = SoftmaxRegression(a.shape[1], int(max(y_train.max(), y_test.max())) + 1,
                            weight_decay=weight_decay, seed=seed)
    opt = LBFGS(clf.flat_params, clf.flat_grads, max_iter=max_iter)
    xa, ya = clf.backend.asarray(a), clf.backend.asarray(y_train.astype(np.int64),
                                                         dtype=clf.backend.xp.int64)
    opt.minimize(lambda: clf.loss_and_grads(xa, ya, validate=False))
    return 100.0 * (1.0 - clf.score(b, y_test.astype(np.int64)))


# ----------------------------------------------------------------------------- (f) dead units

TOPK = dict(sparsity="topk", k=25, hidden_activation="relu", output_activation="linear")
L1 = dict(sparsity="l1", sparsity_weight=1e-3, hidden_activation="relu",
          output_activation="linear", l1_decoder_norm=True)
DEAD_UNITS = {
    "TopK": TOPK,
    "TopK, AuxK": dict(TOPK, aux_k=256),
    "TopK, x - b2": dict(TOPK, subtract_decoder_bias=True),
    "TopK, x - b2, AuxK": dict(TOPK, subtract_decoder_bias=True, aux_k=256),
    "TopK, x - b2, uniform init": dict(TOPK, subtract_decoder_bias=True, init="uniform"),
    "TopK, x - b2, tied": dict(TOPK, subtract_decoder_bias=True, tied_weights=True),
    "L1": L1,
    "L1, x - b2": dict(L1, subtract_decoder_bias=True),
}
"""The runs of dead_units, each one change from another: AuxK (k_aux 256) with and without
the decoder bias subtracted (issue 25's comparison), the start UFLDL's uniform weights instead
of Gao et al.'s, the weights tied through training, and an L1 model."""
RESAMPLED = ("TopK, x - b2", "L1", "L1, x - b2")
"""The runs repeated with resampling."""


def dead_units(x_train, x_test, runs=None, resampled=RESAMPLED, n_hidden=512, epochs=100,
               batch_size=256, lr=1e-3, init="gao", dead_window=4096, resample_every=400,
               short_windows=(), seed=0, threads=1):
    """Dead units, the problem of ReLU sparse autoencoders: their share (never active on the
    test set; and silent for dead_window training samples at the end, where AuxK or
    resampling tracks them), with and without AuxK (Gao et al.'s normalized MSE), with and
    without the decoder bias subtracted from the input, against resampling (every
    resample_every steps: 400 is three times in 100 epochs of 15 steps), beside the FVU and
    L0 each ends at. The defaults are issue 25's: 784 -> 512, k = 25, k_aux 256, 100 epochs,
    batch 256, Adam lr 1e-3, dead after 4,096 silent samples, Gao et al.'s initialisation
    (`init`, for every run that does not name its own). The AuxK runs are repeated with each
    of short_windows (none by default): AuxK acts only on units already judged dead.
    threads: BLAS threads for training (1: the same bits on any machine)."""
    runs = DEAD_UNITS if runs is None else runs
    table = Table("dead units (test set: never active; training: silent for the window)",
                  ["model", "dead (test)", "dead (training)", "resampled", "L0", "FVU",
                   "seconds"])
    plan = [(label, kwargs, None, dead_window) for label, kwargs in runs.items()]
    plan += [(f"{label}, window {w:,}", kwargs, None, w) for label, kwargs in runs.items()
             if kwargs.get("aux_k") for w in short_windows]
    plan += [(label + ", resampled", runs[label], resample_every, dead_window)
             for label in resampled if label in runs]
    for label, kwargs, every_n, window in plan:
        model = SparseAutoencoder(784, n_hidden, seed=seed, **{"init": init, **kwargs})
        history, seconds = train(model, x_train, epochs, batch_size, lr, seed, threads=threads,
                                 dead_units=DeadUnits(window, resample_every=every_n))
        e = evaluate(model, x_test)
        table.rows.append({"model": label, "dead (test)": e["dead_fraction"],
                           "dead (training)": _last(history, "train_dead_fraction"),
                           "resampled": sum(history.resampled) if every_n else None,
                           "L0": e["l0"], "FVU": e["fvu"], "seconds": seconds})
    table.notes.append(f"{n_hidden} units, {epochs} epochs, batch {batch_size}, lr {lr:g}, "
                       f"init {init} unless named; dead window {dead_window:,} training "
                       f"samples unless named; resampling every {resample_every} steps")
    return table


def _last(history, key):
    values = history.as_dict().get(key)
    return values[-1] if values else None


# ----------------------------------------------------------------------------- the demos

def _tables(result):
    return list(result) if isinstance(result, tuple) else [result]


def _figures(name, result, out):
    """Write an experiment's figures into out; returns the paths."""
    from . import plots
    written = []
    tables = _tables(result)
    if name == "penalties":
        written.append(plots.penalties(tables[0].figures["deviation"], gradient_curves(),
                                       f"{out}/penalties.png"))
    if name == "frontier":
        written.append(plots.frontier(tables[0].figures["frontier"], f"{out}/frontier.png"))
    if name == "weight_sweep":
        features = tables[0].figures["features"]
        panels = [(f"beta {beta:g}", W) for beta, W in features.items()]
        written.append(plots.feature_grids_side_by_side(panels, f"{out}/weight_sweep.png",
                                                        max_units=49))
    return written


QUICK = {
    "penalties": dict(n_hidden=32, epochs=3, batch_size=200, common=0.1,
                      weights={"kl": (0.2,), "squared": (1.0,), "absolute": (0.1,)}),
    "batch_sizes": dict(sizes=(10, 100), train_sizes=(50, 200), n_hidden=24, epochs=2,
                        samples=20),
    "weight_sweep": dict(weights=(0.0, 3.0), n_hidden=24, epochs=2),
    "frontier": dict(sweeps={"kl": FRONTIER["kl"][:1], "l1": FRONTIER["l1"][:1],
                             "topk": [dict(FRONTIER["topk"][0], k=3)],
                             "batchtopk": [dict(FRONTIER["batchtopk"][0], k=3)],
                             "jumprelu": FRONTIER["jumprelu"][:1]}, n_hidden=40, epochs=2),
    "classification": dict(codes={"TopK (k-sparse preset, 40 units, k 5)":
                                  ("k-sparse", dict(n_hidden=40, k=5), 1e-3, 100)},
                           epochs=2, softmax_iter=20),
    "dead_units": dict(runs={"TopK": dict(DEAD_UNITS["TopK"], k=5),
                             "TopK, x - b2, AuxK": dict(DEAD_UNITS["TopK, x - b2, AuxK"], k=5,
                                                        aux_k=10),
                             "L1": DEAD_UNITS["L1"]},
                       resampled=("L1",), n_hidden=40, epochs=2, batch_size=100,
                       dead_window=200, resample_every=6),
}
"""Settings of each experiment for a seconds-long smoke run (--quick; the tests)."""


def main(name, doc, argv=None):
    """Run experiment `name` as a demo: parse --out, --quick, --data-dir, --no-download,
    --seed; load MNIST (offline: the 5,000-digit subset); print the tables; write
    <out>/<name>.json and the figures. Returns 0."""
    import argparse
    import json
    import os

    from ..data import datasets
    from ..files.atomic import atomic_write
    parser = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc)
    parser.add_argument("--out", default=f"runs/{name}", help=f"folder for {name}.json and the "
                        f"figures (default: runs/{name})")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long smoke run on 600 digits (for the tests)")
    parser.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
    parser.add_argument("--no-download", action="store_true",
                        help="never try the internet (offline: the 4,000/1,000 subset)")
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffling (default 0)")
    args = parser.parse_args(argv)
    data = datasets.load("mnist", args.data_dir, download=not args.no_download, progress=False)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:600], y_train[:600], x_test[:200], \
            y_test[:200]
    print(f"data: {data.name}, {len(x_train):,} train / {len(x_test):,} test, from "
          f"{data.source}")
    kwargs = dict(QUICK[name]) if args.quick else {}
    function = globals()[name]
    t0 = time.perf_counter()
    if name == "classification":
        seeds = (args.seed,) if args.quick else tuple(range(args.seed, args.seed + 3))
        result = function(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                          seeds=seeds, **kwargs)
    else:
        result = function(x_train, x_test, seed=args.seed, **kwargs)
    seconds = time.perf_counter() - t0
    for table in _tables(result):
        print("\n" + table.format())
    os.makedirs(args.out, exist_ok=True)
    written = _figures(name, result, args.out)
    path = os.path.join(args.out, f"{name}.json")
    with atomic_write(path, "w") as f:
        json.dump({"data": data.source, "n_train": len(x_train), "n_test": len(x_test),
                   "seconds": seconds, "tables": [t.as_dict() for t in _tables(result)]},
                  f, indent=1, default=float)
    print(f"\n{seconds:.0f} s; wrote {', '.join(map(str, [path, *written]))}")
    return 0
