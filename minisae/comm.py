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

The dictionary sharded (minisae.distributed.Shards, "units split, rows whole"): the other way
to share the work, for a dictionary too large for one device. Every rank takes the whole
batch and holds n_hidden / N of the units: its columns of W1 and b1, its rows of W2 (b2 is
every rank's). A unit's code needs no other rank, nor do the gradients of its weights; what
crosses ranks is what mixes the units:

    what                          where                      how
    the decoder's output          layers.UnitsDense          units_sum of the ranks' h_r @ W2_r
    TopK's cut, per sample        layers.TopK                units_gather each rank's k largest
    BatchTopK's cut               layers.BatchTopK           gather each rank's k B largest
    AuxK's cut and e_hat          losses.AuxK                as TopK's, and units_sum
    x - b2's gradient for b2      layers.SubtractBias        units_sum of W1_r's share
    a penalty summed over units   losses.Objective           units_sum

Then every rank's gradient is already the whole batch's, for its own units (and the same
b2 gradient on every rank): nothing is combined after the backward pass.

A communicator has `rank`, `size`, `splits` (None alone, "rows" for data parallelism, "units"
for a sharded dictionary) and the methods below. `Alone` is the world of one
process: every method gives back what it was given, so a model trains the same, to the bit,
with or without data parallelism in its code (no `if distributed` anywhere). The real one,
on torch.distributed, is minisae.distributed.TorchComm: the only module that imports it.
"""
from __future__ import annotations


def share_of(n, rank, size):
    """(first, last): the part [first, last) of n rows (or units) that rank `rank` of `size`
    takes, in order; parts differ by one at most (10 over 3 ranks: 3, 3, 4)."""
    return n * rank // size, n * (rank + 1) // size


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
                       start stops them all
    part(n)            (first, last): the rows of n (a batch, a data set) this rank takes
    units(n)           (first, last): the units of n this rank holds
    units_sum(a)       a summed over the ranks that hold the other units (a partial sum over
                       units: the decoder's output, a penalty)
    units_gather(a)    (rows, m_r) arrays of this rank's units, every rank's side by side
                       along the last axis (rank 0's first)
    units_whole(a)     a per-unit 1-d array of this rank's units, for every unit of the
                       dictionary (a sharded one's ranks' parts end to end)
    parts(a, to=None)  the ranks' 1-d arrays, as a list (their lengths may differ); to=0:
                       on rank 0 alone, None on the others"""

    rank = 0
    size = 1
    splits = None

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

    def part(self, n):
        return 0, n

    def units(self, n):
        return 0, n

    def units_sum(self, a):
        return a

    def units_gather(self, a):
        return a

    def units_whole(self, a):
        return a

    def parts(self, a, to=None):
        return [a]

    def __repr__(self):
        return "Alone()"
