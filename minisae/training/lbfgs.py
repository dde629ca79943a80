"""L-BFGS over a model's flat parameter vector, full batch, as UFLDL trains (minFunc's L-BFGS
there, SciPy's L-BFGS-B here).

    opt = LBFGS(model.flat_params, model.flat_grads, max_iter=400, memory=10)
    result = opt.minimize(lambda: model.loss_and_grads(x))
    result.loss, result.iterations, result.losses      # final loss, iterations, loss per iteration

L-BFGS keeps the last `memory` steps s_k = p_{k+1} - p_k and gradient changes
y_k = g_{k+1} - g_k, and from them builds a direction that approximates -H^-1 g (H the
Hessian) without ever forming H: two loops over the pairs (Nocedal & Wright, Algorithm 7.4).
A line search then picks how far to go along it, so there is no learning rate. It needs the
same loss at every evaluation, hence the full batch: minibatches would change the function
under it. Each iteration costs one or a few evaluations of the loss and its gradient.

SciPy does the arithmetic on the CPU, in float64. This class sits at the edge: it writes
SciPy's candidate vector into the model's flat parameter buffer (cast to its dtype, moved to
its device), asks `loss_fn()` for the loss there (which fills the gradient buffer), and hands
the gradient back as a float64 NumPy vector. So the model may live on NumPy or CuPy, float64
(what L-BFGS's line search wants) or float32 (works, but the line search sees rounding noise).

Checkpoints and resume: SciPy does not expose its curvature pairs, so the state is only the
counters (iterations done, evaluations) and the settings. A resumed run restarts L-BFGS from
the saved parameters with an empty memory: its first iteration is a steepest-descent step
with a line search, and the next `memory` iterations rebuild the curvature pairs. It lands
close to, not exactly on, the path an uninterrupted run takes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import checks
from ..backend import array_module, flat_owner, library, to_numpy
from ..errors import ConfigError, TrainingError
from .progress import progress_bar


@dataclass(frozen=True)
class LBFGSStep:
    """What the per-iteration callback receives: the iteration number (counted over the
    optimizer's life, like Adam's t), the loss at the new iterate, and the function
    evaluations spent so far in this minimize() call."""

    iteration: int
    loss: float
    evaluations: int


@dataclass
class LBFGSResult:
    """The outcome of one minimize() call.

    iterations, evaluations: done in this call; loss: at the final parameters (which are left
    in the model); losses: the loss after each iteration of this call; converged: SciPy met
    its tolerance (rather than running out of iterations or being stopped); message: SciPy's
    (or why it did not run)."""

    iterations: int
    evaluations: int
    loss: float
    initial_loss: float
    converged: bool
    message: str
    seconds: float
    losses: list = field(default_factory=list)

    def as_dict(self):
        return {"iterations": self.iterations, "evaluations": self.evaluations,
                "loss": self.loss, "initial_loss": self.initial_loss,
                "converged": self.converged, "message": self.message,
                "seconds": self.seconds, "losses": list(self.losses)}


FTOL = 2.220446049250313e-09
"""SciPy's default ftol for L-BFGS-B (factr 1e7 times float64's machine epsilon)."""


class _Stop(Exception):
    """Raised out of SciPy's callback when ours asks to stop (works on every SciPy >= 1.9)."""


