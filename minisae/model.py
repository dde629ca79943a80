"""The sparse autoencoder: a sigmoid coding layer pushed toward a target mean activation.

    h       = sigmoid(x @ W1 + b1)                  (batch, n_hidden)
    y       = sigmoid(h @ W2 + b2)  or  h @ W2 + b2  (batch, n_inputs)
    rho_hat = mean of h over the batch               (n_hidden,)
    loss    = reconstruction(y, x) + beta * sum_j KL(rho || rho_hat_j)
              + lambda / 2 * (||W1||^2 + ||W2||^2)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import functional as F
from .backend import flat_views, get_backend, to_numpy
from .errors import ConfigError, InputError
from .layers import ACTIVATIONS, Buffers, Dense, Sigmoid

OUTPUT_ACTIVATIONS = ("sigmoid", "linear")
RECONSTRUCTION_LOSSES = ("mse", "bce")


class Loss:
    """One step's loss parts, kept as 0-d arrays on the device until read: reading a part (a
    float) is where a GPU step waits for its result, so a loop that reads every few steps
    lets the GPU run ahead."""

    def __init__(self, reconstruction, sparsity, weight_decay, rho_hat):
        self._parts = (reconstruction, sparsity, weight_decay)
        self._rho_hat = rho_hat

    reconstruction = property(lambda self: float(self._parts[0]))
    sparsity = property(lambda self: float(self._parts[1]))
    weight_decay = property(lambda self: float(self._parts[2]))
    total = property(lambda self: sum(float(p) for p in self._parts))

    @property
    def mean_activation(self):
        """rho_hat, the per-unit mean activation over the batch, as a NumPy array."""
        return to_numpy(self._rho_hat).copy()

    def as_dict(self):
        return {"total": self.total, "reconstruction": self.reconstruction,
                "sparsity": self.sparsity, "weight_decay": self.weight_decay,
                "mean_activation": float(self.mean_activation.mean())}

    def __repr__(self):
        return ("Loss(total={:.6g}, reconstruction={:.6g}, sparsity={:.6g}, weight_decay={:.6g})"
                .format(self.total, self.reconstruction, self.sparsity, self.weight_decay))


@dataclass(frozen=True)
class Config:
    """Everything that defines a model (not its weights); saved in checkpoints."""

    n_inputs: int
    n_hidden: int
    sparsity_target: float = 0.1
    sparsity_weight: float = 0.2
    weight_decay: float = 0.0
    output_activation: str = "sigmoid"
    reconstruction_loss: str = "mse"
    reduction: str = "mean"
    dtype: str = "float32"
    seed: int | None = 42

    def normalized(self):
        """The same config in plain Python numbers: a NumPy float64 scalar would upcast the
        float32 math it meets, and cannot be written to JSON. Call after validate()."""
        return replace(self, n_inputs=int(self.n_inputs), n_hidden=int(self.n_hidden),
                       sparsity_target=float(self.sparsity_target),
                       sparsity_weight=float(self.sparsity_weight),
                       weight_decay=float(self.weight_decay),
                       seed=None if self.seed is None else int(self.seed))

    def validate(self):
        def need(ok, msg):
            if not ok:
                raise ConfigError(msg)

        for name in ("n_inputs", "n_hidden"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1,
                 f"{name} must be a positive integer, got {v!r}")
        rho = self.sparsity_target
        need(_is_real(rho) and 0.0 < rho < 1.0,
             f"sparsity_target must be strictly between 0 and 1 (a mean activation), got {rho!r}")
        for name in ("sparsity_weight", "weight_decay"):
            v = getattr(self, name)
            need(_is_real(v) and v >= 0.0, f"{name} must be a finite number >= 0, got {v!r}")
        need(self.output_activation in OUTPUT_ACTIVATIONS,
             f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {self.output_activation!r}")
        need(self.reconstruction_loss in RECONSTRUCTION_LOSSES,
             f"reconstruction_loss must be one of {RECONSTRUCTION_LOSSES}, got {self.reconstruction_loss!r}")
        need(self.reduction in F.REDUCTIONS,
             f"reduction must be one of {F.REDUCTIONS}, got {self.reduction!r}")
        need(not (self.reconstruction_loss == "bce" and self.output_activation != "sigmoid"),
             "reconstruction_loss='bce' needs output_activation='sigmoid' (cross-entropy compares "
             "probabilities); use 'mse' with a linear output")
        need(not (self.reconstruction_loss == "bce" and self.reduction != "mean"),
             "reduction='halfsum' is UFLDL's half squared error and applies to 'mse' only; "
             "use reduction='mean' with 'bce'")
        need(self.seed is None or (isinstance(self.seed, (int, np.integer)) and self.seed >= 0),
             f"seed must be a non-negative integer or None, got {self.seed!r}")


def _dtype_name(dtype):
    """"float32" for "float32", np.float32 or np.dtype("float32"); other values pass through
    unchanged for get_backend to reject with its message."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(v)


