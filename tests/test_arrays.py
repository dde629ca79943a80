"""Your own data files (minisae.data.arrays): .npy, .npz and folders of .npy shards.

Every refusal is a MinisaeError naming the file, raised from the headers before any row is
read; hostile headers (absurd shapes, huge header lengths, huge zip directories) are refused
without allocating what they declare (tracemalloc's peak stays small). Reads give back
exactly what was saved, in every dtype and layout, across shard boundaries, and NaN met late
is reported with its file and row.
"""
import io
import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from forbid import forbid
from minisae.data import ArrayFiles
from minisae.errors import DatasetError, InputError, MinisaeError

SMALL = 1 << 20     # bytes a refusal may allocate (tracemalloc peak)
DTYPES = ["float16", "float32", "float64"]


def data(n=20, w=3, dtype="float32", seed=0):
    return np.random.default_rng(seed).normal(size=(n, w)).astype(dtype)


def npy_bytes(header, version=(1, 0), data=b"", length=None):
    """A .npy file's bytes with the given header dict text (padded as NumPy pads it)."""
    text = header.encode("latin1")
    fmt = "<H" if version == (1, 0) else "<I"
    pad = -(8 + struct.calcsize(fmt) + len(text) + 1) % 64
    text = text + b" " * pad + b"\n"
    n = len(text) if length is None else length
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, n) + text + data


def refused(path, match=None, error=MinisaeError, key=None):
    """ArrayFiles(path) must raise `error` naming the path (and matching `match`), on one
    line, allocating little; returns the message."""
    tracemalloc.start()
    try:
        with pytest.raises(error) as e:
            ArrayFiles(path, key=key)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(e.value)
    assert isinstance(e.value, MinisaeError)
    assert str(path) in message, message
    assert "\n" not in message
    if match is not None:
        assert match in message, message
    assert peak < SMALL, f"refusing {path} allocated {peak:,} bytes"
    return message


def shards(folder, arrays, names=None):
    folder.mkdir(exist_ok=True)
    for i, a in enumerate(arrays):
        np.save(folder / (names[i] if names else f"{i:03d}.npy"), a)
    return folder


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["npy", "npz", "shards", "fortran", "big-endian"])
def test_reads_back_exactly_what_was_saved(tmp_path, dtype, layout):
    x = data(50, 4, dtype)
    if layout == "npy":
        np.save(tmp_path / "x.npy", x)
        path = tmp_path / "x.npy"
    elif layout == "npz":
        np.savez(tmp_path / "x.npz", acts=x, labels=np.arange(50))
        path = tmp_path / "x.npz"
    elif layout == "shards":
        path = shards(tmp_path / "acts", [x[:7], x[7:7], x[7:33], x[33:]])
    elif layout == "fortran":
        np.save(tmp_path / "x.npy", np.asfortranarray(x))
        path = tmp_path / "x.npy"
    else:
        np.save(tmp_path / "x.npy", x.astype(x.dtype.newbyteorder(">")))
        path = tmp_path / "x.npy"
    with ArrayFiles(path, key="acts" if layout == "npz" else None) as src:
        assert (src.n_rows, src.n_features, src.dtype) == (50, 4, np.dtype(dtype))
        got = src.read(0, 50)
        assert got.dtype == np.dtype(dtype) and np.array_equal(got, x)
        for out_dtype in ("float32", "float64"):
            out = np.full((20, 4), np.nan, out_dtype)
            assert src.read(5, 25, out=out) is out
            assert np.array_equal(out, x[5:25].astype(out_dtype))
        assert src.read(17, 17).shape == (0, 4)
        assert sum(r for _, r in src.shards) == 50


