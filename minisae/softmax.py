"""Softmax regression: a linear classifier with a softmax over K classes (UFLDL's exercise),
built from the same pieces as the autoencoder: one Dense layer and functional.py's formulas.

    z    = x @ W + b                                  logits, (batch, K)      Dense
    p    = softmax(z),  p[i, k] = exp(z[i, k]) / sum_j exp(z[i, j])          F.log_softmax
    loss = -(1/batch) sum_i log p[i, y_i]  +  lambda/2 ||W||^2               F.cross_entropy

and its gradient, the one every classifier course derives:

    dloss/dz = (p - onehot(y)) / batch               (batch, K)             F.cross_entropy_backward
    dW = x.T @ dz + lambda W,   db = sum of dz over the batch               Dense.backward

The loss is convex in (W, b), so L-BFGS (minisae.LBFGS) finds its minimum in a few dozen
iterations; Adam gets there too. Same conventions as SparseAutoencoder: named views of one
flat buffer, `loss_and_grads` fills `grads`, any backend.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import checks
from . import functional as F
from .backend import DTYPES, flat_views, get_backend, namespace, to_numpy
from .config import MAX_WEIGHT
from .errors import InputError
from .layers import Dense
from .losses import Loss

INIT_SCALE = 0.005
"""Weights start as INIT_SCALE * N(0, 1), as in UFLDL's softmax exercise; biases at 0."""


@dataclass(frozen=True)
class SoftmaxConfig:
    """Everything that defines a SoftmaxRegression but its weights."""

    n_inputs: int
    n_classes: int
    weight_decay: float = 1e-4
    dtype: str = "float64"
    seed: int | None = 0

    def validated(self):
        return replace(
            self, n_inputs=checks.check_int(self.n_inputs, "n_inputs", 1),
            n_classes=checks.check_int(self.n_classes, "n_classes", 2),
            weight_decay=checks.check_real(self.weight_decay, "weight_decay", 0.0, MAX_WEIGHT),
            dtype=checks.check_choice(checks.dtype_name(self.dtype), "dtype", DTYPES),
            seed=None if self.seed is None else checks.check_int(self.seed, "seed", 0, 2**63 - 1))


