"""The one .npy header reader (minisae.files.npyheader): what NumPy declares, read back as
numpy.lib.format reads it; every damaged or hostile header refused with a one-line sentence,
a huge one before it is read; and the data loader and the checkpoint refusing through it.
"""
import inspect
import io
import struct
import zipfile

import numpy as np
import pytest

from minisae import SparseAutoencoder
from minisae.data import ArrayFiles
from minisae.errors import CheckpointError, DatasetError, MinisaeError
from minisae.files import checkpoint as ck
from minisae.files.npyheader import MAX_HEADER, read_npy_header

GOOD = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"


def npy_bytes(header, version=(1, 0), data=b"", length=None):
    """A .npy file's bytes with the given header dict text (padded as NumPy pads it)."""
    text = header.encode("utf8" if version == (3, 0) else "latin1")
    fmt = "<H" if version == (1, 0) else "<I"
    pad = -(8 + struct.calcsize(fmt) + len(text) + 1) % 64
    text = text + b" " * pad + b"\n"
    n = len(text) if length is None else length
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, n) + text + data


class Reads(io.BytesIO):
    """A file that counts the bytes read from it."""
    taken = 0

    def read(self, n=-1):
        data = super().read(n)
        self.taken += len(data)
        return data


def refusal(problem):
    return DatasetError(f"x.npy: {problem}")


def refused(raw, match, size="whole"):
    f = Reads(raw)
    with pytest.raises(DatasetError, match=match) as e:
        read_npy_header(f, len(raw) if size == "whole" else size, refusal)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400, str(e.value)
    return f.taken


@pytest.mark.parametrize("array", [np.zeros((2, 3), np.float32), np.ones(5, ">f8"),
                                   np.asfortranarray(np.ones((3, 4))), np.array(2.5),
                                   np.zeros((0, 7), np.float16), np.array("text"),
                                   np.array([None, 1], dtype=object)])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_reads_what_numpy_wrote(array, version):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=True)
    buf.seek(0)
    shape, fortran, dtype, offset = read_npy_header(buf, len(buf.getvalue()), refusal)
    assert (shape, dtype) == (array.shape, array.dtype) and offset == buf.tell()
    assert fortran == (array.ndim > 1 and array.flags.f_contiguous and
                       not array.flags.c_contiguous)


def test_its_limit_is_np_loads_own():
    limit = inspect.signature(np.lib.format.read_array_header_1_0).parameters["max_header_size"]
    assert MAX_HEADER == limit.default


def test_an_object_dtype_is_only_named_never_unpickled():
    raw = npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
                    data=b"\x80\x04 not a pickle at all")
    f = Reads(raw)
    assert read_npy_header(f, len(raw), refusal)[2] == np.dtype(object)
    assert f.taken == len(npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"))


@pytest.mark.parametrize("raw, match", [
    (b"PK\x03\x04 a zip, not a .npy", r"is not a \.npy array \(the magic string is not correct"),
    (b"\x93NUM", r"is not a \.npy array \(EOF"),
    (npy_bytes(GOOD).replace(b"NUMPY\x01", b"NUMPY\x07"), "unknown version 7.0"),
    (npy_bytes(GOOD, (3, 0)), "version 3.0, which NumPy writes only for structured"),
    (npy_bytes(GOOD)[:9], "ends inside its .npy header"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False}"), "unreadable .npy header"),
    (npy_bytes("[1, 2, 3]"), "unreadable .npy header"),
    (npy_bytes("{'descr': 'what', 'fortran_order': False, 'shape': (2, 3), }"), "unreadable"),
    (npy_bytes("(" * 1000 + ")" * 1000), "unreadable"),
    (npy_bytes("x" * 9000), "unreadable"),            # NumPy quotes it all: cut to one line
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }"),
     "unreadable"),                                    # Python 2: NumPy repairs it, warning
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }"),
     r"negative size \(2, -3\)"),
])
def test_damaged_headers_are_refused_in_one_line(raw, match):
    refused(raw, match)


def test_a_huge_header_is_refused_from_its_declared_length_before_it_is_read():
    raw = npy_bytes(GOOD, (2, 0), length=2**31) + b" " * 20_000
    assert refused(raw, "declares a .npy header of 2,147,483,648 bytes") <= 12
    raw = npy_bytes(GOOD, (1, 0), length=MAX_HEADER + 1) + b" " * 20_000
    assert refused(raw, f"header of {MAX_HEADER + 1:,} bytes, more than the {MAX_HEADER:,}",
                   size=None) <= 10


def test_a_header_longer_than_what_holds_it_is_refused_before_it_is_read():
    raw = npy_bytes(GOOD, length=5_000)
    assert refused(raw, "declares a 5,000-byte .npy header, but the file ends before it") <= 10
    refused(raw, "ends inside its .npy header; the file is truncated", size=None)


# ----------------------------------------------------------------------------- its callers

def test_array_files_refuse_through_it(tmp_path):
    for i, (raw, match) in enumerate([
            (npy_bytes(GOOD, (3, 0)), "version 3.0"),
            (npy_bytes(GOOD, (1, 0), length=60_000), "header of 60,000 bytes"),
            (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }"),
             "negative size")]):
        (tmp_path / f"{i}.npy").write_bytes(raw)
        with pytest.raises(DatasetError, match=match) as e:
            ArrayFiles(tmp_path / f"{i}.npy")
        assert str(e.value).startswith(f"{tmp_path / f'{i}.npy'}: ")
        with zipfile.ZipFile(tmp_path / f"{i}.npz", "w") as z:
            z.writestr("acts.npy", raw)
        with pytest.raises(DatasetError, match=match) as e:
            ArrayFiles(tmp_path / f"{i}.npz")
        assert str(e.value).startswith(f"{tmp_path / f'{i}.npz'}['acts']: ")


@pytest.mark.parametrize("raw, match", [
    (npy_bytes(GOOD, (3, 0)), "member 'param/encoder.W' is a .npy of version 3.0"),
    (npy_bytes(GOOD, (2, 0), length=20_000) + b" " * 20_000,
     "member 'param/encoder.W' declares a .npy header of 20,000 bytes, more than the 10,000"),
    (b"\x93NUMPY", r"member 'param/encoder.W' is not a \.npy array"),
    (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (6, -3), }"),
     "member 'param/encoder.W' declares a negative size"),
])
def test_checkpoints_refuse_through_it(tmp_path, raw, match):
    path = ck.save(tmp_path / "c.npz", SparseAutoencoder(6, 3, seed=1))
    with zipfile.ZipFile(path) as z:
        contents = {name: z.read(name) for name in z.namelist()}
    contents["param/encoder.W.npy"] = raw
    with zipfile.ZipFile(path, "w") as z:
        for name, data in contents.items():
            z.writestr(name, data)
    with pytest.raises(CheckpointError, match=match) as e:
        ck.load(path)
    assert isinstance(e.value, MinisaeError) and "\n" not in str(e.value)
