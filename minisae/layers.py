"""Layers with hand-written forward and backward passes.

The contract (the classic from-scratch books'): `forward(x)` keeps only what `backward`
needs and returns a fresh array; `backward(dy)` returns dx and *assigns* the parameter
gradients, so calling it twice gives the same grads. `dy` is never modified.
"""
from __future__ import annotations

from . import functional as F
from .backend import namespace
from .comm import Alone


class Dense:
    """y = x @ W + b.

    x: (batch, n_in), W: (n_in, n_out), b: (n_out,), y: (batch, n_out). `W`, `b`, `dW`,
    `db` are arrays owned by the model (views into its flat buffers); the layer reads W and b
    and assigns dW and db. needs_input_grad=False (the first layer, whose input is the data)
    skips dx = dy @ W.T, a whole matrix product."""

    def __init__(self, W, b, dW, db, needs_input_grad=True):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.needs_input_grad = needs_input_grad
        self._x = None

    def forward(self, x):
        """x: (batch, n_in). Returns y: (batch, n_out)."""
        self._x = x
        return x @ self.W + self.b

    def backward(self, dy):
        """dy: (batch, n_out), the loss's gradient with respect to y. Returns dx (batch, n_in),
        or None when needs_input_grad is False."""
        # in the forward pass this was: y[i, k] = sum_j x[i, j] W[j, k] + b[k]
        self.dW[...] = self._x.T @ dy                   # dL/dW[j, k] = sum_i x[i, j] dy[i, k]
        self.db[...] = namespace(dy).sum(dy, axis=0)    # dL/db[k]    = sum_i dy[i, k]
        if not self.needs_input_grad:
            return None
        return dy @ self.W.T                            # dL/dx[i, j] = sum_k dy[i, k] W[j, k]


class UnitsDense(Dense):
    """The decoder, y = h @ W + b, whose input is the units. A sharded dictionary's ranks each
    hold some units (comm, minisae/comm.py: rank r has h_r and its rows W_r of W): h @ W is
    the sum over ranks of h_r @ W_r, added up by comm.units_sum before the bias. backward needs
    no rank but its own: dy is every rank's, dh_r = dy @ W_r.T, dW_r = h_r.T @ dy. Alone,
    units_sum gives back what it is given: a Dense."""

    def __init__(self, W, b, dW, db, comm=None):
        super().__init__(W, b, dW, db)
        self.comm = Alone() if comm is None else comm

    def forward(self, x):
        self._x = x
        return self.comm.units_sum(x @ self.W) + self.b


class TiedDense(Dense):
    """The encoder of a model with tied weights, y = x @ W + b, whose W the decoder also uses,
    transposed (W2 = W1.T). W is used twice, so its gradient is the sum of both uses:

        dW = x.T @ dy  +  decoder.dW.T

    `decoder` is a Dense whose dW is its own array (its backward runs first, in reverse)."""

    def __init__(self, W, b, dW, db, decoder, needs_input_grad=True):
        super().__init__(W, b, dW, db, needs_input_grad)
        self.decoder = decoder

    def backward(self, dy):
        dx = super().backward(dy)
        self.dW += self.decoder.dW.T
        return dx


class SubtractBias:
    """x_in = x - b, the decoder's bias b2 subtracted before encoding (Gao et al.; Anthropic).

    b is the decoder's: its gradient dL/db = -sum_i dx_in[i, :] is added to the decoder's db,
    which the decoder's backward (earlier, in reverse order) assigned. Returns no dx: nothing
    upstream of x is learned. With a sharded dictionary (comm) dx_in is each rank's units'
    part (dz1_r @ W1_r.T): the ranks' parts are added up (comm.units_sum)."""

    def __init__(self, b, db, comm=None):
        self.b, self.db, self.comm = b, db, Alone() if comm is None else comm

    def forward(self, x):
        return x - self.b

    def backward(self, dx_in):
        self.db -= self.comm.units_sum(namespace(dx_in).sum(dx_in, axis=0))
        return None


