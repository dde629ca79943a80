"""Batch assembly: the one place where an epoch's order is drawn and its batches are gathered.

    batches = ArrayBatches(x_train, batch_size=1000, seed=0, backend=model.backend)
    for step, x in batches.epoch(3):          # epoch 3's batches, in its seeded order
        ...                                   # x: (batch_size, n_inputs) on the device

Epoch e visits the rows in the order of a permutation drawn from a generator seeded by
(seed, e), so a run resumed at epoch e (or at step k of it: `epoch(e, start=k)`) gathers
exactly the batches an uninterrupted run would. Each epoch runs n // batch_size full batches,
as the book's code does (a partial last batch would give a sparsity penalty a noisy rho_hat).

Where the batches are gathered:
- NumPy: rows are copied (np.take) into one reused buffer; the data set is never copied;
- a GPU (CuPy, PyTorch on CUDA): the whole set is moved to the device once when it fits in
  half the device's free memory, and batches are gathered there, with no copy over the bus
  per step; otherwise gathered on the host and moved one batch at a time;
- any other backend: gathered on the host, moved one batch at a time.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module, namespace
from ..comm import share_of  # noqa: F401  (where training takes it from)


def epoch_order(n_rows, seed, epoch):
    """The permutation of range(n_rows) that epoch `epoch` visits."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


class ArrayBatches:
    """The batches of an in-memory NumPy array x (n, n_inputs), already checked and in the
    backend's dtype, epoch after epoch. part: (first, last), the rows of every batch this
    rank of a data-parallel run takes (share_of; None: all of them). The order of the global
    batches does not depend on the number of ranks."""

    def __init__(self, x, batch_size, seed, backend, part=None):
        self.x, self.batch_size, self.seed, self.backend = x, int(batch_size), seed, backend
        self.part = (0, self.batch_size) if part is None else part
        self.steps_per_epoch = len(x) // self.batch_size
        self.on_device = backend.name != "numpy" and backend.name in ("cupy", "torch") and \
            _fits(x.nbytes, backend)
        self._device_x = backend.asarray(x) if self.on_device else None
        self._buffer = None

    def epoch(self, epoch, start=0):
        """Yield (step, batch) for steps start, start + 1, ... of epoch `epoch` (from 1)."""
        order = epoch_order(len(self.x), self.seed, epoch)
        B, (first, last) = self.batch_size, self.part
        if self.on_device:
            order = self.backend.asarray(order, dtype=self.backend.xp.int64)
        for step in range(start, self.steps_per_epoch):
            yield step, self._gather(order[step * B + first:step * B + last])

    def _gather(self, rows):
        if self.on_device:
            x = self._device_x
            if self.backend.name == "cupy":
                if self._buffer is None:
                    self._buffer = array_module(x).empty((len(rows), x.shape[1]), x.dtype)
                return array_module(x).take(x, rows, axis=0, out=self._buffer)
            return namespace(x).take(x, rows, axis=0)
        if self._buffer is None:
            self._buffer = np.empty((len(rows), self.x.shape[1]), dtype=self.x.dtype)
        # indices are in range; mode="clip" lets np.take write into out without a copy
        np.take(self.x, rows, axis=0, out=self._buffer, mode="clip")
        return self._buffer if self.backend.name == "numpy" else self.backend.asarray(self._buffer)


def _fits(n_bytes, backend):
    have = backend.memory()
    return have is not None and n_bytes < have / 2
