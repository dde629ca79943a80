"""The fast engine: the reference computations of minisae's teaching modules, reproduced with
fewer passes over memory, reused buffers, fused kernels and threads. It imports the teaching
core; the core never imports it.

Skip this package on a first read. Each piece names the reference it reproduces, and
tests/test_fast.py checks that both give the same numbers:

    step.py      loss_and_grads(model, x)  <- SparseAutoencoder.loss_and_grads
                 values(model, x)          <- SparseAutoencoder.values (evaluate's forward)
    kernels.py   fused elementwise passes  <- functional.py's sigmoid, mse, bce, ...
                 (NumPy passes, one compiled loop each where numba is installed, one
                 ElementwiseKernel each on CuPy); TopK's selection by partial selection
    sparse.py    TopK's products on the kept codes only (numba loops) <- layers.TopK with
                 the dense products of Dense.forward and Dense.backward
    adam.py      FastAdam(opt)             <- Adam.step (the paper's Algorithm 1), on the same
                 m and v arrays: one fused numba loop where numba is installed, else chunked
                 NumPy passes, one kernel on CuPy
    threads.py   the thread policy: BLAS's (and Adam's) threads for a run: a number, "auto"
                 (chosen once from the size and the cores) or "adaptive" (timed, follows the
                 load)

Training (`minisae.fit`, `minisae train`, `minisae bench`) chooses the engine by default. From
a loop of your own it is two calls:

    fast_opt = minisae.fast.FastAdam(opt)                # opt: a reference Adam
    for x in batches:
        loss = minisae.fast.loss_and_grads(model, x)     # what model.loss_and_grads(x) gives
        fast_opt.step()                                  # what opt.step() does
"""
from .. import gradcheck
from .adam import FastAdam, fast_optimizer
from .step import fused, loss_and_grads, values

__all__ = ["FastAdam", "check_model", "fast_optimizer", "fused", "loss_and_grads", "values"]


def check_model(model, *inputs, **kwargs):
    """gradcheck.check_model for the fast engine's loss_and_grads: its gradients against
    central differences (the model must be float64)."""
    return gradcheck.check_model(model, *inputs, loss_and_grads=loss_and_grads, **kwargs)
