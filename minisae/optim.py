"""Optimizers: Adam (Kingma & Ba, 2015) and SGD with momentum. (L-BFGS, which evaluates the
loss itself, is in minisae/training/lbfgs.py.)

An optimizer holds the model's named parameter and gradient arrays (`model.params`,
`model.grads`) and updates the parameters in place at each `step()`. Its state, one array
per parameter and slot (Adam's m and v, SGD's velocity u), is keyed by the same names:
`opt.m["encoder.W"]`.

`Adam.step` is the paper's Algorithm 1, line by line: the reference. Training runs the same
update in the fast engine, on these very arrays (`minisae.fast.FastAdam(opt)`), so a run can
be saved on one path and resumed on the other.
"""
from __future__ import annotations

import math

from . import checks
from .backend import flat_views, namespace


class Adam:
    """Adam, as Kingma & Ba write it (Algorithm 1), for every parameter p with gradient g:

        m = beta1 m + (1 - beta1) g           v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t)             v_hat = v / (1 - beta2^t)
        p -= lr * m_hat / (sqrt(v_hat) + eps)

    params, grads: dicts of named arrays (model.params, model.grads). lr: the step size;
    betas: the moments' decay rates; eps: keeps the division finite."""

    SLOTS = ("m", "v")
    SETTINGS = ("lr", "betas", "eps")

    def __init__(self, params, grads, lr=0.001, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.grads = checks.check_params(params, grads)
        self.lr = checks.check_real(lr, "lr", low=0.0, low_open=True)
        self.betas = checks.check_betas(betas)
        self.eps = checks.check_real(eps, "eps", low=0.0, low_open=True)
        self.t = 0                                  # steps taken
        self.m = _zeros_like(self.params)           # first moment, per parameter
        self.v = _zeros_like(self.params)           # second raw moment, per parameter

    def step(self):
        """Algorithm 1's update at step t + 1, one parameter at a time."""
        self.t += 1
        b1, b2, t = self.betas[0], self.betas[1], self.t
        for name, p in self.params.items():
            g = self.grads[name]
            m = b1 * self.m[name] + (1.0 - b1) * g        # biased first moment estimate
            v = b2 * self.v[name] + (1.0 - b2) * g * g    # biased second raw moment estimate
            m_hat = m / (1.0 - b1 ** t)                   # bias-corrected
            v_hat = v / (1.0 - b2 ** t)
            p -= self.lr * m_hat / (namespace(v).sqrt(v_hat) + self.eps)
            self.m[name][...] = m                         # kept for the next step
            self.v[name][...] = v


class SGD:
    """Gradient descent with (classical) momentum:  u = mu * u - lr * g;  p += u."""

    SLOTS = ("u",)
    SETTINGS = ("lr", "momentum")

    def __init__(self, params, grads, lr=0.01, momentum=0.9):
        self.params, self.grads = checks.check_params(params, grads)
        self.lr = checks.check_real(lr, "lr", low=0.0, low_open=True)
        self.momentum = checks.check_real(momentum, "momentum", 0.0, 1.0, high_open=True)
        self.t = 0
        self.u = _zeros_like(self.params)           # velocity, per parameter

    def step(self):
        self.t += 1
        for name, p in self.params.items():
            u = self.momentum * self.u[name] - self.lr * self.grads[name]
            p += u
            self.u[name][...] = u                         # kept for the next step


def _zeros_like(params):
    """Named zero arrays shaped like the params: views of one flat buffer, in the params'
    order, so that an optimizer's state lies as the model's parameters do (and the fast
    engine can update it in one pass)."""
    first = next(iter(params.values()))
    xp = namespace(first)
    size = sum(math.prod(p.shape) for p in params.values())
    flat = xp.zeros(size, dtype=first.dtype, device=first.device)
    return flat_views(flat, {name: tuple(p.shape) for name, p in params.items()})


OPTIMIZERS = {"adam": Adam, "sgd": SGD}
"""The minibatch optimizers by name (L-BFGS joins them in minisae.training)."""
