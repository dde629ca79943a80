"""The loss, term by term: each term a small class with its forward and backward side by side,
as the layers are (CS231n's loss functions return the loss and its gradient together; DLFS's
loss is a layer too).

    loss = reconstruction(y, x)  +  sparsity(rho_hat)  +  lambda / 2 sum ||W||^2  (+ AuxK)

A term reads some of the model's named values (x, z1, h, z, y, rho_hat) and parameters:

    value = term.forward(v, params)   # v = {"x": x, "y": y, ...}; keeps what backward needs
    grads = term.backward()           # {what it read: d term / d (it)}, e.g. {"rho_hat": ...}

`Objective` puts a model's terms together (the one place: the reference model, the fast engine
and `evaluate` all use it) and sums their gradients by the name of what they read; the model
carries them down its layers. A new penalty is one class here and one line in SPARSITY.

The record a forward pass returns, `Loss`, carries the named parts; history, summaries,
figures and checkpoints follow the parts it has.
"""
from __future__ import annotations

from . import checks
from . import functional as F
from .backend import namespace, to_numpy
from .comm import Alone


class Term:
    """A term of the loss. `name`: the part of the loss record it fills. training_only: left
    out of the loss of a data set (`evaluate`). per_sample: a mean over the samples (a data
    set's value is the mean of its batches'), not a function of rho_hat or the weights."""

    name = "sparsity"
    training_only = False
    per_sample = False
    sums_units = False
    """True for a sum over the units (a penalty of rho_hat, weight decay): with a sharded
    dictionary each rank's value is its units' part, and the Objective adds the ranks'."""

    def __init__(self, config):
        self.config = config


# ----------------------------------------------------------------------------- reconstruction

class MSE(Term):
    """c * sum((y - x)^2): the squared error, c = 1 / (batch n_inputs) ("mean", the book's) or
    1 / (2 batch) ("halfsum", UFLDL's); functional.reduction_scale."""

    name = "reconstruction"
    per_sample = True

    def forward(self, v, params):
        self.x, self.y = v["x"], v["y"]
        return F.mse(self.y, self.x, self.config.reduction)

    def backward(self):
        return {"y": F.mse_backward(self.y, self.x, self.config.reduction)}


class BCE(Term):
    """-mean[x log y + (1 - x) log(1 - y)] for y = sigmoid(z), computed from the logits z."""

    name = "reconstruction"
    per_sample = True

    def forward(self, v, params):
        self.x, self.y = v["x"], v["y"]
        return F.bce_with_logits(v["z"], self.x)

    def backward(self):
        # straight to z: the sigmoid's derivative and the log's cancel
        return {"z": F.bce_with_logits_backward(self.y, self.x)}


RECONSTRUCTION = {"mse": MSE, "bce": BCE}
"""Reconstruction terms by the name `SparseAutoencoder(reconstruction_loss=...)` takes."""


# ----------------------------------------------------------------------------- sparsity
# The book's penalties act on rho_hat, each unit's mean activation over the batch; the model
# carries d penalty / d rho_hat back to the codes (layers.MeanOverBatch).

class KL(Term):
    """beta * sum_j KL(rho || rho_hat_j), rho_hat clipped before the logs (the book's)."""

    sums_units = True

    formula = "beta * sum_j KL(rho || rho_hat_j)"

    def forward(self, v, params):
        self.rho_hat = v["rho_hat"]
        return F.kl_penalty(self.rho_hat, self.config.sparsity_target, self.config.sparsity_weight)

    def backward(self):
        c = self.config
        return {"rho_hat": F.kl_penalty_backward(self.rho_hat, c.sparsity_target,
                                                 c.sparsity_weight)}


class Squared(Term):
    """beta * sum_j (rho_hat_j - rho)^2 (the book's Figure 15-10 alternative)."""

    sums_units = True

    formula = "beta * sum_j (rho_hat_j - rho)^2"

    def forward(self, v, params):
        self.rho_hat = v["rho_hat"]
        return F.squared_penalty(self.rho_hat, self.config.sparsity_target,
                                 self.config.sparsity_weight)

    def backward(self):
        c = self.config
        return {"rho_hat": F.squared_penalty_backward(self.rho_hat, c.sparsity_target,
                                                      c.sparsity_weight)}


class Absolute(Term):
    """beta * sum_j |rho_hat_j - rho| (the book's other alternative)."""

    sums_units = True

    formula = "beta * sum_j |rho_hat_j - rho|"

    def forward(self, v, params):
        self.rho_hat = v["rho_hat"]
        return F.absolute_penalty(self.rho_hat, self.config.sparsity_target,
                                  self.config.sparsity_weight)

    def backward(self):
        c = self.config
        return {"rho_hat": F.absolute_penalty_backward(self.rho_hat, c.sparsity_target,
                                                       c.sparsity_weight)}