class SparseAutoencoder:
    """A one-hidden-layer autoencoder with the KL sparsity penalty (Géron; UFLDL).

    Parameters live in one flat buffer (`flat_params`), and their gradients in another
    (`flat_grads`); `params` and `grads` are dicts of named views into them:
    "encoder.W" (n_inputs, n_hidden), "encoder.b" (n_hidden,), "decoder.W" (n_hidden,
    n_inputs), "decoder.b" (n_inputs,). Optimizers update the views in place."""

    def __init__(self, n_inputs=784, n_hidden=1000, sparsity_target=0.1, sparsity_weight=0.2,
                 weight_decay=0.0, output_activation="sigmoid", reconstruction_loss="mse",
                 reduction="mean", backend="numpy", dtype="float32", seed=42):
        dtype = _dtype_name(dtype)
        self.config = Config(n_inputs, n_hidden, sparsity_target, sparsity_weight, weight_decay,
                             output_activation, reconstruction_loss, reduction, dtype, seed)
        self.config.validate()
        self.config = self.config.normalized()
        self.backend = get_backend(backend, dtype=dtype)
        self.dtype = self.backend.dtype

        shapes = {"encoder.W": (n_inputs, n_hidden), "encoder.b": (n_hidden,),
                  "decoder.W": (n_hidden, n_inputs), "decoder.b": (n_inputs,)}
        self.flat_params = self.backend.asarray(self._initial_weights(shapes, seed))
        self.flat_grads = self.backend.zeros(self.flat_params.shape)
        self.params = flat_views(self.flat_params, shapes)
        self.grads = flat_views(self.flat_grads, shapes)

        p, g = self.params, self.grads
        # The first layer needs no dx: nothing upstream of x is learned.
        self.encoder = Dense(p["encoder.W"], p["encoder.b"], g["encoder.W"], g["encoder.b"],
                             needs_input_grad=False)
        self.encoder_activation = Sigmoid()
        self.decoder = Dense(p["decoder.W"], p["decoder.b"], g["decoder.W"], g["decoder.b"])
        self.output_activation = ACTIVATIONS[output_activation]()
        self._buffers = Buffers()
        self.fused = True
        """Take the fast path (`_loss_and_grads_fused`) where it applies: a sigmoid output with
        the MSE, the book's model. False: always the plain layer-by-layer path below, which
        the fast one must match (tests/test_fastpath.py)."""

    @staticmethod
    def _initial_weights(shapes, seed):
        """Weights uniform in +-sqrt(6 / (n_in + n_out + 1)) (UFLDL's), biases 0, drawn with
        NumPy's generator so that one seed gives one model on every backend."""
        rng = np.random.default_rng(seed)
        parts = []
        for name, shape in shapes.items():
            if name.endswith(".W"):
                r = math.sqrt(6.0 / (shape[0] + shape[1] + 1))
                parts.append(rng.uniform(-r, r, size=shape).ravel())
            else:
                parts.append(np.zeros(shape[0]))
        return np.concatenate(parts)

    # ------------------------------------------------------------------ inference (fresh arrays)

    def encode(self, x):
        """h = sigmoid(x @ W1 + b1), shape (batch, n_hidden), on the model's backend."""
        return self._encode(self._check_input(x))

    def _encode(self, x):
        z = x @ self.params["encoder.W"]
        z += self.params["encoder.b"]
        return F.sigmoid(z, out=z)

    def decode(self, h):
        """y = sigmoid(h @ W2 + b2) (or without the sigmoid for a linear output)."""
        h = self.backend.asarray(h)
        if h.ndim != 2 or h.shape[1] != self.config.n_hidden:
            raise InputError(f"decode expects codes of shape (batch, {self.config.n_hidden}), "
                             f"got {tuple(h.shape)}")
        z = h @ self.params["decoder.W"]
        z += self.params["decoder.b"]
        return F.sigmoid(z, out=z) if self.config.output_activation == "sigmoid" else z

    def reconstruct(self, x):
        """decode(encode(x)), shape (batch, n_inputs)."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ training

    def loss_and_grads(self, x, validate=True):
        """Loss of batch x (batch, n_inputs), and its gradient written into `self.grads`.

        x may be a NumPy array or one of the backend's. validate=False skips the shape and
        finiteness checks (the training loop checks the whole set once instead)."""
        cfg = self.config
        x = self._check_input(x) if validate else self.backend.asarray(x)
        if self.fused and cfg.output_activation == "sigmoid" and cfg.reconstruction_loss == "mse":
            return self._loss_and_grads_fused(x)
        batch = x.shape[0]

        # forward
        h = self.encoder_activation.forward(self.encoder.forward(x))
        z = self.decoder.forward(h)
        y = self.output_activation.forward(z)

        # losses, and the gradient of the reconstruction term w.r.t. the output layer's input
        if cfg.reconstruction_loss == "bce":
            reconstruction = F.bce_with_logits(z, x)
            dz = F.bce_with_logits_backward(y, x, out=self._buffers.get("dz", y))
        else:
            dy = F.mse_backward(y, x, cfg.reduction, out=self._buffers.get("dy", y))
            # dy = 2c (y - x), so c * sum((y - x)^2) = sum(dy^2) / (4c): no second pass over y - x.
            c = F._reduction_scale(cfg.reduction, x.shape)
            reconstruction = self.backend.xp.vdot(dy, dy) * (0.25 / c)
            dz = self.output_activation.backward(dy)

        rho_hat = h.sum(axis=0)  # a fresh (small) array: the returned Loss keeps it
        rho_hat *= 1.0 / batch
        rho, beta = cfg.sparsity_target, cfg.sparsity_weight
        sparsity = F.kl_penalty(rho, rho_hat, beta)
        W1, W2 = self.params["encoder.W"], self.params["decoder.W"]
        weight_decay = F.weight_decay([W1, W2], cfg.weight_decay)

        # backward
        dh = self.decoder.backward(dz)
        if beta:
            # each h[i, j] reaches the penalty through rho_hat_j = mean_i h[i, j]
            dh += F.kl_divergence_backward(rho, rho_hat) * (beta / batch)
        self.encoder.backward(self.encoder_activation.backward(dh))
        self._add_weight_decay_grads()

        return Loss(reconstruction, sparsity, weight_decay, rho_hat)

    def _add_weight_decay_grads(self):
        """grads of W1 and W2 += lambda * W (biases are not decayed)."""
        lam = self.config.weight_decay
        if lam:
            for name in ("encoder.W", "decoder.W"):
                self.grads[name] += F.weight_decay_backward(self.params[name], lam)

    def loss(self, x):
        """The loss of x, forward only: grads are left alone (for validation and inspection).
        rho_hat is the mean activation over all of x."""
        cfg = self.config
        x = self._check_input(x)
        h = self._encode(x)
        z = h @ self.params["decoder.W"]
        z += self.params["decoder.b"]
        if cfg.reconstruction_loss == "bce":
            reconstruction = F.bce_with_logits(z, x)
        else:
            y = F.sigmoid(z, out=z) if cfg.output_activation == "sigmoid" else z
            reconstruction = F.mse(y, x, cfg.reduction)
        rho_hat = h.mean(axis=0)
        sparsity = F.kl_penalty(cfg.sparsity_target, rho_hat, cfg.sparsity_weight)
        weight_decay = F.weight_decay([self.params["encoder.W"], self.params["decoder.W"]], cfg.weight_decay)
        return Loss(reconstruction, sparsity, weight_decay, rho_hat)

    def _loss_and_grads_fused(self, x):
        """loss_and_grads for a sigmoid output with the MSE (the book's model), with fewer
        arrays and kernel launches. The same math as the plain path above (a test checks that
        both give the same numbers, tests/test_fastpath.py). What differs:

        - the output y is never stored: one fused function goes from the decoder's z to dz
          and the squared error (F.bias_sigmoid_mse_backward_), in place;
        - work is done in place: z1 becomes h, dh becomes dz1 (F.sigmoid_backward_);
        - sums over the batch are products with a vector of ones, so BLAS's threads share
          them (sum_i a[i, j] = (ones @ a)[j]);
        - on CuPy each of those functions is one kernel instead of one per operation.
        The layers' input and output caches (`_x`, `_y`) are set as the plain forward sets them;
        the decoder's output buffer is left holding scratch."""
        cfg, xp = self.config, self.backend.xp
        enc, dec = self.encoder, self.decoder
        batch, n_inputs = x.shape
        n_hidden = enc.W.shape[1]
        rho, beta = cfg.sparsity_target, cfg.sparsity_weight
        scale = F._reduction_scale(cfg.reduction, x.shape)
        ones = self._ones(batch)

        # forward: h = sigmoid(x @ W1 + b1), in place in the encoder's output buffer
        enc._x = x
        h = xp.matmul(x, enc.W, out=enc._buffer("y", x, (batch, n_hidden)))
        F.bias_sigmoid_(h, enc.b)
        self.encoder_activation._y = dec._x = h
        rho_hat = xp.matmul(ones, h)  # a fresh (small) array: the returned Loss keeps it
        rho_hat *= 1.0 / batch

        # output layer and loss: dz = d(reconstruction) / d(h @ W2 + b2)
        z = xp.matmul(h, dec.W, out=dec._buffer("y", h, (batch, n_inputs)))
        dz = self._buffers.get("dy", z)
        reconstruction = F.bias_sigmoid_mse_backward_(z, dec.b, x, scale, out=dz) * scale
        sparsity = F.kl_penalty(rho, rho_hat, beta)
        weight_decay = F.weight_decay([enc.W, dec.W], cfg.weight_decay)

        # backward
        xp.matmul(h.T, dz, out=dec.dW)
        xp.matmul(ones, dz, out=dec.db)
        dh = xp.matmul(dz, dec.W.T, out=dec._buffer("dx", h))
        kl_row = F.kl_divergence_backward(rho, rho_hat) * (beta / batch) if beta else None
        work = self._buffers.get("work", dh) if xp is np else None  # CuPy's kernel needs none
        dz1 = F.sigmoid_backward_(dh, h, kl_row, work=work)
        xp.matmul(x.T, dz1, out=enc.dW)
        xp.matmul(ones, dz1, out=enc.db)
        self._add_weight_decay_grads()

        return Loss(reconstruction, sparsity, weight_decay, rho_hat)

    def _ones(self, batch):
        """A vector of `batch` ones (kept while the batch size stays)."""
        ones = getattr(self, "_ones_vector", None)
        if ones is None or ones.shape[0] != batch:
            ones = self._ones_vector = self.backend.xp.ones(batch, dtype=self.dtype)
        return ones

    def _check_input(self, x):
        n = self.config.n_inputs
        shape = getattr(x, "shape", None)
        if shape is None:
            x = np.asarray(x)
            shape = x.shape
        if len(shape) != 2:
            hint = " (one sample? use x[None, :])" if len(shape) == 1 else \
                " (images? flatten them to (batch, n_inputs), e.g. x.reshape(len(x), -1))" \
                if len(shape) > 2 else ""
            raise InputError(f"x must be 2-D (batch, {n}), got {len(shape)}-D shape {tuple(shape)}{hint}")
        if shape[1] != n:
            raise InputError(f"x has {shape[1]} features but the model has n_inputs={n}; "
                             f"got shape {tuple(shape)}, expected (batch, {n})")
        if shape[0] == 0:
            raise InputError("x is an empty batch (0 rows); pass at least one sample")
        x = self.backend.asarray(x)
        xp = self.backend.xp
        # One cheap reduction first; the exact elementwise check only when it is not finite
        # (a sum of huge finite values can overflow to inf).
        with np.errstate(over="ignore"):
            finite_sum = bool(xp.isfinite(x.sum()))
        if not finite_sum and not bool(xp.isfinite(x).all()):
            raise InputError("x contains NaN or inf; clean or impute the data before training")
        return x

    # ------------------------------------------------------------------ conveniences

    @property
    def n_params(self):
        return int(self.flat_params.size)

    def __repr__(self):
        c = self.config
        return (f"SparseAutoencoder({c.n_inputs} -> {c.n_hidden} -> {c.n_inputs}, "
                f"rho={c.sparsity_target}, beta={c.sparsity_weight}, lambda={c.weight_decay}, "
                f"output={c.output_activation}, loss={c.reconstruction_loss}/{c.reduction}, "
                f"{self.backend.name}/{self.dtype.name})")
