"""The fused training step: SparseAutoencoder.loss_and_grads with fewer passes and no allocation.

Reproduces the reference path of minisae/model.py (what `fast=False` runs), number for number
up to rounding (tests/test_fast.py). What differs:

- the output layer goes from the decoder's z straight to dz and the reconstruction error in
  one fused pass (kernels.*_head_); y is never stored;
- work is done in place in buffers kept per model and reused while the batch shape stays:
  z1 becomes h, dh becomes dz1;
- sums over the batch (rho_hat, db1, db2) are products with a vector of ones, so BLAS's
  threads share them: sum_i a[i, j] = (ones @ a)[j];
- the KL gradient is added to dh inside the sigmoid's backward pass (kernels.sigmoid_backward_);
- on CuPy each fused pass is one kernel;
- the thread policy in force (threads.py) is told when each step starts and ends: under
  threads="auto" it times steps to choose BLAS's thread count.
"""
from __future__ import annotations

import weakref

from .. import functional as F
from ..model import Loss
from . import kernels as K
from .threads import active

_BUFFERS = weakref.WeakKeyDictionary()  # model -> its Buffers (dropped with the model)


class Buffers:
    """Work arrays by name, reused while the shape, dtype and array type stay the same."""

    def __init__(self):
        self._arrays = {}

    def get(self, name, xp, shape, dtype):
        """An uninitialised array named `name` of this shape and dtype, on module xp."""
        shape = tuple(shape)
        buf = self._arrays.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or not isinstance(buf, xp.ndarray):
            buf = self._arrays[name] = xp.empty(shape, dtype=dtype)
        return buf

    def ones(self, xp, n, dtype):
        """A vector of n ones (filled once, kept while n stays)."""
        buf = self._arrays.get("ones")
        if buf is None or buf.shape != (n,) or buf.dtype != dtype or not isinstance(buf, xp.ndarray):
            buf = self._arrays["ones"] = xp.ones(n, dtype=dtype)
        return buf


def autoencoder_loss_and_grads(model, x):
    """model.loss_and_grads(x) for a checked batch x of the model's backend and dtype:
    the loss (a model.Loss) and the gradients written into model.grads."""
    policy = active()
    if policy is None or model.backend.name != "numpy":
        return _loss_and_grads(model, x)
    policy.step_started()
    loss = _loss_and_grads(model, x)
    policy.step_finished()
    return loss


def _loss_and_grads(model, x):
    buffers = _BUFFERS.get(model)
    if buffers is None:
        buffers = _BUFFERS[model] = Buffers()
    cfg, xp, dtype = model.config, model.backend.xp, model.dtype
    P, G = model.params, model.grads
    W1, b1, W2, b2 = P["encoder.W"], P["encoder.b"], P["decoder.W"], P["decoder.b"]
    batch, n_inputs = x.shape
    n_hidden = W1.shape[1]
    rho, beta, lam = cfg.sparsity_target, cfg.sparsity_weight, cfg.weight_decay
    on_numpy = model.backend.name == "numpy"

    def buf(name, shape):
        return buffers.get(name, xp, shape, dtype)

    ones = buffers.ones(xp, batch, dtype)

    # forward: h = sigmoid(x @ W1 + b1), in place
    h = K.bias_sigmoid_(xp.matmul(x, W1, out=buf("h", (batch, n_hidden))), b1)
    rho_hat = xp.matmul(ones, h)  # a fresh (small) array: the returned Loss keeps it
    rho_hat *= 1.0 / batch

    # output layer and reconstruction loss: dz = d(reconstruction) / d(h @ W2 + b2)
    z = xp.matmul(h, W2, out=buf("z", (batch, n_inputs)))
    dz = buf("dz", (batch, n_inputs))
    if cfg.reconstruction_loss == "bce":
        work = buf("work_out", (batch, n_inputs)) if on_numpy else None
        reconstruction = K.sigmoid_bce_head_(z, b2, x, dz, work) * (1.0 / x.size)
    else:
        scale = F.reduction_scale(cfg.reduction, x.shape)
        head = K.sigmoid_mse_head_ if cfg.output_activation == "sigmoid" else K.linear_mse_head_
        reconstruction = head(z, b2, x, scale, dz) * scale
    sparsity = F.kl_penalty(rho, rho_hat, beta)
    weight_decay = K.weight_decay([W1, W2], lam)

    # backward
    xp.matmul(h.T, dz, out=G["decoder.W"])
    xp.matmul(ones, dz, out=G["decoder.b"])
    dh = xp.matmul(dz, W2.T, out=buf("dh", (batch, n_hidden)))
    kl_row = F.kl_divergence_backward(rho, rho_hat) * (beta / batch) if beta else None
    work = buf("work_hidden", (batch, n_hidden)) if on_numpy else None
    dz1 = K.sigmoid_backward_(dh, h, kl_row, work)
    xp.matmul(x.T, dz1, out=G["encoder.W"])
    xp.matmul(ones, dz1, out=G["encoder.b"])
    if lam:
        for name in ("encoder.W", "decoder.W"):  # both have n_inputs * n_hidden elements
            work = buf("work_W", (W1.size,)).reshape(P[name].shape) if on_numpy else None
            K.add_weight_decay_grad_(G[name], P[name], lam, work)

    return Loss(reconstruction, sparsity, weight_decay, rho_hat)