class LBFGS:
    """Full-batch L-BFGS (SciPy's L-BFGS-B without bounds) over one flat parameter buffer.

    params, grads: the model's 1-D flat buffers (`model.flat_params`, `model.flat_grads`), or
        its `params` / `grads` dicts when their arrays are views that tile one flat buffer in
        order (as SparseAutoencoder's and SoftmaxRegression's are).
    max_iter: the iteration budget over the optimizer's life; minimize() runs what is left of
        it (max_iter - t) unless told otherwise. UFLDL uses 400.
    memory: how many (s, y) pairs approximate the curvature (SciPy's maxcor); UFLDL's
        minFunc keeps 100, SciPy's default is 10.
    gtol: stop when the largest |gradient component| is below it (SciPy's default, 1e-5).
    ftol: stop when the loss changes by less than ftol * max(|f|, |f_prev|, 1) in an
        iteration (SciPy's default, about 2.2e-9).
    """

    SLOTS = ()
    SETTINGS = ("max_iter", "memory", "gtol", "ftol")

    def __init__(self, params, grads, max_iter=400, memory=10, gtol=1e-5, ftol=FTOL):
        self.flat_params = _flat_buffer(params, "params")
        self.flat_grads = _flat_buffer(grads, "grads")
        if self.flat_grads.shape != self.flat_params.shape:
            raise ConfigError(f"params and grads must be buffers of one size; got "
                              f"{self.flat_params.size} and {self.flat_grads.size} elements")
        self.max_iter = _count(max_iter, "max_iter", low=0)
        self.memory = _count(memory, "memory", low=1)
        n = int(self.flat_params.shape[0])
        checks.check_fits(2 * self.memory * n * 8, checks.physical_memory(),
                          f"L-BFGS's curvature memory of {self.memory:,} pairs over {n:,} "
                          f"parameters (SciPy keeps them in float64)", "use a smaller memory")
        self.gtol = checks.check_real(gtol, "gtol", 0.0)
        self.ftol = checks.check_real(ftol, "ftol", 0.0)
        self.t = 0            # iterations done, over every minimize() call
        self.evaluations = 0  # loss_fn() calls, likewise

    # ------------------------------------------------------------------ the run

    def minimize(self, loss_fn, max_iter=None, callback=None, progress=False):
        """Minimise loss_fn over the parameters, starting from their current values.

        loss_fn(): computes the loss at the current parameters and fills the grads buffer;
            returns an object with `.total` (a model's Loss) or a number.
        max_iter: iterations for this call; default: what is left of the budget, max_iter - t.
        callback(step): called after each iteration with an LBFGSStep; returning True stops
            the run there (the parameters stay at that iterate).
        progress: draw a tqdm bar with the loss.

        Returns an LBFGSResult. The best parameters SciPy found are left in the model, and its
        grads are those of that point. A non-finite loss or gradient raises TrainingError;
        then, as after any error or Ctrl-C, the parameters are put back at the last iterate
        (the grads are left as the last evaluation made them)."""
        from scipy.optimize import minimize as scipy_minimize

        checks.check_function(loss_fn, "loss_fn", 0, "a function of no arguments that computes "
                              "the loss and fills the grads, e.g. lambda: model.loss_and_grads(x)")
        checks.check_optional(callback, checks.check_function, "callback", 1,
                              "a function of one LBFGSStep (or None)")
        progress = checks.check_bool(progress, "progress")
        n_iter = self.max_iter - self.t if max_iter is None else _count(max_iter, "max_iter", low=0)
        n_iter = max(n_iter, 0)
        flat, xp = self.flat_params, array_module(self.flat_params)
        x0 = np.array(to_numpy(flat), dtype=np.float64)  # a copy: SciPy's, in float64
        last = {"x": None, "loss": None, "first": None}  # the latest evaluation, and the first
        accepted = {"x": x0, "loss": None}               # the latest iterate
        losses, evaluations = [], [0]
        bar = progress_bar(n_iter, progress, desc="L-BFGS", unit="it")
        t0 = time.perf_counter()

        def put(x):
            flat[...] = xp.asarray(x, dtype=flat.dtype)

        def fun(x):
            put(x)
            loss = _total(loss_fn())
            evaluations[0] += 1
            g = np.array(to_numpy(self.flat_grads), dtype=np.float64)  # a copy: SciPy keeps it
            if not (math.isfinite(loss) and np.isfinite(g).all()):
                what = "loss" if not math.isfinite(loss) else "gradient"
                raise TrainingError(
                    f"L-BFGS met a non-finite {what} (loss {loss}) at function evaluation "
                    f"{evaluations[0]}, after {self.t} iterations; check the data and the model's "
                    "settings (a float64 model is safer). The parameters are back at the last "
                    "iterate with a finite loss.")
            last["x"], last["loss"] = x.copy(), loss
            if last["first"] is None:
                last["first"] = loss  # SciPy evaluates x0 first
            return loss, g

        def on_iteration(xk):
            # The line search's last evaluation is at the accepted point; evaluate if not.
            loss = last["loss"] if np.array_equal(xk, last["x"]) else fun(xk)[0]
            accepted["x"], accepted["loss"] = np.array(xk, dtype=np.float64), loss
            self.t += 1
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.6g}", refresh=False)
            if callback is not None and callback(LBFGSStep(self.t, loss, evaluations[0])):
                raise _Stop

        try:
            if n_iter == 0:
                initial = final = fun(x0)[0]
                converged, message = False, "no iterations to run (max_iter reached)"
            else:
                try:
                    res = scipy_minimize(fun, x0, jac=True, method="L-BFGS-B",
                                         callback=on_iteration, options={"maxiter": n_iter, "maxcor": self.memory,
                                                  "gtol": self.gtol, "ftol": self.ftol})
                    x_final, converged, message = res.x, bool(res.success), str(res.message)
                except _Stop:
                    x_final, converged, message = accepted["x"], False, "stopped by the callback"
                initial = last["first"]
                # Leave the model at x_final, with the grads of that point.
                final = last["loss"] if np.array_equal(x_final, last["x"]) else fun(x_final)[0]
        except BaseException:
            # an error or Ctrl-C mid line search: leave the model at an iterate, not at a trial
            # point (its grads are then those of the last evaluation)
            put(accepted["x"])
            raise
        finally:
            bar.close()
            self.evaluations += evaluations[0]
        return LBFGSResult(iterations=len(losses), evaluations=evaluations[0], loss=final,
                           initial_loss=initial, converged=converged, message=message,
                           seconds=time.perf_counter() - t0, losses=losses)

    def step(self):
        """L-BFGS has no single step with a given gradient: its line search must evaluate the
        loss itself. Use minimize(loss_fn)."""
        raise ConfigError("LBFGS has no step(): it evaluates the loss itself during its line "
                          "search, on the full batch. Call opt.minimize(lambda: "
                          "model.loss_and_grads(x)) instead of a minibatch loop.")

    # ------------------------------------------------------------------ state

    def __repr__(self):
        return (f"LBFGS(max_iter={self.max_iter}, memory={self.memory}, t={self.t}, "
                f"n_params={self.flat_params.size})")


