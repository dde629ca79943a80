"""Writing user files safely: a file appears whole or not at all.

Every file minisae writes for a user (checkpoints, metrics, figures, downloads) goes through
atomic_write: the data go to a temporary file beside the target, named
    .<target name>.<writer's PID>.<random>.part
which is renamed onto the target only once it is complete. A writer killed mid-write (no
chance to clean up) leaves its .part file behind; the next write of the same target removes
those whose writer is gone, and never one of a writer still running. A writer holds an
advisory lock (flock) on its .part file for as long as it writes, which the system drops when
the writer dies however it dies, and takes it before the file has its .part name (it is
created as .<target name>.<PID>.<random>.init, locked, then renamed): so a .part file that can
be locked has no writer, whatever its age or its PID says (PIDs are reused, a killed writer
not yet reaped still has one, another container's PID means nothing here, and a container
gives every run the same one). A writer killed between creating its .init file and renaming
it (a few microseconds) leaves that behind: it is removed once its PID is gone or it is a
few seconds old. Where flock does not exist (Windows), the file is made as .part directly and
the PID decides.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from pathlib import Path

_LEGACY_AGE = 3600.0    # seconds before a PID-less .part file (older minisae) counts as stale
_GRACE = 5.0            # an unlocked .init file this young (or a .part of an older minisae,
                        # which named it before locking) may be one whose writer has not yet
                        # taken its lock: its PID decides
_WRITING = set()        # the .part files this process is writing now


@contextlib.contextmanager
def atomic_write(path, mode="wb", fsync=False):
    """Yield a file opened on a temporary path beside `path`; once the block finishes,
    rename it onto `path`. The file gets the mode open() would give a new file
    (0o666 minus the umask).

    If the block raises (Ctrl-C included), the temporary file is removed and whatever was at
    `path` before is untouched, so a crash never leaves a half-written file in its place."""
    path = check_target(path)
    remove_stale_parts(path)
    fd, tmp = _create_temp(path)
    _WRITING.add(str(tmp))
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
    finally:
        _WRITING.discard(str(tmp))
    if fsync:
        _fsync_folder(path.parent)


def check_target(path):
    """path as a Path, once it is known that a file may be written there: nothing there yet,
    or a regular file. A folder, a device (/dev/null), a FIFO or a socket is an OSError: the
    rename would put a regular file in its place."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder; give a file name to write "
                                              f"to", str(path))
    try:
        kind = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError:
        return path  # unreadable: the write itself will say why
    if not stat.S_ISREG(kind):
        raise OSError(errno.EINVAL, f"{path} is not a regular file (a device, a FIFO or a "
                                    f"socket), and writing would replace it; give a file name "
                                    f"to write to", str(path))
    return path


def _create_temp(path):
    """(fd, name) of a new, empty temporary .part file beside path, locked before it is named
    .part (where flock exists). O_EXCL: never an existing file (nor a symlink planted there);
    mode 0o666 lets the umask decide, as open() does."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    locking = _has_flock()
    while True:
        stem = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp = path.with_name(stem + ".part")
        made = path.with_name(stem + ".init") if locking else tmp
        try:
            fd = os.open(made, flags, 0o666)
        except FileExistsError:
            continue
        if made == tmp:
            return fd, tmp
        try:
            _lock(fd)
            os.rename(made, tmp)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(made)
            raise
        return fd, tmp


def remove_stale_parts(path):
    """Remove the .part (and .init) files of earlier writes of `path` whose writer process is
    gone: a .part of ours that no process holds a lock on at once, whatever its age and PID."""
    path = Path(path)
    pid_or_legacy = r"(?:(\d+)\.[0-9a-f]{8}|([a-z0-9_]{8}))"    # ours, or tempfile.mkstemp's
    pattern = re.compile(re.escape(f".{path.name}.") + pid_or_legacy + r"\.(part|init)")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if not match:
            continue
        part = path.parent / name
        with contextlib.suppress(OSError):
            if str(part) in _WRITING:
                continue
            unlocked = _unlocked(part)
            if unlocked is False:       # a live writer holds it
                continue
            if unlocked and match[1] is not None and match[3] == "part":
                part.unlink()           # locked before it was named .part: its writer is gone
                continue
            if unlocked and time.time() - part.stat().st_mtime > _GRACE:
                part.unlink()           # no writer holds it (whatever its PID says)
                continue
            if match[1] is not None and int(match[1]) == os.getpid():
                # ours: stale unless this process is writing it now (a container gives every
                # run the same PID, so an earlier, killed run's file can carry ours)
                stale = str(part) not in _WRITING
            elif match[1] is not None:
                stale = not _process_alive(int(match[1]))
            else:   # tempfile.mkstemp's name, from before the PID was in it: judge by age
                stale = time.time() - part.stat().st_mtime > _LEGACY_AGE
            if stale:
                part.unlink()


def _has_flock():
    try:
        import fcntl
    except ImportError:
        return False
    return hasattr(fcntl, "flock")


def _lock(fd):
    """Hold an exclusive advisory lock on fd (a no-op where flock does not exist)."""
    try:
        import fcntl
    except ImportError:
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlocked(part):
    """True when no process holds a lock on the file part, False when one does, None where
    flock cannot tell (no fcntl)."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(part, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)
    return True


def _process_alive(pid):
    """True unless process pid surely does not exist (where that cannot be told: True)."""
    if os.name != "posix" or pid <= 0:
        return True     # on Windows os.kill would end the process, not probe it
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:     # PermissionError: it exists, under another user
        return True
    return True


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX; elsewhere a no-op)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