class L1(Term):
    """beta * mean_i sum_j |h_ij| (* ||W2[j, :]|| with l1_decoder_norm, Anthropic 2024), for
    codes h >= 0: beta * sum_j rho_hat_j w_j. With decoder norms it reads W2 too."""

    sums_units = True

    formula = "beta * mean_i sum_j |h_ij| (* ||W2[j, :]|| with l1_decoder_norm)"

    def forward(self, v, params):
        self.rho_hat, self.W2 = v["rho_hat"], decoder_weight(params)
        self.norms = F.row_norms(self.W2) if self.config.l1_decoder_norm else None
        return F.l1_penalty(self.rho_hat, self.config.sparsity_weight, self.norms)

    def backward(self):
        d_rho_hat, d_norms = F.l1_penalty_backward(self.rho_hat, self.config.sparsity_weight,
                                                   self.norms)
        if d_norms is None:
            return {"rho_hat": d_rho_hat}
        return {"rho_hat": d_rho_hat,
                "decoder.W": F.row_norms_backward(d_norms, self.W2, self.norms)}


SPARSITY = {"kl": KL, "squared": Squared, "absolute": Absolute, "l1": L1, "topk": None,
            "batchtopk": None, "jumprelu": None}
"""Sparsity mechanisms by the name `SparseAutoencoder(sparsity=...)` takes, each with its term
(None: the mechanism is its coding layer, layers.TopK or layers.BatchTopK, with no penalty;
jumprelu's L0 is filled in below). Which settings each
mechanism reads and which activations it takes: config.MECHANISMS."""


# ----------------------------------------------------------------------------- weight decay

class WeightDecay(Term):
    """lambda / 2 * sum ||W||^2 over the weight matrices (biases are not decayed)."""

    name = "weight_decay"

    @property
    def sums_units(self):  # a sum over every unit's weights (nothing to add up at lambda 0)
        return bool(self.config.weight_decay)

    def forward(self, v, params):
        self.weights = {name: params[name] for name in decayed(params)}
        lam = self.config.weight_decay
        return F.weight_decay(list(self.weights.values()), lam) if lam else 0.0

    def backward(self):
        lam = self.config.weight_decay
        if not lam:
            return {}
        return {name: F.weight_decay_backward(W, lam) for name, W in self.weights.items()}


# ----------------------------------------------------------------------------- AuxK

class AuxK(Term):
    """Gao et al.'s AuxK (2024, section A.2): the k_aux largest pre-activations among the dead
    units (v["dead"]) reconstruct the residual e = x - y, a target here (not differentiated),
    and the term is their normalized MSE, the residual's own variance below:

        h_aux = relu(z1) on those units, else 0;   e_hat = h_aux @ W2
        aux   = alpha * ||e_hat - e||^2 / ||e - mean_i(e)||^2

    (the same with any reduction: the scale cancels). With no dead unit, or a residual with no
    variance (a batch of one), the term is 0. v["residual"], when not None, is e held fixed (a
    gradient check's). v["comm"]: the run's communicator (data parallel: the numerator over
    this rank's rows is divided by its share, so that the ranks' share-weighted sum is the
    batch's)."""

    name = "auxk"
    training_only = True

    def forward(self, v, params):
        c, z1 = self.config, v["z1"]
        xp = namespace(z1)
        comm = v["comm"]
        self.W2 = decoder_weight(params)
        # the k_aux largest among the dead units; a sharded dictionary's ranks each hold some
        # units (comm, minisae/comm.py): each row's cut among every rank's candidates
        keep, top = F.topk_among(z1, c.aux_k, v["dead"])
        candidates = comm.units_gather(top)
        self.keep = keep & (z1 >= F.kth_of_rows(candidates, c.aux_k))
        self.h_aux = F.keep(F.relu(z1), self.keep)
        self.e = v["x"] - v["y"] if v.get("residual") is None else v["residual"]
        self.e_hat = comm.units_sum(self.h_aux @ self.W2)
        # the residual's variance over the whole batch: over every rank's rows, data parallel;
        # this rank's sum of squares is its share of the numerator
        variance = comm.sum(F.variance_sum(self.e, comm.batch_mean(xp.mean(self.e, axis=0))))
        any_dead = xp.any(candidates > -xp.inf)  # a dead unit on some rank
        used = xp.astype(any_dead & (variance > 0), z1.dtype)
        self.scale = c.aux_weight * used / (comm.share * xp.where(variance > 0, variance,
                                                                  xp.ones_like(variance)))
        return self.scale * xp.sum((self.e_hat - self.e) ** 2)

    def backward(self):
        d_e_hat = 2.0 * self.scale * (self.e_hat - self.e)
        dz1 = F.keep(F.relu_backward(d_e_hat @ self.W2.T, self.h_aux), self.keep)
        return {"z1": dz1, "decoder.W": self.h_aux.T @ d_e_hat}