class MeanOverBatch:
    """rho_hat = (1 / batch) sum_i h[i, :], each unit's mean activation, (n_hidden,).

    backward: every h[i, j] reaches rho_hat_j with weight 1 / batch, so
    dh[i, j] = d_rho_hat[j] / batch: the same row for every sample (returned as that row,
    (n_hidden,), which broadcasts over the batch where it is added).

    Data parallel (comm, minisae/comm.py): the batch is split over the ranks, and rho_hat is
    the whole batch's, the mean of the ranks' means weighted by their shares, before any
    penalty reads it. backward gives this rank's rows d_rho_hat / (its rows); the ranks'
    gradients, weighted by their shares when combined, make it d_rho_hat / (the batch's)."""

    def __init__(self, comm):
        self.comm = comm

    def forward(self, h):
        self.batch = h.shape[0]
        return self.comm.batch_mean(F.mean_activation(h))

    def backward(self, d_rho_hat):
        return d_rho_hat / self.batch


class Sigmoid:
    """y = sigmoid(z); dz = dy * y * (1 - y). Keeps y, which is all backward needs."""

    def forward(self, z):
        """z: (batch, n). Returns y: (batch, n), in (0, 1)."""
        self._y = F.sigmoid(z)
        return self._y

    def backward(self, dy):
        """dy: (batch, n). Returns dz: (batch, n)."""
        return F.sigmoid_backward(dy, self._y)


class ReLU:
    """y = max(z, 0); dz = dy where y > 0."""

    def forward(self, z):
        """z: (batch, n). Returns y: (batch, n), >= 0."""
        self._y = F.relu(z)
        return self._y

    def backward(self, dy):
        """dy: (batch, n). Returns dz: (batch, n)."""
        return F.relu_backward(dy, self._y)


class Identity:
    """y = z (the linear output layer, or a model's input taken as it is); dz = dy."""

    def forward(self, z):
        return z

    def backward(self, dy):
        return dy


class TopK:
    """Keep the k largest pre-activations of each sample, through `activation` (ReLU or the
    identity), and zero the rest (Makhzani & Frey's k-sparse codes; Gao et al.'s TopK).

        keep = the k largest z[i, :] of each row;   h = activation(z) where keep, else 0
        backward: dz = activation's backward of dh where keep, else 0

    Only the kept units pass a gradient: a unit outside a sample's top k is not in its code.

    A sharded dictionary (comm, minisae/comm.py) holds a sample's units on several ranks: each
    sends its k largest of the row (comm.units_gather), and a unit stays kept when it is at or
    above the k-th largest of all that the ranks sent, its row's cut over every unit (codes
    tied at the cut on different ranks are all kept). Alone, every unit of the k kept is at
    or above it: nothing changes."""

    def __init__(self, k, activation, comm=None):
        self.k, self.activation, self.comm = k, activation, Alone() if comm is None else comm

    def forward(self, z):
        """z: (batch, n). Returns h: (batch, n) with at most k nonzero entries per row."""
        keep, top = F.topk(z, self.k)                  # this rank's k largest of each row
        cut = F.kth_of_rows(self.comm.units_gather(top), self.k)  # of every rank's
        self.keep = keep & (z >= cut)
        return F.keep(self.activation.forward(z), self.keep)

    def backward(self, dh):
        """dh: (batch, n). Returns dz: (batch, n), zero outside each row's kept units."""
        return self.activation.backward(F.keep(dh, self.keep))


