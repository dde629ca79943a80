"""Optimizers: Adam (Kingma & Ba, 2015), SGD with momentum, and L-BFGS (in lbfgs.py).

An optimizer holds the model's named parameter and gradient arrays (`model.params`,
`model.grads`) and updates the parameters in place at each `step()`. Its state (Adam's m and
v, SGD's velocity u) is keyed by the same names, and comes out of `state_dict()` as NumPy
arrays for checkpoints.

Adam.reference_step is the paper's Algorithm 1, line by line: what `fast=False` runs. With
`fast=True` (the default) Adam hands the same update to the fast engine at one marked line
(minisae/fast/adam.py: one pass over the model's flat buffer, in chunks and threads).
"""
from __future__ import annotations


import numpy as np

from .backend import array_module, flat_views, to_numpy
from .checks import is_real
from .errors import CheckpointError, ConfigError


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


class Optimizer:
    """Holds the named parameter and gradient arrays it updates in place."""

    _NONNEGATIVE = ()  # state slots that can never be negative (Adam's v)

    def __init__(self, params, grads, lr):
        if not isinstance(params, dict) or not isinstance(grads, dict):
            raise ConfigError("params and grads must be dicts of named arrays, e.g. "
                              "Adam(model.params, model.grads); got "
                              f"{type(params).__name__} and {type(grads).__name__}")
        if not params:
            raise ConfigError("params is empty: pass the model's parameters, "
                              "e.g. Adam(model.params, model.grads)")
        if set(params) != set(grads):
            raise ConfigError(f"params and grads must have the same names; got {sorted(params)} "
                              f"and {sorted(grads)}")
        for name, p in params.items():
            g = grads[name]
            if not (hasattr(p, "shape") and hasattr(p, "dtype") and hasattr(g, "shape")):
                raise ConfigError(f"params and grads must hold arrays (the model's, updated in "
                                  f"place); {name!r} is a {type(p).__name__}")
            if p.shape != g.shape:
                raise ConfigError(f"grad of {name!r} has shape {g.shape}, param {p.shape}")
            if p.dtype.kind != "f":
                raise ConfigError(f"parameter {name!r} must be a float array, got {p.dtype}")
        if not (is_real(lr) and lr > 0):
            raise ConfigError(f"lr must be a positive number, got {lr!r}")
        self.params, self.grads, self.lr = dict(params), dict(grads), float(lr)
        self.t = 0  # steps taken

    def _zeros_like_params(self):
        """Named zero arrays shaped like the params: views of one flat buffer, in the params'
        order, so that state lies like the model's parameters do."""
        first = next(iter(self.params.values()))
        xp = array_module(first)
        flat = xp.zeros(sum(p.size for p in self.params.values()), dtype=first.dtype)
        return flat_views(flat, {name: p.shape for name, p in self.params.items()})

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
        """Restore what state_dict() gave (arrays are copied into this optimizer's own).
        Raises CheckpointError for missing, mistyped, misshapen or non-finite entries."""
        if not isinstance(state, dict):
            raise CheckpointError(f"optimizer state must be a dict, got {type(state).__name__}")
        kind = type(self).__name__
        try:
            t, lr = state["t"], state["lr"]
            arrays = {}
            for slot, named in self._state_arrays().items():
                for name, a in named.items():
                    arrays[f"{slot}.{name}"] = (state[f"{slot}.{name}"], a)
        except KeyError as e:
            raise CheckpointError(f"optimizer state is missing {e.args[0]!r}; was it saved by "
                                  f"another optimizer ({kind} expected)?") from None
        t, lr = _scalar(t), _scalar(lr)
        if not (_is_number(t) and float(t).is_integer() and 0 <= t < 2**53):
            raise CheckpointError(f"optimizer state 't' must be a step count >= 0, got {t!r}")
        if not (is_real(lr) and lr > 0):
            raise CheckpointError(f"optimizer state 'lr' must be a positive number, got {lr!r}")
        checked = {}
        for key, (src, a) in arrays.items():
            try:
                src = np.asarray(src)
            except (ValueError, TypeError):
                raise CheckpointError(f"optimizer state {key} is not an array (a ragged list?)") from None
            if src.shape != a.shape or src.dtype.kind not in "fiu":
                raise CheckpointError(f"optimizer state {key} has shape {src.shape} and dtype "
                                      f"{src.dtype}; the model's parameter: {a.shape}, {a.dtype}")
            if not np.isfinite(src).all():
                raise CheckpointError(f"optimizer state {key} holds NaN or inf")
            if key.split(".")[0] in self._NONNEGATIVE and (src < 0).any():
                raise CheckpointError(f"optimizer state {key} holds negative values, but it is a "
                                      f"running mean of squares; the state is damaged")
            checked[key] = src
        self.t, self.lr = int(t), float(lr)
        for key, (_, a) in arrays.items():
            a[...] = array_module(a).asarray(checked[key], dtype=a.dtype)