# ----------------------------------------------------------------------------- L0 (JumpReLU)

class L0(Term):
    """beta * mean_i sum_j H(z1[i, j] - theta_j): the mean number of active units of a
    JumpReLU coding layer (Rajamanoharan et al. 2024, eq. 5), theta = exp(log_theta).

    Its gradient reaches theta alone, through the straight-through pseudo-derivative
    dH(z - theta)/d theta := -(1/eps) K((z - theta)/eps), K the rectangle (their eq. 12), and
    log_theta by the chain rule: d/d log_theta = theta d/d theta."""

    sums_units = True

    formula = "beta * mean_i sum_j H(z1_ij - theta_j)  (JumpReLU's L0)"
    per_sample = True

    def forward(self, v, params):
        xp = namespace(v["z1"])
        self.z1, self.theta = v["z1"], xp.exp(params["coding.log_theta"])
        return self.config.sparsity_weight * F.l0(self.z1, self.theta)

    def backward(self):
        c = self.config
        d_theta = c.sparsity_weight * F.l0_theta_backward(self.z1, self.theta, c.jump_bandwidth)
        return {"coding.log_theta": self.theta * d_theta}


SPARSITY["jumprelu"] = L0


# ----------------------------------------------------------------------------- assembly

class Objective:
    """A model's loss: its terms, in the order of the loss record's parts (reconstruction,
    sparsity when the mechanism has a penalty, weight_decay, then training-only terms).

        loss = objective.forward(v, params)   # a Loss; every term's forward
        d, d_params = objective.backward()    # dL/d(each value a term read), dL/d(parameters)

    forward(..., given={name: value}) takes those parts' values as computed elsewhere (the
    fast engine's fused reconstruction, or `evaluate`'s means over batches) and runs the
    other terms; backward then gives theirs only. training=False leaves out training-only
    terms (the loss of a data set)."""

    def __init__(self, config, comm=None):
        penalty = SPARSITY[config.sparsity]
        kinds = [RECONSTRUCTION[config.reconstruction_loss]] + ([penalty] if penalty else []) \
            + [WeightDecay] + ([AuxK] if config.aux_k else [])
        self.terms = [kind(config) for kind in kinds]
        self.comm = Alone() if comm is None else comm
        """The run's communicator: a sharded dictionary's ranks each sum their own units in a
        term that sums over units; `units_sum` adds them (minisae/comm.py)."""
        self._ran = []

    def _value(self, term, v, params):
        value = term.forward(v, params)
        return self.comm.units_sum(value) if term.sums_units else value

    @property
    def names(self):
        """The parts' names, in order."""
        return tuple(t.name for t in self.terms)

    def term(self, name):
        """The term that fills the part `name`, or None."""
        return next((t for t in self.terms if t.name == name), None)

    def forward(self, v, params, given=None, training=True):
        given = given or {}
        used = [t for t in self.terms if training or not t.training_only]
        self._ran = [t for t in used if t.name not in given]
        parts = {t.name: given[t.name] if t.name in given else self._value(t, v, params)
                 for t in used}
        return Loss.of(parts, v.get("rho_hat"))

    def per_sample(self, v, params):
        """{name: value} of the per-sample terms (training-only ones left out) for the batch
        v: what `evaluate` averages over a data set's batches."""
        return {t.name: self._value(t, v, params) for t in self.terms
                if t.per_sample and not t.training_only}

    def backward(self, skip=()):
        """(d, d_params): d = {value: dL/d(value)} summed over the terms that read it (a
        Gradients: 0.0 for a value none read), d_params = [(parameter name, its gradient from
        one term)] in the terms' order (parameters are named "layer.W": add_grads adds them).
        skip: names of terms whose gradients the caller computes itself (the fast engine's
        fused passes)."""
        d, d_params = Gradients(), []
        # weight decay's gradients first: the order the fast engine adds them in, so that both
        # sum a weight's gradient the same way, to the bit
        ran = sorted(self._ran, key=lambda t: t.name != "weight_decay")
        for t in (t for t in ran if t.name not in skip):
            for name, g in t.backward().items():
                if "." in name:
                    d_params.append((name, g))
                else:
                    d[name] = d[name] + g if name in d else g
        return d, d_params


class Gradients(dict):
    """{value: dL/d(value)}, summed over the terms that read it; 0.0 for a value no term read
    (adding it changes no number)."""

    def __missing__(self, name):
        return 0.0


# ----------------------------------------------------------------------------- the record