def test_read_across_every_shard_boundary(tmp_path):
    x = data(23, 2, "float64")
    src = ArrayFiles(shards(tmp_path / "s", [x[:5], x[5:5], x[5:6], x[6:17], x[17:]]))
    for start in range(24):
        for stop in range(start, 24):
            assert np.array_equal(src.read(start, stop), x[start:stop])
    assert src.locate(5) == (str(tmp_path / "s" / "002.npy"), 0)
    assert src.locate(22) == (str(tmp_path / "s" / "004.npy"), 5)


def test_shards_sort_by_name_with_numbers_as_numbers(tmp_path):
    x = data(30, 2)
    folder = shards(tmp_path / "s", [x[:10], x[10:20], x[20:]], ["2.npy", "10.npy", "1.npy"])
    (folder / ".hidden.npy").write_bytes(b"junk")      # dot files are skipped
    src = ArrayFiles(folder)
    assert [os.path.basename(p) for p, _ in src.shards] == ["1.npy", "2.npy", "10.npy"]
    assert np.array_equal(src.read(0, 30), np.concatenate([x[20:], x[:10], x[10:20]]))
    assert "3 .npy shards" in src.describe() and "30 rows x 2 float32" in src.describe()


def test_a_folder_with_files_that_are_not_shards_is_refused_naming_them(tmp_path):
    """Issue 27: a folder of mixed files took its .npy files as shards and ignored the rest
    without a word. Now what is not a .npy shard is named (dot files aside)."""
    x = data(30, 2)
    folder = shards(tmp_path / "s", [x[:10], x[10:]], ["a-0.npy", "a-1.npy"])
    (folder / ".cache").write_text("skipped")
    (folder / "labels.txt").write_text("1\n2\n")
    (folder / "cfg.json").write_text("{}")
    (folder / "val").mkdir()
    e = refused(folder, error=InputError)
    assert f"holds cfg.json, labels.txt, val{os.sep} beside its 2 .npy shards" in str(e)
    assert "names starting with '.' are skipped" in str(e)
    for name in ("labels.txt", "cfg.json"):
        (folder / name).unlink()
    (folder / "val").rmdir()
    assert ArrayFiles(folder).n_rows == 30
    for i in range(20):
        (folder / f"note-{i:02d}.txt").write_text("")
    assert "note-07.txt, ... (20 in all)" in str(refused(folder, error=InputError))


