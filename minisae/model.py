"""The sparse autoencoder: a coding layer made sparse by a penalty or by keeping its top k.

    z1      = x @ W1 + b1;   h = act(z1)             (batch, n_hidden)   the codes
    y       = sigmoid(h @ W2 + b2)  or  h @ W2 + b2   (batch, n_inputs)   the reconstruction
    rho_hat = mean of h over the batch                (n_hidden,)
    loss    = reconstruction(y, x) + sparsity(rho_hat) + lambda / 2 * (||W1||^2 + ||W2||^2)

The book's model: act = sigmoid and sparsity = beta * sum_j KL(rho || rho_hat_j). The other
sparsity terms (losses.SPARSITY) are squared and absolute error against rho, an L1 penalty on
the codes, and TopK, where act keeps the k largest z1 of each sample and there is no penalty.

Read `loss_and_grads` top to bottom: forward through the layers, the loss terms (put together
in losses.py from functional.py's formulas), then backward through the same layers in
reverse. This is the reference: what the gradient check verifies. Training (`minisae.fit`,
`minisae train`) runs the same computation in the fast engine (minisae/fast/), which gives
the same numbers; `minisae.fast.loss_and_grads(model, x)` calls it from a loop of your own.
"""
from __future__ import annotations

import math

import numpy as np

from . import checks
from . import functional as F
from . import losses
from .backend import flat_views, get_backend, namespace
from .config import UNIT_AXIS, Config, needs_unit_range, param_shapes
from .errors import ConfigError
from .comm import Alone
from .layers import (ACTIVATIONS, Dense, Identity, MeanOverBatch, SubtractBias,
                     TiedDense, UnitsDense, coding_layer)


