"""The fused training step: SparseAutoencoder.loss_and_grads with fewer passes and no allocation.

Reproduces the reference, minisae/model.py's loss_and_grads, number for number up to
rounding (tests/test_fast.py). What differs:

- the output layer goes from the decoder's z straight to dz and the reconstruction error in
  one fused pass (kernels.*_head_); y is never stored;
- work is done in place in buffers kept per model and reused while the batch shape stays:
  z1 becomes h, dh becomes dz1;
- sums over the batch (rho_hat, db1, db2) are products with a vector of ones, so BLAS's
  threads share them: sum_i a[i, j] = (ones @ a)[j];
- the sparsity gradient is added to dh inside the sigmoid's backward pass
  (kernels.sigmoid_backward_);
- on CuPy each fused pass is one kernel;
- TopK: three of the five products use only the kept codes (fast/sparse.py), where there
  are enough units per kept code for that to pay (SPARSE_RATIO);
- a sharded dictionary (minisae/comm.py) crosses ranks where the reference does: the
  decoder's output and x - b2's bias gradient summed over the ranks (comm.units_sum), TopK's
  and AuxK's cut from every rank's candidates (comm.units_gather);
- the thread policy in force (threads.py) is told when each step starts and ends: under
  threads="adaptive" it times steps to choose BLAS's thread count.

The loss itself is put together by the model's losses.Objective, as the reference's is: the
engine computes the reconstruction term (fused with the output layer) and weight decay's
gradient (in place) its own way, and every other term runs its own forward and backward.

Models the fused step does not cover (another backend than NumPy or CuPy; see `fused`) run
the reference, model.loss_and_grads: an explicit fallback, with the same numbers.
"""
from __future__ import annotations

import weakref

from .. import checks
from .. import functional as F
from .. import losses
from ..backend import array_module
from ..model import SparseAutoencoder
from . import kernels as K
from .sparse import kernels as sparse_kernels
from .threads import active, available_cores

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


def fused(model):
    """Why the fused step cannot run this model (a sentence), or None when it can. It covers
    every sparsity mechanism, coding activation, AuxK and tied weights on NumPy and CuPy; the
    one explicit fallback is AuxK with cross-entropy (the fused cross-entropy pass keeps no
    residual)."""
    checks.check_type(model, "model", SparseAutoencoder, "a SparseAutoencoder")
    c = model.config
    if not model.backend.fast:
        return (f"the fast engine runs on NumPy and CuPy, not on {model.backend.name}; the "
                f"reference path runs instead")
    if c.aux_k is not None and c.reconstruction_loss == "bce":
        return "AuxK with cross-entropy has no fused step; the reference path runs it"
    return None


def loss_and_grads(model, x, validate=True):
    """model.loss_and_grads(x), computed by the fast engine: the loss (a losses.Loss) and the
    gradients written into model.grads. x: (batch, n_inputs), checked unless validate=False.
    A model the fused step does not cover (see `fused`) runs model.loss_and_grads."""
    if fused(model) is not None:
        return model.loss_and_grads(x, validate)
    x = model.as_batch(x, validate)
    policy = active()
    if policy is None or model.backend.name != "numpy":
        return _loss_and_grads(model, x)
    policy.step_started()
    loss = _loss_and_grads(model, x)
    policy.step_finished()
    return loss


def values(model, x):
    """model.values(x), the forward pass of a checked batch as a trained model encodes, with
    TopK's selection by partial selection (kernels.topk_, linear time) instead of the
    reference's two sorts of every row: what `evaluate` runs over a whole data set. Every other
    coding layer is the model's own (elementwise, no sort)."""
    c = model.config
    if c.sparsity != "topk" or not model.backend.fast:
        return model.values(x)
    z1 = model.encoder.forward(model.input.forward(x))
    h = K.topk_(z1.copy(), 0.0, c.k, c.hidden_activation == "relu",
                model.comm.units_gather)[0]
    z = model.decoder.forward(h)
    return dict(x=x, z1=z1, h=h, z=z, y=model.output.forward(z))


