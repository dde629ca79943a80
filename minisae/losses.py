"""The loss: its terms, registered by name, and the one place they are put together.

    loss = reconstruction(y, x)  +  sparsity(rho_hat)  +  lambda / 2 sum ||W||^2

Every sparsity penalty is a function of rho_hat, each unit's mean activation over the batch
(or over a whole data set), and its gradient reaches the codes through rho_hat alone
(functional.mean_activation_backward). A penalty is registered in SPARSITY with its formula,
its value and its gradient with respect to rho_hat, all from functional.py.

`make_loss` is the one owner of the sum: the reference model, the fast engine and
`evaluate` (over a whole data set, with rho_hat over all of it) each compute the
reconstruction error and rho_hat their own way, and hand them here; the parts that exist for
a model, and their names, come from this module only. The record it returns, `Loss`, carries
the named parts; history, summaries, figures and checkpoints follow the parts it has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import checks
from . import functional as F
from .backend import to_numpy


# ----------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class SparsityTerm:
    """A sparsity mechanism.

    formula: the term as a learner reads it. penalty(rho_hat, config, params) -> 0-d array,
    and backward(rho_hat, config, params) -> (d penalty / d rho_hat (n_hidden,), {param name:
    its extra gradient}), both None for a mechanism that is not a penalty. problem(config) ->
    why the config cannot use this term, or None."""

    name: str
    formula: str
    penalty: Callable | None
    backward: Callable | None
    problem: Callable


def _kl_problem(c):
    if c.hidden_activation != "sigmoid":
        return (f"sparsity='kl' compares mean activations in (0, 1) with rho, so it needs "
                f"hidden_activation='sigmoid', got {c.hidden_activation!r}")
    return None


def _topk_problem(c):
    if c.k is None or c.k > c.n_hidden:
        return (f"sparsity='topk' keeps k of the n_hidden={c.n_hidden} units per sample: give k "
                f"between 1 and {c.n_hidden}, got k={c.k!r}")
    if c.hidden_activation not in ("relu", "linear"):
        return (f"sparsity='topk' keeps the largest pre-activations as they are (linear) or "
                f"through a ReLU: use hidden_activation 'relu' or 'linear', got "
                f"{c.hidden_activation!r}")
    if c.aux_k is not None and c.hidden_activation != "relu":
        return ("AuxK (aux_k) tells dead units by their never firing, which needs "
                "hidden_activation='relu'")
    if c.aux_k is not None and c.aux_k > c.n_hidden:
        return f"aux_k must be at most n_hidden={c.n_hidden}, got {c.aux_k}"
    return None


def _l1(rho_hat, c, params):
    norms = F.row_norms(decoder_weight(params)) if c.l1_decoder_norm else None
    return F.l1_penalty(rho_hat, c.sparsity_weight, norms)


def _l1_backward(rho_hat, c, params):
    if not c.l1_decoder_norm:
        return F.l1_penalty_backward(rho_hat, c.sparsity_weight)[0], {}
    W2 = decoder_weight(params)
    norms = F.row_norms(W2)
    d_rho_hat, d_norms = F.l1_penalty_backward(rho_hat, c.sparsity_weight, norms)
    return d_rho_hat, {"decoder.W": F.row_norms_backward(d_norms, W2, norms)}


SPARSITY = {
    "kl": SparsityTerm(
        "kl", "beta * sum_j KL(rho || rho_hat_j)",
        penalty=lambda rho_hat, c, params: F.kl_penalty(rho_hat, c.sparsity_target,
                                                        c.sparsity_weight),
        backward=lambda rho_hat, c, params: (F.kl_penalty_backward(rho_hat, c.sparsity_target,
                                                                   c.sparsity_weight), {}),
        problem=_kl_problem),
    "squared": SparsityTerm(
        "squared", "beta * sum_j (rho_hat_j - rho)^2",
        penalty=lambda rho_hat, c, params: F.squared_penalty(rho_hat, c.sparsity_target,
                                                             c.sparsity_weight),
        backward=lambda rho_hat, c, params: (F.squared_penalty_backward(
            rho_hat, c.sparsity_target, c.sparsity_weight), {}),
        problem=lambda c: None),
    "absolute": SparsityTerm(
        "absolute", "beta * sum_j |rho_hat_j - rho|",
        penalty=lambda rho_hat, c, params: F.absolute_penalty(rho_hat, c.sparsity_target,
                                                              c.sparsity_weight),
        backward=lambda rho_hat, c, params: (F.absolute_penalty_backward(
            rho_hat, c.sparsity_target, c.sparsity_weight), {}),
        problem=lambda c: None),
    "l1": SparsityTerm(
        "l1", "beta * mean_i sum_j |h_ij| (* ||W2[j, :]|| with l1_decoder_norm)",
        penalty=_l1, backward=_l1_backward, problem=lambda c: None),
    "topk": SparsityTerm(
        "topk", "keep the k largest pre-activations of each sample (no penalty)",
        penalty=None, backward=None, problem=_topk_problem),
}
"""Sparsity mechanisms by the name `SparseAutoencoder(sparsity=...)` takes."""


# ----------------------------------------------------------------------------- the record

class Loss:
    """One evaluation's loss: named parts, kept as 0-d arrays on the device until read, and
    rho_hat. Reading a part (`loss.reconstruction`, `loss.total`: floats) is where a GPU step
    waits for its result, so a loop that reads every few steps lets the GPU run ahead.

    parts: {name: 0-d array or number}, summed into the total. rho_hat: the per-unit mean
    activation (n_hidden,), or None. metrics: {name: value} read like parts but not summed
    (a classifier's accuracy)."""

    def __init__(self, parts, rho_hat=None, metrics=None):
        self._parts = checks.check_numbers(parts, "parts")
        self._rho_hat = checks.check_optional(rho_hat, checks.check_vector, "rho_hat")
        self._metrics = checks.check_numbers({} if metrics is None else metrics, "metrics")

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
        if self._rho_hat is not None:
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


# ----------------------------------------------------------------------------- assembly

def decayed(params):
    """The names of the parameters weight decay applies to: the weight matrices, not biases."""
    return [name for name in params if name.endswith(".W")]


def decoder_weight(params):
    """W2, the decoder's (n_hidden, n_inputs) weights: its own, or the encoder's transposed
    when the weights are tied."""
    return params["decoder.W"] if "decoder.W" in params else params["encoder.W"].T


def add_grads(grads, extra):
    """grads[name] += extra[name]; a decoder.W gradient of a tied model goes to encoder.W,
    transposed (the two uses of one parameter add up)."""
    for name, g in extra.items():
        if name == "decoder.W" and name not in grads:
            grads["encoder.W"] += g.T
        else:
            grads[name] += g


def part_names(c):
    """The names of the parts a model with config c has, in order."""
    names = ["reconstruction"]
    if SPARSITY[c.sparsity].penalty is not None:
        names.append("sparsity")
    names.append("weight_decay")
    return tuple(names)


def reconstruction(c, x, z, y):
    """The reconstruction term: cross-entropy from the output layer's logits z, or the
    squared error of y (scaled by the reduction)."""
    if c.reconstruction_loss == "bce":
        return F.bce_with_logits(z, x)
    return F.mse(y, x, c.reduction)


def make_loss(c, reconstruction, rho_hat, params, auxk=None):
    """The model's loss record from its reconstruction term and rho_hat: the one place the
    terms are put together. params: the model's parameters by name (the weights that decay,
    and those a penalty reads). auxk: AuxK's term, a training-only part (Gao et al.), which
    evaluation over a data set leaves out."""
    parts = {"reconstruction": reconstruction}
    term = SPARSITY[c.sparsity]
    if term.penalty is not None:
        parts["sparsity"] = term.penalty(rho_hat, c, params)
    lam = c.weight_decay
    parts["weight_decay"] = F.weight_decay([params[n] for n in decayed(params)], lam) \
        if lam else 0.0
    if auxk is not None:
        parts["auxk"] = auxk
    return Loss(parts, rho_hat)


def sparsity_backward(c, rho_hat, params):
    """(d penalty / d rho_hat (n_hidden,) or None, {param name: its extra gradient})."""
    term = SPARSITY[c.sparsity]
    if term.backward is None:
        return None, {}
    return term.backward(rho_hat, c, params)