class BatchTopK:
    """Keep the k * batch largest ReLU codes of the whole batch, zero the rest (Bussmann et al.
    2024, BatchTopK): a sample may keep more than k units and another fewer, k on average.

        a = relu(z);   cut = the (k * batch)-th largest a of the batch
        h = a where a >= cut and a > 0, else 0
        backward: dz = dh where kept, else 0

    Codes tied at the cut are all kept (continuous codes all but never tie). Data parallel
    (comm, minisae/comm.py), the batch is every rank's rows: each rank sends its own k * batch
    largest codes (the batch's k * batch largest are among them) and every rank finds the
    same cut in what all sent.

    A sample alone cannot be ranked against its batch, so inference (`infer`: encode,
    evaluate) keeps instead the codes above a threshold, h = relu(z) where z > threshold. The
    threshold is estimated in training, as BatchNorm's statistics are: each training forward
    pass moves it toward the smallest positive code the batch kept (their section 3.2, "the
    average minimum positive activation"), a running mean of momentum MOMENTUM; the first
    batch sets it. `threshold` is a 0-d array on the model's device, -1 until trained
    (inference then keeps every positive code)."""

    MOMENTUM = 0.99

    def __init__(self, k, threshold, comm):
        self.k, self.threshold, self.comm = k, threshold, comm

    def forward(self, z):
        """z: (batch, n). Returns h: (batch, n), k * batch nonzero entries at most (ties at
        the cut aside)."""
        a = F.relu(z)
        n = self.k * self.comm.rows                        # k codes a sample, on average
        candidates = self.comm.gather(F.largest(a, n))     # every rank's n largest
        cut = F.kth_largest(candidates, n)
        self.keep = (a >= cut) & (a > 0)
        self.update_threshold(F.keep(candidates, candidates >= cut))
        return F.keep(a, self.keep)

    def backward(self, dh):
        """dh: (batch, n). Returns dz: zero outside the kept (positive) codes."""
        return F.keep(dh, self.keep)

    def infer(self, z):
        """h = relu(z) where z > threshold, else 0: each sample on its own."""
        return F.jumprelu(F.relu(z), self.threshold)

    def update_threshold(self, h):
        """threshold <- MOMENTUM threshold + (1 - MOMENTUM) min(h > 0) (the first time: the
        min itself); unchanged by a batch that kept no positive code. h: the kept codes (any
        shape; 0 where not kept)."""
        xp = namespace(h)
        positive = h > 0
        smallest = xp.min(xp.where(positive, h, xp.full_like(h, xp.inf)))
        t = self.threshold
        moved = xp.where(t < 0, smallest, self.MOMENTUM * t + (1.0 - self.MOMENTUM) * smallest)
        self.threshold[...] = xp.where(xp.any(positive), moved, t)


class JumpReLU:
    """h = z * H(z - theta): z where z > theta_j, else 0, with a threshold theta_j > 0 learned
    per unit, stored as its log (Rajamanoharan et al. 2024, eq. 4).

        backward: dz = dh * H(z - theta)   (the ordinary derivative, away from the jump)
                  d theta_j = sum_i dh[i, j] * (-(theta_j / eps) K((z[i, j] - theta_j) / eps))

    The second is their straight-through pseudo-derivative (eq. 11), K the rectangle kernel
    of bandwidth eps: the step's derivative, 0 almost everywhere, replaced in the backward
    pass by a rectangle around theta. log_theta's gradient is theta times theta's. `log_theta`
    and `d_log_theta` are the model's (views into its flat buffers); backward assigns
    d_log_theta (the L0 penalty's share is added after)."""

    def __init__(self, log_theta, d_log_theta, eps):
        self.log_theta, self.d_log_theta, self.eps = log_theta, d_log_theta, eps

    def forward(self, z):
        """z: (batch, n). Returns h: (batch, n)."""
        self.z, self.theta = z, namespace(z).exp(self.log_theta)
        return F.jumprelu(z, self.theta)

    def backward(self, dh):
        """dh: (batch, n). Returns dz (batch, n); assigns d_log_theta (n,)."""
        d_theta = F.jumprelu_theta_backward(dh, self.z, self.theta, self.eps)
        self.d_log_theta[...] = self.theta * d_theta
        return F.jumprelu_backward(dh, self.z, self.theta)


ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU, "linear": Identity}
"""Activation layers by the name a model's config uses."""


def coding_layer(config, params, grads, threshold, comm):
    """The coding layer a config asks for: its hidden activation, inside TopK for topk;
    BatchTopK (with its inference threshold, a 0-d array, and the run's communicator) or
    JumpReLU (with the model's coding.log_theta) for those mechanisms."""
    if config.sparsity == "batchtopk":
        return BatchTopK(config.k, threshold, comm)
    if config.sparsity == "jumprelu":
        return JumpReLU(params["coding.log_theta"], grads["coding.log_theta"],
                        config.jump_bandwidth)
    activation = ACTIVATIONS[config.hidden_activation]()
    return TopK(config.k, activation, comm) if config.sparsity == "topk" else activation
