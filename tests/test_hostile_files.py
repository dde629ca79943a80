"""Hostile files: memory is refused before it is spent, and any damage ends in a MinisaeError.

The memory tests build small files that declare huge arrays (in a zip directory, a .npy
header, an IDX header, a gzip stream) and measure the peak with tracemalloc, which sees
NumPy's allocations. The hypothesis tests damage valid small files byte by byte and require
a clean load or a MinisaeError, never another exception.
"""
import dataclasses
import gzip
import hashlib
import io
import os
import json
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisae import SGD, Adam, SparseAutoencoder
from minisae.files import checkpoint as ck
from minisae.data import datasets
from minisae.data.datasets import FILES, read_idx, write_idx
from minisae.errors import CheckpointError, DatasetError, MinisaeError
from minisae.training import History

MB = 1 << 20


def peak_while_refused(error, match, fn, *args, **kwargs):
    """Run fn(*args, **kwargs), which must raise error (matching match); return the traced
    peak, in bytes."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match) as e:
            fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(e.value)
    return peak


# ----------------------------------------------------------------------------- checkpoints

def small_checkpoint(path, optimizer="adam"):
    model = SparseAutoencoder(6, 3, seed=1)
    opt = (Adam(model.params, model.grads, lr=0.01) if optimizer == "adam"
           else SGD(model.params, model.grads, lr=0.1, momentum=0.5))
    history = History()
    history.append(epoch=1, train_total=0.25, seconds=1.5)
    return ck.save(path, model, opt, history, {"settings": {"dataset": "mnist"}})


def members(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def write_zip(path, contents, method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in contents.items():
            z.writestr(name, data)
    return path


def npy(array=None, shape=None, dtype="<f4", data=b""):
    """A .npy file's bytes: of array, or a header declaring shape and dtype, then data."""
    buf = io.BytesIO()
    if array is not None:
        np.save(buf, array)
    else:
        np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                                   "shape": shape})
        buf.write(data)
    return buf.getvalue()


def declare_size(path, name, size):
    """Make the zip directory claim that member `name` is `size` bytes (stored or not)."""
    data = bytearray(open(path, "rb").read())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        n = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + n] == name.encode():
            data[at + 20:at + 28] = size.to_bytes(4, "little") * 2   # compressed, uncompressed
        at = data.find(b"PK\x01\x02", at + 46 + n)
    open(path, "wb").write(data)


def config_with(path, **changes):
    config = json.loads(np.load(io.BytesIO(members(path)["config.npy"])).item())
    return npy(np.array(json.dumps({**config, **changes})))


