"""Data-parallel training on torch.distributed: the communicator of a run of several processes,
and a local launcher. The one module of minisae that imports torch.distributed (PyTorch is
the optional extra `minisae[distributed]`; without it, everything else works).

    torchrun --nproc-per-node 2 -m minisae train --preset book        # as the field launches
    minisae train --preset book --workers 2                           # the same, started here

Each process (rank) calls `join()`, which reads torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and returns a TorchComm, or
comm.Alone() when there is no such environment, and builds its model with it:

    comm = minisae.distributed.join()
    model = minisae.SparseAutoencoder(784, 1000, comm=comm)
    minisae.fit(model, opt, x, epochs=10, batch_size=256)   # batch_size: the global batch

What the communicator carries and why is minisae/comm.py's story; this module moves the bytes.
NumPy arrays go to torch.distributed without a copy (torch.from_numpy shares their memory),
CuPy arrays through DLPack (torch.from_dlpack); gloo on the CPU, NCCL on CUDA. Every
collective waits at most `timeout` seconds; a rank that stops (killed, interrupted, an error)
closes its connections, and the others' next collective fails at once with a CommError, so
that every rank ends with one line instead of hanging.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np

from . import checks
from .backend import array_module, from_dlpack, library, select_gpu, to_numpy
from .comm import Alone, share_of
from .errors import CommError, ConfigError

TIMEOUT = 300.0
"""Seconds a collective may wait for the other ranks before the run stops (a rank that died
is noticed at once: its connections close). Long enough for rank 0 to write a checkpoint and
for every rank to evaluate the held-out set, which they do together."""

ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun (and `minisae train --workers`) set for each rank."""


