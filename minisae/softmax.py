"""Softmax regression: a linear classifier with a softmax over K classes (UFLDL's exercise).

    z    = x @ W + b                                  logits, (batch, K)
    p    = softmax(z),  p[i, k] = exp(z[i, k]) / sum_j exp(z[i, j])
    loss = -(1/batch) sum_i log p[i, y_i]  +  lambda/2 ||W||^2       (the bias is not decayed)

and its gradient, the one every classifier course derives:

    dloss/dz = (p - onehot(y)) / batch               (batch, K)
    dW = x.T @ dz + lambda W,   db = sum of dz over the batch

The loss is convex in (W, b), so L-BFGS (minisae.lbfgs) finds its minimum in a few dozen
iterations; Adam gets there too. The stateless math is in the functions below; the class only
wires them, with the same conventions as SparseAutoencoder (named views of one flat buffer,
`loss_and_grads` fills `grads`, any backend).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .backend import array_module as _xp
from .backend import flat_views, get_backend, to_numpy
from .checks import as_numeric
from .errors import ConfigError, InputError

INIT_SCALE = 0.005
"""Weights start as INIT_SCALE * N(0, 1), as in UFLDL's softmax exercise; biases at 0."""


# ----------------------------------------------------------------------------- the math

def log_softmax(z):
    """log p = z - logsumexp(z) per row, shape (batch, K).

    Subtracting the row's max first changes nothing (p is invariant to a shift of z) and
    keeps exp() from overflowing: the largest term becomes exp(0) = 1, so the sum is in
    [1, K] and its log is finite."""
    xp = _xp(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(z):
    """p = exp(z) / sum of exp(z) per row, shape (batch, K); rows sum to 1. Max-shifted."""
    xp = _xp(z)
    e = xp.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(log_p, y):
    """-(1/batch) sum_i log p[i, y_i]: log_p (batch, K) from log_softmax, y (batch,) ints."""
    batch = log_p.shape[0]
    return -log_p[_xp(log_p).arange(batch), y].sum() * (1.0 / batch)


def softmax_cross_entropy_backward(p, y):
    """d cross_entropy(log_softmax(z), y) / dz = (p - onehot(y)) / batch, shape (batch, K).

    With p = softmax(z): d(-log p_y)/dz_k = p_k - [k == y], since log p_y = z_y - logsumexp(z)
    and d logsumexp(z)/dz_k = p_k. A fresh array; p is not modified."""
    batch = p.shape[0]
    dz = p * (1.0 / batch)
    dz[_xp(p).arange(batch), y] -= 1.0 / batch
    return dz


def weight_decay(W, lam):
    """lambda/2 ||W||^2 (a 0-d array, or 0.0 when lambda is 0)."""
    return _xp(W).vdot(W, W) * (0.5 * lam) if lam else 0.0


def weight_decay_backward(W, lam):
    """d/dW of lambda/2 ||W||^2 = lambda W."""
    return lam * W


def accuracy(z, y):
    """Fraction of rows whose largest logit is at the label (a 0-d array)."""
    return (z.argmax(axis=1) == y).sum() * (1.0 / z.shape[0])


# ----------------------------------------------------------------------------- the model

class SoftmaxLoss:
    """One evaluation's loss parts, kept as 0-d arrays on the device until read (as floats)."""

    def __init__(self, cross_entropy, weight_decay, accuracy):
        self._parts = (cross_entropy, weight_decay)
        self._accuracy = accuracy

    cross_entropy = property(lambda self: float(self._parts[0]))
    weight_decay = property(lambda self: float(self._parts[1]))
    total = property(lambda self: sum(float(p) for p in self._parts))
    accuracy = property(lambda self: float(self._accuracy))
    """Training accuracy of the batch at the parameters the loss was computed with."""

    def as_dict(self):
        return {"total": self.total, "cross_entropy": self.cross_entropy,
                "weight_decay": self.weight_decay, "accuracy": self.accuracy}

    def __repr__(self):
        return (f"SoftmaxLoss(total={self.total:.6g}, cross_entropy={self.cross_entropy:.6g}, "
                f"weight_decay={self.weight_decay:.6g}, accuracy={self.accuracy:.4f})")


@dataclass(frozen=True)
class SoftmaxConfig:
    """Everything that defines a SoftmaxRegression but its weights."""

    n_inputs: int
    n_classes: int
    weight_decay: float = 1e-4
    dtype: str = "float64"
    seed: int | None = 0

    def validate(self):
        for name, low in (("n_inputs", 1), ("n_classes", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        lam = self.weight_decay
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {lam!r}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ConfigError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        return replace(self, n_inputs=int(self.n_inputs), n_classes=int(self.n_classes),
                       weight_decay=float(lam), seed=None if self.seed is None else int(self.seed))


class SoftmaxRegression:
    """Softmax regression, K classes: p = softmax(x @ W + b).

    Parameters live in one flat buffer (`flat_params`) and their gradients in another
    (`flat_grads`); `params` and `grads` are dicts of views into them: "W" (n_inputs,
    n_classes) and "b" (n_classes,). Optimizers (Adam, SGD, LBFGS) update them in place."""

    def __init__(self, n_inputs, n_classes, weight_decay=1e-4, backend="numpy", dtype="float64",
                 seed=0):
        dtype = np.dtype(dtype).name if isinstance(dtype, (type, np.dtype)) else str(dtype)
        self.config = SoftmaxConfig(n_inputs, n_classes, weight_decay, dtype, seed).validate()
        self.backend = get_backend(backend, dtype=dtype)
        self.dtype = self.backend.dtype
        shapes = {"W": (self.config.n_inputs, self.config.n_classes), "b": (self.config.n_classes,)}
        rng = np.random.default_rng(seed)
        W0 = INIT_SCALE * rng.standard_normal(shapes["W"])
        self.flat_params = self.backend.asarray(np.concatenate([W0.ravel(), np.zeros(shapes["b"])]))
        self.flat_grads = self.backend.zeros(self.flat_params.shape)
        self.params = flat_views(self.flat_params, shapes)
        self.grads = flat_views(self.flat_grads, shapes)

    # ------------------------------------------------------------------ inference

    def logits(self, x):
        """z = x @ W + b, shape (batch, n_classes), on the model's backend."""
        return self._logits(self._check_x(x))

    def _logits(self, x):
        z = x @ self.params["W"]
        z += self.params["b"]
        return z

    def predict_proba(self, x):
        """p = softmax(x @ W + b), shape (batch, n_classes); rows sum to 1."""
        return softmax(self.logits(x))

    def predict(self, x):
        """The most probable class of each row, shape (batch,) integers, on the backend."""
        return self.logits(x).argmax(axis=1)

    def score(self, x, y):
        """Accuracy on (x, y) as a float in [0, 1]."""
        x = self._check_x(x)
        return float(accuracy(self._logits(x), self._check_y(y, x.shape[0])))

    # ------------------------------------------------------------------ training

    def loss_and_grads(self, x, y, validate=True):
        """Loss of the batch (x (batch, n_inputs), y (batch,) integer labels in 0..K-1), with
        its gradient written into `self.grads`. Returns a SoftmaxLoss. validate=False skips
        the checks (for a loop that passes the same checked arrays many times)."""
        if validate:
            x = self._check_x(x)
            y = self._check_y(y, x.shape[0])
        else:
            x, y = self.backend.asarray(x), self.backend.asarray(y, dtype=np.int64)
        W, lam = self.params["W"], self.config.weight_decay

        # forward
        z = self._logits(x)
        log_p = log_softmax(z)
        ce = cross_entropy(log_p, y)
        wd = weight_decay(W, lam)

        # backward (in the forward pass: z = x @ W + b, then the loss of log_softmax(z))
        dz = softmax_cross_entropy_backward(_xp(log_p).exp(log_p), y)
        dW = x.T @ dz
        if lam:
            dW += weight_decay_backward(W, lam)
        self.grads["W"][...] = dW
        self.grads["b"][...] = dz.sum(axis=0)
        return SoftmaxLoss(ce, wd, accuracy(z, y))

    def loss(self, x, y):
        """The loss of (x, y), forward only; grads are left alone."""
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        z = self._logits(x)
        return SoftmaxLoss(cross_entropy(log_softmax(z), y),
                           weight_decay(self.params["W"], self.config.weight_decay), accuracy(z, y))

    # ------------------------------------------------------------------ checks

    def _check_x(self, x):
        n = self.config.n_inputs
        x = as_numeric(x)
        shape = x.shape
        if len(shape) != 2 or shape[1] != n:
            hint = " (one sample? use x[None, :])" if len(shape) == 1 else ""
            raise InputError(f"x must have shape (batch, {n}), got {tuple(shape)}{hint}")
        if shape[0] == 0:
            raise InputError("x is an empty batch (0 rows); pass at least one sample")
        x = self.backend.asarray(x)
        if not bool(self.backend.xp.isfinite(x).all()):
            raise InputError("x contains NaN or inf; clean or impute the data first")
        return x

    def _check_y(self, y, batch):
        """y as integer labels on the backend, after checking shape, type and range."""
        K = self.config.n_classes
        what = f"y must be integer class labels in 0..{K - 1}, shape ({batch},)"
        y_host = to_numpy(y)
        if y_host.ndim == 2 and y_host.shape[1] == K:
            raise InputError(f"{what}, got a 2-D array of shape {y_host.shape}; one-hot labels? "
                             "pass y.argmax(axis=1)")
        if y_host.shape != (batch,):
            raise InputError(f"{what} (one per row of x), got shape {y_host.shape}")
        if y_host.dtype.kind not in "iu":
            if y_host.dtype.kind == "f" and np.isfinite(y_host).all() and \
                    (y_host == np.round(y_host)).all():
                hint = "; they are whole numbers: pass y.astype(int)"
            else:
                hint = ""
            raise InputError(f"{what}, got dtype {y_host.dtype}{hint}")
        if batch and (y_host.min() < 0 or y_host.max() >= K):
            raise InputError(f"{what}, got labels from {y_host.min()} to {y_host.max()}; "
                             f"map them to 0..{K - 1} or build the model with more classes")
        return self.backend.asarray(y_host, dtype=np.int64)

    # ------------------------------------------------------------------ conveniences

    @property
    def n_params(self):
        return int(self.flat_params.size)

    def __repr__(self):
        c = self.config
        return (f"SoftmaxRegression({c.n_inputs} -> {c.n_classes}, lambda={c.weight_decay}, "
                f"{self.backend.name}/{self.dtype.name})")
