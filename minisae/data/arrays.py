"""Your own data: rows from a .npy file, one array of an .npz, or a folder of .npy shards,
read a block at a time, so a data set larger than memory trains with bounded memory.

    src = ArrayFiles("acts/")                 # a folder of .npy shards of one width
    src = ArrayFiles("x.npz", key="acts")     # one array of an (uncompressed) .npz
    src = ArrayFiles("x.npy")
    src.n_rows, src.n_features, src.dtype     # 3000000, 784, dtype('float32')
    x = src.read(1000, 2000)                  # rows [1000, 2000) of the whole, a new array
    src.read(0, 512, out=buf)                 # into an array of yours (any float dtype: cast)
    src.check_rows(buf, 0)                    # NaN/inf -> InputError naming the file and row
    src.describe()                            # one line: where, rows x width, dtype, size
    src.fingerprint(), src.changes(saved)     # what a resumed run compares

The interface of a row source. training.stream.StreamBatches reads any object that has it,
and training.stream.ArraySource gives an in-memory array the same one:
  n_rows, n_features      ints: rows are samples, the width is the model's n_inputs
  dtype                   the rows' NumPy float dtype as read (native byte order)
  shards                  [(path, rows)], in the order the rows are numbered
  read(start, stop, out=None) -> rows [start, stop) of the concatenation of the shards,
                          into `out` when given ((stop - start, n_features), C-contiguous,
                          any float dtype: the rows are cast into it), else a new array
  check_rows(x, start, unit_range=False)   x holds rows start, start + 1, ... as read:
                          an InputError naming the file, the row in it and the row of the
                          whole if one holds NaN or inf (or, with unit_range, a value outside
                          [0, 1]); two reductions (min, max) when the rows are good
  describe() -> str       e.g. "acts/ (12 .npy shards): 3,000,000 rows x 784 float32, 9.4 GB"
  fingerprint() -> dict   JSON-able; changes(saved) -> [what differs] ([] for the same data)
  close(); a context manager; the files stay open between reads (at most 8 at a time)

Layouts. A folder holds the .npy files directly in it, and nothing else but names starting
with "." (skipped): a file that is not a .npy, or a folder inside it, is refused with its name
(a labels file, a config, another split: keep them beside the folder, not in it), so nothing
is taken, or left out, without a word. The shards are sorted by name with runs of digits
compared as numbers ("2.npy" before "10.npy"; zero-padded names sort the same either way):
the layout activation caches use. A
.npy is used whole; an .npz gives the array `key` ("acts" or "acts.npy") or, without a key,
its only one. Rows are samples: every array is 2-D (n, width), float16, float32 or float64,
all shards of one width and one dtype (shards may hold 0 rows). Fortran-order arrays and
either byte order are read (a Fortran array column by column: slower, but the same rows).

What is refused before any row is read (every error names the file): a path that is not
there, or that the OS will not let minisae look at or read (its permissions, or a folder's
above it: a DatasetError naming it, never a raw PermissionError), what is not a .npy or
.npz (saying what it looks like: text, pickle, gzip, safetensors, a PyTorch zip), a header
longer than np.load reads (10,000 bytes; its length is checked before it is read), a header
NumPy cannot parse, a declared shape whose data is larger than the file (truncated, or an
absurd size: compared with the file's size, never allocated) or smaller (trailing bytes),
integer, bool, complex, object, string, date and structured dtypes (each with how to
convert), 1-D, 0-D and >2-D arrays (with the reshape to use), a shard of another width or
dtype, an empty folder, an .npz without the key (listing its keys), an .npz member that is
compressed or encrypted, and a zip whose directory is larger than any .npz's. The .npy headers
(of a file, of an .npz member) are read by files/npyheader.py, the package's one reader of them.

How rows are read: explicit reads (os.preadv, else seek + readinto) at computed offsets,
straight into the caller's buffer when the dtype and byte order match, else through one
reused scratch buffer of 4 MiB that is cast into it. No memory maps: pages read through a
map count in the process's resident set until the kernel takes them back, so streaming a
9 GB file through a map shows a 9 GB RSS (and a job limit on RSS can kill it) even though
the memory is only page cache; explicit reads into reused buffers keep the resident set at
the buffers' size whatever the page cache holds. The cost is one copy from the page cache
per row read, small beside a training step.

Compressed .npz members (np.savez_compressed) are refused: a shuffled stream reads chunks
in random order, and a deflate stream has no random access (each chunk would decompress the
member from its start). The message says to save with np.savez or to extract the member
(`unzip x.npz acts.npy`), which gives a .npy read like any other.

Late damage: a file that changes after it was checked (size or modification time) is
refused when it is next opened; one that shrinks while open ends a read with a DatasetError.

The fingerprint (what a resume compares): the kind, the .npz key, rows, width, dtype, and
for each shard its name (relative to the folder), rows, byte size and a SHA-256 of four
64 KiB blocks of its data (at the start, a third, two thirds, the end). Not modification
times, nor the absolute path: a copy of the data on another machine, or a moved folder, is
the same data. Not a hash of all the data (a minute per 10 GB at every resume); the sampled
blocks catch a file regenerated in place with other contents.
"""
from __future__ import annotations

