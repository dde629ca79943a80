"""Gradient checking: analytic gradients against central differences, in float64.

    numeric[i] = (f(p + h e_i) - f(p - h e_i)) / (2 h)              error O(h^2)
    relative error = ||numeric - analytic|| / ||numeric + analytic||   (UFLDL's measure)

With float64 and h = 1e-5 a correct gradient gives about 1e-9 or less; a gradient off by 1%
gives about 5e-3.

    rows = check_model(model, x)                 # model.loss_and_grads, the reference
    print(format_table(rows)); assert_gradients_ok(rows)

The function checked is model.loss_and_grads unless another is given: the fast engine's
is checked with `minisae.fast.check_model(model, x)`, which passes its own here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import checks
from .backend import namespace, to_numpy
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
    numeric, analytic = _gradient(numeric, "numeric"), _gradient(analytic, "analytic")
    if numeric.size != analytic.size:
        raise ConfigError(f"numeric and analytic must have one size, got shapes {numeric.shape} "
                          f"and {analytic.shape}")
    numeric, analytic = numeric.ravel(), analytic.ravel()
    # both scaled by one power of two (exact): no square overflows, the ratio is unchanged
    top = max(np.abs(numeric).max(initial=0.0), np.abs(analytic).max(initial=0.0))
    if top > 0.0:
        shift = -int(np.frexp(top)[1])
        numeric, analytic = np.ldexp(numeric, shift), np.ldexp(analytic, shift)
    denom = np.linalg.norm(numeric + analytic)
    diff = np.linalg.norm(numeric - analytic)
    if denom == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return float(diff / denom)


def numerical_gradient(f, p, h=STEP):
    """Central differences of the scalar function f() with respect to the array p, as a
    float64 NumPy array of p's shape.

    p is perturbed in place, one element at a time (through a flat view of it, so p must be
    contiguous), and restored exactly afterwards."""
    flat, h = _checked_for_differences(f, p, h)
    grad = np.zeros(flat.shape[0], dtype=np.float64)
    for i in range(flat.shape[0]):
        old = float(flat[i])
        flat[i] = old + h
        f_plus = _value(f(), "f")
        flat[i] = old - h
        f_minus = _value(f(), "f")
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2.0 * h)
    return grad.reshape(tuple(p.shape))


def check_gradients(params, grads, loss_and_grads, h=STEP, threshold=THRESHOLD):
    """Compare the gradients that loss_and_grads() writes into `grads` with central differences
    of the loss it returns (its `.total`), for every named array in `params`.

    loss_and_grads: a function of no arguments that computes the loss at the current
    parameters and fills `grads`. Returns one GradCheckRow per parameter."""
    params, grads = checks.check_params(params, grads)
    checks.check_function(loss_and_grads, "loss_and_grads", 0, "a function of no arguments "
                          "that computes the loss and fills grads")
    h = checks.check_real(h, "h", 0.0, 1.0, low_open=True)
    threshold = checks.check_real(threshold, "threshold", 0.0, low_open=True)
    _value(loss_and_grads(), "loss_and_grads")
    analytic = {name: to_numpy(g).copy() for name, g in grads.items()}
    rows = []
    for name, p in params.items():
        numeric = numerical_gradient(lambda: _value(loss_and_grads(), "loss_and_grads"), p, h)
        rows.append(GradCheckRow(name, tuple(p.shape), float(np.linalg.norm(analytic[name])),
                                 float(np.linalg.norm(numeric)),
                                 relative_error(numeric, analytic[name]), threshold))
    return rows


def check_model(model, *inputs, loss_and_grads=None, h=STEP, threshold=THRESHOLD):
    """Compare a float64 model's gradients with central differences of its loss, for every
    parameter: model.loss_and_grads(*inputs) by default, else loss_and_grads(model, *inputs)
    (the fast engine's, say). Returns one GradCheckRow per parameter.

    A JumpReLU's thresholds (coding.log_theta) learn through a straight-through estimator, a
    pseudo-derivative the loss does not have (it is flat in theta almost everywhere, so
    central differences give 0): their row compares the analytic gradient with the
    estimator's definition instead (straight_through_gradient)."""
    h, threshold = _checked_model(model, inputs, loss_and_grads, h, threshold)
    if loss_and_grads is None:
        run = lambda: model.loss_and_grads(*inputs)  # noqa: E731
    else:
        run = lambda: loss_and_grads(model, *inputs)  # noqa: E731
    pseudo = {n: p for n, p in model.params.items() if n == "coding.log_theta"}
    smooth = {n: p for n, p in model.params.items() if n not in pseudo}
    rows = check_gradients(smooth, {n: model.grads[n] for n in smooth}, run, h, threshold)
    for name, p in pseudo.items():
        run()
        analytic = to_numpy(model.grads[name]).copy()
        numeric = straight_through_gradient(model, inputs[0], h)
        rows.append(GradCheckRow(name, tuple(p.shape), float(np.linalg.norm(analytic)),
                                 float(np.linalg.norm(numeric)),
                                 relative_error(numeric, analytic), threshold))
    return rows


def straight_through_gradient(model, x, h=STEP):
    """The loss's gradient with respect to a JumpReLU model's log_theta, as the straight-
    through estimator defines it (Rajamanoharan et al. 2024, eqs. 11 and 12), for the batch x:

        dL/d theta_j = sum_i dL/dh_ij * (-(theta_j / eps) K((z_ij - theta_j) / eps))
                       + beta (1 / batch) sum_i (-(1 / eps)) K((z_ij - theta_j) / eps)
        dL/d log_theta_j = theta_j dL/d theta_j

    K the rectangle of width 1. dL/dh comes from central differences of the loss as a
    function of the codes h (decoder, output and reconstruction), so no backward pass of the
    model is used. A float64 NumPy array (n_hidden,)."""
    c = model.config
    xb = model.as_batch(x)
    z = model.encoder.forward(model.input.forward(xb))
    codes = model.coding.forward(z)
    reconstruction = model.objective.term("reconstruction")

    def loss_of_codes():
        y_pre = model.decoder.forward(codes)
        return reconstruction.forward(dict(x=xb, z=y_pre, y=model.output.forward(y_pre)), {})

    dh = numerical_gradient(loss_of_codes, codes, h)
    z, theta = to_numpy(z), np.exp(to_numpy(model.params["coding.log_theta"]))
    kernel = (np.abs((z - theta) / c.jump_bandwidth) < 0.5).astype(np.float64)
    d_theta = (dh * -(theta / c.jump_bandwidth) * kernel).sum(axis=0) \
        + c.sparsity_weight * (-(1.0 / c.jump_bandwidth) * kernel).sum(axis=0) / z.shape[0]
    return theta * d_theta


def assert_gradients_ok(rows):
    """Raise GradientCheckError naming the worst failing parameter, if any failed."""
    _check_rows(rows, "assert_gradients_ok")
    bad = [r for r in rows if not r.ok]
    if bad:
        worst = max(bad, key=lambda r: r.rel_error if math.isfinite(r.rel_error) else math.inf)
        raise GradientCheckError(
            f"gradient check failed for {', '.join(r.name for r in bad)}: the largest relative error "
            f"is {worst.rel_error:.3e} on {worst.name!r} (threshold {worst.threshold:.0e})")


def format_table(rows, title=None):
    """The rows as a fixed-width text table a learner can read."""
    _check_rows(rows, "format_table")
    checks.check_optional(title, checks.check_type, "title", str, "a str")
    lines = [title] if title else []
    lines.append(f"{'parameter':<16} {'shape':<10} {'|analytic|':>12} {'|numeric|':>12} "
                 f"{'rel. error':>11}  ok")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        lines.append(f"{r.name:<16} {shape:<10} {r.analytic_norm:>12.6g} {r.numeric_norm:>12.6g} "
                     f"{r.rel_error:>11.2e}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the doors' checks

def _checked_for_differences(f, p, h):
    """numerical_gradient's arguments checked: (a flat view of p, h)."""
    checks.check_function(f, "f", 0, "a function of no arguments that returns the loss")
    read_only = (isinstance(p, np.ndarray) and not p.flags.writeable) or \
        getattr(p, "requires_grad", False)     # autograd's leaves are not changed in place
    if not (isinstance(p, np.ndarray) or checks.is_foreign_array(p)) or \
            "float" not in str(p.dtype) or read_only:
        raise ConfigError(f"p must be a writable float array (a parameter: it is perturbed in "
                          f"place), got {checks.shown(p)}")
    h = checks.check_real(h, "h", 0.0, 1.0, low_open=True)
    try:
        return namespace(p).reshape(p, (-1,), copy=False), h
    except (ValueError, RuntimeError, TypeError, AttributeError):
        raise ConfigError("numerical_gradient perturbs p through a flat view of it: pass a "
                          "contiguous array (a model's parameters are)") from None


def _checked_model(model, inputs, loss_and_grads, h, threshold):
    """check_model's arguments checked: (h, threshold)."""
    if not all(hasattr(model, a) for a in ("params", "grads", "loss_and_grads", "dtype")):
        raise ConfigError(f"check_model needs a model (a SparseAutoencoder or a "
                          f"SoftmaxRegression), got {type(model).__name__}")
    if getattr(model.config, "dtype", None) != "float64":
        raise ConfigError(f"gradient checks need a float64 model (central differences in "
                          f"{model.config.dtype} are too coarse); build it with dtype='float64'")
    checks.check_writable(model.params, "model.params")
    checks.check_optional(loss_and_grads, checks.check_function, "loss_and_grads",
                          1 + len(inputs), f"a function of (model{', x' * len(inputs)})")
    if loss_and_grads is None:
        checks.check_function(model.loss_and_grads, "model.loss_and_grads", len(inputs),
                              "given the inputs (x for an autoencoder, x and y for a classifier)")
    return (checks.check_real(h, "h", 0.0, 1.0, low_open=True),
            checks.check_real(threshold, "threshold", 0.0, low_open=True))


def _check_rows(rows, who):
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, GradCheckRow) for r in rows):
        raise ConfigError(f"{who} takes the rows check_model returned (GradCheckRows), got "
                          f"{type(rows).__name__}")


def _gradient(a, name):
    """A finite gradient as a float64 NumPy array, or a ConfigError naming it."""
    a = np.asarray(to_numpy(checks.as_numeric(a, name)), dtype=np.float64)
    if not np.isfinite(a).all():
        raise ConfigError(f"{name} holds NaN or inf; a gradient check compares finite numbers")
    return a


def _value(out, who):
    """The loss as a float: a Loss's .total, or a number (a 0-d array); a ConfigError naming
    the function that gave something else."""
    total = getattr(out, "total", out)
    if not (checks.is_real(total) or (hasattr(total, "shape") and tuple(total.shape) == ()
                                      and getattr(total.dtype, "kind", "f") in "iuf")):
        raise ConfigError(f"{who} must return the loss: a Loss (as model.loss_and_grads(x) "
                          f"does) or a finite number; got {checks.shown(out)}")
    return float(total)
