"""Optimizers: Adam (Kingma & Ba, 2015) and SGD with momentum.

State is keyed by parameter name, like the model's `params` and `grads` dicts, and comes out
of `state_dict()` as NumPy arrays (for checkpoints).

Adam has two paths that compute the same update:
- the plain one (`fused=False`), the paper's formulas line by line, one parameter at a time;
- the fast one (the default when the parameters are views of one flat buffer, as a
  SparseAutoencoder's are): the same update over the flat buffer in cache-sized chunks
  (optionally split across threads) on NumPy, and one fused kernel on CuPy.
tests/test_optim.py checks that the two agree.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import flat_views, to_numpy
from .errors import CheckpointError, ConfigError
from .functional import array_module


class Optimizer:
    """Holds the named parameter and gradient arrays it updates in place."""

    def __init__(self, params, grads, lr):
        if set(params) != set(grads):
            raise ConfigError(f"params and grads must have the same names; got {sorted(params)} "
                              f"and {sorted(grads)}")
        for name, p in params.items():
            if p.shape != grads[name].shape:
                raise ConfigError(f"grad of {name!r} has shape {grads[name].shape}, param {p.shape}")
        if isinstance(lr, bool) or not (isinstance(lr, (int, float, np.integer, np.floating))
                                        and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr must be a positive number, got {lr!r}")
        self.params, self.grads, self.lr = dict(params), dict(grads), float(lr)
        self.t = 0  # steps taken

    def _zeros_like_params(self):
        """One flat zero buffer the size of all params, and named views of it."""
        first = next(iter(self.params.values()))
        xp = array_module(first)
        flat = xp.zeros(sum(p.size for p in self.params.values()), dtype=first.dtype)
        return flat, flat_views(flat, {name: p.shape for name, p in self.params.items()})

    # ------------------------------------------------------------------ state

    def _state_arrays(self):
        return {}

    def state_dict(self):
        """{"t": steps, "lr": lr, "<slot>.<param name>": NumPy array, ...}."""
        state = {"t": self.t, "lr": self.lr}
        for slot, arrays in self._state_arrays().items():
            for name, a in arrays.items():
                state[f"{slot}.{name}"] = to_numpy(a).copy()
        return state

    def load_state_dict(self, state):
        """Restore what state_dict() gave (arrays are copied into this optimizer's buffers)."""
        try:
            self.t = int(state["t"])
            self.lr = float(state["lr"])
            for slot, arrays in self._state_arrays().items():
                for name, a in arrays.items():
                    src = np.asarray(state[f"{slot}.{name}"])
                    if src.shape != a.shape:
                        raise CheckpointError(f"optimizer state {slot}.{name} has shape {src.shape}, "
                                              f"the model's parameter {a.shape}")
                    a[...] = array_module(a).asarray(src, dtype=a.dtype)
        except KeyError as e:
            raise CheckpointError(f"optimizer state is missing {e.args[0]!r}; was it saved by "
                                  f"another optimizer ({type(self).__name__} expected)?") from None


class SGD(Optimizer):
    """Gradient descent with (classical) momentum:  u = mu * u - lr * g;  p += u."""

    def __init__(self, params, grads, lr=0.01, momentum=0.9):
        super().__init__(params, grads, lr)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.integer, np.floating)) \
                or not (0.0 <= momentum < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        _, self.u = self._zeros_like_params()

    def _state_arrays(self):
        return {"u": self.u}

    def step(self):
        self.t += 1
        for name, p in self.params.items():
            u = self.u[name]
            u *= self.momentum
            u -= self.lr * self.grads[name]
            p += u


class Adam(Optimizer):
    """Adam, as Kingma & Ba write it (Algorithm 1):

        m = beta1 m + (1 - beta1) g           v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t)             v_hat = v / (1 - beta2^t)
        p -= lr * m_hat / (sqrt(v_hat) + eps)
    """

    CHUNK = 1 << 18
    """Elements per chunk on the fast path. Twelve passes over a chunk then run mostly in
    cache instead of twelve passes over memory; larger chunks also pay NumPy's per-call
    overhead less often. 2^18 measured best on a 2-core EPYC (BENCHMARKS.md)."""

    def __init__(self, params, grads, lr=0.001, betas=(0.9, 0.999), eps=1e-8, fused=None,
                 threads=None):
        super().__init__(params, grads, lr)
        try:
            b1, b2 = (float(b) for b in betas)
            eps = float(eps)
        except (TypeError, ValueError):
            raise ConfigError(f"betas must be two numbers and eps a number; got betas={betas!r}, "
                              f"eps={eps!r}") from None
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ConfigError(f"betas must be in [0, 1), got {betas!r}")
        if not (eps > 0 and math.isfinite(eps)):
            raise ConfigError(f"eps must be a positive number, got {eps!r}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)
        self._flat_m, self.m = self._zeros_like_params()
        self._flat_v, self.v = self._zeros_like_params()
        self._flat_p = _flat_owner(list(self.params.values()))
        self._flat_g = _flat_owner(list(self.grads.values()))
        can_fuse = self._flat_p is not None and self._flat_g is not None
        if fused and not can_fuse:
            raise ConfigError("fused=True needs params and grads that are views of one flat "
                              "buffer each, in the same order (as SparseAutoencoder's are)")
        self.fused = can_fuse if fused is None else bool(fused)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None (automatic), got {threads!r}")
        # One thread unless asked: right after a matrix product OpenBLAS's idle workers spin
        # on every other core for a while, and a second thread here only competes with them
        # (measured slower in a training step; BENCHMARKS.md).
        self.threads = 1 if threads is None else threads
        self._pool = None
        self._scratch = None

    def _state_arrays(self):
        return {"m": self.m, "v": self.v}

    def step(self):
        self.t += 1
        if not self.fused:
            for name in self.params:
                self._step_plain(self.params[name], self.grads[name], self.m[name], self.v[name])
        elif array_module(self._flat_p) is np:
            self._step_flat_numpy()
        else:
            self._step_flat_cupy()

    def _step_plain(self, p, g, m, v):
        b1, b2 = self.betas
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        m_hat = m / (1.0 - b1 ** self.t)
        v_hat = v / (1.0 - b2 ** self.t)
        p -= self.lr * m_hat / (array_module(v).sqrt(v_hat) + self.eps)

    def _step_constants(self):
        """lr * m_hat / (sqrt(v_hat) + eps) = a * m / (sqrt(v) + e), with
        c1 = 1 - beta1^t, c2 = 1 - beta2^t, a = lr * sqrt(c2) / c1, e = eps * sqrt(c2):
        the bias corrections move onto two scalars instead of two passes over m and v."""
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        return self.lr * math.sqrt(c2) / c1, self.eps * math.sqrt(c2)

    def _step_flat_numpy(self):
        n = self._flat_p.size
        size = min(self.CHUNK, n)
        if self._scratch is None or self._scratch.shape != (self.threads, size):
            self._scratch = np.empty((self.threads, size), dtype=self._flat_p.dtype)
        if self.threads == 1 or n < 4 * self.CHUNK:
            self._update_range(0, n, self._scratch[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="minisae-adam")
        # NumPy releases the GIL inside ufuncs, so the threads' chunks run in parallel. This
        # thread takes the first share itself rather than sleep while the others work.
        bounds = np.linspace(0, n, self.threads + 1).astype(int)
        jobs = [self._pool.submit(self._update_range, bounds[i], bounds[i + 1], self._scratch[i])
                for i in range(1, self.threads)]
        self._update_range(bounds[0], bounds[1], self._scratch[0])
        for job in jobs:
            job.result()

    def _update_range(self, start, stop, scratch):
        b1, b2 = self.betas
        a, e = self._step_constants()
        P, G, M, V = self._flat_p, self._flat_g, self._flat_m, self._flat_v
        for i in range(start, stop, self.CHUNK):
            j = min(i + self.CHUNK, stop)
            p, g, m, v, tmp = P[i:j], G[i:j], M[i:j], V[i:j], scratch[:j - i]
            m *= b1                               # m = b1 m + (1 - b1) g
            np.multiply(g, 1.0 - b1, out=tmp)
            m += tmp
            v *= b2                               # v = b2 v + (1 - b2) g^2
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - b2
            v += tmp
            np.sqrt(v, out=tmp)                   # p -= a m / (sqrt(v) + e)
            tmp += e
            np.divide(m, tmp, out=tmp)
            tmp *= a
            p -= tmp

    def _step_flat_cupy(self):
        b1, b2 = self.betas
        a, e = self._step_constants()
        _cupy_adam_kernel()(self._flat_g, self._flat_p.dtype.type(a), self._flat_p.dtype.type(e),
                            self._flat_p.dtype.type(b1), self._flat_p.dtype.type(b2),
                            self._flat_p, self._flat_m, self._flat_v)

    def __del__(self):
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)


_ADAM_KERNEL = None


def _cupy_adam_kernel():
    """The fast path's update as one CUDA kernel: one read of g, p, m, v and one write of
    p, m, v per element, instead of a kernel launch per operation."""
    global _ADAM_KERNEL
    if _ADAM_KERNEL is None:
        import cupy
        _ADAM_KERNEL = cupy.ElementwiseKernel(
            "T g, T a, T e, T b1, T b2", "T p, T m, T v",
            """
            m = b1 * m + (1 - b1) * g;
            v = b2 * v + (1 - b2) * g * g;
            p -= a * m / (sqrt(v) + e);
            """,
            "minisae_adam")
    return _ADAM_KERNEL


def _flat_owner(arrays):
    """The 1-D contiguous array that `arrays` tile exactly, in order, or None."""
    if not arrays:
        return None
    owner = arrays[0].base
    if owner is None or owner.ndim != 1 or not owner.flags.c_contiguous:
        return None
    xp = array_module(owner)
    ptr = (lambda a: a.ctypes.data) if xp is np else (lambda a: a.data.ptr)
    expected = ptr(owner)
    for a in arrays:
        if a.base is not owner or not a.flags.c_contiguous or a.dtype != owner.dtype \
                or ptr(a) != expected:
            return None
        expected += a.nbytes
    return owner if expected == ptr(owner) + owner.nbytes else None
