"""minisae.files.atomic.atomic_write: whole files or none, umask-honouring modes, stale .part
files cleaned."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minisae import SparseAutoencoder
from minisae.files import checkpoint as ck
from minisae.data.datasets import write_idx
from minisae.errors import CheckpointError
from minisae.files.atomic import atomic_write, remove_stale_parts

posix_only = pytest.mark.skipif(os.name != "posix", reason="modes, PIDs and fork are POSIX")


def parts(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_writes_whole_file(tmp_path):
    with atomic_write(tmp_path / "a.txt", "w") as f:
        f.write("hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failure_keeps_the_old_file_and_leaves_no_part(tmp_path):
    (tmp_path / "a").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "a") as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert (tmp_path / "a").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_writing_onto_a_fifo_or_device_is_refused_and_leaves_it_be(tmp_path):
    """A review sweep found `minisae bench --json /dev/null` replacing /dev/null with a regular
    file: the rename put the finished file in the device's place. A FIFO stands in here for
    every file that is not a regular one (making a device needs root)."""
    import stat
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        with atomic_write(fifo) as f:
            f.write(b"x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]
    with pytest.raises(CheckpointError, match="not a regular file") as e:
        ck.save(fifo, SparseAutoencoder(3, 2))
    assert "\n" not in str(e.value) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    if os.path.exists("/dev/null"):  # refused without touching it: nothing is written
        with pytest.raises(OSError, match="not a regular file"):
            with atomic_write("/dev/null"):
                raise AssertionError("the block must not run")
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_modes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a", fsync=True) as f:
            f.write(b"x")
        ck.save(tmp_path / "c.npz", SparseAutoencoder(3, 2))
        write_idx(tmp_path / "i.gz", np.zeros(3, np.uint8))
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    for name in ("a", "c.npz", "i.gz", "plain"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_writing_onto_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_write(tmp_path / "d") as f:
            f.write(b"x")
    assert os.listdir(tmp_path) == ["d"] and os.listdir(tmp_path / "d") == []
    with pytest.raises(CheckpointError, match="is a folder") as e:
        ck.save(tmp_path / "d", SparseAutoencoder(3, 2))
    assert "\n" not in str(e.value)


@posix_only
def test_stale_parts_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    import fcntl
    target = tmp_path / "c.npz"
    dead, live = dead_pid(), os.getppid()
    stale = tmp_path / f".c.npz.{dead}.0123abcd.part"
    running = tmp_path / f".c.npz.{live}.0123abcd.part"
    unheld = tmp_path / f".c.npz.{live}.4567abcd.part"
    mine = tmp_path / f".c.npz.{os.getpid()}.0123abcd.part"
    other_target = tmp_path / f".d.npz.{dead}.0123abcd.part"
    legacy_old, legacy_new = tmp_path / ".c.npz.k2j_9x0a.part", tmp_path / ".c.npz.zz81_qpa.part"
    starting, init_dead = tmp_path / f".c.npz.{live}.89abcdef.init", \
        tmp_path / f".c.npz.{dead}.89abcdef.init"
    for p in (stale, running, unheld, mine, other_target, legacy_old, legacy_new, starting,
              init_dead):
        p.write_bytes(b"half")
    held = os.open(running, os.O_RDONLY)        # a live writer holds its .part's lock
    fcntl.flock(held, fcntl.LOCK_EX)
    two_hours_ago = time.time() - 7200
    os.utime(legacy_old, (two_hours_ago, two_hours_ago))
    try:
        with atomic_write(target) as f:
            f.write(b"whole")
    finally:
        os.close(held)
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and not legacy_old.exists() and not init_dead.exists()
    assert running.exists() and other_target.exists() and legacy_new.exists()
    # a young .init of a live PID may be a writer about to lock it: kept
    assert starting.exists()
    # a .part of ours nobody holds is stale at once, whatever its age and PID says: a writer
    # locks its file before naming it .part
    assert not unheld.exists()
    # our PID but not being written: an earlier run's (in a container every run is PID 1)
    assert not mine.exists()
    remove_stale_parts(tmp_path / "d.npz")
    assert not other_target.exists()


@posix_only
@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/stat"),
                    reason="needs fork and /proc")
@pytest.mark.parametrize("where", ["created", "half written", "written", "synced"])
def test_a_writer_killed_and_not_yet_reaped_leaves_no_part_after_the_next_save(tmp_path, where):
    """Issue 27's reliability case: a writer killed mid-save, and a later save of the same
    path at once (within seconds, its PID not yet reaped: a zombie, which os.kill(pid, 0) still
    finds, or a PID alive in another container) left the .part behind. The lock decides."""
    target = tmp_path / "c.npz"
    model = SparseAutoencoder(3, 2)
    ck.save(target, model)
    pid = os.fork()
    if pid == 0:    # the child: start a save, die inside it
        try:
            with atomic_write(target, fsync=True) as f:
                if where != "created":
                    f.write(b"half a checkpoint")
                    f.flush()
                if where in ("written", "synced"):
                    f.write(b" and the rest")
                    f.flush()
                if where == "synced":
                    os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:   # dead (a zombie: not reaped), its .part left behind
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert len(parts(tmp_path)) == 1
        ck.save(target, model)
        assert parts(tmp_path) == [], where
    finally:
        os.waitpid(pid, 0)
    assert ck.load(target).model.config == model.config


def test_a_part_this_process_is_writing_is_kept(tmp_path):
    target = tmp_path / "c.npz"
    with atomic_write(target) as f:
        f.write(b"half")
        (part,) = tmp_path.glob(".c.npz.*.part")
        remove_stale_parts(target)  # as another save of the same file, in another thread
        assert part.exists()
    assert target.read_bytes() == b"half" and not part.exists()


@posix_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_saves_killed_mid_write_leave_at_most_one_part(tmp_path):
    """SIGKILL gives no chance to clean up; each next save removes the leftovers."""
    target = tmp_path / "c.npz"
    model = SparseAutoencoder(3, 2)
    ck.save(target, model)
    good = target.read_bytes()
    for _ in range(4):
        pid = os.fork()
        if pid == 0:    # the child: start a save, die inside it
            try:
                with atomic_write(target) as f:
                    f.write(b"half a checkpoint")
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        assert target.read_bytes() == good
        assert len(parts(tmp_path)) == 1
    ck.save(target, model)
    assert parts(tmp_path) == [] and ck.load(target).model.config == model.config


def test_a_killed_writers_part_is_removed_even_when_its_pid_lives_on(tmp_path):
    # a writer killed mid-write loses its lock; its PID may be reused by another process (a
    # container's runs all have the same PID): the lock, not the PID, says it is stale
    import subprocess
    import sys
    target = tmp_path / "c.npz"
    code = ("import os, signal, sys; from minisae.files.atomic import atomic_write\n"
            f"with atomic_write({str(target)!r}) as f:\n"
            "    f.write(b'half'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    (part,) = tmp_path.glob(".c.npz.*.part")
    renamed = part.with_name(f".c.npz.{os.getppid()}.{part.name.split('.')[-2]}.part")
    part.rename(renamed)                       # as if the dead writer's PID now lived again
    old = time.time() - 60
    os.utime(renamed, (old, old))
    with atomic_write(target) as f:
        f.write(b"whole")
    assert not renamed.exists() and target.read_bytes() == b"whole"


def test_a_live_writers_part_is_kept(tmp_path):
    import subprocess
    import sys
    target = tmp_path / "c.npz"
    code = ("import sys, time; from minisae.files.atomic import atomic_write\n"
            f"with atomic_write({str(target)!r}) as f:\n"
            "    f.write(b'half'); f.flush(); print('writing', flush=True); time.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        (part,) = tmp_path.glob(".c.npz.*.part")
        old = time.time() - 60
        os.utime(part, (old, old))
        remove_stale_parts(target)
        assert part.exists()                    # its writer holds the lock
    finally:
        p.kill()
        p.wait()


def test_a_run_folder_is_held_by_one_writer(tmp_path):
    import subprocess
    import sys
    from minisae.errors import ConfigError
    from minisae.files.lock import NAME, RunLock
    folder = tmp_path / "run"
    with RunLock(folder) as lock:
        assert lock.held and (folder / NAME).exists()
        with pytest.raises(ConfigError, match="being written by another minisae run"):
            RunLock(folder).__enter__()   # a second writer (same process: flock is per file)
    assert not (folder / NAME).exists()
    # a writer that died holding it: its successor takes it over
    code = ("import os, signal; from minisae.files.lock import RunLock\n"
            f"RunLock({str(folder)!r}).__enter__(); os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (folder / NAME).exists()
    with RunLock(folder) as lock:
        assert lock.held
