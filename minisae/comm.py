"""How the ranks of a data-parallel run talk, and the one-process version that says nothing.

Data parallelism: N processes (ranks) hold the same model; each takes its share of every
global batch, computes the loss and gradient of its own rows, and the ranks combine them, so
that every rank takes the same optimizer step, the step one process would take on the whole
batch. For most of the loss that is a weighted mean: the reconstruction is a mean over the
samples, and the mean over B rows is the mean of the ranks' means weighted by their shares
s_r = b_r / B. The sparse autoencoder's twist is the terms that couple the samples of a
batch: the book's penalty acts on rho_hat, the mean activation over the *whole* batch, and
beta * KL(rho || mean of the ranks' rho_hats) is not the mean of the ranks' penalties. So the
coupled quantities are combined in the forward pass, before the terms read them, and then
every rank's backward pass is exact:

    what                          where                      how
    the batch's rows B            model.loss_and_grads      begin(b_r): a sum over ranks
    rho_hat                       layers.MeanOverBatch      batch_mean: sum_r s_r rho_hat_r
    BatchTopK's cut               layers.BatchTopK          gather each rank's k B largest
    AuxK's residual variance      losses.AuxK               batch_mean, then sum
    the gradient and the loss     model.loss_and_grads      combine: sum_r s_r g_r

Why the weighted mean of the gradients is exact: the global loss is L = sum_r s_r L_r, where
L_r is rank r's loss computed from its own rows *and the global rho_hat* (terms of the
weights and rho_hat alone, like weight decay, are the same on every rank, and the shares sum
to 1). MeanOverBatch's backward gives each of rank r's rows d rho_hat / b_r; weighted by s_r,
that is d rho_hat / B, each sample's share of the global mean.

A communicator has `rank`, `size`, and the methods below. `Alone` is the world of one
process: every method gives back what it was given, so a model trains the same, to the bit,
with or without data parallelism in its code (no `if distributed` anywhere). The real one,
on torch.distributed, is minisae.distributed.TorchComm: the only module that imports it.
"""
from __future__ import annotations


class Alone:
    """The communicator of a run of one process (every model's, unless given another).

    begin(rows)        the step's global batch: `rows` (this rank's) summed over the ranks;
                       sets .rows (the global batch's) and .share (this rank's part of it)
    batch_mean(a)      the global batch's mean of a quantity of which `a` is this rank's mean
                       over its own rows: sum_r share_r a_r
    sum(a)             a summed over the ranks (a 0-d or 1-d array)
    gather(a)          the ranks' 1-d arrays a, end to end (rank 0's first)
    combine(loss, g)   the global batch's gradient, in place in the flat gradient g, and its
                       loss: both the share-weighted sum over the ranks
    broadcast(a)       rank 0's values of a (a contiguous array), written into a on every
                       rank
    agree(ok)          True when every rank says ok: a barrier where a rank that could not
                       start stops them all"""

    rank = 0
    size = 1

    def __init__(self):
        self.rows, self.share = None, 1.0

    def begin(self, rows):
        self.rows, self.share = rows, 1.0

    def batch_mean(self, a):
        return a

    def sum(self, a):
        return a

    def gather(self, a):
        return a

    def combine(self, loss, flat_grads):
        return loss

    def broadcast(self, a):
        return a

    def agree(self, ok):
        return bool(ok)

    def __repr__(self):
        return "Alone()"