def test_unknown_member_declaring_2_gib(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    write_zip(path, {**members(path), "blob.npy": npy(shape=(1 << 29,), data=bytes(1000))})
    declare_size(path, "blob.npy", 2**31)
    assert peak_while_refused(CheckpointError, "'blob.npy', which minisae never writes",
                              ck.load, path) < MB


def test_config_declaring_a_huge_model_with_tiny_members(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    write_zip(path, {**members(path), "config.npy": config_with(path, n_hidden=100_000)})
    assert peak_while_refused(CheckpointError, r"shape \(6, 3\), but its config implies "
                              r"\(6, 100000\)", ck.load, path) < MB


def test_headers_declaring_a_huge_model_with_no_data(tmp_path):
    """Config, .npy headers and the zip directory all agree on n_hidden=100,000 (784 inputs:
    627 MB of weights); the data are not there."""
    path = small_checkpoint(tmp_path / "c.npz")
    contents = members(path)
    contents["config.npy"] = config_with(path, n_inputs=784, n_hidden=100_000)
    shapes = ck.param_shapes(ck.Config(784, 100_000))
    for key in list(contents):
        name = key[len("param/"):-4] if key.startswith("param/") else key[8:-4]
        if key.startswith(("param/", "optim/m.", "optim/v.")):
            contents[key] = npy(shape=shapes[name], data=bytes(64))
    write_zip(path, contents)
    # the directory's sizes disagree with the headers: refused from the directory alone
    assert peak_while_refused(CheckpointError, "but its header declares", ck.load, path) < MB
    for key in contents:
        if key.startswith(("param/", "optim/m.", "optim/v.")):
            name = key[len("param/"):-4] if key.startswith("param/") else key[8:-4]
            header = len(npy(shape=shapes[name]))
            declare_size(path, key, header + 4 * int(np.prod(shapes[name])))
    # they agree: the data are streamed until they run out, a chunk at a time
    assert peak_while_refused(CheckpointError, "damaged|NaN", ck.load, path) < 4 * MB


def test_a_consistent_model_with_one_bad_value_costs_no_model(tmp_path):
    """Every header right, 38 MB of zeros deflated to a few kB, one NaN at the very end:
    refused before the model (12.5 MB of weights) or its Adam state is allocated."""
    model = SparseAutoencoder(784, 2000, seed=0)
    opt = Adam(model.params, model.grads, lr=0.01)
    good = tmp_path / "good.npz"
    ck.save(good, model, opt)
    arrays = {}
    with np.load(good) as z:
        for key in z.files:
            arrays[key] = z[key] if z[key].dtype.kind != "f" or z[key].ndim == 0 else \
                np.zeros_like(z[key])
    np.savez_compressed(tmp_path / "zeros.npz", **arrays)
    assert ck.load(tmp_path / "zeros.npz").optimizer.t == 0
    arrays["optim/v.decoder.b"][-1] = np.nan
    np.savez_compressed(tmp_path / "bad.npz", **arrays)
    del arrays, model, opt
    peak = peak_while_refused(CheckpointError, "optimizer state 'v.decoder.b' holds NaN", ck.load,
                              tmp_path / "bad.npz")
    assert peak < 4 * MB


def test_history_declaring_2_gib(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    declare_size(path, "history.npy", 2**31)
    assert peak_while_refused(CheckpointError, "'history' is 2,147,483,648 bytes", ck.load,
                              path) < MB


def test_a_32_mib_history_ending_in_nan_is_refused_before_it_is_parsed(tmp_path):
    """Issue 27's reliability case: a 32 MiB history member (8 M characters of JSON: a list of
    floats, then NaN where the list should end) cost 62 MB traced (69 MB of RSS) to refuse,
    the text read whole, then parsed. Its cost is now counted as it is read (twice the text,
    64 bytes a value) and the member refused once that passes the history's 16 MiB."""
    path = small_checkpoint(tmp_path / "c.npz")
    contents = members(path)
    for value in ("1.5, ", "1,"):
        n = ((32 << 20) // 4 - 40) // len(value)
        contents["history.npy"] = npy(np.array('{"train_total": [' + value * n + "NaN"))
        write_zip(path, contents)
        assert os.path.getsize(path) > 32 * MB
        peak = peak_while_refused(CheckpointError, r"'history' would cost more than the 16 MiB "
                                  r"of memory minisae allows it once parsed", ck.load, path)
        assert peak < 4 * MB, (value, peak)


def test_json_members_cost_no_more_than_their_bound_to_load(tmp_path, monkeypatch):
    """What load counts is what save counts (a checkpoint saved loads), and what a member
    counts bounds what parsing it costs: a history near its bound, in chunks of 4 KiB."""
    monkeypatch.setattr(ck, "_CHUNK", 4096)
    monkeypatch.setitem(ck._JSON_BOUNDS, "history", 1 << 20)
    monkeypatch.setitem(ck._TEXT_LIMITS, "history", 2 << 20)
    model = SparseAutoencoder(6, 3, seed=1)
    history, rng = History(), np.random.default_rng(0)
    while ck._json_cost(json.dumps(history.as_dict())) < (1 << 20) - 3000:
        history.append(epoch=len(history) + 1, train_total=float(rng.random()), seconds=1.5,
                       val_fvu=None, threads=2)
    ck.save(tmp_path / "c.npz", model, None, history)
    tracemalloc.start()
    loaded = ck.load(tmp_path / "c.npz").history
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert loaded.as_dict() == history.as_dict() and peak < (1 << 20) + MB // 2
    for _ in range(200):
        history.append(epoch=len(history) + 1, train_total=0.5, seconds=1.5, threads=2)
    with pytest.raises(CheckpointError, match="cannot save history: .* would cost .* more than "
                                              "the 1 MiB"):
        ck.save(tmp_path / "c.npz", model, None, history)
    assert ck.load(tmp_path / "c.npz").history.as_dict() == loaded.as_dict()   # kept


def test_a_zip_directory_of_thousands_of_members(tmp_path):
    path = small_checkpoint(tmp_path / "c.npz")
    contents = {**members(path), **{f"{i}.npy": b"" for i in range(3000)}}
    write_zip(path, contents)
    assert peak_while_refused(CheckpointError, f"{len(contents):,} members", ck.load, path) < MB


# ----------------------------------------------------------------------------- IDX files

def idx_header(shape, code=0x08):
    return bytes([0, 0, code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def gzip_bomb(header, zeros):
    """A gzip file: header, then `zeros` MiB of zeros, as repeated members (kB on disk)."""
    one = gzip.compress(bytes(MB), mtime=0)
    return gzip.compress(header, mtime=0) + one * zeros


def mnist_folder(folder, images):
    """Four MNIST files, the train images given (bytes), the others tiny and harmless."""
    folder.mkdir()
    (folder / f"{FILES[0]}.gz").write_bytes(images)
    for stem in FILES[1:]:
        write_idx(folder / f"{stem}.gz", np.zeros(3, np.uint8))
    return folder


def test_idx_header_declaring_too_many_images(tmp_path):
    """The attack trial's file: 2 MB of .gz declaring (2739137, 28, 28), 2 GB of data."""
    folder = mnist_folder(tmp_path / "d", gzip_bomb(idx_header((2739137, 28, 28)), 2))
    assert peak_while_refused(DatasetError, "declares 2,739,137 images, but the mnist "
                              "train-images-idx3-ubyte has 60,000", datasets.load_mnist, folder,
                              download=False) < MB


def test_gzip_bomb_behind_a_legitimate_header(tmp_path):
    """(60000, 28, 28) as MNIST's, then 1 GiB of zeros: stopped after the 47 MB it may hold."""
    folder = mnist_folder(tmp_path / "d", gzip_bomb(idx_header((60000, 28, 28)), 1024))
    assert (folder / f"{FILES[0]}.gz").stat().st_size < 2 * MB
    peak = peak_while_refused(DatasetError, "unexpected bytes after", datasets.load_mnist,
                              folder, download=False)
    assert peak < 50e6      # the largest MNIST file is 47,040,016 bytes


def test_gzip_bomb_with_a_size_cap(tmp_path):
    path = tmp_path / "bomb"
    path.write_bytes(gzip_bomb(idx_header((10,)), 1024))
    assert peak_while_refused(DatasetError, "unexpected bytes after", read_idx, path,
                              1000) < MB
    path.write_bytes(gzip_bomb(idx_header((1 << 20, 1 << 20)), 1))
    assert peak_while_refused(DatasetError, "more than the 1,000 allowed", read_idx, path,
                              1000) < MB


def test_a_file_larger_than_the_dataset_allows(tmp_path):
    folder = mnist_folder(tmp_path / "d", b"")
    (folder / f"{FILES[0]}.gz").unlink()
    with open(folder / FILES[0], "wb") as f:      # uncompressed, 100 MB (sparse)
        f.write(idx_header((60000, 28, 28)))
        f.truncate(100 * MB)
    assert peak_while_refused(DatasetError, "larger than any file it could be",
                              datasets.load_mnist, folder, download=False) < MB


def test_idx_header_with_70_dimensions(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(idx_header((1,) * 70) + b"\0")
    assert peak_while_refused(DatasetError, "70 dimensions", read_idx, path) < MB


# ----------------------------------------------------------------------------- damage, byte by byte

EDITS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                           st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                 min_size=1, max_size=3)


def damage(data, edits):
    data = bytearray(data)
    for kind, where, byte in edits:
        at = int(where * len(data)) if data else 0
        if kind == "flip" and data:
            data[at] ^= 1 << (byte % 8)
        elif kind == "insert":
            data[at:at] = bytes([byte])
        elif kind == "delete" and data:
            del data[at]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    files = {"adam": small_checkpoint(folder / "adam.npz"),
             "sgd": small_checkpoint(folder / "sgd.npz", "sgd")}
    files = {k: open(p, "rb").read() for k, p in files.items()}
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for name, array in {"images.gz": x, "images": x, "floats": x[0].astype(np.float32)}.items():
        files[name] = open(write_idx(folder / name, array), "rb").read()
    return folder, files


def loads_or_refuses(load, path, error):
    try:
        load(path)
    except error as e:
        assert "\n" not in str(e)
    except MinisaeError as e:
        pytest.fail(f"{type(e).__name__} instead of {error.__name__}: {e}")


FEW = settings(max_examples=120, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


@FEW
@given(which=st.sampled_from(["adam", "sgd"]), edits=EDITS)
def test_damaged_checkpoint_bytes(originals, which, edits):
    folder, files = originals
    path = folder / "damaged.npz"
    path.write_bytes(damage(files[which], edits))
    loads_or_refuses(ck.load, path, CheckpointError)


@FEW
@given(which=st.sampled_from(["adam", "sgd"]), member=st.integers(0, 30), edits=EDITS,
       method=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
def test_damaged_checkpoint_members(originals, which, member, edits, method):
    """Damage inside one member, in a zip rebuilt around it (CRCs right): this reaches the
    .npy headers, the JSON and the values."""
    folder, files = originals
    contents = members(io.BytesIO(files[which]))
    name = sorted(contents)[member % len(contents)]
    contents[name] = damage(contents[name], edits)
    loads_or_refuses(ck.load, write_zip(folder / "rebuilt.npz", contents, method),
                     CheckpointError)


@FEW
@given(which=st.sampled_from(["images.gz", "images", "floats"]), edits=EDITS,
       cap=st.sampled_from([None, 100, 10_000]))
def test_damaged_idx_files(originals, which, edits, cap):
    folder, files = originals
    path = folder / "damaged-idx"
    path.write_bytes(damage(files[which], edits))
    loads_or_refuses(lambda p: read_idx(p, cap), path, DatasetError)


@FEW
@given(stem=st.sampled_from(FILES), edits=EDITS, gz=st.booleans())
def test_damaged_dataset_files(tmp_path_factory, stem, edits, gz):
    """One of a tiny dataset's four files damaged: loaded (if the damage left its md5
    intact, which it cannot) or refused, with the dataset's shapes and md5s in force."""
    folder = tmp_path_factory.mktemp("set")
    rng = np.random.default_rng(0)
    arrays = {FILES[0]: rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              FILES[1]: rng.integers(0, 10, 3, dtype=np.uint8),
              FILES[2]: rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              FILES[3]: rng.integers(0, 10, 2, dtype=np.uint8)}
    paths = {s: write_idx(folder / (s + ".gz" if gz else s), x) for s, x in arrays.items()}
    md5s = {s: hashlib.md5(p.read_bytes()).hexdigest() for s, p in paths.items()}
    paths[stem].write_bytes(damage(paths[stem].read_bytes(), edits))
    spec = dataclasses.replace(datasets.SPECS["mnist"], gz_md5s=md5s, content_md5s=md5s,
                               n_train=3, n_test=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(datasets.SPECS, "mnist", spec)
        loads_or_refuses(lambda p: datasets.load_mnist(p, download=False), folder, DatasetError)