class SoftmaxRegression:
    """Softmax regression, K classes: p = softmax(x @ W + b).

    Parameters live in one flat buffer (`flat_params`) and their gradients in another
    (`flat_grads`); `params` and `grads` are dicts of views into them: "W" (n_inputs,
    n_classes) and "b" (n_classes,). Optimizers (Adam, SGD, LBFGS) update them in place."""

    def __init__(self, n_inputs, n_classes, weight_decay=1e-4, backend="numpy", dtype="float64",
                 seed=0):
        self.config = SoftmaxConfig(n_inputs, n_classes, weight_decay, dtype, seed).validated()
        self.backend = get_backend(backend, dtype=self.config.dtype)
        self.dtype = self.backend.dtype
        c = self.config
        checks.check_fits(4 * (c.n_inputs + 1) * c.n_classes * 8, self.backend.memory(),
                          f"a softmax regression of n_inputs={c.n_inputs:,} and n_classes="
                          f"{c.n_classes:,}", "use fewer inputs or classes",
                          self.backend.memory_name())
        shapes = {"W": (self.config.n_inputs, self.config.n_classes), "b": (self.config.n_classes,)}
        W0 = INIT_SCALE * np.random.default_rng(seed).standard_normal(shapes["W"])
        self.flat_params = self.backend.asarray(np.concatenate([W0.ravel(), np.zeros(shapes["b"])]))
        self.flat_grads = self.backend.zeros(self.flat_params.shape)
        self.params = flat_views(self.flat_params, shapes)
        self.grads = flat_views(self.flat_grads, shapes)
        self.layer = Dense(self.params["W"], self.params["b"], self.grads["W"], self.grads["b"],
                           needs_input_grad=False)

    def loss_and_grads(self, x, y, validate=True):
        """Loss of the batch (x (batch, n_inputs), y (batch,) integer labels in 0..K-1), with
        its gradient written into `self.grads`. Returns a Loss with the parts cross_entropy and
        weight_decay (and .accuracy). validate=False skips the checks (for a loop that passes
        the same checked arrays many times)."""
        x, y = self._inputs(x, y, validate)
        W, lam = self.params["W"], self.config.weight_decay

        # forward
        z = self.layer.forward(x)
        loss = self._loss(z, y)

        # backward: the cross-entropy's gradient at z, then the Dense layer
        dz = F.cross_entropy_backward(F.softmax(z), y)
        self.layer.backward(dz)
        self.grads["W"] += F.weight_decay_backward(W, lam)
        return loss

    def loss(self, x, y):
        """The loss of (x, y), forward only; grads are left alone."""
        x, y = self._inputs(x, y)
        return self._loss(self.layer.forward(x), y)

    def _loss(self, z, y):
        parts = {"cross_entropy": F.cross_entropy(F.log_softmax(z), y),
                 "weight_decay": F.weight_decay([self.params["W"]], self.config.weight_decay)}
        return Loss(parts, metrics={"accuracy": F.accuracy(z, y)})

    # ------------------------------------------------------------------ inference

    def logits(self, x):
        """z = x @ W + b, shape (batch, n_classes), on the model's backend."""
        return self.layer.forward(self._check_x(x))

    def predict_proba(self, x):
        """p = softmax(x @ W + b), shape (batch, n_classes); rows sum to 1."""
        return F.softmax(self.logits(x))

    def predict(self, x):
        """The most probable class of each row, shape (batch,) integers, on the backend."""
        return namespace(self.params["W"]).argmax(self.logits(x), axis=1)

    def score(self, x, y):
        """Accuracy on (x, y) as a float in [0, 1]."""
        x, y = self._inputs(x, y)
        return float(F.accuracy(self.layer.forward(x), y))

    # ------------------------------------------------------------------ checks

    def _inputs(self, x, y, validate=True):
        if not checks.check_bool(validate, "validate"):
            return self.backend.asarray(x), self.backend.asarray(y, dtype=self.backend.xp.int64)
        x = self._check_x(x)
        return x, self._check_y(y, x.shape[0])

    def _check_x(self, x, name="x"):
        x = checks.as_numeric(x, name)
        checks.check_matrix(x, self.config.n_inputs, name)
        x = self.backend.asarray(x)
        checks.check_values(x, namespace(x), unit_range=False, what=name)
        return x

    def _check_y(self, y, batch, name="y", rows="x"):
        """y as integer labels on the backend, after checking shape, type and range."""
        K = self.config.n_classes
        what = f"{name} must be integer class labels in 0..{K - 1}, shape ({batch},)"
        y_host = to_numpy(checks.as_numeric(y, name))
        if y_host.ndim == 2 and y_host.shape[1] == K:
            raise InputError(f"{what}, got a 2-D array of shape {y_host.shape}; one-hot labels? "
                             "pass y.argmax(axis=1)")
        if y_host.shape != (batch,):
            raise InputError(f"{what} (one per row of {rows}), got shape {y_host.shape}")
        if y_host.dtype.kind not in "iu":
            whole = y_host.dtype.kind == "f" and np.isfinite(y_host).all() and \
                (y_host == np.round(y_host)).all()
            raise InputError(f"{what}, got dtype {y_host.dtype}"
                             + ("; they are whole numbers: pass y.astype(int)" if whole else ""))
        if y_host.min() < 0 or y_host.max() >= K:
            raise InputError(f"{what}, got labels from {y_host.min()} to {y_host.max()}; "
                             f"map them to 0..{K - 1} or build the model with more classes")
        return self.backend.asarray(y_host, dtype=self.backend.xp.int64)

    @property
    def n_params(self):
        return int(self.flat_params.shape[0])

    def __repr__(self):
        c = self.config
        return (f"SoftmaxRegression({c.n_inputs} -> {c.n_classes}, lambda={c.weight_decay}, "
                f"{self.backend.name}/{c.dtype})")
