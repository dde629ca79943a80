"""The one reader of .npy headers: the shape, order and dtype a .npy declares, and where its
data start, read with numpy.lib.format without trusting the file. Every .npy minisae reads
(a file, an .npz member, a checkpoint member) goes through here; nothing calls np.load.

    shape, fortran_order, dtype, offset = read_npy_header(f, size, error)

f is positioned at the .npy's first byte; size is how many bytes the .npy may hold (a file's
size, a zip member's), or None; error(problem) makes the exception, so the caller names the
file and chooses the kind: lambda problem: DatasetError(f"{path}: {problem}").

Refused, each with a sentence that says what was wrong: no \\x93NUMPY magic; a version other
than 1.0 and 2.0; a header longer than MAX_HEADER bytes (checked from its declared length,
before it is read); a header the file ends inside; a header NumPy cannot parse, or parses
only after repairing it (a Python 2 header); a negative dimension. Left to the callers,
whose rules differ: the dtype (an object dtype is only named in a header, nothing is
unpickled here), Fortran order, and a declared size that the bytes after the header do not
match.

Where numpy.lib.format alone does not serve, and what is done instead:
  - read_array_header_1_0/2_0 read the whole declared header (up to 4 GiB in version 2.0)
    before comparing its length with max_header_size: the length field is read and checked
    here, and NumPy gets the checked bytes only;
  - read_magic and the header readers raise bare ValueError (the header's literal parser
    also RecursionError, MemoryError, ...): wrapped into error(...), on one line;
  - a Python 2 header that NumPy repairs gives only a UserWarning: refused as damage;
  - shapes with negative dimensions pass NumPy's check (they are ints): refused here;
  - version 3.0 (a UTF-8 header) has no public reader: refused.
"""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np

__all__ = ["MAX_HEADER", "read_npy_header"]

MAX_HEADER = 10_000
"""Bytes of a .npy header read at most: np.load's own limit (its max_header_size)."""
_LENGTH_FORMAT = {(1, 0): "<H", (2, 0): "<I"}   # the header length field of each version


def read_npy_header(f, size, error):
    """(shape, fortran_order, dtype, offset of the data from the .npy's start) of the .npy at
    f's position, holding at most `size` bytes (None: unknown); what is refused is raised as
    error(problem) (see the module's doc)."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as e:
        raise error(f"is not a .npy array ({_one_line(e)}); the file is damaged") from None
    if version not in _LENGTH_FORMAT:
        which = "version 3.0, which NumPy writes only for structured dtypes with non-ASCII " \
            "field names" if version == (3, 0) else f"unknown version {version[0]}.{version[1]}"
        raise error(f"is a .npy of {which}; minisae reads versions 1.0 and 2.0: save the "
                    f"numbers as a plain array with np.save (np.savez for an .npz)")
    fmt = _LENGTH_FORMAT[version]
    raw = _read(f, struct.calcsize(fmt), error)
    length = struct.unpack(fmt, raw)[0]
    if length > MAX_HEADER:
        raise error(f"declares a .npy header of {length:,} bytes, more than the {MAX_HEADER:,} "
                    f"np.load reads; the file is damaged or hostile")
    offset = 8 + len(raw) + length
    if size is not None and offset > size:
        raise error(f"declares a {length:,}-byte .npy header, but the file ends before it; "
                    f"the file is truncated")
    header = _read(f, length, error)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
        np.lib.format.read_array_header_2_0
    try:
        with warnings.catch_warnings():     # a header NumPy must repair is a damaged one
            warnings.simplefilter("error")
            shape, fortran, dtype = read(io.BytesIO(raw + header), max_header_size=MAX_HEADER)
    except Exception as e:  # NumPy's parser of the header's dict literal raises anything
        raise error(f"has an unreadable .npy header ({_one_line(e)[:120]}); the file is "
                    f"damaged") from None
    if any(d < 0 for d in shape):
        raise error(f"declares a negative size {shape} in its .npy header; the file is damaged")
    return shape, fortran, dtype, offset


def _read(f, n, error):
    """Exactly n bytes from f, or error: the file ends inside its header."""
    data = f.read(n)
    if len(data) != n:
        raise error("ends inside its .npy header; the file is truncated")
    return data


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__
