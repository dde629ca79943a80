"""Adam over one flat buffer: Adam.step's update in one fused pass where it can be compiled,
in cache-sized chunks of NumPy passes where not, as one kernel on CuPy.

    fast_opt = FastAdam(opt)      # opt: a reference minisae.Adam; its own m, v and t are used
    fast_opt.step()               # what opt.step() does

Reproduces minisae.optim.Adam.step (the paper's Algorithm 1) for parameters that are views
of one flat buffer, as a SparseAutoencoder's are; tests/test_fast.py checks that every
variant gives the reference's numbers. The state stays the reference optimizer's (its m, v
and t), so a run saved from one path resumes on the other. The rewrites:

- the bias corrections move onto two scalars (see `step_constants`) instead of two passes
  over m and v;
- on NumPy with numba installed (the `fast` extra), the whole update is one compiled loop:
  each element of p, g, m, v is read once and p, m, v written once, 3x faster than twelve
  NumPy passes (BENCHMARKS.md). Without numba, or with MINISAE_NUMBA=0 in the environment,
  the twelve passes run over chunks that stay in cache;
- either can be split across threads (numba's loop and NumPy's ufuncs release the GIL); the
  thread policy (threads.py) gives one, since a second thread loses to OpenBLAS's spinning
  worker on the machines measured.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import checks
from ..backend import array_module, flat_owner
from ..errors import ConfigError
from ..optim import Adam
from .kernels import cupy_kernel, numba_loops
from .threads import MAX_THREADS

_ADAM_KERNEL = {
    "adam": ("T g, T a, T e, T b1, T b2", "T p, T m, T v",
             "m = b1 * m + (1 - b1) * g;"
             "v = b2 * v + (1 - b2) * g * g;"
             "p -= a * m / (sqrt(v) + e);"),
}

KERNELS = ("numba", "numpy")


def numba_adam():
    """The compiled fused Adam loop (numba, compiled on first use and cached on disk), or None
    where numba is not installed or MINISAE_NUMBA=0."""
    loops = numba_loops("adam", _adam_loop)
    return None if loops is None else loops[0]


def _adam_loop(p, g, m, v, b1, b2, c1, c2, a, e):
    # One pass, in the reference's order of operations (no fast-math: no reassociation, no
    # fused multiply-add), so m and v come out bit for bit as Adam.step's.
    # c1 = 1 - b1, c2 = 1 - b2; error_model="numpy" lets the loop vectorise (no zero check).
    for i in range(p.size):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi              # m = b1 m + (1 - b1) g
        vi = b2 * v[i] + c2 * gi * gi         # v = b2 v + (1 - b2) g^2
        m[i] = mi
        v[i] = vi
        p[i] -= mi / (np.sqrt(vi) + e) * a    # p -= a m / (sqrt(v) + e)


def step_constants(lr, betas, eps, t):
    """lr * m_hat / (sqrt(v_hat) + eps) = a * m / (sqrt(v) + e), with c1 = 1 - beta1^t,
    c2 = 1 - beta2^t, a = lr * sqrt(c2) / c1 and e = eps * sqrt(c2): multiply the reference's
    numerator and denominator by sqrt(c2)."""
    b1, b2 = betas
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    return lr * math.sqrt(c2) / c1, eps * math.sqrt(c2)


def flat_state(opt):
    """(p, g, m, v): the 1-D NumPy or CuPy buffers that Adam opt's params, grads and moments
    tile in one order, or None where they are not laid out that way."""
    if not isinstance(opt, Adam):
        return None
    flats = [flat_owner(list(arrays.values())) for arrays in (opt.params, opt.grads, opt.m, opt.v)]
    if any(f is None for f in flats) or len({f.shape for f in flats}) != 1:
        return None
    return flats


def fast_optimizer(opt, threads=None):
    """What training steps with: FastAdam(opt) where the engine can run it (an Adam over one
    flat buffer on NumPy or CuPy), else opt itself, whose step() is the reference."""
    if not callable(getattr(opt, "step", None)):
        raise ConfigError(f"fast_optimizer: opt must be an optimizer (minisae.Adam, SGD, ...), "
                          f"got {type(opt).__name__}")
    threads = checks.check_optional(threads, checks.check_int, "threads", 1, MAX_THREADS)
    return FastAdam(opt, threads=threads) if flat_state(opt) is not None else opt


class FastAdam:
    """The update of a reference Adam `opt` whose params, grads, m and v are each views of one
    flat buffer, in the same order (a SparseAutoencoder's, on NumPy or CuPy). step() advances
    opt.t and updates opt's own arrays.

    threads: a number, or None for the thread policy's choice at each step (one thread
    outside a thread_limits block). kernel: "numba" or "numpy" on NumPy arrays; None picks
    numba where it is installed (on CuPy arrays the kernel is CuPy's, whatever is asked)."""

    CHUNK = 1 << 18
    """Elements per chunk of the NumPy passes. Twelve passes over a chunk then run mostly in
    cache instead of twelve passes over memory; larger chunks also pay NumPy's per-call
    overhead less often. 2^18 measured best on a 2-core EPYC (BENCHMARKS.md)."""

    def __init__(self, opt, threads=None, kernel=None):
        flats = flat_state(opt)
        if flats is None:
            raise ConfigError("FastAdam runs a minisae.Adam (opt) whose parameters, gradients "
                              "and moments are views of one flat buffer on NumPy or CuPy (a "
                              f"SparseAutoencoder's); got {type(opt).__name__}: use its own "
                              f"step(), or fast_optimizer(opt), which falls back to it")
        threads = checks.check_optional(threads, checks.check_int, "threads", 1, MAX_THREADS)
        self.opt = opt
        self.p, self.g, self.m, self.v = flats
        self.threads = threads
        self.kernel = self._pick_kernel(kernel, array_module(self.p) is np)
        self._pool, self._pool_size = None, 0
        self._scratch = None

    @staticmethod
    def _pick_kernel(kernel, on_numpy):
        """"numba", "numpy" (on NumPy arrays) or "cupy" (one ElementwiseKernel, on CuPy's)."""
        checks.check_optional(kernel, checks.check_choice, "kernel", KERNELS)
        if not on_numpy:
            return "cupy"
        if kernel is None:
            return "numba" if numba_adam() is not None else "numpy"
        if kernel == "numba" and numba_adam() is None:
            raise ConfigError("the numba Adam kernel needs numba (pip install 'minisae[fast]')")
        return kernel

    def step(self):
        """One update: opt.t += 1, then Algorithm 1 with the optimizer's lr, betas and eps."""
        opt = self.opt
        opt.t += 1
        a, e = step_constants(opt.lr, opt.betas, opt.eps, opt.t)
        if array_module(self.p) is np:
            self._step_numpy(a, e)
        else:
            xp = array_module(self.p)
            T = self.p.dtype.type
            b1, b2 = opt.betas
            cupy_kernel(xp, "adam", _ADAM_KERNEL)(self.g, T(a), T(e), T(b1), T(b2),
                                                   self.p, self.m, self.v)

    def current_threads(self):
        """The thread count for this step: the optimizer's own, else the policy's."""
        if self.threads is not None:
            return self.threads
        from .threads import active
        policy = active()
        return 1 if policy is None else policy.adam_threads()

    def _step_numpy(self, a, e):
        n = self.p.size
        threads = self.current_threads()
        if n < 4 * self.CHUNK:  # a share under two chunks: waking a thread costs more (~40 us)
            threads = 1
        update = self._update_numba if self.kernel == "numba" else self._update_chunks
        if self.kernel == "numpy":
            size = min(self.CHUNK, n)
            if self._scratch is None or self._scratch.shape != (threads, size):
                self._scratch = np.empty((threads, size), dtype=self.p.dtype)
        if threads == 1:
            update(0, n, 0, a, e)
            return
        if self._pool is None or self._pool_size < threads - 1:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="minisae-adam")
            self._pool_size = threads - 1
        # This thread takes the first share itself rather than sleep while the others work.
        bounds = np.linspace(0, n, threads + 1).astype(int)
        jobs = [self._pool.submit(update, bounds[i], bounds[i + 1], i, a, e)
                for i in range(1, threads)]
        update(bounds[0], bounds[1], 0, a, e)
        for job in jobs:
            job.result()

    def _update_numba(self, start, stop, worker, a, e):
        T = self.p.dtype.type
        b1, b2 = self.opt.betas
        s = slice(start, stop)
        numba_adam()(self.p[s], self.g[s], self.m[s], self.v[s], T(b1), T(b2), T(1.0 - b1),
                     T(1.0 - b2), T(a), T(e))

    def _update_chunks(self, start, stop, worker, a, e):
        b1, b2 = self.opt.betas
        P, G, M, V = self.p, self.g, self.m, self.v
        scratch = self._scratch[worker]  # (threads, CHUNK), made by _step_numpy
        for i in range(start, stop, self.CHUNK):
            j = min(i + self.CHUNK, stop)
            p, g, m, v, tmp = P[i:j], G[i:j], M[i:j], V[i:j], scratch[:j - i]
            m *= b1                               # m = b1 m + (1 - b1) g
            np.multiply(g, 1.0 - b1, out=tmp)
            m += tmp
            v *= b2                               # v = b2 v + (1 - b2) g^2
            np.multiply(g, 1.0 - b2, out=tmp)
            tmp *= g
            v += tmp
            np.sqrt(v, out=tmp)                   # p -= a m / (sqrt(v) + e)
            tmp += e
            np.divide(m, tmp, out=tmp)
            tmp *= a
            p -= tmp

    def __del__(self):
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)
