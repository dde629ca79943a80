"""Pure array math and its gradients. No state, no classes: layers and the model wire these up.

This is the readable reference: each function is the formula in its docstring, written once,
returning fresh arrays. (The fast engine in minisae/fast/ computes the same numbers with
fewer passes; it is not needed to follow anything here.)

Every function is written against the Array API standard: it asks its arrays for their
namespace (`xp = namespace(z)`) and uses the standard's functions, so it runs on NumPy, CuPy,
PyTorch tensors and any other library that follows the standard, and keeps the input's dtype
(a Python float times a float32 array stays float32).

The contract for what comes back: arrays stay arrays of the input's library, on its device.
A loss is a 0-d array, not a Python float: reading it as a number (`float(loss)`) is where a
GPU waits for the result, so the caller decides when. `Loss.total` and the other parts of a
model's loss record are the floats.

Shapes: x, y, z are (batch, n_in); h is (batch, n_hidden); rho_hat is (n_hidden,).
"""
from __future__ import annotations

from .backend import device_of, namespace

RHO_EPS = 1e-6
"""rho_hat is clipped into [RHO_EPS, 1 - RHO_EPS] before the logs of the KL penalty: a unit
that is off (or on) for the whole batch would otherwise give log(0). 1e-6 is well inside
float32's range near 1 (its spacing there is 6e-8), so 1 - RHO_EPS < 1 in both dtypes."""


# ----------------------------------------------------------------------------- activations

def sigmoid(z):
    """y = 1 / (1 + exp(-z)), computed as (1 + tanh(z / 2)) / 2.

    The identity is exact, and tanh never overflows, so any finite z (1e4 in float32 too)
    gives a finite y in [0, 1] with no warning; exp(-z) would overflow for z < -89 in float32.
    The price: a small y is 1 + tanh(z/2) rounded near 1, so it carries an absolute error of
    about 6e-8 in float32 (a relative error of 2e-4 at z = -10, and y = 0 below z = -17).
    Nothing here divides by y: the KL term clips rho_hat at RHO_EPS, and cross-entropy is
    computed from z."""
    return 0.5 * namespace(z).tanh(0.5 * z) + 0.5


def sigmoid_backward(dy, y):
    """dz = dy * y * (1 - y): the sigmoid's derivative, written with its output y."""
    return dy * y * (1.0 - y)


def relu(z):
    """y = max(z, 0)."""
    xp = namespace(z)
    return xp.where(z > 0, z, xp.zeros_like(z))


def relu_backward(dy, y):
    """dz = dy where the unit was on (y > 0), else 0 (the subgradient 0 at z = 0)."""
    xp = namespace(dy)
    return xp.where(y > 0, dy, xp.zeros_like(dy))


# ----------------------------------------------------------------------------- reconstruction

def reduction_scale(reduction, shape):
    """The factor c in loss = c * sum(per-element loss), for x of shape (batch, n_features).

    "mean" (the book's): 1 / (batch * n_features), the mean over batch and features.
    "halfsum" (UFLDL's): 1 / (2 batch), half the error summed over features, mean over batch.
    A Python float, so that float32 math stays float32."""
    batch, n_features = shape
    return 1.0 / (batch * n_features) if reduction == "mean" else 0.5 / batch


def mse(y, x, reduction="mean"):
    """Reconstruction error of y against x: c * sum((y - x)^2), c = reduction_scale."""
    return reduction_scale(reduction, x.shape) * namespace(y).sum((y - x) ** 2)


def mse_backward(y, x, reduction="mean"):
    """dL/dy = 2c (y - x)."""
    return 2.0 * reduction_scale(reduction, x.shape) * (y - x)


def variance_sum(x, mean=None):
    """sum_i sum_j (x[i, j] - mean_i x[i, j])^2: x's squared distance from its mean over the
    batch, the denominator of a normalized MSE and of the FVU (a 0-d array). mean: the mean
    to measure from (n,), when it is not x's own (a data-parallel batch's, over every rank)."""
    xp = namespace(x)
    return xp.sum((x - (xp.mean(x, axis=0) if mean is None else mean)) ** 2)


def softplus(z):
    """log(1 + exp(z)), written as max(z, 0) + log(1 + exp(-|z|)) so that exp never overflows."""
    xp = namespace(z)
    return relu(z) + xp.log1p(xp.exp(-xp.abs(z)))


