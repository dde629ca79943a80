"""A sharded dictionary's TopK cut, in one process: a row's units split into parts (the ranks'),
each part sending its k largest, and the k-th largest of what all sent kept in each part,
keeps what TopK keeps over the whole row, on the reference (layers.TopK's functional pieces)
and on the engine (kernels.topk_ with a units_gather), for random shapes, k and splits.
The processes themselves: tests/test_distributed.py."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minisae import functional as F
from minisae.comm import share_of
from minisae.fast import kernels as K


@st.composite
def rows_and_parts(draw):
    batch, n = draw(st.integers(1, 6)), draw(st.integers(1, 24))
    k = draw(st.integers(1, n))
    ranks = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**32 - 1))
    z = np.random.default_rng(seed).standard_normal((batch, n))  # continuous: no ties
    return z, k, [slice(*share_of(n, r, ranks)) for r in range(ranks)]


@settings(max_examples=60, deadline=None)
@given(rows_and_parts())
def test_the_cut_from_every_part_keeps_the_whole_rows_top_k(case):
    z, k, parts = case
    sent = np.concatenate([F.topk(z[:, p], k)[1] for p in parts], axis=1)
    cut = F.kth_of_rows(sent, k)
    kept = np.concatenate([F.topk_mask(z[:, p], k) & (z[:, p] >= cut) for p in parts], axis=1)
    np.testing.assert_array_equal(kept, F.topk_mask(z, k))


@settings(max_examples=60, deadline=None)
@given(rows_and_parts(), st.booleans())
def test_the_engine_keeps_the_same_codes_and_passes_the_same_gradient(case, relu):
    z, k, parts = case
    whole, rows, kept, _ = K.topk_(z.copy(), 0.0, k, relu)
    dh = np.random.default_rng(1).standard_normal(z.shape)
    dz_whole = K.topk_backward_(dh.copy(), whole, rows, kept, relu)
    sent = [K.padded(np.sort(z[:, p], axis=1)[:, -k:], k) for p in parts]  # each part's k
    gather = lambda mine: np.concatenate(sent, axis=1)  # noqa: E731  (every rank's, in order)
    for p in parts:
        h, rows, kept, mask = K.topk_(z[:, p].copy(), 0.0, k, relu, gather)
        np.testing.assert_array_equal(h, whole[:, p])
        dz = K.topk_backward_(dh[:, p].copy(), h, rows, kept, relu, mask)
        np.testing.assert_array_equal(dz, dz_whole[:, p])


def test_topk_pads_a_short_row_with_minus_infinity():
    z = np.array([[3.0, 1.0], [0.0, 2.0]])
    keep, top = F.topk(z, 3)
    assert keep.all()
    np.testing.assert_array_equal(top, [[3.0, 1.0, -np.inf], [2.0, 0.0, -np.inf]])
    np.testing.assert_array_equal(F.kth_of_rows(top, 3), [[-np.inf]] * 2)
    np.testing.assert_array_equal(K.kth_of_rows(np.array([[5.0, 1.0, 3.0]]), 2), [[3.0]])