import bisect
import hashlib
import math
import os
import re
import stat
import struct
import zipfile

import numpy as np

from .. import checks
from ..errors import ConfigError, DatasetError, InputError, MinisaeError
from ..files.npyheader import read_npy_header

__all__ = ["ArrayFiles", "FLOAT_DTYPES"]

FLOAT_DTYPES = ("float16", "float32", "float64")
"""The dtypes of the files read."""

_SCRATCH = 1 << 22          # bytes of the reused buffer of a read that converts
_OPEN_FILES = 8             # files kept open between reads
_MAX_MEMBERS = 1 << 16      # an .npz with more members is refused before zipfile reads it
_MAX_DIRECTORY = 1 << 24    # nor with a larger zip directory (bytes)
_SAMPLE = 1 << 16           # bytes per sampled block of a shard's fingerprint
_SHOWN_KEYS = 20            # keys listed in a message about a missing one


class _Shard:
    """One array on disk: where its data start and how they are laid out."""

    __slots__ = ("path", "name", "rows", "width", "file_dtype", "fortran", "offset", "size",
                 "mtime_ns")

    def __init__(self, path, name, rows, width, file_dtype, fortran, offset, size, mtime_ns):
        self.path, self.name, self.rows, self.width = path, name, rows, width
        self.file_dtype, self.fortran, self.offset = file_dtype, fortran, offset
        self.size, self.mtime_ns = size, mtime_ns

    @property
    def nbytes(self):
        return self.rows * self.width * self.file_dtype.itemsize


