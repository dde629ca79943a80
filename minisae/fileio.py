"""Writing user files safely: a file appears whole or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode="wb", fsync=False):
    """Yield a temporary file beside `path`; once the block finishes, rename it onto `path`.

    If the block raises (Ctrl-C included), the temporary file is removed and whatever was at
    `path` before is untouched, so a crash never leaves a half-written file in its place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