def _loss_and_grads(model, x):
    buffers = _BUFFERS.get(model)
    if buffers is None:
        buffers = _BUFFERS[model] = Buffers()
    cfg, xp, dtype = model.config, array_module(x), x.dtype
    P, G = model.params, model.grads
    W1, b1, b2 = P["encoder.W"], P["encoder.b"], P["decoder.b"]
    W2 = losses.decoder_weight(P)  # encoder.W transposed (a view) when tied
    batch, n_inputs = x.shape
    n_hidden = W1.shape[1]
    on_numpy = xp.__name__ == "numpy"
    comm = model.comm
    comm.begin(batch)  # data parallel: the batch is every rank's rows (minisae/comm.py)

    def buf(name, shape):
        return buffers.get(name, xp, shape, dtype)

    ones = buffers.ones(xp, batch, dtype)

    # forward: h = act(x @ W1 + b1), in place (x - b2 for x with subtract_decoder_bias)
    x_out = x
    if cfg.subtract_decoder_bias:
        x = xp.subtract(x_out, b2, out=buf("x_in", (batch, n_inputs)))
    h = xp.matmul(x, W1, out=buf("h", (batch, n_hidden)))
    # AuxK reads the dead units' pre-activations, which the coding layer overwrites: kept apart
    dead = _dead_pre_activations(model, h, b1, xp) if cfg.aux_k else None
    coding = _CODING.get(cfg.sparsity, _CODING.get(cfg.hidden_activation))
    h, kept = coding.forward(h, b1, model, buf)
    rho_hat = xp.matmul(ones, h)  # a fresh (small) array: the returned Loss keeps it
    rho_hat *= 1.0 / batch
    rho_hat = comm.batch_mean(rho_hat)

    # output layer and reconstruction term: dz = d(reconstruction) / d(h @ W2 + b2)
    sparse = _sparse_topk(cfg, on_numpy, n_hidden)
    if sparse:  # TopK: z from the k kept codes of each sample (fast/sparse.py)
        rows, cols = kept[:2]
        v = h[rows, cols]
        z = buf("z", (batch, n_inputs))
        sparse[0](v, cols, W2, z)
    else:
        z = xp.matmul(h, W2, out=buf("z", (batch, n_inputs)))
    z = comm.units_sum(z)  # a sharded dictionary: every rank's units' share of the output
    dz = buf("dz", (batch, n_inputs))
    err = _residual(model, z, b2, x_out) if cfg.aux_k else None  # before the head takes z
    if cfg.reconstruction_loss == "bce":
        work = buf("work_out", (batch, n_inputs)) if on_numpy else None
        reconstruction = K.sigmoid_bce_head_(z, b2, x_out, dz, work) * (1.0 / x.size)
    else:
        scale = F.reduction_scale(cfg.reduction, x.shape)
        head = K.sigmoid_mse_head_ if cfg.output_activation == "sigmoid" else K.linear_mse_head_
        reconstruction = head(z, b2, x_out, scale, dz) * scale
    # the other terms: AuxK fused here, the rest their own forward
    given = {"reconstruction": reconstruction}
    aux = _auxk(model, dead, err, W2, xp) if cfg.aux_k else None
    if cfg.aux_k:
        given["auxk"] = 0.0 if aux is None else aux[0]  # no dead unit: no term
    objective = model.objective
    loss = objective.forward({"rho_hat": rho_hat, "z1": kept if cfg.sparsity == "jumprelu"
                              else None}, P, given)

    # backward
    if cfg.tied_weights:  # W2 = W1.T: its gradient joins encoder.W's below
        dW2 = xp.matmul(h.T, dz, out=buf("dW2", (n_hidden, n_inputs)))
    elif sparse:
        dW2 = G["decoder.W"]
        sparse[2](v, cols, dz, dW2)
    else:
        dW2 = xp.matmul(h.T, dz, out=G["decoder.W"])
    xp.matmul(ones, dz, out=G["decoder.b"])
    if sparse:  # dh at the kept units only: the others pass no gradient anyway
        g = buf("dh_kept", cols.shape)
        sparse[1](dz, W2, cols, g)
        dh = buf("dh", (batch, n_hidden))
        dh.fill(0)
        dh[rows, cols] = g
    else:
        dh = xp.matmul(dz, W2.T, out=buf("dh", (batch, n_hidden)))
    # the terms' gradients, but weight decay's (added in place below); every penalty scales
    # with beta: at beta = 0 there is no gradient row to add
    d, d_params = objective.backward(skip=("weight_decay",) if cfg.sparsity_weight
                                     else ("weight_decay", "sparsity"))
    row = d.get("rho_hat")
    row = None if row is None else row * (1.0 / batch)
    dz1 = coding.backward(dh, h, row, kept, model, buf("work_hidden", (batch, n_hidden))
                          if on_numpy else None)
    if aux is not None:  # AuxK's own path into the dead units' z1
        dz1[:, dead[0]] += aux[1]
    xp.matmul(x.T, dz1, out=G["encoder.W"])
    xp.matmul(ones, dz1, out=G["encoder.b"])
    if cfg.subtract_decoder_bias:
        # b2 reached the encoder too: db2 -= sum_i (dz1 @ W1.T)[i] = W1 @ (sum_i dz1[i]),
        # and sum_i dz1[i] is db1: a matrix-vector product instead of the matrix product dx
        G["decoder.b"] -= comm.units_sum(xp.matmul(W1, G["encoder.b"]))
    if cfg.tied_weights:
        G["encoder.W"] += dW2.T
    if cfg.weight_decay:
        for name in losses.decayed(P):
            work = buf("work_" + name, P[name].shape) if on_numpy else None
            K.add_weight_decay_grad_(G[name], P[name], cfg.weight_decay, work)
    losses.add_grads(G, d_params)
    if aux is not None:  # AuxK's share of dW2, at the dead units' rows, after weight decay
        if cfg.tied_weights:
            G["encoder.W"][:, dead[0]] += aux[2].T
        else:
            G["decoder.W"][dead[0]] += aux[2]
    # data parallel: the batch's gradient and loss, the ranks' weighted by their shares
    return comm.combine(loss, model.flat_grads)