class ArrayFiles:
    """Rows from a .npy, an .npz's array, or a folder of .npy shards (see the module's doc).
    Everything is checked here, from the files' headers, before any row is read."""

    def __init__(self, path, key=None):
        self.path = checks.check_path(path, "path", error=InputError)
        if key is not None and not isinstance(key, str):
            raise ConfigError(f"key must be the name of an array in the .npz (a str), got "
                              f"{type(key).__name__}")
        self.key = None if key is None else key[:-4] if key.endswith(".npy") else key
        self._open, self._scratch = {}, None
        if _kind(self.path) == "folder":
            if key is not None:
                raise ConfigError(f"{self.path} is a folder of .npy shards; key names an array "
                                  f"in an .npz file, leave it out")
            self.kind, shards = "folder", _folder_shards(self.path)
        else:
            self.kind, shards = _file_shards(self.path, self.key)
        first = shards[0]
        for s in shards[1:]:
            if s.width != first.width:
                raise InputError(f"{s.path}: rows of {s.width} features, but {first.name} has "
                                 f"{first.width}; every shard must have the same width")
            if s.file_dtype.name != first.file_dtype.name:
                raise InputError(f"{s.path}: holds {s.file_dtype.name}, but {first.name} holds "
                                 f"{first.file_dtype.name}; save every shard in one dtype")
        self._shards = shards
        self.n_rows = sum(s.rows for s in shards)
        self.n_features = first.width
        self.dtype = first.file_dtype.newbyteorder("=")
        if self.n_rows == 0:
            raise InputError(f"{self.path}: holds 0 rows; there is nothing to train on")
        self._starts = np.cumsum([0] + [s.rows for s in shards]).tolist()
        self.shards = [(s.path, s.rows) for s in shards]

    # ------------------------------------------------------------------------- reading

    def read(self, start, stop, out=None):
        """Rows [start, stop) of the concatenation of the shards, as an array (n, n_features):
        `out` when given (C-contiguous, a float dtype; cast into), else a new array in
        self.dtype."""
        start, stop = _row_range(start, stop, self.n_rows)
        n, w = stop - start, self.n_features
        if out is None:
            out = np.empty((n, w), self.dtype)
        elif not (isinstance(out, np.ndarray) and out.shape == (n, w) and out.dtype.kind == "f"
                  and out.flags.c_contiguous and out.flags.writeable):
            raise InputError(f"out must be a writable C-contiguous float NumPy array of shape "
                             f"{(n, w)}, got {type(out).__name__} "
                             f"{getattr(out, 'shape', '')} {getattr(out, 'dtype', '')}")
        i, pos = bisect.bisect_right(self._starts, start) - 1, start
        while pos < stop:
            s, first = self._shards[i], self._starts[i]
            a, b = pos - first, min(stop - first, s.rows)
            if b > a:
                self._read_shard(s, a, b, out[pos - start:pos - start + b - a])
            pos, i = first + max(b, a), i + 1
        return out

    def _read_shard(self, s, a, b, out):
        """Rows [a, b) of shard s into out."""
        w, item = s.width, s.file_dtype.itemsize
        row_bytes = w * item
        if not s.fortran and s.file_dtype == out.dtype:     # straight into the caller's memory
            self._fill(s, s.offset + a * row_bytes, out.reshape(-1).view(np.uint8))
            return
        step = max(1, _SCRATCH // row_bytes)
        with np.errstate(over="ignore"):        # a value too large for out: check_rows says
            self._read_converted(s, a, b, out, step)

    def _read_converted(self, s, a, b, out, step):
        w, item = s.width, s.file_dtype.itemsize
        row_bytes = w * item
        for r in range(a, b, step):
            m = min(b, r + step) - r
            raw = self._scratch_bytes(m * row_bytes)
            if not s.fortran:
                self._fill(s, s.offset + r * row_bytes, raw)
                out[r - a:r - a + m] = raw.view(s.file_dtype).reshape(m, w)
            else:                       # column j holds rows 0..rows-1 of feature j
                cols = raw.view(s.file_dtype).reshape(w, m)
                for j in range(w):
                    self._fill(s, s.offset + (j * s.rows + r) * item, cols[j].view(np.uint8))
                out[r - a:r - a + m] = cols.T

    def _scratch_bytes(self, n):
        if self._scratch is None or self._scratch.size < n:
            self._scratch = np.empty(max(n, min(_SCRATCH, self.n_features * 8 * 1024)), np.uint8)
        return self._scratch[:n]

    def _fill(self, s, offset, buf):
        """Fill buf (a uint8 array) with the bytes of s's file from offset."""
        f = self._file(s)
        view, got = memoryview(buf), 0
        while got < len(view):
            try:
                if hasattr(os, "preadv"):
                    n = os.preadv(f.fileno(), [view[got:]], offset + got)
                else:
                    f.seek(offset + got)
                    n = f.readinto(view[got:])
            except OSError as e:
                raise DatasetError(f"{s.path}: cannot be read ({e.strerror or e})") from None
            if not n:
                raise DatasetError(f"{s.path}: ends before the {s.rows:,} rows its header "
                                   f"declares; it was truncated after it was checked")
            got += n

    def _file(self, s):
        """s's file, open (kept among the last few used), checked to be the file we checked."""
        f = self._open.pop(s.path, None)
        if f is None:
            try:
                f = open(s.path, "rb", buffering=0)
            except OSError as e:
                raise DatasetError(f"{s.path}: cannot be opened ({e.strerror or e}); check its "
                                   f"permissions") from None
            st = os.fstat(f.fileno())
            if (st.st_size, st.st_mtime_ns) != (s.size, s.mtime_ns):
                f.close()
                raise DatasetError(f"{s.path}: changed after it was checked (now {st.st_size:,} "
                                   f"bytes); start again on the new data")
            while len(self._open) >= _OPEN_FILES:
                self._open.pop(next(iter(self._open))).close()
        self._open[s.path] = f          # the most recently used last
        return f

    def close(self):
        """Close the open files (reading again reopens them)."""
        while self._open:
            self._open.popitem()[1].close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------------- checks

    def locate(self, row):
        """(shard path, row within that shard) of row `row` of the whole."""
        row = checks.check_int(row, "row", 0, self.n_rows - 1, error=InputError)
        i = bisect.bisect_right(self._starts, row) - 1
        while self._shards[i].rows == 0 or row - self._starts[i] >= self._shards[i].rows:
            i += 1                      # past shards of 0 rows
        return self._shards[i].path, row - self._starts[i]

    def check_rows(self, x, start, unit_range=False):
        """Refuse rows x (rows start, start + 1, ... of the whole, as read, maybe cast) holding
        NaN or inf, or with unit_range a value outside [0, 1]: an InputError naming the file,
        the row in it and the row of the whole."""
        x, start = _checked_rows(x, start, self.n_features, self.n_rows)
        found = checks.first_bad_value(x, checks.check_bool(unit_range, "unit_range"))
        if found is None:
            return
        r, col, value = found
        path, local = self.locate(start + r)
        where = f"{path}: row {local:,}" + (f" (row {start + r:,} of the whole)"
                                              if len(self._shards) > 1 else "")
        if not math.isfinite(value):
            cast = (f" (or a value too large for {x.dtype}, which it becomes when cast)"
                    if x.dtype.itemsize < self.dtype.itemsize else "")
            raise InputError(f"{where} holds {value} in column {col}{cast}; clean or impute "
                             f"the data first")
        raise InputError(f"{where} holds {value:.6g} in column {col}, outside [0, 1], but a "
                         f"sigmoid output (and cross-entropy) can only reconstruct values in "
                         f"[0, 1]; scale the data into [0, 1], or use output_activation="
                         f"'linear' with reconstruction_loss='mse'")

    # ------------------------------------------------------------------------- identity

    def describe(self):
        """One line: where the rows come from, how many, how wide, the dtype, the size."""
        nbytes = sum(s.nbytes for s in self._shards)
        if self.kind == "folder":
            where = f"{self.path.rstrip(os.sep)}{os.sep} ({len(self._shards)} .npy shard" \
                    f"{'s' if len(self._shards) != 1 else ''})"
        else:
            where = self._shards[0].name
        return (f"{where}: {self.n_rows:,} rows x {self.n_features} {self.dtype.name}, "
                f"{_size(nbytes)}")

    def __repr__(self):
        return f"ArrayFiles({self.describe()})"

    def fingerprint(self):
        """What a resumed run compares with the saved one (JSON-able; see the module's doc)."""
        return {"kind": self.kind, "key": self.key, "rows": self.n_rows,
                "features": self.n_features, "dtype": self.dtype.name,
                "shards": [{"name": os.path.basename(s.path), "rows": s.rows,
                            "bytes": s.size, "sample": self._sample(s)} for s in self._shards]}

    def _sample(self, s):
        h = hashlib.sha256()
        h.update(f"{s.rows} {s.width} {s.file_dtype.str} {s.fortran}".encode())
        n = min(_SAMPLE, s.nbytes)
        if n:
            buf = np.empty(n, np.uint8)
            for at in sorted({0, s.nbytes // 3, 2 * s.nbytes // 3, s.nbytes - n}):
                self._fill(s, s.offset + min(at, s.nbytes - n), buf)
                h.update(buf.data)
        return h.hexdigest()

    def changes(self, saved):
        """What differs between a saved fingerprint and this data ([] when nothing does)."""
        now, out = self.fingerprint(), []
        if not isinstance(saved, dict):
            return ["the saved fingerprint is not a dict"]
        for k in ("kind", "key", "rows", "features", "dtype"):
            if saved.get(k) != now[k]:
                out.append(f"{k}: {saved.get(k)!r} then, {now[k]!r} now")
        old = saved.get("shards")
        if not isinstance(old, list):
            return out + ["the saved fingerprint has no shard list"]
        if [getattr(o, "get", lambda k: None)("name") for o in old] != \
                [s["name"] for s in now["shards"]]:
            out.append(f"shards: {len(old)} then, {len(now['shards'])} now, or other names")
            return out
        for o, s in zip(old, now["shards"]):
            for k in ("rows", "bytes", "sample"):
                if o.get(k) != s[k]:
                    out.append(f"{s['name']}: {'contents' if k == 'sample' else k} differ"
                               + ("" if k == "sample" else f" ({o.get(k)!r} then, {s[k]!r} now)"))
        return out


# ----------------------------------------------------------------------------- opening

def _kind(path):
    """"folder" or "file" for path; a DatasetError naming it when nothing is there, when the
    OS will not say (a folder above it that cannot be searched), or for a FIFO, a device or
    a socket (opening one could block for ever)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise DatasetError(f"{path}: no such file or folder") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot be looked at ({e.strerror or e}); check its "
                           f"permissions and those of the folders above it") from None
    if stat.S_ISDIR(mode):
        return "folder"
    if not stat.S_ISREG(mode):
        raise DatasetError(f"{path}: is not a regular file or a folder (a FIFO, a device or a "
                           f"socket); give a .npy, an .npz or a folder of .npy shards")
    return "file"


_SHOWN_NAMES = 8            # names listed in a message about files that are not shards


def _folder_shards(folder):
    """The shards of a folder: its .npy files (names starting with "." skipped); anything
    else in it is refused, named."""
    try:
        entries = [(e.name, e.is_file()) for e in os.scandir(folder)
                   if not e.name.startswith(".")]
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list the folder ({e.strerror or e}); check its "
                           f"permissions") from None
    npy = sorted((n for n, is_file in entries if is_file and n.endswith(".npy")), key=_natural)
    others = sorted((n + ("" if is_file else os.sep) for n, is_file in entries
                     if not (is_file and n.endswith(".npy"))), key=_natural)
    if not npy:
        kinds = sorted({os.path.splitext(n)[1] or n for n in others})
        found = f"it holds {', '.join(kinds[:_SHOWN_NAMES])} files" if kinds else "it is empty"
        hint = " (save each shard with np.save; an .npz can be given as a file)" \
            if kinds else ""
        raise InputError(f"{folder}: no .npy shards in this folder; {found}{hint}")
    if others:
        shown = ", ".join(others[:_SHOWN_NAMES]) + (f", ... ({len(others):,} in all)"
                                                     if len(others) > _SHOWN_NAMES else "")
        raise InputError(f"{folder}: holds {shown} beside its {len(npy):,} .npy shard"
                         f"{'s' if len(npy) != 1 else ''}; a folder of shards holds .npy files "
                         f"only (names starting with '.' are skipped): move the others out, or "
                         f"give a .npy file itself")
    out = []
    for name in npy:
        path = os.path.join(folder, name)
        kind, shards = _file_shards(path, None, folder_member=True)
        out += shards
    return out


def _natural(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)], name


def _file_shards(path, key, folder_member=False):
    """("npy" or "npz", [one _Shard]) for a file, checked from its headers."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(16)
            f.seek(0)
            if head.startswith(np.lib.format.MAGIC_PREFIX):
                if key is not None:
                    raise ConfigError(f"{path} is a .npy file (one array); key names an array "
                                      f"in an .npz file, leave it out")
                shape, fortran, dtype, at = read_npy_header(f, st.st_size, _refusal(path))
                _check_array(path, shape, dtype)
                _check_size(path, shape, dtype, st.st_size - at)
                return "npy", [_Shard(path, path, shape[0], shape[1], dtype, fortran, at,
                                      st.st_size, st.st_mtime_ns)]
            if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") and not folder_member:
                return "npz", [_npz_member(f, path, key, st)]
            raise InputError(f"{path} is not a NumPy array file (.npy or .npz): "
                             f"{_looks_like(head, folder_member)}")
    except MinisaeError:
        raise
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e}); check its "
                           f"permissions") from None