def _scalar(v):
    """A 0-d NumPy array (as a checkpoint holds numbers) as its Python number."""
    if isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "biuf":
        return v.item()
    return v


class SGD(Optimizer):
    """Gradient descent with (classical) momentum:  u = mu * u - lr * g;  p += u."""

    def __init__(self, params, grads, lr=0.01, momentum=0.9):
        super().__init__(params, grads, lr)
        if not (_is_number(momentum) and 0.0 <= momentum < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.u = self._zeros_like_params()

    def _state_arrays(self):
        return {"u": self.u}

    def step(self):
        self.t += 1
        for name, p in self.params.items():
            u = self.momentum * self.u[name] - self.lr * self.grads[name]
            p += u
            self.u[name][...] = u  # kept for the next step


class Adam(Optimizer):
    """Adam, as Kingma & Ba write it (Algorithm 1), for every parameter p with gradient g:

        m = beta1 m + (1 - beta1) g           v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t)             v_hat = v / (1 - beta2^t)
        p -= lr * m_hat / (sqrt(v_hat) + eps)

    fast: True (default) runs the update in the fast engine when the parameters are views of
    one flat buffer (a SparseAutoencoder's are); False, or other parameters, run
    `reference_step`. threads: the fast engine's threads (None: its thread policy decides)."""

    def __init__(self, params, grads, lr=0.001, betas=(0.9, 0.999), eps=1e-8, fast=True,
                 threads=None):
        super().__init__(params, grads, lr)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ConfigError(f"betas must be two numbers, got {betas!r}") from None
        if not all(_is_number(b) and 0.0 <= b < 1.0 for b in (b1, b2)):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not (is_real(eps) and eps > 0):
            raise ConfigError(f"eps must be a positive number, got {eps!r}")
        if threads is not None and not (isinstance(threads, int) and not isinstance(threads, bool)
                                        and threads >= 1):
            raise ConfigError(f"threads must be a positive integer or None (automatic), got {threads!r}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)
        self.m = self._zeros_like_params()
        self.v = self._zeros_like_params()
        self._engine = None
        if fast:  # the fast engine, where the arrays allow it (minisae/fast/adam.py)
            from .fast import FlatAdam
            self._engine = FlatAdam.build(self, threads=threads)

    @property
    def fast(self):
        """True when step() runs in the fast engine."""
        return self._engine is not None

    _NONNEGATIVE = ("v",)

    def _state_arrays(self):
        return {"m": self.m, "v": self.v}

    def step(self):
        self.t += 1
        if self._engine is not None:  # the same update in one flat pass; skip on a first read
            self._engine.step()
        else:
            self.reference_step()

    def reference_step(self):
        """Algorithm 1's update at step self.t, one parameter at a time."""
        b1, b2, t = self.betas[0], self.betas[1], self.t
        for name, p in self.params.items():
            g = self.grads[name]
            m = b1 * self.m[name] + (1.0 - b1) * g        # biased first moment estimate
            v = b2 * self.v[name] + (1.0 - b2) * g * g    # biased second raw moment estimate
            m_hat = m / (1.0 - b1 ** t)                   # bias-corrected
            v_hat = v / (1.0 - b2 ** t)
            p -= self.lr * m_hat / (array_module(v).sqrt(v_hat) + self.eps)
            self.m[name][...] = m                         # kept for the next step
            self.v[name][...] = v


from .lbfgs import LBFGS  # noqa: E402  (full-batch L-BFGS through SciPy; its own file, lbfgs.py)