def launched():
    """True inside a process that torchrun (or --workers) started as a rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def join(timeout=TIMEOUT, backend=None, shard=False):
    """This process's communicator: a TorchComm when torchrun's environment says it is one
    rank of several (its process group made here: gloo, or NCCL for a GPU with backend="nccl"),
    else comm.Alone(). timeout: seconds a collective may wait for the others. shard=True: a
    Shards instead, the dictionary's units split over the ranks, every rank taking the whole
    batch (build the model with it, or split a whole one with `shard`)."""
    timeout = checks.check_real(timeout, "timeout", 0.0, low_open=True)
    shard = checks.check_bool(shard, "shard")
    if not launched():
        return Alone()
    missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but not {', '.join(missing)}: start the ranks with "
                          f"torchrun, or with `minisae train --workers N`")
    return (Shards if shard else TorchComm)(timeout, backend)


class TorchComm(Alone):
    """A communicator on torch.distributed (the methods of comm.Alone, moving bytes): data
    parallel, each rank its share of every batch's rows, every unit on every rank (so the
    methods about units are Alone's: nothing to add up)."""

    splits = "rows"

    def __init__(self, timeout=TIMEOUT, backend=None):
        self.torch, self.dist = _import_torch()
        self.timeout = float(timeout)
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        backend = backend or "gloo"
        checks.check_choice(backend, "backend", ("gloo", "nccl"))
        if backend == "nccl":  # one GPU a rank, for CuPy and for torch
            gpus = self.torch.cuda.device_count()
            if self.local_size > gpus:
                raise ConfigError(f"{self.local_size} ranks on this machine but {gpus} GPU(s): "
                                  f"NCCL needs a GPU for each; start at most {gpus} here, or "
                                  f"train on the CPU (--backend numpy, over gloo)")
            select_gpu(self.local_rank)
        if not self.dist.is_initialized():  # (a second communicator shares the group)
            self._run("joining the other ranks", lambda: self.dist.init_process_group(
                backend, timeout=timedelta(seconds=self.timeout)))
        self.backend = backend
        self.rank, self.size = self.dist.get_rank(), self.dist.get_world_size()
        self.rows, self.share = None, None
        self.seconds, self.bytes = 0.0, 0
        """Time spent in collectives (waiting for the others included), and the bytes this
        rank put into them, since it joined (fit records each epoch's)."""

    # ------------------------------------------------------------------ the collectives

    def begin(self, rows):
        t = self.torch.tensor([int(rows)], dtype=self.torch.int64, device=self._device())
        self._run("summing the batch's rows", lambda: self.dist.all_reduce(t))
        self.rows = int(t.item())
        self.share = rows / self.rows

    def batch_mean(self, a):
        return self._summed(_array_of(a * self.share))  # the product is already a new array

    def sum(self, a):
        return self._summed(_fresh(a))

    def _summed(self, a):
        """a (a new contiguous array, overwritten) summed over the ranks."""
        self._run("a sum over the ranks", lambda: self._all_reduce(a).wait())
        return a

    def gather(self, a):
        return self._gathered(a, 0)

    def _gathered(self, a, axis):
        """The ranks' arrays a (of one shape), end to end along axis."""
        t = self._tensor(a)
        if self.backend == "nccl" and t.device.type == "cpu":  # NCCL gathers GPU memory only
            t = t.cuda()
        parts = [self.torch.empty_like(t) for _ in range(self.size)]
        self._run("gathering from the ranks", lambda: self.dist.all_gather(parts, t))
        whole = self.torch.cat(parts, dim=axis)
        return self._array(whole.cpu() if library(a) == "numpy" else whole, a)

    def parts(self, a, to=None):
        """The ranks' 1-d arrays, whose lengths may differ: padded to the longest, gathered,
        and cut back. to=0: to rank 0 alone (the others get None), which alone holds them."""
        xp = array_module(a)
        lengths = self._gathered(np.array([a.shape[0]], dtype=np.int64), 0).tolist()
        longest = max(lengths)
        padded = xp.zeros(longest, dtype=a.dtype)
        padded[:a.shape[0]] = a
        if to is None:
            whole = self._gathered(padded, 0)
            return [whole[r * longest:r * longest + n] for r, n in enumerate(lengths)]
        t = self._tensor(padded)
        if self.backend == "nccl" and t.device.type == "cpu":
            t = t.cuda()
        into = [self.torch.empty_like(t) for _ in range(self.size)] if self.rank == to else None
        self._run("gathering to one rank", lambda: self.dist.gather(t, into, dst=to))
        if into is None:
            return None
        return [self._array(p.cpu() if library(a) == "numpy" else p, a)[:n]
                for p, n in zip(into, lengths)]

    def part(self, n):
        return share_of(n, self.rank, self.size)

    def combine(self, loss, flat_grads):
        _check_contiguous(flat_grads, "the flat gradient")
        flat_grads *= self.share
        names, values = loss.names, loss.values()
        parts = _stacked([values[name] for name in names], flat_grads) * self.share

        def reduce():  # both at once: the small one's latency hides behind the big one
            for work in [self._all_reduce(flat_grads), self._all_reduce(parts)]:
                work.wait()
        self._run("combining the gradients", reduce)
        return loss.with_parts({name: parts[i] for i, name in enumerate(names)})

    def broadcast(self, a):
        _check_contiguous(a, "an array to broadcast")

        def send():
            t = self._tensor(a)
            on = t.cuda() if self.backend == "nccl" and t.device.type == "cpu" else t
            self.dist.broadcast(on, 0)
            if on is not t:
                t.copy_(on)
        self._run("broadcasting rank 0's values", send)
        return a

    def agree(self, ok):
        """True when every rank says ok (a barrier: a rank that failed to set up stops them
        all here, not at the first step)."""
        t = self.torch.tensor([1 if ok else 0], dtype=self.torch.int64, device=self._device())
        self._run("checking that every rank is ready",
                  lambda: self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN))
        return bool(t.item())

    def close(self):
        """Leave the process group (after the last collective)."""
        if self.dist.is_initialized():
            try:
                self.dist.destroy_process_group()
            except RuntimeError:
                pass

    # ------------------------------------------------------------------ arrays and errors

    def _device(self):
        return "cuda" if self.backend == "nccl" else "cpu"

    def _all_reduce(self, a):
        """Start summing a (an array) over the ranks, in place; returns what to wait() on.
        NCCL reduces only GPU memory: a host array goes there and back."""
        t = self._tensor(a)
        if self.backend != "nccl" or t.device.type != "cpu":
            return self.dist.all_reduce(t, async_op=True)
        on = t.cuda()
        self.dist.all_reduce(on)
        t.copy_(on)
        return _Done()

    def _tensor(self, a):
        """A tensor sharing a's memory (no copy)."""
        self.bytes = getattr(self, "bytes", 0) + int(a.nbytes)
        kind = library(a)
        if kind == "numpy":
            return self.torch.from_numpy(np.ascontiguousarray(a))
        if kind == "torch":
            return a
        # CuPy; a collective reads (or writes) one block: an array written into in place is
        # checked to be one before it comes here, so this copies only what is read
        return self.torch.from_dlpack(array_module(a).ascontiguousarray(a))

    def _array(self, t, like):
        """t as an array of like's library."""
        kind = library(like)
        if kind == "numpy":
            return t.numpy()
        return t if kind == "torch" else from_dlpack(t, like)

    def _run(self, what, f):
        t0 = time.perf_counter()
        try:
            return f()
        except RuntimeError as e:  # gloo's and NCCL's errors (DistError, or plain RuntimeError
            # from an asynchronous collective's wait); the reason says which it was
            rank = getattr(self, "rank", os.environ.get("RANK", "?"))
            size = getattr(self, "size", os.environ.get("WORLD_SIZE", "?"))
            reason = _reason(e)
            raise CommError(f"rank {rank} of {size}: {what} failed ({reason}): another rank "
                            f"stopped, or did not answer within {self.timeout:g} s") from None
        finally:
            self.seconds = getattr(self, "seconds", 0.0) + time.perf_counter() - t0

    def __repr__(self):
        return f"TorchComm(rank {self.rank} of {self.size}, {self.backend})"