def _looks_like(head, folder_member):
    if not head:
        return "it is empty"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "it is a zip (an .npz?); a folder holds .npy shards, give an .npz as a file"
    if head[:2] == b"\x1f\x8b":
        return "it is gzip-compressed; decompress it first (gunzip)"
    if head[:1] == b"\x80":
        return "it looks like a pickle, which minisae never loads; save the array with np.save"
    if head[:2] == b"\x00\x00" and head[2:3] in b"\x08\x09\x0b\x0c\x0d\x0e":
        return "it looks like an IDX file (MNIST's format); read it with minisae.data.read_idx"
    if len(head) >= 9 and int.from_bytes(head[:8], "little") < 1 << 30 and head[8:9] == b"{":
        return ("it looks like a safetensors file; convert it: np.save(out, "
                "safetensors.numpy.load_file(path)[name])")
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return "it looks like text (CSV?); load it with np.loadtxt and save it with np.save"
    return f"it starts with the bytes {head.hex()}; save the array with np.save"


def _refusal(where):
    """How read_npy_header refuses the .npy `where` names: a DatasetError naming it."""
    return lambda problem: DatasetError(f"{where}: {problem}")


_CONVERT = ("convert it once, e.g. np.save(out, np.load(path, mmap_mode='r').astype(np.float32)) "
            "(for a file larger than memory, copy it in blocks of rows into "
            "np.lib.format.open_memmap(out, 'w+', np.float32, shape))")