SPARSE_RATIO = 6
"""TopK's sparse products run where the units >= SPARSE_RATIO * k * BLAS's threads: the
compiled loops (one thread) do k / units of the dense products' work, at about a sixth of
the speed per multiplication that BLAS reaches on one core. Measured on a 2-core Xeon
(BENCHMARKS.md, 0.7): the three products break even at units / k of about 6 on one thread
and 10-12 on two, for k 25 and 32 and batches of 256 and 1000."""


def _sparse_topk(cfg, on_numpy, units):
    """TopK's compiled sparse products (fast/sparse.py), where they apply and pay: NumPy,
    TopK, untied weights (W2 = W1.T would be read down its columns), numba installed, and
    enough units (this rank's: all of them but in a sharded dictionary) per kept code for the
    threads BLAS has (SPARSE_RATIO); else None. The count is the run's (the thread policy's,
    kept on resume, so the choice is too), or every core outside one (BLAS's default)."""
    if cfg.sparsity != "topk" or not on_numpy or cfg.tied_weights:
        return None
    policy = active()
    threads = policy.threads if policy is not None else available_cores()
    if units < SPARSE_RATIO * cfg.k * threads:
        return None
    return sparse_kernels()


def _dead_pre_activations(model, z, b, xp):
    """(the dead units' indices, their pre-activations z + b (batch, n_dead)), a copy."""
    units = xp.flatnonzero(model.dead)
    dead = xp.take(z, units, axis=1)
    dead += b[units]
    return units, dead


def _residual(model, z, b2, x):
    """y - x from the decoder's z = h @ W2 (its bias not added yet): minus AuxK's target e,
    or minus model.frozen_residual when a gradient check holds e fixed."""
    if model.frozen_residual is not None:
        return -model.frozen_residual
    a = z + b2
    return (F.sigmoid(a) if model.config.output_activation == "sigmoid" else a) - x


