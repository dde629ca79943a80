"""Pure array math and its gradients. No state, no classes: layers and the model wire these up.

Every function works on NumPy and CuPy arrays alike (it asks the array for its module),
keeps the input's dtype, and takes an optional `out=` so the training path can reuse
buffers. Shapes: x, y are (batch, n_in); h is (batch, n_hidden); rho_hat is (n_hidden,).
"""
from __future__ import annotations

import numbers

import numpy as np

RHO_EPS = 1e-6
"""rho_hat is clipped into [RHO_EPS, 1 - RHO_EPS] before the logs of the KL penalty: a unit
that is off (or on) for the whole batch would otherwise give log(0). 1e-6 is well inside
float32's range near 1 (its spacing there is 6e-8), so 1 - RHO_EPS < 1 in both dtypes."""

REDUCTIONS = ("mean", "halfsum")


def array_module(a):
    """numpy or cupy, whichever `a` belongs to (numpy for NumPy arrays, scalars and numbers)."""
    if isinstance(a, (np.ndarray, np.generic, numbers.Number)):
        return np
    return __import__("cupy").get_array_module(a)


# ----------------------------------------------------------------------------- activations

def sigmoid(z, out=None):
    """y = 1 / (1 + exp(-z)), computed as (1 + tanh(z / 2)) / 2.

    The identity is exact; tanh never overflows, so any finite z (1e4 in float32 too)
    gives a finite y in [0, 1] with no warning, in four in-place passes."""
    xp = array_module(z)
    out = xp.multiply(z, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def sigmoid_backward(dy, y, out=None):
    """dz = dy * y * (1 - y), the sigmoid's derivative written with its output y."""
    xp = array_module(y)
    out = xp.subtract(1.0, y, out=out)
    out *= y
    out *= dy
    return out


def relu(z, out=None):
    """y = max(z, 0)."""
    return array_module(z).maximum(z, 0.0, out=out)


def relu_backward(dy, y, out=None):
    """dz = dy where the unit was on (y > 0), else 0 (the subgradient 0 at z = 0)."""
    xp = array_module(y)
    return xp.multiply(dy, y > 0, out=out)


# ----------------------------------------------------------------------------- losses

def _reduction_scale(reduction, shape):
    """The factor c in loss = c * sum(per-element loss); Python float so float32 stays float32."""
    batch, n_features = shape
    if reduction == "mean":          # the book's: mean over batch and features
        return 1.0 / (batch * n_features)
    if reduction == "halfsum":       # UFLDL's: 1/2 * squared error summed over features, mean over batch
        return 0.5 / batch
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")


def mse(y, x, reduction="mean"):
    """Reconstruction error of y against x: mean((y - x)^2), or 1/(2 batch) sum((y - x)^2).

    Like every loss here it returns a 0-d array of y's dtype, left on the device until read."""
    d = y - x
    return array_module(d).vdot(d, d) * _reduction_scale(reduction, x.shape)


def mse_backward(y, x, reduction="mean", out=None):
    """dL/dy = 2c (y - x), with c the reduction's scale."""
    xp = array_module(y)
    out = xp.subtract(y, x, out=out)
    out *= 2.0 * _reduction_scale(reduction, x.shape)
    return out


def softplus(z, out=None):
    """log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): no overflow for any z."""
    xp = array_module(z)
    t = xp.abs(z)
    xp.negative(t, out=t)
    xp.exp(t, out=t)
    xp.log1p(t, out=t)
    out = xp.maximum(z, 0.0, out=out)
    out += t
    return out


def bce_with_logits(z, x):
    """Binary cross-entropy of sigmoid(z) against targets x in [0, 1], from the logits z.

    -[x log s + (1 - x) log(1 - s)] with s = sigmoid(z) equals softplus(z) - x z, which never
    takes the log of 0. Averaged over batch and features (reduction "mean")."""
    per_element = softplus(z)
    per_element -= x * z
    return per_element.sum() * (1.0 / x.size)


def bce_with_logits_backward(y, x, out=None):
    """dL/dz = (sigmoid(z) - x) / (batch * n_features); y = sigmoid(z) from the forward pass.

    The sigmoid's derivative cancels against the log's, which is why BCE is paired with it."""
    xp = array_module(y)
    out = xp.subtract(y, x, out=out)
    out *= 1.0 / x.size
    return out


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
    """d KL / d rho_hat = -rho / rho_hat + (1 - rho) / (1 - rho_hat), and 0 where clipping
    held rho_hat at a bound (the clip's derivative is 0 there).

    rho_hat is the unclipped batch mean; the gradient reaching h[i, j] is this / batch."""
    q = clip_rho_hat(rho_hat)
    g = (1.0 - rho) / (1.0 - q) - rho / q
    g *= (rho_hat >= RHO_EPS) & (rho_hat <= 1.0 - RHO_EPS)
    return g


def kl_penalty(rho, rho_hat, beta):
    """beta * sum_j KL(rho || rho_hat_j), with rho_hat clipped first (a 0-d array)."""
    return kl_divergence(rho, clip_rho_hat(rho_hat)).sum() * beta


def sparsity_penalty(h, rho, beta):
    """beta * sum_j KL(rho || rho_hat_j), rho_hat = mean of h over the batch. Returns (penalty,
    rho_hat) with rho_hat unclipped, shape (n_hidden,)."""
    rho_hat = h.mean(axis=0)
    return kl_penalty(rho, rho_hat, beta), rho_hat


def sparsity_backward(h, rho, beta, rho_hat=None):
    """dPenalty/dh, shape (batch, n_hidden): every row gets beta * dKL/drho_hat / batch,
    since rho_hat_j = (1/batch) sum_i h[i, j]."""
    if rho_hat is None:
        rho_hat = h.mean(axis=0)
    row = kl_divergence_backward(rho, rho_hat) * (beta / h.shape[0])
    return array_module(h).broadcast_to(row, h.shape)


# ----------------------------------------------------------------------------- weight decay

def weight_decay(weights, lam):
    """lam / 2 * sum of every weight squared (biases are not passed in)."""
    if lam == 0:
        return 0.0
    return sum(array_module(W).vdot(W, W) for W in weights) * (0.5 * lam)


def weight_decay_backward(W, lam):
    """d/dW of lam / 2 * ||W||^2 = lam * W."""
    return lam * W


# ----------------------------------------------------------------------------- fused (fast path)
# The model's fast path (SparseAutoencoder._loss_and_grads_fused) calls these instead of a
# sequence of the functions above. They work in place, keep fewer arrays alive, and on CuPy
# each is one kernel instead of a kernel launch per operation. tests/test_fastpath.py checks
# each against the plain functions.

def bias_sigmoid_(z, b):
    """z = sigmoid(z + b), in place; z (batch, n), b (n,). Returns z."""
    xp = array_module(z)
    if xp is not np:
        _cupy_kernel("bias_sigmoid")(b, z)
        return z
    z += b
    return sigmoid(z, out=z)


def bias_sigmoid_mse_backward_(z, b, x, scale, out):
    """The sigmoid output layer and the squared error, forward and backward, in one go:

        y = sigmoid(z + b),   out = d(scale * sum((y - x)^2)) / dz = 2 scale (y - x) y (1 - y)

    Returns sum((y - x)^2) (a float on NumPy, a 0-d array on CuPy); z is used as scratch.
    y itself is never stored: with t = tanh((z + b) / 2), y = (1 + t) / 2 and
    y (1 - y) = (1 - t^2) / 4, so out = (scale / 2) (y - x) (1 - t^2)."""
    xp = array_module(z)
    if xp is not np:
        _cupy_kernel("bias_sigmoid_mse_backward")(b, x, z.dtype.type(0.5 * scale), z, out)
        return xp.vdot(z, z)  # the kernel leaves y - x in z
    z += b
    z *= 0.5
    t = np.tanh(z, out=z)
    e = np.multiply(t, 0.5, out=out)
    e += 0.5                      # y
    e -= x                        # y - x
    squared_error = float(np.vdot(e, e))
    t *= t
    np.subtract(1.0, t, out=t)    # 1 - t^2 = 4 y (1 - y)
    e *= t
    e *= 0.5 * scale
    return squared_error


def sigmoid_backward_(dy, y, row=None, work=None):
    """dy = (dy + row) * y * (1 - y), in place: the sigmoid's backward, with a per-unit term
    `row` (n,) first added to every row of dy (the KL gradient). work: scratch of y's shape."""
    xp = array_module(dy)
    if xp is not np:
        if row is None:
            row = xp.zeros(dy.shape[-1], dtype=dy.dtype)
        _cupy_kernel("sigmoid_backward")(y, row, dy)
        return dy
    if row is not None:
        dy += row
    work = np.subtract(1.0, y, out=work)
    work *= y
    dy *= work
    return dy


_CUPY_KERNELS = {
    # name: (in_params, out_params, operation). T is the array's float type; the (T) casts
    # keep float32 arithmetic in float32 (a bare 0.5 is a double in CUDA C++).
    "bias_sigmoid": ("T b", "T z", "z = tanh((z + b) * (T)0.5) * (T)0.5 + (T)0.5;"),
    "bias_sigmoid_mse_backward": (
        "T b, T x, T k", "T z, T dz",
        "T t = tanh((z + b) * (T)0.5);"
        "T e = t * (T)0.5 + (T)0.5 - x;"
        "dz = e * ((T)1 - t * t) * k;"
        "z = e;"),
    "sigmoid_backward": ("T y, T row", "T dy", "dy = ((T)1 - y) * y * (dy + row);"),
}
_CUPY_COMPILED = {}


def _cupy_kernel(name):
    """The cupy.ElementwiseKernel `name` of _CUPY_KERNELS, compiled on first use."""
    kernel = _CUPY_COMPILED.get(name)
    if kernel is None:
        import cupy
        in_params, out_params, operation = _CUPY_KERNELS[name]
        kernel = _CUPY_COMPILED[name] = cupy.ElementwiseKernel(in_params, out_params, operation,
                                                               "minisae_" + name)
    return kernel