def _check_array(where, shape, dtype):
    """Refuse what is not a 2-D array of float16/32/64 rows, saying how to make it one."""
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind == "V":
        fields = f" (fields {', '.join(dtype.names[:6])})" if dtype.names else ""
        raise InputError(f"{where}: holds a structured dtype{fields}; save the numbers as one "
                         f"2-D float array (numpy.lib.recfunctions.structured_to_unstructured "
                         f"gives one)")
    kinds = {"b": "booleans", "i": "integers", "u": "unsigned integers",
             "c": "complex numbers", "O": "Python objects", "U": "strings", "S": "bytes",
             "M": "dates", "m": "time spans"}
    if dtype.kind != "f" or dtype.name not in FLOAT_DTYPES:
        what = kinds.get(dtype.kind, f"dtype {dtype}")
        if dtype.kind == "f":
            hint = "convert it to float64 or float32; " + _CONVERT
        elif dtype.kind == "c":
            hint = "take the real part, or stack the real and imaginary parts as features"
        elif dtype.kind == "O":
            hint = ("minisae never unpickles; save a numeric array "
                    "(np.save(out, x.astype(np.float32)))")
        elif dtype.kind in "biu":
            hint = _CONVERT
        else:
            hint = "save the rows as a 2-D float array"
        raise InputError(f"{where}: holds {what} ({dtype}), but minisae trains on float16, "
                         f"float32 or float64 rows; {hint}")
    if len(shape) != 2:
        hint = {0: "a single number, not rows of samples",
                1: "one sample per value? reshape to (n, 1); one sample? to (1, n)"}.get(
            len(shape), "images (n, h, w)? flatten to x.reshape(len(x), -1); activations "
                        "(batch, seq, width)? x.reshape(-1, x.shape[-1])")
        raise InputError(f"{where}: holds a {len(shape)}-D array of shape {shape}, but rows "
                         f"of samples are a 2-D (n, width) array; {hint}")
    if shape[1] == 0:
        raise InputError(f"{where}: rows of 0 features (shape {shape}); nothing to learn")