def bce_with_logits(z, x):
    """Binary cross-entropy of y = sigmoid(z) against targets x in [0, 1], from the logits z,
    averaged over batch and features:

        -[x log y + (1 - x) log(1 - y)]  =  softplus(z) - x z

    (use log y = -softplus(-z), log(1 - y) = -softplus(z), softplus(z) - softplus(-z) = z):
    the right-hand side never takes the log of 0."""
    batch, n_features = x.shape
    return namespace(z).sum(softplus(z) - x * z) / (batch * n_features)


def bce_with_logits_backward(y, x):
    """dL/dz = (y - x) / (batch * n_features), with y = sigmoid(z) from the forward pass.

    d/dz [softplus(z) - x z] = sigmoid(z) - x: the sigmoid's derivative cancels against the
    log's, which is why cross-entropy is paired with a sigmoid output."""
    batch, n_features = x.shape
    return (y - x) / (batch * n_features)


# ----------------------------------------------------------------------------- sparsity
# Every sparsity penalty is a function of rho_hat, the mean activation of each unit over the
# batch, and reaches the codes h through it; losses.py registers them by name.

def mean_activation(h):
    """rho_hat_j = (1 / batch) sum_i h[i, j], the mean activation of unit j, (n_hidden,)."""
    return namespace(h).mean(h, axis=0)


def mean_activation_backward(d_rho_hat, h):
    """d penalty / dh from d penalty / d rho_hat, shape (batch, n_hidden).

    Each h[i, j] reaches rho_hat_j with weight 1 / batch, so every row gets the same
    gradient: d_rho_hat_j / batch."""
    return namespace(h).broadcast_to(d_rho_hat / h.shape[0], h.shape)


def clip_rho_hat(rho_hat):
    """rho_hat clipped into [RHO_EPS, 1 - RHO_EPS] (a new array)."""
    return namespace(rho_hat).clip(rho_hat, RHO_EPS, 1.0 - RHO_EPS)


def kl_divergence(rho, rho_hat):
    """KL(rho || rho_hat) = rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)).

    Elementwise over rho_hat; rho is the scalar target. Zero where rho_hat == rho, positive
    elsewhere. Callers clip rho_hat first (clip_rho_hat)."""
    xp = namespace(rho_hat)
    return rho * xp.log(rho / rho_hat) + (1.0 - rho) * xp.log((1.0 - rho) / (1.0 - rho_hat))


def kl_divergence_backward(rho, rho_hat):
    """d KL / d rho_hat = -rho / rho_hat + (1 - rho) / (1 - rho_hat), and 0 where the clip
    held rho_hat at a bound (the clip's derivative is 0 there).

    rho_hat is the unclipped mean activation, shape (n_hidden,)."""
    xp = namespace(rho_hat)
    q = clip_rho_hat(rho_hat)
    inside = (rho_hat >= RHO_EPS) & (rho_hat <= 1.0 - RHO_EPS)
    return xp.where(inside, -rho / q + (1.0 - rho) / (1.0 - q), xp.zeros_like(q))


def kl_penalty(rho_hat, rho, beta):
    """beta * sum_j KL(rho || rho_hat_j), with rho_hat clipped first (a 0-d array)."""
    return beta * namespace(rho_hat).sum(kl_divergence(rho, clip_rho_hat(rho_hat)))


def kl_penalty_backward(rho_hat, rho, beta):
    """d kl_penalty / d rho_hat = beta * dKL/drho_hat, shape (n_hidden,)."""
    return beta * kl_divergence_backward(rho, rho_hat)


def squared_penalty(rho_hat, rho, beta):
    """beta * sum_j (rho_hat_j - rho)^2: the book's squared-error alternative (a 0-d array)."""
    return beta * namespace(rho_hat).sum((rho_hat - rho) ** 2)


def squared_penalty_backward(rho_hat, rho, beta):
    """d squared_penalty / d rho_hat = 2 beta (rho_hat - rho), shape (n_hidden,)."""
    return 2.0 * beta * (rho_hat - rho)


def absolute_penalty(rho_hat, rho, beta):
    """beta * sum_j |rho_hat_j - rho|: the book's absolute-error alternative (a 0-d array)."""
    xp = namespace(rho_hat)
    return beta * xp.sum(xp.abs(rho_hat - rho))


def absolute_penalty_backward(rho_hat, rho, beta):
    """d absolute_penalty / d rho_hat = beta sign(rho_hat - rho) (0 where rho_hat == rho, the
    subgradient in the middle), shape (n_hidden,). Its size never shrinks near the target."""
    return beta * namespace(rho_hat).sign(rho_hat - rho)