def _auxk(model, dead, err, W2, xp):
    """losses.AuxK, fused: the k_aux largest of the dead units' pre-activations by partial
    selection (argpartition, not a sort), decoded through their rows of W2 alone.

    err: y - x (the residual e = x - y is -err). Returns (aux, d aux / d z1 at the dead units
    (batch, n_dead), d aux / d W2 at the dead units' rows (n_dead, n_inputs)), or None with no
    dead unit."""
    units, z = dead
    n_dead, k_aux, comm = units.shape[0], model.config.aux_k, model.comm
    if comm.units_sum(n_dead) == 0:  # no dead unit (a sharded dictionary: on any rank)
        return None
    k = min(k_aux, n_dead)
    rows = xp.arange(z.shape[0])[:, None]
    cols = xp.argpartition(z, n_dead - k, axis=1)[:, n_dead - k:] if k else \
        xp.zeros((z.shape[0], 0), dtype=xp.intp)
    top = z[rows, cols]
    # a sharded dictionary (minisae/comm.py): the row's cut among every rank's dead units
    candidates = comm.units_gather(K.padded(top, k_aux))
    h_aux = xp.zeros_like(z)
    h_aux[rows, cols] = xp.maximum(top * (top >= K.kth_of_rows(candidates, k_aux)), 0)
    W2_dead = W2[units]
    e_hat = comm.units_sum(h_aux @ W2_dead)
    # e's own variance over the batch, every rank's rows (the sign cancels); 0-d arrays, so a
    # GPU is not waited for here
    variance = comm.sum(((err - comm.batch_mean(err.mean(axis=0))) ** 2).sum())
    scale = model.config.aux_weight * (variance > 0) / \
        (comm.share * xp.where(variance > 0, variance, 1.0))
    d_e_hat = e_hat + err                                     # e_hat - e
    aux = scale * (d_e_hat * d_e_hat).sum()
    d_e_hat *= 2.0 * scale
    dz_dead = (d_e_hat @ W2_dead.T) * (h_aux > 0)
    return aux, dz_dead, h_aux.T @ d_e_hat


class _Sigmoid:
    """layers.Sigmoid's forward and backward, fused with the bias and the penalty's row."""

    @staticmethod
    def forward(z, b, model, buf):
        return K.bias_sigmoid_(z, b), None

    @staticmethod
    def backward(dh, h, row, kept, model, work):
        return K.sigmoid_backward_(dh, h, row, work)


class _ReLU:
    """layers.ReLU's forward and backward, fused with the bias and the penalty's row."""

    @staticmethod
    def forward(z, b, model, buf):
        return K.bias_relu_(z, b), None

    @staticmethod
    def backward(dh, h, row, kept, model, work):
        return K.relu_backward_(dh, h, row)


class _TopK:
    """layers.TopK's forward and backward (topk has no penalty, so no row)."""

    @staticmethod
    def forward(z, b, model, buf):
        h, rows, kept, mask = K.topk_(z, b, model.config.k,
                                      model.config.hidden_activation == "relu",
                                      model.comm.units_gather)  # a sharded dictionary's cut
        return h, (rows, kept, mask)

    @staticmethod
    def backward(dh, h, row, kept, model, work):
        rows, cols, mask = kept
        return K.topk_backward_(dh, h, rows, cols, model.config.hidden_activation == "relu",
                                mask)


class _BatchTopK:
    """layers.BatchTopK's forward (with its threshold's update) and backward: the cut, the
    (k * batch)-th largest ReLU code of the batch (every rank's rows), by partial selection
    (partition), not a sort."""

    @staticmethod
    def forward(z, b, model, buf):
        K.bias_relu_(z, b)
        comm = model.comm
        n = model.config.k * comm.rows
        candidates = comm.gather(K.largest(z, n))   # every rank's n largest codes
        cut = K.kth_largest(candidates, n)
        z[z < cut] = 0
        model.coding.update_threshold(array_module(z).where(candidates >= cut, candidates, 0))
        return z, None

    @staticmethod
    def backward(dh, h, row, kept, model, work):
        return K.relu_backward_(dh, h)  # kept codes are the positive ones


class _JumpReLU:
    """layers.JumpReLU's forward and backward; z1 (before the jump) is kept for the
    straight-through estimate of theta's gradient, and returned for the L0 term."""

    @staticmethod
    def forward(z, b, model, buf):
        z += b
        z1 = buf("z1", z.shape)
        z1[...] = z
        theta = array_module(z).exp(model.params["coding.log_theta"])
        z *= z1 > theta
        return z, z1

    @staticmethod
    def backward(dh, h, row, z1, model, work):
        layer = model.coding
        theta = array_module(dh).exp(layer.log_theta)
        layer.d_log_theta[...] = theta * F.jumprelu_theta_backward(dh, z1, theta, layer.eps)
        dh *= z1 > theta
        return dh


_CODING = {"sigmoid": _Sigmoid, "relu": _ReLU, "topk": _TopK, "batchtopk": _BatchTopK,
           "jumprelu": _JumpReLU}