class Shards(TorchComm):
    """A sharded dictionary's communicator: the units split over the ranks, the rows whole.

    Rank r holds the units share_of(n_hidden, r, N) (`units`), takes every batch whole (no
    share of the rows: `begin`, `batch_mean` and `sum`, sums over the rows' holders, have
    nothing to do), and adds its partial sums over units to the other ranks' (`units_sum`).
    What crosses ranks, and why every rank's gradient is then its units' whole gradient:
    minisae/comm.py. The model of a rank is built with it (SparseAutoencoder(..., comm=it))
    or split from a whole one (`shard`); `whole` puts the ranks' units back together."""

    splits = "units"
    # every rank holds every row: the sums over the rows' holders are one process's
    begin, batch_mean, sum, part = Alone.begin, Alone.batch_mean, Alone.sum, Alone.part

    def combine(self, loss, flat_grads):
        """Each rank's gradient is already the batch's, for its own units; the loss's parts
        are every rank's (its penalties summed over all units). What is left: the mean
        activation over all the units, which the history records."""
        rho_hat = loss.rho_hat
        if rho_hat is None:
            return loss
        xp = array_module(rho_hat)
        both = self.units_sum(xp.stack([xp.sum(rho_hat), xp.asarray(float(rho_hat.shape[0]),
                                                                    dtype=rho_hat.dtype)]))
        return loss.with_mean_activation(both[0] / both[1])

    def units(self, n):
        return share_of(n, self.rank, self.size)

    def units_sum(self, a):
        """a (an array this call may overwrite, or a number) summed over the ranks."""
        if library(a) is None or np.isscalar(a):
            a = np.array(a, dtype=np.float64)
        elif not _writable_block(a):
            a = _fresh(a)
        self._run("summing over the units' ranks", lambda: self._all_reduce(a).wait())
        return a

    def units_gather(self, a):
        return self._gathered(a, a.ndim - 1)

    def units_whole(self, a):
        return array_module(a).concatenate(self.parts(a))

    def __repr__(self):
        return f"Shards(rank {self.rank} of {self.size}, {self.backend})"


# ----------------------------------------------------------------------------- a dictionary's parts

def shard(model, optimizer, comm, backend=None):
    """This rank's part of a whole model (and of its optimizer's state): a model of the same
    settings holding the units comm.units(n_hidden) (comm: a Shards), their weights, silent
    counts and optimizer moments copied from the whole; what every rank holds (b2, BatchTopK's
    threshold, the normalizer, the step count) copied whole. Returns (model, optimizer);
    optimizer may be None. backend: where the part goes (default: the whole model's; a whole
    model on the host, "numpy", can so be split onto GPUs too small for it). No collective:
    every rank splits the same whole model (a checkpoint each read) alike."""
    from .model import SparseAutoencoder, select_units
    _check_model(model)
    if model.units != (0, model.config.n_hidden):
        raise ConfigError(f"shard takes a whole model; this one holds units {model.units[0]} "
                          f"to {model.units[1]}: put it together with whole() first")
    _check_optimizer(model, optimizer)
    part = SparseAutoencoder(**model.config.as_dict(), comm=comm,
                             backend=model.backend if backend is None else backend)
    first, last = part.units
    _copy(select_units(_host(model.params), first, last), part.params, part.backend)
    _copy_units(model, part, model.silent[first:last], _host(model.dead)[first:last])
    states = {slot: select_units(_host(getattr(optimizer, slot)), first, last)
              for slot in getattr(type(optimizer), "SLOTS", ())}
    return part, _moved_optimizer(optimizer, part, states)