def test_unreadable_paths_are_one_error_naming_them(tmp_path, monkeypatch):
    """Issue 27's last doors: a PermissionError anywhere becomes a DatasetError naming the
    file or folder (a folder above a file that cannot be searched read as "no such file")."""
    x = data()
    np.save(tmp_path / "x.npy", x)
    folder = shards(tmp_path / "s", [x[:10], x[10:]], ["0.npy", "1.npy"])
    (tmp_path / "locked").mkdir()
    np.save(tmp_path / "locked" / "y.npy", x)
    block = forbid(monkeypatch)
    block(tmp_path / "locked")
    with pytest.raises(DatasetError, match=r"locked.y\.npy: cannot be looked at \(Permission "
                                           r"denied\); check its permissions and those of the "
                                           r"folders above it"):
        ArrayFiles(tmp_path / "locked" / "y.npy")
    block(tmp_path / "x.npy")
    with pytest.raises(DatasetError, match=r"x\.npy: cannot be read \(Permission denied\); check "
                                           r"its permissions"):
        ArrayFiles(tmp_path / "x.npy")
    block(folder / "1.npy")
    with pytest.raises(DatasetError, match=r"1\.npy: cannot be read \(Permission denied\)"):
        ArrayFiles(folder)
    block(folder)
    with pytest.raises(DatasetError, match=r"s: cannot list the folder \(Permission denied\)"):
        ArrayFiles(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_as_what_it_is(tmp_path):
    os.mkfifo(tmp_path / "pipe.npy")
    refused(tmp_path / "pipe.npy", "not a regular file or a folder", DatasetError)


def test_npz_key_with_or_without_npy_and_its_only_array(tmp_path):
    x = data()
    np.savez(tmp_path / "one.npz", x)
    assert np.array_equal(ArrayFiles(tmp_path / "one.npz").read(0, 20), x)
    np.savez(tmp_path / "two.npz", a=x, b=x[:3])
    assert np.array_equal(ArrayFiles(tmp_path / "two.npz", key="a.npy").read(0, 20), x)
    assert "two.npz['b']" in ArrayFiles(tmp_path / "two.npz", key="b").describe()


def test_fingerprint_ignores_a_move_and_sees_new_contents(tmp_path):
    x = data(100, 3)
    folder = shards(tmp_path / "a", [x[:50], x[50:]])
    saved = ArrayFiles(folder).fingerprint()
    os.rename(folder, tmp_path / "b")
    assert ArrayFiles(tmp_path / "b").changes(saved) == []
    np.save(tmp_path / "b" / "001.npy", x[50:] + 1)   # same size, other numbers
    assert ArrayFiles(tmp_path / "b").changes(saved) == ["001.npy: contents differ"]
    np.save(tmp_path / "b" / "001.npy", x[50:60])
    assert any("rows" in c for c in ArrayFiles(tmp_path / "b").changes(saved))
    import json
    json.dumps(saved)


def test_a_file_changed_after_it_was_checked_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", data())
    src = ArrayFiles(tmp_path / "x.npy")
    with open(tmp_path / "x.npy", "ab") as f:
        f.write(b"more")
    with pytest.raises(DatasetError, match="changed after it was checked"):
        src.read(0, 1)


# ----------------------------------------------------------------------------- late damage

def test_nan_found_late_names_the_file_and_the_row(tmp_path):
    x = data(40, 3)
    x[31, 2] = np.nan
    src = ArrayFiles(shards(tmp_path / "s", [x[:25], x[25:]]))
    rows = src.read(20, 40)
    src.check_rows(rows[:5], 20)             # rows 20..24 are good
    with pytest.raises(InputError) as e:
        src.check_rows(rows, 20)
    message = str(e.value)
    assert str(tmp_path / "s" / "001.npy") in message
    assert "row 6 (row 31 of the whole)" in message and "column 2" in message


def test_values_outside_the_unit_range_are_found_with_unit_range(tmp_path):
    x = np.random.default_rng(0).uniform(size=(10, 3)).astype(np.float32)
    x[7, 1] = 1.5
    np.save(tmp_path / "x.npy", x)
    src = ArrayFiles(tmp_path / "x.npy")
    src.check_rows(src.read(0, 10), 0)
    with pytest.raises(InputError, match=r"row 7 holds 1.5 in column 1, outside \[0, 1\]"):
        src.check_rows(src.read(0, 10), 0, unit_range=True)


def test_overflow_when_cast_to_float32_is_explained(tmp_path):
    x = data(5, 2, "float64")
    x[3, 0] = 1e300
    np.save(tmp_path / "x.npy", x)
    src = ArrayFiles(tmp_path / "x.npy")
    rows = src.read(0, 5, out=np.empty((5, 2), np.float32))
    with pytest.raises(InputError, match="too large for float32"):
        src.check_rows(rows, 0)


def test_a_file_truncated_after_the_check_fails_the_read(tmp_path):
    np.save(tmp_path / "x.npy", data(1000, 4))
    src = ArrayFiles(tmp_path / "x.npy")
    src.read(0, 1)                          # opened while it was whole
    os.truncate(tmp_path / "x.npy", 2000)
    with pytest.raises(DatasetError, match="truncated after it was checked"):
        src.read(0, 1000)


# ----------------------------------------------------------------------------- refusals

def test_missing_paths_and_empty_folders(tmp_path):
    refused(tmp_path / "nothing.npy", "no such file")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "no .npy shards")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.safetensors").write_bytes(b"x")
    refused(tmp_path / "other", ".safetensors")