def l1_penalty(rho_hat, beta, weights=None):
    """beta * mean_i sum_j |h_ij| * w_j for codes h >= 0, written with rho_hat:

        mean_i sum_j h_ij w_j = sum_j (mean_i h_ij) w_j = sum_j rho_hat_j w_j

    weights: w_j (n_hidden,), or None for all 1. Anthropic's 2024 recipe weighs unit j by the
    norm of its decoder row, so the penalty cannot be dodged by shrinking h and growing W2."""
    xp = namespace(rho_hat)
    return beta * xp.sum(rho_hat if weights is None else rho_hat * weights)


def l1_penalty_backward(rho_hat, beta, weights=None):
    """(d l1_penalty / d rho_hat = beta w, d l1_penalty / d w = beta rho_hat), each
    (n_hidden,); the second is None without weights."""
    if weights is None:
        return beta * namespace(rho_hat).ones_like(rho_hat), None
    return beta * weights, beta * rho_hat


def row_norms(W):
    """||W[j, :]||, the Euclidean norm of each row of W (n_rows, n_cols): (n_rows,)."""
    return namespace(W).linalg.vector_norm(W, axis=1)


def row_norms_backward(d_norms, W, norms):
    """dL/dW from dL/d norms: d||W_j|| / dW_j = W_j / ||W_j|| (0 for a row of zeros, where the
    norm has no derivative), (n_rows, n_cols)."""
    xp = namespace(W)
    safe = xp.where(norms > 0, norms, xp.ones_like(norms))
    scale = xp.where(norms > 0, d_norms / safe, xp.zeros_like(norms))
    return W * scale[:, None]


# ----------------------------------------------------------------------------- top-k codes

def topk_mask(z, k):
    """keep[i, j] = True for the k largest z[i, :] of each row, False elsewhere: (batch, n).

    Written with the standard's sort: rank[i, j] is the position of z[i, j] when row i is
    sorted from the largest down (argsort of the descending argsort), and keep = rank < k.
    Ties go to the lower index (stable sorts), so exactly k units are kept per row."""
    return topk(z, k)[0]


def topk(z, k):
    """(keep, top): topk_mask's keep, and each row's k largest values from the largest down,
    (batch, k), padded with -inf where a row has fewer than k (what a rank of a sharded
    dictionary sends the others: minisae/comm.py). One sort serves both."""
    xp = namespace(z)
    order = xp.argsort(z, axis=1, descending=True, stable=True)
    rank = xp.argsort(order, axis=1, stable=True)
    top = xp.take_along_axis(z, order[:, :k], axis=1)
    if top.shape[1] < k:
        pad = xp.full((z.shape[0], k - top.shape[1]), -xp.inf, dtype=z.dtype,
                      device=device_of(z))
        top = xp.concat([top, pad], axis=1)
    return rank < k, top


def keep(a, mask):
    """a where mask is True, 0 elsewhere (a fresh array)."""
    xp = namespace(a)
    return xp.where(mask, a, xp.zeros_like(a))


def topk_among(z, k, allowed):
    """topk restricted to the units `allowed` (n,) bool: (keep, top), keep the k largest z of
    each row among the allowed units (fewer where fewer are allowed), top their values from
    the largest down (-inf for the places no allowed unit fills)."""
    xp = namespace(z)
    keep, top = topk(xp.where(allowed[None, :], z, xp.full_like(z, -xp.inf)), k)
    return keep & allowed[None, :], top


def largest(a, n):
    """The n largest entries of a (any shape), from the largest down, as a 1-d array of n:
    padded with -inf where a has fewer than n entries."""
    xp = namespace(a)
    flat = xp.sort(xp.reshape(a, (-1,)), descending=True)[:n]
    if flat.shape[0] == n:
        return flat
    return xp.concat([flat, xp.full(n - flat.shape[0], -xp.inf, dtype=a.dtype,
                                    device=device_of(a))])


def kth_of_rows(values, k):
    """The k-th largest of each row of values (batch, >= k), as a column (batch, 1): TopK's
    cut when each rank sent its k largest of a row."""
    xp = namespace(values)
    return xp.sort(values, axis=1, descending=True)[:, k - 1:k]


def kth_largest(values, n):
    """The n-th largest of a 1-d array of at least n values (BatchTopK's cut)."""
    xp = namespace(values)
    return xp.sort(values, descending=True)[n - 1]


# ----------------------------------------------------------------------------- JumpReLU
# Rajamanoharan et al. 2024, "Jumping Ahead": h = z H(z - theta), theta > 0 learned per unit.
# H's derivative is 0 almost everywhere, so theta learns through a straight-through estimator:
# the step is replaced, in the backward pass only, by a rectangle of width eps around theta.