class Loss:
    """One evaluation's loss: named parts, kept as 0-d arrays on the device until read, and
    rho_hat. Reading a part (`loss.reconstruction`, `loss.total`: floats) is where a GPU step
    waits for its result, so a loop that reads every few steps lets the GPU run ahead.

    parts: {name: 0-d array or number}, summed into the total. rho_hat: the per-unit mean
    activation (n_hidden,), or None. metrics: {name: value} read like parts but not summed
    (a classifier's accuracy)."""

    _units_mean = None  # the mean activation over every rank's units (a sharded dictionary)

    def __init__(self, parts, rho_hat=None, metrics=None):
        self._parts = checks.check_numbers(parts, "parts")
        self._rho_hat = checks.check_optional(rho_hat, checks.check_vector, "rho_hat")
        self._metrics = checks.check_numbers({} if metrics is None else metrics, "metrics")

    @classmethod
    def of(cls, parts, rho_hat=None, metrics=None):
        """A Loss of parts the caller made (a model's terms): not checked again at each step."""
        loss = cls.__new__(cls)
        loss._parts, loss._rho_hat, loss._metrics = parts, rho_hat, metrics or {}
        return loss

    @property
    def rho_hat(self):
        """rho_hat as it is held (on the device), or None."""
        return self._rho_hat

    def with_mean_activation(self, value):
        """This record, its mean activation (as_dict's) given: a sharded dictionary's, over
        every rank's units, where rho_hat holds this rank's."""
        loss = Loss.of(self._parts, self._rho_hat, self._metrics)
        loss._units_mean = value
        return loss

    def values(self):
        """{name: value} of the parts as they are held (0-d arrays on the device, or numbers):
        for code that must not wait for a GPU (a data-parallel run's reduction)."""
        return dict(self._parts)

    def with_parts(self, parts):
        """This record with its parts' values replaced (a data-parallel run's, combined over
        the ranks), its rho_hat and metrics kept."""
        return Loss.of(parts, self._rho_hat, self._metrics)

    @property
    def names(self):
        """The parts' names, in order: "reconstruction", then the model's other terms."""
        return tuple(self._parts)

    @property
    def parts(self):
        """{name: float} for every part."""
        return {name: float(value) for name, value in self._parts.items()}

    @property
    def total(self):
        return sum(self.parts.values())

    def __getattr__(self, name):
        for table in (self.__dict__.get("_parts", {}), self.__dict__.get("_metrics", {})):
            if name in table:
                return float(table[name])
        raise AttributeError(f"this loss has no part {name!r}; its parts: "
                             f"{', '.join(self.__dict__.get('_parts', {})) or 'none'}")

    @property
    def mean_activation(self):
        """rho_hat, the per-unit mean activation, as a NumPy array (a copy)."""
        return None if self._rho_hat is None else to_numpy(self._rho_hat).copy()

    def as_dict(self):
        """{"total", each part, each metric, and "mean_activation" (the mean over units of
        rho_hat) where there is one}: floats."""
        parts = self.parts
        d = {"total": sum(parts.values()), **parts,
             **{k: float(v) for k, v in self._metrics.items()}}
        if self._units_mean is not None:
            d["mean_activation"] = float(self._units_mean)
        elif self._rho_hat is not None:
            d["mean_activation"] = float(self.mean_activation.mean())
        return d

    def __repr__(self):
        return "Loss(" + ", ".join(f"{k}={v:.6g}" for k, v in
                                   {"total": self.total, **self.parts}.items()) + ")"


# ----------------------------------------------------------------------------- activity

DENSE_SHARE = 0.5
"""A unit active on more than this share of the samples counts as dense: on for most inputs,
it tells little about any one of them."""


def active(c, h):
    """Where each unit is active, (batch, n_hidden) bool: h > 0 for ReLU codes (the unit
    fired); h != 0 for linear TopK codes (the unit was kept, whatever its sign); h > 0.5 for
    sigmoid codes, whose output is never exactly 0 (their pre-activation z1 is positive: the
    same line as ReLU's)."""
    if c.hidden_activation == "linear":
        return h != 0
    return h > (0.5 if c.hidden_activation == "sigmoid" else 0.0)


# ----------------------------------------------------------------------------- helpers

def decayed(params):
    """The names of the parameters weight decay applies to: the weight matrices, not biases."""
    return [name for name in params if name.endswith(".W")]


def decoder_weight(params):
    """W2, the decoder's (n_hidden, n_inputs) weights: its own, or the encoder's transposed
    when the weights are tied."""
    return params["decoder.W"] if "decoder.W" in params else params["encoder.W"].T


def add_grads(grads, d_params):
    """grads[name] += g for each (name, g) of d_params, in order; a decoder.W gradient of a
    tied model goes to encoder.W, transposed (the two uses of one parameter add up)."""
    for name, g in d_params:
        if name == "decoder.W" and name not in grads:
            grads["encoder.W"] += g.T
        else:
            grads[name] += g


def part_names(c):
    """The names of the parts of a model's loss over a data set (training-only terms, AuxK,
    left out), in order."""
    return tuple(t.name for t in Objective(c).terms if not t.training_only)