def _check_size(where, shape, dtype, have):
    """The declared data must be exactly the bytes the file holds after its header; the
    declared size is computed with Python ints (no overflow) and never allocated."""
    need = math.prod(shape) * dtype.itemsize
    if need > have:
        raise DatasetError(f"{where}: the header declares {shape} {dtype.name} "
                           f"({need:,} bytes of data) but only {have:,} bytes follow; the "
                           f"file is truncated (or still being written), or its header lies")
    if need < have:
        raise DatasetError(f"{where}: {have - need:,} unexpected bytes after the {shape} "
                           f"{dtype.name} array its header declares; the file is damaged")


def _npz_member(f, path, key, st):
    """The _Shard of one stored (uncompressed) .npy member of the .npz open at f."""
    end = getattr(zipfile, "_EndRecData", lambda f: None)(f)     # zipfile's own reader
    if end and (end[4] > _MAX_MEMBERS or end[5] > _MAX_DIRECTORY):
        raise DatasetError(f"{path}: its zip directory declares {end[4]:,} members in "
                           f"{end[5]:,} bytes, more than an .npz minisae reads has; the file "
                           f"is damaged or hostile")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, struct.error,
            NotImplementedError) as e:
        raise DatasetError(f"{path}: is not a readable .npz (zip) ({e}); the file is damaged "
                           f"or truncated") from None
    arrays = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
    listed = ", ".join(map(repr, list(arrays)[:_SHOWN_KEYS])) + \
        (f", ... ({len(arrays):,} in all)" if len(arrays) > _SHOWN_KEYS else "")
    if not arrays:
        pt = " (a PyTorch file? save the tensor with np.save(out, t.numpy()))" \
            if any(i.filename.endswith((".pkl", "/data.pkl")) for i in infos) else ""
        raise InputError(f"{path}: a zip without .npy arrays{pt}, not an .npz of arrays")
    if key is None:
        if len(arrays) > 1:
            raise ConfigError(f"{path} holds {len(arrays):,} arrays ({listed}); say which one "
                              f"to train on (key)")
        key = next(iter(arrays))
    if key not in arrays:
        raise ConfigError(f"{path} has no array {key!r}; it holds {listed}")
    info, name = arrays[key], f"{path}[{key!r}]"
    if info.flag_bits & 0x1:
        raise InputError(f"{name}: the member is encrypted; decrypt the archive first")
    if info.compress_type != zipfile.ZIP_STORED:
        raise InputError(
            f"{name}: the member is compressed (np.savez_compressed), and a compressed member "
            f"cannot be read in random order without decompressing it again for every chunk; "
            f"save with np.savez (uncompressed), or extract it to a .npy "
            f"(`unzip {os.path.basename(path)} {info.filename}`) and train on that")
    if info.file_size != info.compress_size:
        raise DatasetError(f"{name}: a stored member whose sizes differ; the file is damaged")
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise DatasetError(f"{name}: no zip entry at the offset the directory gives; the file "
                           f"is damaged or truncated")
    n_name, n_extra = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + n_name + n_extra
    if start + info.file_size > st.st_size:
        raise DatasetError(f"{name}: the member ({info.file_size:,} bytes) runs past the end of "
                           f"the file; the file is truncated")
    f.seek(start)
    shape, fortran, dtype, at = read_npy_header(f, info.file_size, _refusal(name))
    _check_array(name, shape, dtype)
    _check_size(name, shape, dtype, info.file_size - at)
    return _Shard(path, name, shape[0], shape[1], dtype, fortran, start + at, st.st_size,
                  st.st_mtime_ns)


