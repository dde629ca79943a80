"""A run holds its folder while it writes: a lock file a second writer sees.

    with RunLock("runs/book"):        # refuses if another live minisae process holds it
        ...write the run's files...

The lock is a file, <folder>/.minisae.lock, created with O_EXCL and holding an advisory lock
(flock) for as long as the run lives, plus the writer's PID and host for the message. A
second writer finds the flock held and refuses with a sentence naming the folder and the
PID. A writer that died (killed, crashed) lost its flock with its process: its successor
takes the lock file over. Where flock does not exist, a PID on this host that is no longer
running counts as dead.

A run that fails (an error, Ctrl-C) leaves no folder it made behind: the folders the lock
created (the run's, and those above it that did not exist) are removed on the way out when
they hold nothing, so a run that failed before its first checkpoint leaves nothing, and one
that failed later keeps its folder and what it saved there.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket

from ..errors import ConfigError
from .atomic import _process_alive

NAME = ".minisae.lock"


class RunLock:
    """Hold `folder` for one writer (a context manager; `held` while inside)."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, NAME)
        self._fd = None
        self._created = []

    def __enter__(self):
        self._created = _missing(self.folder)
        try:
            os.makedirs(self.folder, exist_ok=True)
            return self._take()
        except PermissionError as e:  # the folder, or one above it, is not ours to write
            self._remove_created()
            raise ConfigError(f"{e.filename or self.folder}: cannot be written ({e.strerror}); "
                              f"check its permissions, or choose another --out") from None
        except BaseException:
            self._remove_created()
            raise

    def _take(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                if self._taken_over():
                    continue
                raise ConfigError(self._refusal()) from None
            if not _flock(fd):
                os.close(fd)
                raise ConfigError(self._refusal())
            self._fd = fd
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
            return self
        raise ConfigError(self._refusal())

    def __exit__(self, kind, *exc):
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None
        if kind is not None:
            self._remove_created()

    def _remove_created(self):
        """Remove the folders this lock created, the deepest first, while they are empty."""
        for folder in self._created:
            try:
                os.rmdir(folder)
            except OSError:
                break
        self._created = []

    @property
    def held(self):
        return self._fd is not None

    def _owner(self):
        with contextlib.suppress(OSError, ValueError):
            with open(self.path) as f:
                return json.load(f)
        return {}

    def _taken_over(self):
        """Remove the lock file of a writer that is gone; True if it was removed."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            free = _flock(fd)
            if free is None:  # no flock here: judge by the PID
                owner = self._owner()
                free = owner.get("host") == socket.gethostname() and \
                    not _process_alive(int(owner.get("pid", 0)))
            if free:
                os.unlink(self.path)
            return bool(free)
        finally:
            os.close(fd)

    def _refusal(self):
        owner = self._owner()
        who = f"process {owner['pid']} on {owner.get('host', '?')}" if "pid" in owner else \
            "another process"
        return (f"{self.folder} is being written by another minisae run ({who}); wait for it to "
                f"finish, or choose another --out")


def _missing(folder):
    """The folders os.makedirs(folder) would create, the deepest first."""
    missing, folder = [], os.path.abspath(folder)
    while not os.path.lexists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _flock(fd):
    """Take an exclusive advisory lock on fd: True if taken, False if another process holds
    it, None where flock does not exist."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
