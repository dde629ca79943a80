"""Streamed batches: rows read from a source a window at a time, shuffled within the window,
with memory bounded by `buffer_rows` whatever the size of the data.

    source = minisae.data.ArrayFiles("acts/")        # or ArraySource(x) for an array
    batches = StreamBatches(source, batch_size=1000, seed=0, backend=model.backend,
                            chunk_rows=4096, buffer_rows=65536)
    for step, x in batches.epoch(3, start=k):        # epoch 3 from step k, as ArrayBatches
        ...                                          # x: (batch_size, n_inputs) on the device

fit streams a source in these batches; Stream(source, chunk_rows, buffer_rows), passed to fit
as x_train, sets the two sizes (a source passed alone streams in the defaults).

The same interface as batches.ArrayBatches (steps_per_epoch, epoch(epoch, start=0) yielding
(step, batch); the batch is a reused buffer, valid until the next one), for any source with
the row-source interface of minisae.data.arrays (n_rows, n_features, read, check_rows).

The order of an epoch (a pure function of seed, epoch, n_rows, chunk_rows, buffer_rows):
  1. the rows are cut into chunks of chunk_rows contiguous rows (the last may be shorter);
  2. the chunks are permuted by a generator seeded by (seed, epoch, 1);
  3. the permuted chunks are grouped into windows of k = buffer_rows // chunk_rows chunks
     (the last window may hold fewer); window w is read into the buffer (its chunks in file
     order, each placed at its slot) and its rows are permuted by a generator seeded by
     (seed, epoch, 2, w);
  4. the epoch's order is the windows' permuted rows one after the other, cut into batches of
     batch_size; a batch may take its first rows from one window and the rest from the next;
     the last n_rows % batch_size rows of the order are dropped, as ArrayBatches drops them.
When one window holds every row (buffer_rows >= n_rows), that is a full shuffle.

Resuming: `epoch(e, start=k)` yields exactly the batches of an uninterrupted epoch e from
step k on, bit for bit, and reads only what they need: the window holding row k * batch_size
of the order and those after it (the chunk permutation and the windows' sizes are computed
without reading anything). The position to save mid-epoch is (epoch, step), with the
settings() (chunk_rows, buffer_rows; batch_size and seed), which must be the same to resume.

Memory: the window buffer (buffer_rows rows, in the training dtype), one batch, the window's
permutation (8 bytes a row of the buffer), the source's read buffer (4 MiB for a file that
is converted) and the chunk permutation (8 bytes a chunk, the only part that grows with the
data: 72 KB for 3,000,000 rows of 784 float32 in the default chunks of 334 rows). Rows are checked (finite; in [0, 1] with
unit_range) as each chunk is read, so a NaN late in a file is reported with its file and
row, and normalised (`normalizer.apply`) in the buffer, once per row per epoch.

Shuffle quality: a batch holds rows from up to k chunks (about batch_size / k from each), and
consecutive batches come from one window, not from the whole data. Rows stored in an order
that means something (activations by document, digits by class) need k large: small chunks
in a large buffer (the defaults: chunks of 1 MiB, a buffer of 256 MiB, k = 256). Measured
(784 -> 64, the book's model, Adam 0.01, batch 50, 10 epochs, the 4,000 offline MNIST digits,
5 seeds; the final loss on the training set, mean +- standard deviation):
  rows as stored (shuffled)   full shuffle 0.0490 +- 0.0079, chunks of 256 in a buffer of 4:
                              0.0451 +- 0.0038, 64 in 16: 0.0550 +- 0.0120 (all alike)
  rows sorted by digit        full shuffle 0.0487 +- 0.0038, 256 in 4: 0.162 +- 0.077,
                              64 in 16: 0.074 +- 0.025, 16 in 64: 0.0501 +- 0.0066
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from .. import checks
from ..errors import ConfigError, InputError

__all__ = ["ArraySource", "Stream", "StreamBatches", "is_source", "CHUNK_BYTES", "BUFFER_BYTES"]

CHUNK_BYTES = 1 << 20
"""Default size of a chunk (a contiguous run of rows read at once), in bytes of the rows."""
BUFFER_BYTES = 1 << 28
"""Default size of the shuffle buffer (a window of chunks), in bytes of the rows: 256 MiB."""


def is_source(x):
    """A source of rows (minisae.data.ArrayFiles, a RowRange, ArraySource): n_rows,
    n_features, read(start, stop, out=None), check_rows(x, start, unit_range)."""
    return all(hasattr(x, a) for a in ("n_rows", "n_features", "read", "check_rows"))


class Stream:
    """A source of rows with the sizes fit streams it in: what fit takes as x_train to set
    them (a source passed alone streams in the default sizes).

        history = fit(model, opt, Stream(ArrayFiles("acts/"), chunk_rows=256,
                                         buffer_rows=65_536), epochs=2, batch_size=1000)

    source: minisae.data.ArrayFiles, a RowRange of one, or ArraySource(x) for an array in
    memory. chunk_rows: rows read at a time, one contiguous run (None: CHUNK_BYTES of rows).
    buffer_rows: rows in the shuffle buffer, rounded down to whole chunks (None: BUFFER_BYTES
    of rows). Small chunks in a large buffer shuffle best (the module's doc measures it)."""

    def __init__(self, source, chunk_rows=None, buffer_rows=None):
        if isinstance(source, Stream) or not is_source(source):
            raise ConfigError(f"source must be a source of rows (minisae.data.ArrayFiles, a "
                              f"RowRange, or ArraySource(x) for an array in memory), got "
                              f"{checks.shown(source)}")
        self.source = source
        self.chunk_rows = checks.check_optional(chunk_rows, checks.check_int, "chunk_rows", 1)
        self.buffer_rows = checks.check_optional(buffer_rows, checks.check_int, "buffer_rows",
                                                 self.chunk_rows or 1)

    def __repr__(self):
        source = repr(self.source)
        if type(self.source).__repr__ is object.__repr__ and hasattr(self.source, "describe"):
            source = f"<{self.source.describe()}>"     # a RowRange, an ArraySource
        return f"Stream({source}, chunk_rows={self.chunk_rows}, buffer_rows={self.buffer_rows})"


class ArraySource:
    """An in-memory NumPy array (n, n_features) with the row-source interface of
    minisae.data.arrays.ArrayFiles (n_rows, n_features, dtype, shards, read, check_rows,
    describe, fingerprint), so that StreamBatches and the normaliser treat arrays and files
    alike. `name` is how messages call it ("x_train")."""

    kind = "memory"

    def __init__(self, x, name="x"):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.kind != "f":
            raise InputError(f"{name} must be a 2-D float NumPy array (n, n_features), got "
                             f"{type(x).__name__} {getattr(x, 'shape', '')} "
                             f"{getattr(x, 'dtype', '')}")
        if len(x) == 0 or x.shape[1] == 0:
            raise InputError(f"{name} is empty (shape {x.shape})")
        self.x, self.name = x, name
        self.n_rows, self.n_features = x.shape
        self.dtype = x.dtype
        self.shards = [(name, self.n_rows)]

    def read(self, start, stop, out=None):
        start = checks.check_int(start, "start", 0, self.n_rows, error=InputError)
        stop = checks.check_int(stop, "stop", start, self.n_rows, error=InputError)
        if out is None:
            return self.x[start:stop].copy()
        with np.errstate(over="ignore"):        # a value too large for out: check_rows says
            out[...] = self.x[start:stop]
        return out

    def check_rows(self, x, start, unit_range=False):
        found = checks.first_bad_value(x, unit_range)
        if found is not None:
            r, c, v = found
            what = "NaN or inf" if not math.isfinite(v) else f"{v:.6g}, outside [0, 1]"
            raise InputError(f"{self.name} row {start + r:,} holds {what} in column {c}; "
                             f"clean the data first")

    def locate(self, row):
        return self.name, row

    def describe(self):
        return (f"{self.name}: in memory, {self.n_rows:,} rows x {self.n_features} "
                f"{self.dtype.name}")

    def fingerprint(self):
        h = hashlib.sha256(np.ascontiguousarray(self.x).data)
        return {"kind": "memory", "key": None, "rows": self.n_rows,
                "features": self.n_features, "dtype": self.dtype.name,
                "shards": [{"name": self.name, "rows": self.n_rows, "bytes": self.x.nbytes,
                            "sample": h.hexdigest()}]}

    def close(self):
        pass


class StreamBatches:
    """The batches of a row source, epoch after epoch, through a bounded shuffle buffer
    (see the module's doc for the order). dtype: the training dtype (default the backend's);
    chunk_rows, buffer_rows: default CHUNK_BYTES and BUFFER_BYTES of rows (buffer_rows is
    rounded down to whole chunks, and never more than n_rows); normalizer: applied to the
    rows in the buffer (an object with apply(x, out=x)); unit_range: refuse values outside
    [0, 1] as they are read (a sigmoid output needs them in range). part: (first, last), the
    rows of every batch this rank of a data-parallel run takes (None: all). Every rank reads
    the whole stream, so the global batches are the same whatever the number of ranks (and
    a run resumes on any number); reading is not shared out."""

    def __init__(self, source, batch_size, seed, backend, dtype=None, chunk_rows=None,
                 buffer_rows=None, normalizer=None, unit_range=False, part=None):
        self.source, self.backend, self.normalizer = source, backend, normalizer
        self.unit_range = checks.check_bool(unit_range, "unit_range")
        self.seed = checks.check_int(seed, "seed", 0, 2**63 - 1)
        n, w = int(source.n_rows), int(source.n_features)
        self.batch_size = checks.check_int(batch_size, "batch_size", 1)
        self.dtype = np.dtype(backend.dtype_name if dtype is None else dtype)
        if self.dtype.name not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype}")
        row_bytes = w * self.dtype.itemsize
        if chunk_rows is None:
            chunk_rows = max(1, CHUNK_BYTES // row_bytes)
        if buffer_rows is None:
            buffer_rows = max(chunk_rows, BUFFER_BYTES // row_bytes)
        self.chunk_rows = checks.check_int(chunk_rows, "chunk_rows", 1)
        buffer_rows = checks.check_int(buffer_rows, "buffer_rows", self.chunk_rows)
        self.chunk_rows = min(self.chunk_rows, n)
        self.window_chunks = max(1, min(buffer_rows, n) // self.chunk_rows)
        self.buffer_rows = min(self.window_chunks * self.chunk_rows, n)
        self.n_rows, self.n_features = n, w
        self.n_chunks = -(-n // self.chunk_rows)
        self.steps_per_epoch = n // self.batch_size
        self.part = (0, self.batch_size) if part is None else part
        self.rows_read = 0          # rows read from the source so far (tests, benchmarks)
        self._buffer = self._batch = None

    def settings(self):
        """What a resumed run must use again to draw the same order (for the checkpoint)."""
        return {"batch_size": self.batch_size, "seed": self.seed,
                "chunk_rows": self.chunk_rows, "buffer_rows": self.buffer_rows}

    def memory(self):
        """Bytes of the buffers this object holds (the source's own read buffer aside)."""
        row = self.n_features * self.dtype.itemsize
        return self.buffer_rows * (row + 8) + self.batch_size * row + self.n_chunks * 8

    # ------------------------------------------------------------------------- the order

    def _chunks(self, epoch):
        """The epoch's chunk permutation, and where each window starts in the order."""
        chunks = np.random.default_rng([self.seed, epoch, 1]).permutation(self.n_chunks)
        sizes = np.minimum(self.chunk_rows, self.n_rows - chunks * self.chunk_rows)
        k = self.window_chunks
        window_rows = np.add.reduceat(sizes, np.arange(0, len(sizes), k))
        starts = np.concatenate([[0], np.cumsum(window_rows)])
        return chunks, sizes, starts

    def _window_order(self, epoch, w, m):
        return np.random.default_rng([self.seed, epoch, 2, w]).permutation(m)

    def order(self, epoch):
        """The epoch's whole order as row numbers of the source (n_rows int64s; for tests and
        inspection: training never builds it)."""
        chunks, sizes, starts = self._chunks(epoch)
        k, out = self.window_chunks, []
        for w in range(len(starts) - 1):
            rows = np.concatenate([np.arange(c * self.chunk_rows, c * self.chunk_rows + s)
                                   for c, s in zip(chunks[w * k:(w + 1) * k],
                                                   sizes[w * k:(w + 1) * k])])
            out.append(rows[self._window_order(epoch, w, len(rows))])
        return np.concatenate(out)

    # ------------------------------------------------------------------------- batches

    def epoch(self, epoch, start=0):
        """Yield (step, batch) for steps start, start + 1, ... of epoch `epoch` (from 1)."""
        epoch = checks.check_int(epoch, "epoch", 1)
        start = checks.check_int(start, "start", 0)
        B, end = self.batch_size, self.steps_per_epoch * self.batch_size
        pos = start * B
        if pos >= end:
            return
        if self._buffer is None:
            self._buffer = np.empty((self.buffer_rows, self.n_features), self.dtype)
            self._batch = np.empty((B, self.n_features), self.dtype)
        buf, batch, k = self._buffer, self._batch, self.window_chunks
        chunks, sizes, starts = self._chunks(epoch)
        w = int(np.searchsorted(starts, pos, side="right")) - 1
        fill = 0
        while pos < end:
            m = self._load(chunks[w * k:(w + 1) * k], sizes[w * k:(w + 1) * k])
            perm = self._window_order(epoch, w, m)
            i = pos - int(starts[w])
            while i < m and pos < end:
                take = min(B - fill, m - i, end - pos)
                # indices are in range; mode="clip" lets np.take write into out without a copy
                np.take(buf, perm[i:i + take], axis=0, out=batch[fill:fill + take],
                        mode="clip")
                fill, i, pos = fill + take, i + take, pos + take
                if fill == B:
                    yield pos // B - 1, self._out(batch[self.part[0]:self.part[1]])
                    fill = 0
            w += 1

    def _load(self, chunks, sizes):
        """Read a window's chunks into the buffer (in file order, each at its slot); check
        and normalise them there. Returns the window's number of rows."""
        slots = np.concatenate([[0], np.cumsum(sizes)])
        for j in np.argsort(chunks, kind="stable"):
            a = int(chunks[j]) * self.chunk_rows
            b = a + int(sizes[j])
            rows = self._buffer[int(slots[j]):int(slots[j + 1])]
            self.source.read(a, b, out=rows)
            self.source.check_rows(rows, a, self.unit_range)
            if self.normalizer is not None:
                self.normalizer.apply(rows, out=rows)
            self.rows_read += b - a
        return int(slots[-1])

    def _out(self, batch):
        return batch if self.backend.name == "numpy" else self.backend.asarray(batch)