def whole(model, optimizer=None):
    """Every rank's units put back together (every rank calls it: collectives): on rank 0, a
    model of the whole dictionary on the host (NumPy, alone: comm.Alone), and its optimizer,
    the state of the ranks' parts end to end; on the other ranks (None, None). A model that
    holds every unit is given back as it is. An optimizer that is not this model's is
    refused on every rank at once (a ConfigError), before anything is gathered."""
    from .model import SparseAutoencoder
    _check_model(model)
    comm = model.comm
    if model.units == (0, model.config.n_hidden):
        return model, optimizer
    try:
        _check_optimizer(model, optimizer)
        problem = None
    except ConfigError as e:
        problem = e
    if not comm.agree(problem is None):  # every rank stops here, none waits in a gather
        raise problem or ConfigError(f"rank {comm.rank} of {comm.size}: another rank's "
                                     f"optimizer is not its model's (its line says so)")
    params = _joined(comm, _host(model.params))  # on rank 0 alone (None on the others)
    silent, dead = (comm.parts(a.astype(np.float64), to=0)
                    for a in (model.silent, _host(model.dead)))
    states = {slot: _joined(comm, _host(getattr(optimizer, slot)))
              for slot in getattr(type(optimizer), "SLOTS", ())}
    if comm.rank != 0:
        return None, None
    silent, dead = np.concatenate(silent).astype(np.int64), np.concatenate(dead) > 0
    full = SparseAutoencoder(**model.config.as_dict(), backend="numpy")
    _copy(params, full.params, full.backend)
    _copy_units(model, full, silent, dead)
    return full, _moved_optimizer(optimizer, full, states)


def _check_optimizer(model, optimizer):
    """optimizer is None, or a minibatch optimizer (Adam, SGD) built on model's parameters."""
    if optimizer is None:
        return
    params = getattr(optimizer, "params", None)
    if not (hasattr(type(optimizer), "SLOTS") and isinstance(params, dict)):
        raise ConfigError(f"optimizer must be a minibatch optimizer of the model (Adam, SGD), "
                          f"got {type(optimizer).__name__}")
    if set(params) != set(model.params) or \
            not all(params[name] is model.params[name] for name in model.params):
        raise ConfigError("the optimizer was not built on this model's parameters; give the "
                          "model's own (Adam(model.params, model.grads))")


def _check_model(model):
    from .model import SparseAutoencoder
    if not isinstance(model, SparseAutoencoder):
        raise ConfigError(f"model must be a SparseAutoencoder, got {type(model).__name__}")


def _host(arrays):
    """A named array (or one array) as NumPy arrays."""
    if isinstance(arrays, dict):
        return {name: np.asarray(to_numpy(a)) for name, a in arrays.items()}
    return np.asarray(to_numpy(arrays))


def _copy(arrays, into, backend):
    for name, a in arrays.items():
        into[name][...] = backend.asarray(np.ascontiguousarray(a))


def _copy_units(source, target, silent, dead):
    """The units' training state (silent counts, AuxK's dead set) and what every rank holds
    alike (BatchTopK's threshold, the normalizer) from source to target."""
    target.silent[...] = silent
    target.dead[...] = target.backend.asarray(np.asarray(dead), dtype=target.backend.xp.bool)
    if hasattr(source.coding, "threshold"):
        target.coding.threshold[...] = target.backend.asarray(
            np.asarray(to_numpy(source.coding.threshold)))
    target.normalizer = source.normalizer


def _moved_optimizer(optimizer, model, states):
    """An optimizer of optimizer's kind and settings on model, its step count kept and its
    state {slot: {name: array}} copied in (None for None)."""
    if optimizer is None:
        return None
    kind = type(optimizer)
    settings = {name: getattr(optimizer, name) for name in getattr(kind, "SETTINGS", ())}
    moved = kind(model.params, model.grads, **settings)
    moved.t = optimizer.t
    for slot, arrays in states.items():
        _copy(arrays, getattr(moved, slot), model.backend)
    return moved


def _joined(comm, arrays):
    """{name: the whole array}, on rank 0 (None on the others): each named array's units
    from every rank, end to end along its unit axis (config.UNIT_AXIS); an array without
    units, rank 0's."""
    from .config import UNIT_AXIS
    out = {}
    for name, a in arrays.items():
        axis = UNIT_AXIS[name]
        if axis is None:
            out[name] = a
            continue
        rows = np.ascontiguousarray(np.moveaxis(a, axis, 0))  # the units first
        parts = comm.parts(rows.reshape(-1), to=0)
        if parts is not None:
            blocks = [p.reshape((-1,) + rows.shape[1:]) for p in parts]
            out[name] = np.moveaxis(np.concatenate(blocks), 0, axis)
    return out if comm.rank == 0 else None


