"""Pure array math and its gradients. No state, no classes: layers and the model wire these up.

This is the readable reference: each function is the formula in its docstring, written once,
returning fresh arrays. (The fast engine in minisae/fast/ computes the same numbers with
fewer passes; it is not needed to follow anything here.)

Every function works on NumPy and CuPy arrays alike (it asks the array for its module) and
keeps the input's dtype: a Python float times a float32 array stays float32.
Shapes: x, y, z are (batch, n_in); h is (batch, n_hidden); rho_hat is (n_hidden,).
"""
from __future__ import annotations

from .backend import array_module

RHO_EPS = 1e-6
"""rho_hat is clipped into [RHO_EPS, 1 - RHO_EPS] before the logs of the KL penalty: a unit
that is off (or on) for the whole batch would otherwise give log(0). 1e-6 is well inside
float32's range near 1 (its spacing there is 6e-8), so 1 - RHO_EPS < 1 in both dtypes."""

REDUCTIONS = ("mean", "halfsum")


# ----------------------------------------------------------------------------- activations

def sigmoid(z):
    """y = 1 / (1 + exp(-z)), computed as (1 + tanh(z / 2)) / 2.

    The identity is exact, and tanh never overflows, so any finite z (1e4 in float32 too)
    gives a finite y in [0, 1] with no warning; exp(-z) would overflow for z < -89 in float32.
    The price: a small y is 1 + tanh(z/2) rounded near 1, so it carries an absolute error of
    about 6e-8 in float32 (a relative error of 2e-4 at z = -10, and y = 0 below z = -17).
    Nothing here divides by y: the KL term clips rho_hat at RHO_EPS, and cross-entropy is
    computed from z."""
    xp = array_module(z)
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def sigmoid_backward(dy, y):
    """dz = dy * y * (1 - y): the sigmoid's derivative, written with its output y."""
    return dy * y * (1.0 - y)


def relu(z):
    """y = max(z, 0)."""
    return array_module(z).maximum(z, 0.0)


def relu_backward(dy, y):
    """dz = dy where the unit was on (y > 0), else 0 (the subgradient 0 at z = 0)."""
    return dy * (y > 0)


# ----------------------------------------------------------------------------- losses

def reduction_scale(reduction, shape):
    """The factor c in loss = c * sum(per-element loss), for x of shape (batch, n_features).

    "mean" (the book's): 1 / (batch * n_features), the mean over batch and features.
    "halfsum" (UFLDL's): 1 / (2 batch), half the error summed over features, mean over batch.
    A Python float, so that float32 math stays float32."""
    batch, n_features = shape
    if reduction == "mean":
        return 1.0 / (batch * n_features)
    if reduction == "halfsum":
        return 0.5 / batch
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")


def mse(y, x, reduction="mean"):
    """Reconstruction error of y against x: c * sum((y - x)^2), c = reduction_scale.

    Like every loss here it returns a 0-d array of y's dtype, left on the device until read."""
    return reduction_scale(reduction, x.shape) * ((y - x) ** 2).sum()


def mse_backward(y, x, reduction="mean"):
    """dL/dy = 2c (y - x)."""
    return 2.0 * reduction_scale(reduction, x.shape) * (y - x)


def softplus(z):
    """log(1 + exp(z)), written as max(z, 0) + log(1 + exp(-|z|)) so that exp never overflows."""
    xp = array_module(z)
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def bce_with_logits(z, x):
    """Binary cross-entropy of y = sigmoid(z) against targets x in [0, 1], from the logits z,
    averaged over batch and features:

        -[x log y + (1 - x) log(1 - y)]  =  softplus(z) - x z

    (use log y = -softplus(-z), log(1 - y) = -softplus(z), softplus(z) - softplus(-z) = z):
    the right-hand side never takes the log of 0."""
    return (softplus(z) - x * z).sum() / x.size


def bce_with_logits_backward(y, x):
    """dL/dz = (y - x) / (batch * n_features), with y = sigmoid(z) from the forward pass.

    d/dz [softplus(z) - x z] = sigmoid(z) - x: the sigmoid's derivative cancels against the
    log's, which is why cross-entropy is paired with a sigmoid output."""
    return (y - x) / x.size


# ----------------------------------------------------------------------------- sparsity

def clip_rho_hat(rho_hat):
    """rho_hat clipped into [RHO_EPS, 1 - RHO_EPS] (a new array)."""
    return array_module(rho_hat).clip(rho_hat, RHO_EPS, 1.0 - RHO_EPS)


def kl_divergence(rho, rho_hat):
    """KL(rho || rho_hat) = rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)).

    Elementwise over rho_hat; rho is the scalar target. Zero where rho_hat == rho, positive
    elsewhere. Callers clip rho_hat first (clip_rho_hat)."""
    xp = array_module(rho_hat)
    return rho * xp.log(rho / rho_hat) + (1.0 - rho) * xp.log((1.0 - rho) / (1.0 - rho_hat))


def kl_divergence_backward(rho, rho_hat):
    """d KL / d rho_hat = -rho / rho_hat + (1 - rho) / (1 - rho_hat), and 0 where the clip
    held rho_hat at a bound (the clip's derivative is 0 there).

    rho_hat is the unclipped mean activation, shape (n_hidden,)."""
    q = clip_rho_hat(rho_hat)
    inside = (rho_hat >= RHO_EPS) & (rho_hat <= 1.0 - RHO_EPS)
    return (-rho / q + (1.0 - rho) / (1.0 - q)) * inside


def kl_penalty(rho, rho_hat, beta):
    """beta * sum_j KL(rho || rho_hat_j), with rho_hat clipped first (a 0-d array)."""
    return beta * kl_divergence(rho, clip_rho_hat(rho_hat)).sum()


def sparsity_penalty(h, rho, beta):
    """The sparsity term of the loss for codes h (batch, n_hidden):

        rho_hat_j = (1 / batch) sum_i h[i, j]          the mean activation of unit j
        penalty   = beta * sum_j KL(rho || rho_hat_j)

    Returns (penalty, rho_hat), rho_hat unclipped, shape (n_hidden,)."""
    rho_hat = h.mean(axis=0)
    return kl_penalty(rho, rho_hat, beta), rho_hat


def sparsity_backward(h, rho, beta):
    """d penalty / dh, shape (batch, n_hidden).

    Each h[i, j] reaches the penalty only through rho_hat_j = (1 / batch) sum_i h[i, j], so
    every row gets the same gradient, beta * dKL/drho_hat_j / batch."""
    rho_hat = h.mean(axis=0)
    row = beta * kl_divergence_backward(rho, rho_hat) / h.shape[0]
    return array_module(h).broadcast_to(row, h.shape)


# ----------------------------------------------------------------------------- weight decay

def weight_decay(weights, lam):
    """lam / 2 * sum of every weight squared (biases are not passed in: they are not decayed)."""
    return 0.5 * lam * sum((W ** 2).sum() for W in weights)


def weight_decay_backward(W, lam):
    """d/dW of lam / 2 * ||W||^2 = lam * W."""
    return lam * W