@pytest.mark.parametrize("content, said", [
    (b"", "empty"),
    (b"1.0,2.0\n3.0,4.0\n", "text"),
    (b"\x1f\x8b\x08\x00rest", "gzip"),
    (b"\x80\x04\x95junk", "pickle"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05", "IDX"),
    (struct.pack("<Q", 20) + b'{"x": {"dtype": "F32"}}', "safetensors"),
    (bytes(range(200, 240)), "starts with the bytes"),
])
def test_what_is_not_an_array_is_refused_saying_what_it_looks_like(tmp_path, content, said):
    (tmp_path / "x.npy").write_bytes(content)
    refused(tmp_path / "x.npy", said)


def test_a_zip_that_is_not_an_npz(tmp_path):
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x04")
    refused(tmp_path / "model.pt", "PyTorch")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    refused(tmp_path / "junk.npz", "not a readable .npz")


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "x.npy", data(100, 8))
    whole = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(whole[:-5])
    refused(tmp_path / "x.npy", "truncated")
    (tmp_path / "x.npy").write_bytes(whole[:70])          # inside the header
    refused(tmp_path / "x.npy", "truncated")
    (tmp_path / "x.npy").write_bytes(whole + b"extra")
    refused(tmp_path / "x.npy", "unexpected bytes")


@pytest.mark.parametrize("shape", ["(2**40, 784)", "(1099511627776, 1099511627776)",
                                   "(9223372036854775807, 9223372036854775807)"])
def test_absurd_declared_sizes_are_refused_without_allocating(tmp_path, shape):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % \
        str(eval(shape, {})).replace(" ", "")
    (tmp_path / "x.npy").write_bytes(npy_bytes(header, data=b"\0" * 4096))
    refused(tmp_path / "x.npy", "but only 4,096 bytes follow")


def test_a_huge_header_length_is_refused_before_it_is_read(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }"
    (tmp_path / "x.npy").write_bytes(npy_bytes(header, (2, 0), length=2**31))
    refused(tmp_path / "x.npy", "header of 2,147,483,648 bytes")
    (tmp_path / "y.npy").write_bytes(npy_bytes(header, (1, 0), length=60_000))
    refused(tmp_path / "y.npy", "header of 60,000 bytes")


@pytest.mark.parametrize("header, said", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", "negative"),
    ("{'descr': '<f4', 'fortran_order': False}", "unreadable"),
    ("[1, 2, 3]", "unreadable"),
    ("{'descr': 'what', 'fortran_order': False, 'shape': (2, 3), }", "unreadable"),
    ("(" * 1000 + ")" * 1000, "unreadable"),
])
def test_damaged_headers(tmp_path, header, said):
    (tmp_path / "x.npy").write_bytes(npy_bytes(header, data=b"\0" * 24))
    refused(tmp_path / "x.npy", said)


def test_unknown_npy_versions(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }"
    (tmp_path / "x.npy").write_bytes(npy_bytes(header, (1, 0)).replace(b"NUMPY\x01", b"NUMPY\x07"))
    refused(tmp_path / "x.npy", "unknown version")


@pytest.mark.parametrize("array, said", [
    (np.arange(12).reshape(6, 2), "integers"),
    (np.ones((3, 2), np.uint8), "unsigned integers"),
    (np.ones((3, 2), bool), "booleans"),
    (np.ones((3, 2), np.complex64), "complex"),
    (np.array([[1.0, "a"]], dtype=object), "Python objects"),
    (np.zeros(3, dtype=[("a", "<f4"), ("b", "<f4")]), "structured"),
    (np.array([["a", "b"]]), "strings"),
    (np.zeros((2, 2), "datetime64[s]"), "dates"),
])
def test_dtypes_that_are_not_float_rows_are_refused_with_how_to_convert(tmp_path, array, said):
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    message = refused(tmp_path / "x.npy", said)
    assert "float" in message


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8, reason="no long double here")
def test_long_double_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 2), np.longdouble))
    refused(tmp_path / "x.npy", "float64")


