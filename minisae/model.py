"""The sparse autoencoder: a sigmoid coding layer pushed toward a target mean activation.

    h       = sigmoid(x @ W1 + b1)                  (batch, n_hidden)
    y       = sigmoid(h @ W2 + b2)  or  h @ W2 + b2  (batch, n_inputs)
    rho_hat = mean of h over the batch               (n_hidden,)
    loss    = reconstruction(y, x) + beta * sum_j KL(rho || rho_hat_j)
              + lambda / 2 * (||W1||^2 + ||W2||^2)

Read `loss_and_grads` top to bottom: forward through the layers, the three loss terms from
functional.py, then backward through the same layers in reverse. That is the reference path,
what `fast=False` runs and what the gradient check verifies. `fast=True` (the default) hands
the same computation to the fast engine in minisae/fast/, at one marked line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from . import functional as F
from .backend import flat_views, get_backend, to_numpy
from .checks import as_numeric, check_data, is_int, is_real, physical_memory
from .errors import ConfigError, InputError
from .layers import ACTIVATIONS, Dense, Sigmoid

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
            need(is_int(v) and v >= 1, f"{name} must be a positive integer, got {v!r}")
        rho = self.sparsity_target
        need(is_real(rho) and 0.0 < rho < 1.0,
             f"sparsity_target must be strictly between 0 and 1 (a mean activation), got {rho!r}")
        for name in ("sparsity_weight", "weight_decay"):
            v = getattr(self, name)
            need(is_real(v) and 0.0 <= v <= 1e6,
                 f"{name} must be a number between 0 and 1e6, got {v!r}")
        need(self.output_activation in OUTPUT_ACTIVATIONS,
             f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {self.output_activation!r}")
        need(self.reconstruction_loss in RECONSTRUCTION_LOSSES,
             f"reconstruction_loss must be one of {RECONSTRUCTION_LOSSES}, got {self.reconstruction_loss!r}")
        need(self.reduction in F.REDUCTIONS,
             f"reduction must be one of {F.REDUCTIONS}, got {self.reduction!r}")
        problem = combination_problem(self.output_activation, self.reconstruction_loss,
                                      self.reduction)
        need(problem is None, problem)
        need(self.dtype in ("float32", "float64"),
             f"dtype must be 'float32' (training) or 'float64' (gradient checks), got {self.dtype!r}")
        need(self.seed is None or (is_int(self.seed) and 0 <= self.seed < 2**63),
             f"seed must be a non-negative integer or None, got {self.seed!r}")

    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls)]


def combination_problem(output_activation, reconstruction_loss, reduction):
    """Why this (output, loss, reduction) is not a valid model, or None when it is."""
    if reconstruction_loss == "bce" and output_activation != "sigmoid":
        return ("reconstruction_loss='bce' needs output_activation='sigmoid' (cross-entropy "
                "compares probabilities); use 'mse' with a linear output")
    if reconstruction_loss == "bce" and reduction != "mean":
        return ("reduction='halfsum' is UFLDL's half squared error and applies to 'mse' only; "
                "use reduction='mean' with 'bce'")
    return None


def _dtype_name(dtype):
    """"float32" for "float32", np.float32 or np.dtype("float32"); anything else as its repr,
    for Config.validate to refuse (None included: NumPy would read it as float64)."""
    if dtype is None:
        return "None"
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


class SparseAutoencoder:
    """A one-hidden-layer autoencoder with the KL sparsity penalty (Géron; UFLDL).

    Parameters: `params` and `grads` are dicts of named arrays, "encoder.W" (n_inputs,
    n_hidden), "encoder.b" (n_hidden,), "decoder.W" (n_hidden, n_inputs), "decoder.b"
    (n_inputs,). They are views into two flat 1-D buffers, `flat_params` and `flat_grads`
    (in that order): an optimizer can update all of them in one pass, and SciPy's optimizers
    can take the model as one vector (`minisae.optim.LBFGS` does).

    fast: True (default) computes loss_and_grads with the fast engine (minisae/fast/), False
    with the readable reference below; both give the same numbers (tests/test_fast.py)."""

    def __init__(self, n_inputs=784, n_hidden=1000, sparsity_target=0.1, sparsity_weight=0.2,
                 weight_decay=0.0, output_activation="sigmoid", reconstruction_loss="mse",
                 reduction="mean", backend="numpy", dtype="float32", seed=42, fast=True):
        dtype = _dtype_name(dtype)
        self.config = Config(n_inputs, n_hidden, sparsity_target, sparsity_weight, weight_decay,
                             output_activation, reconstruction_loss, reduction, dtype, seed)
        self.config.validate()
        self.config = self.config.normalized()
        self.backend = get_backend(backend, dtype=dtype)
        self.dtype = self.backend.dtype
        self.fast = bool(fast)

        n_inputs, n_hidden = self.config.n_inputs, self.config.n_hidden
        shapes = {"encoder.W": (n_inputs, n_hidden), "encoder.b": (n_hidden,),
                  "decoder.W": (n_hidden, n_inputs), "decoder.b": (n_inputs,)}
        self._check_size(sum(math.prod(s) for s in shapes.values()))
        try:
            self.flat_params = self.backend.asarray(
                self._initial_weights(shapes, self.config.seed, self.dtype))
            self.flat_grads = self.backend.zeros(self.flat_params.shape)
        except MemoryError:
            raise ConfigError(f"not enough memory for a model of {n_inputs} inputs and "
                              f"{n_hidden} hidden units; use fewer hidden units") from None
        self.params = flat_views(self.flat_params, shapes)
        self.grads = flat_views(self.flat_grads, shapes)

        p, g = self.params, self.grads
        # The first layer needs no dx: nothing upstream of x is learned.
        self.encoder = Dense(p["encoder.W"], p["encoder.b"], g["encoder.W"], g["encoder.b"],
                             needs_input_grad=False)
        self.encoder_activation = Sigmoid()
        self.decoder = Dense(p["decoder.W"], p["decoder.b"], g["decoder.W"], g["decoder.b"])
        self.output_activation = ACTIVATIONS[output_activation]()

    @classmethod
    def from_preset(cls, name, **overrides):
        """The model of a named preset (minisae.presets.PRESETS: "book", "ufldl",
        "ufldl-patches"), with any constructor argument overridden:
        SparseAutoencoder.from_preset("ufldl", n_hidden=100, backend="cupy")."""
        from .presets import get_preset
        kwargs = dict(get_preset(name).model)
        allowed = set(Config.field_names()) | {"backend", "fast"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ConfigError(f"unknown argument(s) {', '.join(unknown)} for "
                              f"SparseAutoencoder.from_preset; known: {', '.join(sorted(allowed))}")
        kwargs.update(overrides)
        return cls(**kwargs)

    def _check_size(self, n_params):
        """Refuse, before allocating, a model that could not train in this machine's memory:
        its parameters, their gradients and Adam's two moments, four arrays of n_params."""
        need, have = 4 * n_params * self.dtype.itemsize, physical_memory()
        if have and self.backend.name == "numpy" and need > have:
            c = self.config
            raise ConfigError(f"a model of {c.n_inputs} inputs and {c.n_hidden:,} hidden units has "
                              f"{n_params:,} parameters: {need / 2**30:,.1f} GiB for them, their "
                              f"gradients and Adam's two moments, more than this machine's "
                              f"{have / 2**30:,.1f} GiB of memory; use fewer hidden units")

    @staticmethod
    def _initial_weights(shapes, seed, dtype):
        """One flat array of all the parameters, in `dtype`: weights uniform in
        +-sqrt(6 / (n_in + n_out + 1)) (UFLDL's), biases 0, drawn with NumPy's generator so
        that one seed gives one model on every backend."""
        rng = np.random.default_rng(seed)
        flat = np.zeros(sum(math.prod(s) for s in shapes.values()), dtype=dtype)
        for name, view in flat_views(flat, shapes).items():
            if name.endswith(".W"):
                r = math.sqrt(6.0 / (view.shape[0] + view.shape[1] + 1))
                view[...] = rng.uniform(-r, r, size=view.shape)
        return flat

    # ------------------------------------------------------------------ the forward pass

    def _encode(self, x):
        """h = sigmoid(x @ W1 + b1), (batch, n_hidden)."""
        return self.encoder_activation.forward(self.encoder.forward(x))

    def _decode(self, h):
        """z = h @ W2 + b2 and y = sigmoid(z) (or y = z for a linear output), (batch, n_inputs)."""
        z = self.decoder.forward(h)
        return z, self.output_activation.forward(z)

    def _forward(self, x):
        """The whole forward pass, x -> (h, z, y); each layer keeps what its backward needs."""
        h = self._encode(x)
        z, y = self._decode(h)
        return h, z, y

    def _losses(self, x, h, z, y):
        """The three terms of the loss, from the forward pass's arrays."""
        cfg = self.config
        if cfg.reconstruction_loss == "bce":
            reconstruction = F.bce_with_logits(z, x)
        else:
            reconstruction = F.mse(y, x, cfg.reduction)
        sparsity, rho_hat = F.sparsity_penalty(h, cfg.sparsity_target, cfg.sparsity_weight)
        weight_decay = F.weight_decay([self.params["encoder.W"], self.params["decoder.W"]],
                                      cfg.weight_decay)
        return Loss(reconstruction, sparsity, weight_decay, rho_hat)

    # ------------------------------------------------------------------ inference

    def encode(self, x, batch_size=None):
        """h = sigmoid(x @ W1 + b1), shape (n, n_hidden), on the model's backend.

        batch_size: encode that many rows at a time (bounds the memory for a large x)."""
        x = self._check_input(x)
        if batch_size is None:
            return self._encode(x)
        if not is_int(batch_size) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        parts = [self._encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return self.backend.xp.concatenate(parts)

    def decode(self, h):
        """y = sigmoid(h @ W2 + b2) (or h @ W2 + b2 for a linear output), (batch, n_inputs)."""
        h = as_numeric(h, "h")
        if h.ndim != 2 or h.shape[1] != self.config.n_hidden or h.shape[0] == 0:
            raise InputError(f"decode expects codes of shape (batch, {self.config.n_hidden}) "
                             f"with batch >= 1, got {tuple(h.shape)}")
        h = self.backend.asarray(h)
        check_data(h, self.config.n_hidden, unit_range=False, what="the codes h")
        return self._decode(h)[1]

    def reconstruct(self, x):
        """decode(encode(x)), shape (batch, n_inputs)."""
        return self._decode(self.encode(x))[1]

    def loss(self, x):
        """The loss of x, forward only: grads are left alone (for validation and inspection).
        rho_hat is the mean activation over all of x."""
        x = self._check_input(x)
        return self._losses(x, *self._forward(x))

    # ------------------------------------------------------------------ training

    def loss_and_grads(self, x, validate=True):
        """Loss of batch x (batch, n_inputs), and its gradient written into `self.grads`.

        x may be a NumPy array or one of the backend's. validate=False skips the checks of
        shape, type, finiteness and range (the training loop checks the whole set once)."""
        x = self._check_input(x) if validate else self.backend.asarray(x)
        if self.fast:  # the same numbers from the fast engine (minisae/fast/); skip on a first read
            from .fast import autoencoder_loss_and_grads
            return autoencoder_loss_and_grads(self, x)

        cfg = self.config
        rho, beta, lam = cfg.sparsity_target, cfg.sparsity_weight, cfg.weight_decay

        # forward
        h, z, y = self._forward(x)
        loss = self._losses(x, h, z, y)

        # backward: the reconstruction term first, down to dz = dL/dz at the output layer
        if cfg.reconstruction_loss == "bce":
            dz = F.bce_with_logits_backward(y, x)  # straight to z: sigmoid and log cancel
        else:
            dz = self.output_activation.backward(F.mse_backward(y, x, cfg.reduction))
        # h reaches the loss twice: through the decoder, and through rho_hat in the KL term
        dh = self.decoder.backward(dz) + F.sparsity_backward(h, rho, beta)
        self.encoder.backward(self.encoder_activation.backward(dh))
        # weight decay adds lambda * W to each weight's gradient (biases are not decayed)
        self.grads["encoder.W"] += F.weight_decay_backward(self.params["encoder.W"], lam)
        self.grads["decoder.W"] += F.weight_decay_backward(self.params["decoder.W"], lam)
        return loss

    # ------------------------------------------------------------------ input checks

    @property
    def needs_unit_range(self):
        """True when the data must lie in [0, 1]: a sigmoid output can't reconstruct more."""
        c = self.config
        return c.output_activation == "sigmoid" or c.reconstruction_loss == "bce"

    def _check_input(self, x):
        """x as an array of this model's backend and dtype, after checking its type, shape,
        finiteness and range; an InputError that says what to do otherwise."""
        n = self.config.n_inputs
        x = as_numeric(x)
        if x.ndim != 2:
            hint = " (one sample? use x[None, :])" if x.ndim == 1 else \
                " (images? flatten them to (batch, n_inputs), e.g. x.reshape(len(x), -1))" \
                if x.ndim > 2 else ""
            raise InputError(f"x must be 2-D (batch, {n}), got {x.ndim}-D shape {tuple(x.shape)}{hint}")
        if x.shape[1] != n:
            raise InputError(f"x has {x.shape[1]} features but the model has n_inputs={n}; "
                             f"got shape {tuple(x.shape)}, expected (batch, {n})")
        x = self.backend.asarray(x)
        check_data(x, n, self.needs_unit_range)
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
                f"{self.backend.name}/{self.dtype.name}{'' if self.fast else ', reference path'})")