def _row_range(start, stop, n_rows):
    """read()'s rows [start, stop) checked against a source of n_rows rows."""
    start = checks.check_int(start, "start", 0, n_rows, error=InputError)
    stop = checks.check_int(stop, "stop", 0, n_rows, error=InputError)
    if stop < start:
        raise InputError(f"start={start} is after stop={stop}: rows [start, stop) are read")
    return start, stop


def _checked_rows(x, start, width, n_rows):
    """check_rows's arguments: x rows (n, width) of NumPy floats read from row `start` of a
    source of n_rows rows, or an InputError naming them."""
    x = checks.as_numeric(x, "x")
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != width:
        raise InputError(f"x must be rows read from the source, a NumPy array (n, {width}), "
                         f"got {checks.shown(x)}")
    start = checks.check_int(start, "start", 0, max(0, n_rows - len(x)), error=InputError)
    return x, start


def _size(nbytes):
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:,} bytes" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


class RowRange:
    """Rows [start, stop) of a row source, as a source of their own (the same interface):
    how `minisae train --val-fraction` holds out the last rows of a file for validation."""

    def __init__(self, source, start, stop, name=None):
        if not all(hasattr(source, a) for a in ("n_rows", "n_features", "dtype", "read",
                                                 "check_rows", "locate", "describe",
                                                 "fingerprint")):
            raise ConfigError(f"source must be a source of rows (minisae.data.ArrayFiles, or "
                              f"another RowRange), got {type(source).__name__}")
        checks.check_optional(name, checks.check_type, "name", str, "a str (or None)")
        self.source = source
        self.start = checks.check_int(start, "start", 0, source.n_rows)
        self.stop = checks.check_int(stop, "stop", 0, source.n_rows)
        if self.stop <= self.start:
            raise ConfigError(f"start={self.start} must come before stop={self.stop}: the range "
                              f"holds rows [start, stop), at least one")
        self.n_rows, self.n_features, self.dtype = self.stop - self.start, source.n_features, \
            source.dtype
        self.name = name or f"rows {self.start:,} to {self.stop:,} of {source.describe()}"

    def read(self, start, stop, out=None):
        start, stop = _row_range(start, stop, self.n_rows)
        return self.source.read(self.start + start, self.start + stop, out=out)

    def check_rows(self, x, start, unit_range=False):
        start = checks.check_int(start, "start", 0, self.n_rows, error=InputError)
        self.source.check_rows(x, self.start + start, unit_range)

    def locate(self, row):
        return self.source.locate(self.start + checks.check_int(row, "row", 0, self.n_rows - 1,
                                                                  error=InputError))

    def describe(self):
        return self.name

    def fingerprint(self):
        return {"range": [self.start, self.stop], "of": self.source.fingerprint()}

    def close(self):
        pass