def jumprelu(z, theta):
    """h = z * H(z - theta): z where z > theta_j, else 0 (their eq. 4); theta (n,) > 0."""
    xp = namespace(z)
    return xp.where(z > theta, z, xp.zeros_like(z))


def jumprelu_backward(dh, z, theta):
    """dz = dh * H(z - theta): the derivative with respect to z away from the jump."""
    xp = namespace(dh)
    return xp.where(z > theta, dh, xp.zeros_like(dh))


def rectangle(u):
    """K(u) = 1 for |u| < 1/2, else 0: the kernel of the straight-through estimator."""
    xp = namespace(u)
    return xp.astype(xp.abs(u) < 0.5, u.dtype)


def jumprelu_theta_backward(dh, z, theta, eps):
    """d loss / d theta_j = sum_i dh[i, j] * (-(theta_j / eps) K((z[i, j] - theta_j) / eps)),
    the pseudo-derivative of z H(z - theta) with respect to theta (their eq. 11), (n,)."""
    return namespace(dh).sum(dh * (-(theta / eps) * rectangle((z - theta) / eps)), axis=0)


def l0(z, theta):
    """mean_i sum_j H(z[i, j] - theta_j): the mean number of active units per sample (a 0-d
    array)."""
    xp = namespace(z)
    return xp.sum(xp.astype(z > theta, z.dtype)) / z.shape[0]


def l0_theta_backward(z, theta, eps):
    """d l0 / d theta_j = (1 / batch) sum_i -(1 / eps) K((z[i, j] - theta_j) / eps), the
    pseudo-derivative of the step H(z - theta) with respect to theta (their eq. 12), (n,).
    (Its derivative with respect to z is 0: the L0 penalty trains theta alone.)"""
    return namespace(z).sum(-(1.0 / eps) * rectangle((z - theta) / eps), axis=0) / z.shape[0]


# ----------------------------------------------------------------------------- weight decay

def weight_decay(weights, lam):
    """lam / 2 * sum of every weight squared, lam / 2 (||W1||^2 + ||W2||^2 + ...), each
    ||W||^2 the dot product of W's elements with themselves (no squared copy of W). Biases
    are not passed in: they are not decayed."""
    xp = namespace(*weights)
    flat = [xp.reshape(W, (-1,)) for W in weights]
    return 0.5 * lam * sum(xp.vecdot(w, w) for w in flat)


def weight_decay_backward(W, lam):
    """d/dW of lam / 2 * ||W||^2 = lam * W."""
    return lam * W


# ----------------------------------------------------------------------------- classification

def log_softmax(z):
    """log p = z - logsumexp(z) per row, shape (batch, K).

    Subtracting the row's max first changes nothing (p is invariant to a shift of z) and
    keeps exp() from overflowing: the largest term becomes exp(0) = 1, so the sum is in
    [1, K] and its log is finite."""
    xp = namespace(z)
    shifted = z - xp.max(z, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


def softmax(z):
    """p = exp(z) / sum of exp(z) per row, shape (batch, K); rows sum to 1. Max-shifted."""
    return namespace(z).exp(log_softmax(z))


def one_hot(y, n_classes, like):
    """onehot[i, k] = 1 where y[i] == k, else 0: (batch, n_classes) in like's dtype."""
    xp = namespace(like)
    classes = xp.arange(n_classes, device=like.device)
    return xp.astype(y[:, None] == classes[None, :], like.dtype)


def cross_entropy(log_p, y):
    """-(1/batch) sum_i log p[i, y_i]: log_p (batch, K) from log_softmax, y (batch,) ints."""
    batch, n_classes = log_p.shape
    return -namespace(log_p).sum(log_p * one_hot(y, n_classes, log_p)) / batch


def cross_entropy_backward(p, y):
    """d cross_entropy(log_softmax(z), y) / dz = (p - onehot(y)) / batch, shape (batch, K).

    With p = softmax(z): d(-log p_y)/dz_k = p_k - [k == y], since log p_y = z_y - logsumexp(z)
    and d logsumexp(z)/dz_k = p_k."""
    batch, n_classes = p.shape
    return (p - one_hot(y, n_classes, p)) / batch


def accuracy(z, y):
    """Fraction of rows whose largest logit is at the label (a 0-d array)."""
    xp = namespace(z)
    hits = xp.astype(xp.argmax(z, axis=1) == y, z.dtype)
    return xp.mean(hits)