# ----------------------------------------------------------------------------- helpers

def _total(out):
    """A float from a Loss-like object (`.total`) or a number."""
    total = getattr(out, "total", out)
    try:
        return float(total)
    except (TypeError, ValueError):
        raise ConfigError("loss_fn must return the loss: an object with .total (as "
                          "model.loss_and_grads(x) does) or a number; got "
                          f"{type(out).__name__}") from None


def _count(v, name, low):
    return checks.check_int(v, name, low)


def _flat_buffer(a, what):
    """The 1-D contiguous float buffer `a` is, or that the arrays of the dict `a` tile in order."""
    hint = (f"pass the model's flat buffer (model.flat_{what}), or its {what} dict when its arrays "
            "are views of one flat buffer")
    first = next(iter(a.values()), None) if isinstance(a, dict) else a
    if library(first) not in (None, "numpy", "cupy"):
        raise ConfigError(f"{what}: L-BFGS runs on NumPy and CuPy arrays (SciPy's L-BFGS-B is "
                          f"given the parameters as one vector), not on {library(first)}; use "
                          f"Adam, or a model with backend='numpy'")
    if isinstance(a, dict):
        checks.check_writable(a, what)
        owner = flat_owner(list(a.values()))
        if owner is None:
            raise ConfigError(f"LBFGS needs one flat buffer: the arrays of {what} are not views "
                              f"that tile one 1-D buffer in order; {hint}")
        a = owner
    if not hasattr(a, "ndim") or not hasattr(a, "dtype"):
        raise ConfigError(f"{what} must be an array, got {type(a).__name__}; {hint}")
    if a.ndim != 1 or not a.flags.c_contiguous:
        raise ConfigError(f"{what} must be a 1-D contiguous buffer, got shape "
                          f"{tuple(a.shape)}; {hint}")
    if a.size == 0:
        raise ConfigError(f"{what} is empty; there is nothing to optimise")
    if a.dtype.kind != "f":
        raise ConfigError(f"{what} must hold floats, got {a.dtype}; {hint}")
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        raise ConfigError(f"{what} is read-only (a memory map, or an array marked so), but "
                          f"L-BFGS writes its candidates into it; {hint}")
    return a
