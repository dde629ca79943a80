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


SPARSITY = {
    "kl": SparsityTerm(
        "kl", "beta * sum_j KL(rho || rho_hat_j)",
        penalty=lambda rho_hat, c, params: F.kl_penalty(rho_hat, c.sparsity_target,
                                                        c.sparsity_weight),
        backward=lambda rho_hat, c, params: (F.kl_penalty_backward(rho_hat, c.sparsity_target,
                                                                   c.sparsity_weight), {}),
        problem=_kl_problem),
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
        self._parts = dict(parts)
        self._rho_hat = rho_hat
        self._metrics = dict(metrics or {})

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


# ----------------------------------------------------------------------------- assembly

def decayed(params):
    """The names of the parameters weight decay applies to: the weight matrices, not biases."""
    return [name for name in params if name.endswith(".W")]


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


def make_loss(c, reconstruction, rho_hat, params):
    """The model's loss record from its reconstruction term and rho_hat: the one place the
    terms are put together. params: the model's parameters by name (the weights that decay,
    and those a penalty reads)."""
    parts = {"reconstruction": reconstruction}
    term = SPARSITY[c.sparsity]
    if term.penalty is not None:
        parts["sparsity"] = term.penalty(rho_hat, c, params)
    lam = c.weight_decay
    parts["weight_decay"] = F.weight_decay([params[n] for n in decayed(params)], lam) \
        if lam else 0.0
    return Loss(parts, rho_hat)


def sparsity_backward(c, rho_hat, params):
    """(d penalty / d rho_hat (n_hidden,) or None, {param name: its extra gradient})."""
    term = SPARSITY[c.sparsity]
    if term.backward is None:
        return None, {}
    return term.backward(rho_hat, c, params)