def _writable_block(a):
    """True for an array a collective may write into: one contiguous, writable block."""
    if library(a) == "torch":
        return a.is_contiguous()
    flags = getattr(a, "flags", None)
    return flags is not None and flags.c_contiguous and getattr(flags, "writeable", True)


def _check_contiguous(a, what):
    """Collectives write in place: into a itself only when it is one contiguous block."""
    flags = getattr(a, "flags", None)
    contiguous = a.is_contiguous() if library(a) == "torch" else \
        flags is not None and flags.c_contiguous
    if not contiguous:
        raise ConfigError(f"{what} must be one contiguous array for a collective to write "
                          f"into it (a model's flat_params and flat_grads are)")


def use_local_gpu():
    """Select this rank's GPU (LOCAL_RANK's) before anything makes a CUDA context on GPU 0."""
    select_gpu(int(os.environ.get("LOCAL_RANK", 0) or 0))


def _reason(error):
    """torch.distributed's message, short: without gloo's source locations, its first
    sentence."""
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*", "", " ".join(str(error).split()))
    return text.split(". ")[0].rstrip(".")[:200]


class _Done:
    """A collective already finished."""

    def wait(self):
        return True


def _stacked(values, like):
    """Numbers and 0-d arrays as one float64 vector where `like` lives: on a GPU for CuPy,
    so that a step does not wait for the device to read its loss; on the host otherwise."""
    if library(like) == "cupy":
        xp = array_module(like)
        return xp.stack([xp.asarray(v, dtype=xp.float64) for v in values])
    return np.array([float(v) for v in values], dtype=np.float64)


def _array_of(a):
    """A number (or NumPy scalar) as a 0-d NumPy array; an array as it is."""
    return np.asarray(a) if library(a) is None or np.isscalar(a) else a


def _fresh(a):
    """a as a new contiguous array of its library (a number becomes a 0-d NumPy array), which
    a collective may overwrite."""
    if library(a) is None:
        return np.array(a, dtype=np.float64)
    if library(a) == "numpy":
        return np.array(a, copy=True)
    return a.clone() if library(a) == "torch" else a.copy()


def _import_torch():
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise ConfigError("training on several processes needs PyTorch (torch.distributed): "
                          "pip install 'minisae[distributed]'") from None
    if not dist.is_available():
        raise ConfigError("this PyTorch was built without torch.distributed; install a build "
                          "that has it (the wheels on PyPI do)")
    return torch, dist


# ----------------------------------------------------------------------------- the launcher

def free_port():
    """A TCP port free on this machine now (rank 0 listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv, workers, grace=TIMEOUT, module="minisae"):
    """`python -m minisae argv...` (or another module) as `workers` ranks on this machine, as torchrun
    --nproc-per-node would start them; waits for every one. Returns 0 when all succeeded,
    else the first non-zero exit status. When one fails, the others stop on their own (their
    next collective fails), and any still running after `grace` seconds is ended. Ctrl-C
    reaches every rank (they print what was saved) and returns 130."""
    workers = checks.check_int(workers, "workers", 1)
    port = free_port()
    procs = []

    def terminate(signum, frame):  # a scheduler's SIGTERM: the ranks get it too
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)
    try:
        for rank in range(workers):
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
                   "WORLD_SIZE": str(workers), "LOCAL_WORLD_SIZE": str(workers),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            # a session of their own: a terminal's Ctrl-C reaches this process alone, which
            # passes it on once (two SIGINTs could land in a rank's own Ctrl-C handling)
            procs.append(subprocess.Popen([sys.executable, "-m", module, *argv], env=env,
                                          start_new_session=True))
        return _wait(procs, grace)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: the ranks are stopping
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        _wait(procs, grace)
        return 130
    finally:
        for p in procs:  # an error here (a rank that could not start): none left behind
            if p.poll() is None:
                p.kill()


def _wait(procs, grace):
    """Wait for every process; after the first failure, give the rest `grace` seconds."""
    failed_at = None
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            code = next((c for c in codes if c), 0)
            return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells say
        if failed_at is None and any(c for c in codes if c is not None):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > grace:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.05)