@pytest.mark.parametrize("shape, said", [((), "0-D"), ((5,), "reshape to (n, 1)"),
                                         ((2, 3, 4), "x.reshape(-1, x.shape[-1])"),
                                         ((4, 0), "0 features")])
def test_arrays_that_are_not_rows(tmp_path, shape, said):
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    refused(tmp_path / "x.npy", said)


def test_no_rows_at_all(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((0, 3), np.float32))
    refused(tmp_path / "x.npy", "0 rows")


def test_a_shard_of_another_width_or_dtype_is_named(tmp_path):
    x = data(10, 3)
    shards(tmp_path / "w", [x, x[:, :2]])
    message = refused(tmp_path / "w", "2 features")
    assert "001.npy" in message and "000.npy has 3" in message
    shards(tmp_path / "d", [x, x.astype(np.float64)])
    message = refused(tmp_path / "d", "float64")
    assert "001.npy" in message
    shards(tmp_path / "bad", [x, np.arange(3)])
    assert "001.npy" in refused(tmp_path / "bad", "integers")


def test_npz_without_the_key_lists_its_keys(tmp_path):
    x = data()
    np.savez(tmp_path / "x.npz", acts=x, labels=x)
    message = refused(tmp_path / "x.npz", "no array 'resid'", key="resid")
    assert "'acts', 'labels'" in message
    refused(tmp_path / "x.npz", "say which one", key=None)
    np.savez(tmp_path / "many.npz", **{f"a{i}": x[:1] for i in range(30)})
    assert "(30 in all)" in refused(tmp_path / "many.npz", key="nope")


def test_compressed_npz_members_are_refused_saying_what_to_do(tmp_path):
    np.savez_compressed(tmp_path / "x.npz", acts=data())
    message = refused(tmp_path / "x.npz", "compressed", key="acts")
    assert "np.savez" in message and "unzip x.npz acts.npy" in message


def test_an_npz_member_with_a_lying_header(tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 10), }"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("acts.npy", npy_bytes(header, data=b"\0" * 800))
    (tmp_path / "x.npz").write_bytes(buf.getvalue())
    refused(tmp_path / "x.npz", "but only 800 bytes follow")


def test_a_huge_zip_directory_is_refused_before_zipfile_reads_it(tmp_path):
    np.savez(tmp_path / "x.npz", acts=data())
    raw = bytearray((tmp_path / "x.npz").read_bytes())
    end = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HHI", raw, end + 8, 65535, 65535, 2**31)  # entries, entries, size
    (tmp_path / "x.npz").write_bytes(bytes(raw))
    refused(tmp_path / "x.npz")


def test_key_only_for_npz(tmp_path):
    np.save(tmp_path / "x.npy", data())
    refused(tmp_path / "x.npy", "leave it out", key="acts")
    shards(tmp_path / "s", [data()])
    refused(tmp_path / "s", "leave it out", key="acts")


def test_bad_read_arguments(tmp_path):
    np.save(tmp_path / "x.npy", data())
    src = ArrayFiles(tmp_path / "x.npy")
    with pytest.raises(InputError):
        src.read(5, 30)
    with pytest.raises(InputError):
        src.read(5, 4)
    with pytest.raises(InputError, match="out must be"):
        src.read(0, 5, out=np.empty((5, 3), np.float32)[:, :2])
    with pytest.raises(InputError, match="out must be"):
        src.read(0, 5, out=np.empty((5, 3), np.int32))


def test_a_moved_file_keeps_its_fingerprint(tmp_path):
    np.savez(tmp_path / "x.npz", acts=data())
    saved = ArrayFiles(tmp_path / "x.npz", key="acts").fingerprint()
    (tmp_path / "elsewhere").mkdir()
    os.rename(tmp_path / "x.npz", tmp_path / "elsewhere" / "x.npz")
    assert ArrayFiles(tmp_path / "elsewhere" / "x.npz", key="acts").changes(saved) == []
