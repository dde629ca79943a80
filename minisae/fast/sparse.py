"""TopK's three sparse products, as compiled loops: each sample keeps k of n_hidden codes, so
three of the step's five matrix products need only k / n_hidden of their work.

    z  = h @ W2        ->  z[b]      = sum_k v[b, k] W2[kept[b, k]]          decode
    dh = dz @ W2.T     ->  dh[b, k]  = dz[b] . W2[kept[b, k]]  (the kept units' only)
    dW2 = h.T @ dz     ->  dW2[j]    = sum over (b, k) with kept[b, k] = j of v[b, k] dz[b]

(v: the kept codes, (batch, k); kept: their units.) At k = 25 of 1000 units that is 40 times
fewer multiplications, and the rows of W2 they read stay in cache; the dense products would
multiply 975 zeros for every 25 codes. The other two products (x @ W1, which the selection
needs whole, and x.T @ dz1) stay BLAS's.

Reproduces h @ W2, dz @ W2.T (at the kept units) and h.T @ dz of fast/step.py's dense TopK
path, and so layers.TopK with the Dense layers around it; the sums run in another order than
BLAS's, so float32 results agree to rounding (tests/test_fast.py). Compiled by numba on first
use (cached on disk), single-threaded, with fast-math's reassociation alone (the dot products
vectorise; the compiled order is fixed, so a run repeats bit for bit on the same machine, as
BLAS's do); where numba is missing
(or MINISAE_NUMBA=0) the engine keeps the dense products, and where there are too few units
per kept code for these loops to beat BLAS (fast/step.py's SPARSE_RATIO) it takes them.
"""
from __future__ import annotations

import numpy as np

from .kernels import numba_loops

def kernels():
    """(decode, gather, scatter): the compiled loops, or None without numba."""
    return numba_loops("topk", _decode, _gather, _scatter, fastmath={"reassoc"})


def _decode(v, kept, W2, out):
    # out[b] = sum_k v[b, k] W2[kept[b, k]]: the decoder's product, from the kept codes only
    batch, k = v.shape
    n = W2.shape[1]
    for b in range(batch):
        for i in range(n):
            out[b, i] = 0.0
        for j in range(k):
            c = v[b, j]
            if c != 0.0:
                w = kept[b, j]
                for i in range(n):
                    out[b, i] += c * W2[w, i]


def _gather(dz, W2, kept, out):
    # out[b, j] = dz[b] . W2[kept[b, j]]: dh = dz @ W2.T at the kept units (the others are
    # not in the code, so their gradient is never used). Each dot product is one running sum
    # that fast-math's reassociation lets the compiler split over a vector register's lanes.
    batch, k = kept.shape
    n = W2.shape[1]
    for b in range(batch):
        for j in range(k):
            w = kept[b, j]
            out[b, j] = 0
            s = out[b, j]  # zero in out's dtype (a bare 0 would make the sum float64)
            for i in range(n):
                s += dz[b, i] * W2[w, i]
            out[b, j] = s


def _scatter(v, kept, dz, dW2):
    # dW2 = h.T @ dz: row j gathers v[b, k] dz[b] over the samples that kept unit j
    batch, k = v.shape
    n = dW2.shape[1]
    for r in range(dW2.shape[0]):
        for i in range(n):
            dW2[r, i] = 0.0
    for b in range(batch):
        for j in range(k):
            c = v[b, j]
            if c != 0.0:
                w = kept[b, j]
                for i in range(n):
                    dW2[w, i] += c * dz[b, i]