class SparseAutoencoder:
    """A one-hidden-layer autoencoder with a sparsity penalty (Géron; UFLDL).

    Arguments are those of config.Config (each checked there), plus backend ("numpy",
    "cupy", "torch", "auto"), dtype ("float32", or "float64" for gradient checks) and comm,
    the communicator of a data-parallel run (None: one process; minisae/comm.py).

    `params` and `grads` are dicts of named arrays, "encoder.W" (n_inputs, n_hidden),
    "encoder.b" (n_hidden,), "decoder.W" (n_hidden, n_inputs), "decoder.b" (n_inputs,).
    They are views into two flat 1-D buffers, `flat_params` and `flat_grads` (in that order):
    an optimizer can update all of them in one pass, and SciPy's optimizers can take the
    model as one vector (minisae.LBFGS does)."""

    def __init__(self, n_inputs=784, n_hidden=1000, sparsity="kl", sparsity_target=0.1,
                 sparsity_weight=0.2, weight_decay=0.0, hidden_activation="sigmoid",
                 output_activation="sigmoid", reconstruction_loss="mse", reduction="mean",
                 k=None, tied_weights=False, l1_decoder_norm=False, aux_k=None,
                 aux_weight=1 / 32, subtract_decoder_bias=False, init="uniform",
                 jump_bandwidth=0.001, jump_threshold=0.001, backend="numpy",
                 dtype="float32", seed=42, comm=None):
        self.config = Config(
            n_inputs=n_inputs, n_hidden=n_hidden, sparsity=sparsity,
            sparsity_target=sparsity_target, sparsity_weight=sparsity_weight,
            weight_decay=weight_decay, hidden_activation=hidden_activation,
            output_activation=output_activation, reconstruction_loss=reconstruction_loss,
            reduction=reduction, dtype=dtype, seed=seed, k=k, tied_weights=tied_weights,
            l1_decoder_norm=l1_decoder_norm, aux_k=aux_k, aux_weight=aux_weight,
            subtract_decoder_bias=subtract_decoder_bias, init=init,
            jump_bandwidth=jump_bandwidth, jump_threshold=jump_threshold).validated()
        self.backend = get_backend(backend, dtype=self.config.dtype)
        self.dtype = self.backend.dtype
        self._comm = _checked_comm(comm)
        self.units = self._comm.units(self.config.n_hidden)
        """(first, last): the units this model holds, all of them unless its dictionary is
        sharded over the ranks of a run (comm: minisae.distributed.Shards)."""
        m = self.units[1] - self.units[0]
        if m < 1:
            raise ConfigError(f"{n_hidden} hidden unit(s) cannot be shared by "
                              f"{self._comm.size} ranks of a sharded dictionary: use at least "
                              f"{self._comm.size} hidden units, or fewer ranks")
        shapes = param_shapes(self.config, m)
        self._check_size(sum(math.prod(s) for s in shapes.values()))
        try:
            self.flat_params = self.backend.asarray(
                initial_weights(param_shapes(self.config), self.config, self.units))
            self.flat_grads = self.backend.zeros(self.flat_params.shape)
        except MemoryError:
            raise ConfigError(f"not enough memory for a model of {n_inputs} inputs and "
                              f"{n_hidden} hidden units; use fewer hidden units") from None
        self.params = flat_views(self.flat_params, shapes)
        self.grads = flat_views(self.flat_grads, shapes)

        self._build_layers()
        self.dead = self.backend.xp.zeros(m, dtype=self.backend.xp.bool,
                                          device=self.backend.device)
        """The units AuxK treats as dead (training sets it from how long each has been silent)."""
        self.silent = np.zeros(m, dtype=np.int64)
        """Training samples since each unit last fired (kept by training: minisae.training.units)."""
        self.normalizer = None
        """How data are normalised before they reach the model (minisae.normalize.Normalizer),
        or None; every method that takes x applies it (as_batch), decode and reconstruct undo
        it. Set before training (minisae train --normalize), saved in checkpoints."""
        self.frozen_residual = None
        """AuxK's target e = x - y is a constant of its term, not differentiated; a gradient
        check holds it at its value here (None: computed from the forward pass)."""
        self.objective = losses.Objective(self.config, self.comm)
        """The loss's terms (losses.py), each with its forward and backward."""

    def _build_layers(self):
        """The layers, in forward order: x -> input -> encoder -> coding -> decoder -> output,
        and rho_hat = mean over the batch of the codes. Each reads the model's parameters and
        writes its gradients (views into flat_params and flat_grads)."""
        c, p, g = self.config, self.params, self.grads
        self.output = ACTIVATIONS[c.output_activation]()
        xp = self.backend.xp
        self.coding = coding_layer(c, p, g, xp.full((), -1.0, dtype=getattr(xp, c.dtype),
                                                    device=self.backend.device), self.comm)
        self.mean = MeanOverBatch(self.comm)
        m = self.units[1] - self.units[0]
        if c.tied_weights:  # W2 = W1.T: the decoder writes its dW2 apart; the encoder adds it
            self.decoder = UnitsDense(p["encoder.W"].T, p["decoder.b"],
                                      self.backend.zeros((m, c.n_inputs)), g["decoder.b"],
                                      self.comm)
            self.encoder = TiedDense(p["encoder.W"], p["encoder.b"], g["encoder.W"],
                                     g["encoder.b"], self.decoder, c.subtract_decoder_bias)
        else:
            self.decoder = UnitsDense(p["decoder.W"], p["decoder.b"], g["decoder.W"],
                                      g["decoder.b"], self.comm)
            # the first layer needs no dx: nothing upstream of x is learned (unless its input
            # is x - b2, and b2 is learned)
            self.encoder = Dense(p["encoder.W"], p["encoder.b"], g["encoder.W"], g["encoder.b"],
                                 needs_input_grad=c.subtract_decoder_bias)
        self.input = SubtractBias(p["decoder.b"], g["decoder.b"], self.comm) \
            if c.subtract_decoder_bias else Identity()

    @property
    def comm(self):
        """The communicator of a data-parallel run (minisae/comm.py): Alone, a world of one
        process, unless the model was built with another (minisae.distributed.join())."""
        return self._comm

    @comm.setter
    def comm(self, comm):
        """A model trained on several ranks evaluates alone afterwards: model.comm = Alone().
        The units it holds stay: a whole model is split over the ranks of a sharded
        dictionary by minisae.distributed.shard, and put back together by whole."""
        comm = _checked_comm(comm)
        if comm.units(self.config.n_hidden) != self.units:
            first, last = comm.units(self.config.n_hidden)
            raise ConfigError(f"this model holds units {self.units[0]} to {self.units[1]} of "
                              f"{self.config.n_hidden}, the communicator's rank holds {first} "
                              f"to {last}: split or join the dictionary with "
                              f"minisae.distributed.shard or whole")
        self._comm = comm
        for part in (self.mean, self.coding, self.decoder, self.input, self.objective):
            if hasattr(part, "comm"):
                part.comm = comm

    # ------------------------------------------------------------------ training

    def loss_and_grads(self, x, validate=True):
        """The loss of the batch x (batch, n_inputs) and its gradient, written into `grads`.

        Returns a losses.Loss (its parts as floats: .total, .reconstruction, .sparsity, ...).
        x: a NumPy array or one of the model's backend. validate=False skips the checks of
        shape, type, finiteness and range (the training loop checks the whole set once)."""
        x = self.as_batch(x, validate)
        self.comm.begin(x.shape[0])  # data parallel: the batch is every rank's rows

        # forward: through the layers, then each term of the loss (self.objective)
        z1 = self.encoder.forward(self.input.forward(x))   # (batch, n_hidden)
        h = self.coding.forward(z1)                         # the codes
        z = self.decoder.forward(h)                         # (batch, n_inputs)
        y = self.output.forward(z)                          # the reconstruction
        rho_hat = self.mean.forward(h)                      # (n_hidden,)
        loss = self.objective.forward(dict(x=x, z1=z1, h=h, z=z, y=y, rho_hat=rho_hat,
                                           dead=self.dead, residual=self.frozen_residual,
                                           comm=self.comm), self.params)

        # backward: each term's gradient with respect to what it read (d["y"], d["rho_hat"],
        # ...; 0 where no term read it), carried down the layers in reverse. h reaches the
        # loss twice, through the decoder and through rho_hat: its gradient is the sum.
        d, d_params = self.objective.backward()
        dz = self.output.backward(d["y"]) + d["z"]
        dh = self.decoder.backward(dz) + self.mean.backward(d["rho_hat"])
        dz1 = self.coding.backward(dh) + d["z1"]
        self.input.backward(self.encoder.backward(dz1))
        losses.add_grads(self.grads, d_params)  # terms that read a weight (weight decay, ...)
        # data parallel: the batch's gradient and loss, the ranks' weighted by their shares
        return self.comm.combine(loss, self.flat_grads)

    # ------------------------------------------------------------------ the forward pass

    def forward(self, x):
        """The whole forward pass of a checked batch, x -> (h, z, y): the codes, the output
        layer's pre-activation and the reconstruction, each sample encoded on its own (as a
        trained model encodes). Each layer keeps what its backward needs."""
        v = self.values(x)
        return v["h"], v["z"], v["y"]

    def values(self, x):
        """The forward pass's named values for a checked batch x: {"x", "z1", "h", "z", "y"},
        what the loss's terms read (a BatchTopK layer uses its threshold here, not its batch)."""
        z1 = self.encoder.forward(self.input.forward(x))
        h = getattr(self.coding, "infer", self.coding.forward)(z1)
        z = self.decoder.forward(h)
        return dict(x=x, z1=z1, h=h, z=z, y=self.output.forward(z))

    def _codes(self, x):
        """h for x, each sample on its own."""
        return self.values(x)["h"]

    def loss(self, x):
        """The loss of x, forward only: grads are left alone (for validation and inspection).
        rho_hat is the mean activation over all of x."""
        v = self.values(self.as_batch(x))
        return self.objective.forward({**v, "rho_hat": F.mean_activation(v["h"])}, self.params,
                                      training=False)

    def encode(self, x, batch_size=None):
        """The codes h of x, shape (n, n_hidden), on the model's backend.

        batch_size: encode that many rows at a time (bounds the memory for a large x)."""
        x = self.as_batch(x)
        n = x.shape[0]
        step = n if batch_size is None else checks.check_int(batch_size, "batch_size", 1)
        parts = [self._codes(x[i:min(i + step, n), :]) for i in range(0, n, step)]
        return parts[0] if len(parts) == 1 else namespace(x).concat(parts)

    def decode(self, h):
        """y = sigmoid(h @ W2 + b2) (or h @ W2 + b2 for a linear output), (batch, n_inputs).

        A rank of a sharded dictionary decodes its own units' codes (what its encode gives),
        with every rank decoding at once (their outputs are summed)."""
        h = self._as_batch(h, True, "the codes h", "n_hidden", unit_range=False)
        return self._output(self.output.forward(self.decoder.forward(h)))

    def reconstruct(self, x):
        """decode(encode(x)), shape (batch, n_inputs), in the data's own units."""
        return self._output(self.forward(self.as_batch(x))[2])

    # ------------------------------------------------------------------ building

    @classmethod
    def from_preset(cls, name, **overrides):
        """The model of a named preset (minisae.presets.PRESETS: "book", "ufldl", ...), with
        any constructor argument overridden:
        SparseAutoencoder.from_preset("ufldl", n_hidden=100, backend="cupy")."""
        from .presets import get_preset
        allowed = set(Config.field_names()) | {"backend"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ConfigError(f"unknown argument(s) {', '.join(unknown)} for "
                              f"SparseAutoencoder.from_preset; known: {', '.join(sorted(allowed))}")
        return cls(**{**get_preset(name).model, **overrides})

    def _check_size(self, n_params):
        """Refuse, before allocating, a model that could not train where its arrays live: its
        parameters, their gradients and Adam's two moments, four arrays of n_params."""
        c = self.config
        checks.check_fits(4 * n_params * np.dtype(c.dtype).itemsize, self.backend.memory(),
                          f"a model of n_inputs={c.n_inputs:,} and n_hidden={c.n_hidden:,} "
                          f"({n_params:,} parameters, with their gradients and Adam's two "
                          f"moments)", "use fewer hidden units", self.backend.memory_name())

    def as_batch(self, x, validate=True):
        """x as an array of this model's backend and dtype, after checking its type, shape,
        finiteness and range (validate=False: only moved there), and normalised by the
        model's normalizer when it has one. An InputError that says what to do otherwise."""
        return self._as_batch(x, checks.check_bool(validate, "validate"))

    def _as_batch(self, x, validate, what="x", columns="n_inputs", unit_range=None):
        """as_batch for inputs (columns "n_inputs", normalised) or codes ("n_hidden"); `what`
        names x in messages; unit_range: whether values must lie in [0, 1] (None: as the
        model's output needs)."""
        if validate:
            x = checks.as_numeric(x, what)
            width = self.config.n_inputs if columns == "n_inputs" else \
                self.units[1] - self.units[0]  # the codes of the units this model holds
            checks.check_matrix(x, width, what, columns)
        x = self.backend.asarray(x)
        if self.normalizer is not None and columns == "n_inputs":
            x = self.normalizer.apply(x)
        if validate:
            unit = needs_unit_range(self.config) if unit_range is None else unit_range
            checks.check_values(x, namespace(x), unit, what)
        return x

    def _output(self, y):
        """y in the data's own units: the normalizer undone, when the model has one."""
        return y if self.normalizer is None else self.normalizer.undo(y)

    @property
    def n_params(self):
        return int(self.flat_params.shape[0])

    @property
    def needs_unit_range(self):
        """True when the data must lie in [0, 1] (a sigmoid output, or cross-entropy)."""
        return needs_unit_range(self.config)

    def __repr__(self):
        c = self.config
        if c.sparsity in ("topk", "batchtopk"):
            sparsity = f"{c.sparsity}, k={c.k}" + (f", aux_k={c.aux_k}" if c.aux_k else "")
        elif c.sparsity == "jumprelu":
            sparsity = f"jumprelu, beta={c.sparsity_weight} x L0, eps={c.jump_bandwidth}"
        else:
            sparsity = f"{c.sparsity}, rho={c.sparsity_target}, beta={c.sparsity_weight}" \
                if c.sparsity in ("kl", "squared", "absolute") else \
                f"l1, beta={c.sparsity_weight}" + (" x ||W2[j]||" if c.l1_decoder_norm else "")
        options = [name for name, on in (("tied", c.tied_weights),
                                          ("x - b2 encoded", c.subtract_decoder_bias)) if on]
        return (f"SparseAutoencoder({c.n_inputs} -> {c.n_hidden} {c.hidden_activation} -> "
                f"{c.n_inputs} {c.output_activation}, {sparsity}, lambda={c.weight_decay}, "
                f"loss={c.reconstruction_loss}/{c.reduction}, "
                + "".join(f"{o}, " for o in options) + f"{self.backend.name}/{c.dtype})")

def _checked_comm(comm):
    """A communicator (comm.Alone's methods), Alone() for None, or a ConfigError."""
    if comm is None:
        return Alone()
    needed = ("rank", "size", "splits", "begin", "batch_mean", "sum", "gather", "combine",
              "broadcast", "part", "units", "units_sum", "units_gather", "units_whole", "parts")
    if not all(hasattr(comm, name) for name in needed):
        raise ConfigError(f"comm must be a communicator (minisae.distributed.join() gives one; "
                          f"None: one process), got {checks.shown(comm)}")
    return comm


def initial_weights(shapes, config, units=None):
    """One flat NumPy array of all the parameters, in the config's dtype, drawn with NumPy's
    generator from its seed, so that one seed gives one model on every backend:

    - weights uniform in +-sqrt(6 / (n_in + n_out + 1)) (UFLDL's), biases 0;
    - init="gao" (Gao et al. 2024, section A.1): the decoder's rows W2[j, :] scaled to unit
      norm and the encoder set to their transpose, W1 = W2.T (a tied model's W1 has its
      columns, the decoder's rows, at unit norm);
    - JumpReLU's thresholds at jump_threshold (Rajamanoharan et al. start them at 0.001)."""
    rng = np.random.default_rng(config.seed)
    flat = np.zeros(sum(math.prod(s) for s in shapes.values()), dtype=config.dtype)
    views = flat_views(flat, shapes)
    for name, view in views.items():
        if name.endswith(".W"):
            r = math.sqrt(6.0 / (view.shape[0] + view.shape[1] + 1))
            view[...] = rng.uniform(-r, r, size=view.shape)
    if config.init == "gao":
        W2 = views["decoder.W"] if "decoder.W" in views else views["encoder.W"].T
        W2 /= np.linalg.norm(W2, axis=1, keepdims=True)
        views["encoder.W"][...] = W2.T
    if "coding.log_theta" in views:
        views["coding.log_theta"][...] = math.log(config.jump_threshold)
    if units is None or tuple(units) == (0, config.n_hidden):
        return flat
    # a rank of a sharded dictionary: the same draws, its own units kept
    return flatten(select_units(views, *units))


def select_units(arrays, first, last):
    """{name: the part of each named array (a parameter, its gradient, an optimizer's
    moment) for the units [first, last)}: encoder.W's columns, decoder.W's rows, ... (views);
    decoder.b whole. config.UNIT_AXIS says which axis holds the units."""
    return {name: a if UNIT_AXIS[name] is None else
            (a[:, first:last] if UNIT_AXIS[name] == 1 else a[first:last])
            for name, a in arrays.items()}


def flatten(arrays):
    """One flat NumPy array of the named arrays, in their order (a model's flat layout)."""
    return np.concatenate([np.ascontiguousarray(a).reshape(-1) for a in arrays.values()])
