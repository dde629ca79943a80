"""The fast engine: the reference computations of minisae's teaching modules, reproduced with
fewer passes over memory, reused buffers, fused kernels and threads.

Skip this package on a first read. Each piece names the reference function it reproduces,
and tests/test_fast.py checks that both give the same numbers:

    step.py      autoencoder_loss_and_grads  <- SparseAutoencoder.loss_and_grads (fast=False)
    kernels.py   fused elementwise passes    <- functional.py's sigmoid, mse, bce, KL, ...
    adam.py      FlatAdam                    <- Adam.reference_step (the paper's Algorithm 1):
                 one fused numba loop where numba is installed, else chunked NumPy passes
    threads.py   the thread policy: BLAS's (and Adam's) threads for a run, fixed or "auto"
                 (trial steps on one thread and on every core; tests/test_threads.py)
    bench.py     `minisae bench`: samples/s against PyTorch (eager and compiled) and the
                 matmul roofline

The teaching modules reach the engine at one marked line each: SparseAutoencoder.loss_and_grads
and Adam.step, when `fast` is on.
"""
from .adam import FlatAdam
from .step import autoencoder_loss_and_grads

__all__ = ["FlatAdam", "autoencoder_loss_and_grads"]
