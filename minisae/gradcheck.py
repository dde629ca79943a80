"""Gradient checking: analytic gradients against central differences, in float64.

    numeric[i] = (f(p + h e_i) - f(p - h e_i)) / (2 h)              error O(h^2)
    relative error = ||numeric - analytic|| / ||numeric + analytic||   (UFLDL's measure)

With float64 and h = 1e-5 a correct gradient gives about 1e-9 or less; a gradient off by 1%
gives about 5e-3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import to_numpy
from .errors import ConfigError, GradientCheckError

THRESHOLD = 1e-7
STEP = 1e-5


@dataclass(frozen=True)
class GradCheckRow:
    """One parameter's result."""

    name: str
    shape: tuple
    analytic_norm: float
    numeric_norm: float
    rel_error: float
    threshold: float

    @property
    def ok(self):
        return self.rel_error < self.threshold


def relative_error(numeric, analytic):
    """||numeric - analytic|| / ||numeric + analytic||, and 0 when both are exactly 0."""
    numeric, analytic = to_numpy(numeric).ravel(), to_numpy(analytic).ravel()
    denom = np.linalg.norm(numeric + analytic)
    diff = np.linalg.norm(numeric - analytic)
    if denom == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return float(diff / denom)


def numerical_gradient(f, p, h=STEP):
    """Central differences of the scalar function f() with respect to the array p.

    p is perturbed in place, one element at a time, and restored exactly afterwards."""
    if not p.flags.c_contiguous:
        raise ConfigError("numerical_gradient perturbs p through a flat view: pass a contiguous array")
    flat = p.reshape(-1)
    grad = np.zeros(flat.shape, dtype=np.float64)
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        f_minus = f()
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad.reshape(p.shape)


PATHS = ("reference", "fast")


def check_gradients(params, grads, loss_and_grads, h=STEP, threshold=THRESHOLD):
    """Compare the gradients that loss_and_grads() writes into `grads` with central differences
    of the loss it returns (its `.total`), for every named array in `params`.

    loss_and_grads: a function of no arguments that computes the loss at the current
    parameters and fills `grads`. Returns one GradCheckRow per parameter."""
    loss_and_grads()
    analytic = {name: to_numpy(g).copy() for name, g in grads.items()}
    rows = []
    for name, p in params.items():
        numeric = numerical_gradient(lambda: loss_and_grads().total, p, h)
        rows.append(GradCheckRow(name, tuple(p.shape), float(np.linalg.norm(analytic[name])),
                                 float(np.linalg.norm(numeric)),
                                 relative_error(numeric, analytic[name]), threshold))
    return rows


def check_model(model, *inputs, path="reference", h=STEP, threshold=THRESHOLD):
    """Compare model.loss_and_grads(*inputs)'s gradients with central differences of its loss,
    for every parameter. The model must be float64.

    path: "reference" checks the readable path (model.fast off for the check), "fast" the fast
    engine (model.fast on). A model without a fast engine (no `fast` attribute) has only the
    reference path. The model's own setting is restored afterwards. Returns one GradCheckRow
    per parameter."""
    if path not in PATHS:
        raise ConfigError(f"path must be one of {PATHS}, got {path!r}")
    if model.dtype != np.float64:
        raise ConfigError(f"gradient checks need a float64 model (central differences in "
                          f"{model.dtype} are too coarse); build it with dtype='float64'")
    has_fast = hasattr(model, "fast")
    if path == "fast" and not has_fast:
        raise ConfigError(f"{type(model).__name__} has no fast engine; check path='reference'")
    before = model.fast if has_fast else None
    if has_fast:
        model.fast = path == "fast"
    try:
        return check_gradients(model.params, model.grads,
                               lambda: model.loss_and_grads(*inputs), h, threshold)
    finally:
        if has_fast:
            model.fast = before


def assert_gradients_ok(rows):
    """Raise GradientCheckError naming the worst failing parameter, if any failed."""
    bad = [r for r in rows if not r.ok]
    if bad:
        worst = max(bad, key=lambda r: r.rel_error)
        raise GradientCheckError(
            f"gradient check failed for {', '.join(r.name for r in bad)}: the largest relative error "
            f"is {worst.rel_error:.3e} on {worst.name!r} (threshold {worst.threshold:.0e})")


def format_table(rows, title=None):
    """The rows as a fixed-width text table a learner can read."""
    lines = [title] if title else []
    lines.append(f"{'parameter':<12} {'shape':<10} {'|analytic|':>12} {'|numeric|':>12} "
                 f"{'rel. error':>11}  ok")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        lines.append(f"{r.name:<12} {shape:<10} {r.analytic_norm:>12.6g} {r.numeric_norm:>12.6g} "
                     f"{r.rel_error:>11.2e}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
