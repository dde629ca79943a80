"""Fused elementwise passes: several of functional.py's formulas in one go, in place.

Each function names the reference functions it reproduces. On NumPy each is a short sequence
of in-place ufuncs (`out=`), so a training step allocates nothing; on CuPy each is one
ElementwiseKernel instead of a kernel launch per operation. The CuPy module is never imported
here: the kernels are built from the array's own module (`xp.ElementwiseKernel`), which
backend.array_module finds.

Names ending in `_` work in place on their first argument.
"""
from __future__ import annotations

import os
import threading
import types

import numpy as np

from ..backend import array_module

# name: (in_params, out_params, operation). T is the array's float type; the (T) casts keep
# float32 arithmetic in float32 (a bare 0.5 is a double in CUDA C++).
_CUPY_KERNELS = {
    "bias_sigmoid": ("T b", "T z", "z = tanh((z + b) * (T)0.5) * (T)0.5 + (T)0.5;"),
    "sigmoid_mse_head": (
        "T b, T x, T k", "T z, T dz",
        "T t = tanh((z + b) * (T)0.5);"
        "T e = t * (T)0.5 + (T)0.5 - x;"
        "dz = e * ((T)1 - t * t) * k;"
        "z = e;"),
    "linear_mse_head": (
        "T b, T x, T k", "T z, T dz",
        "T e = z + b - x;"
        "dz = e * k;"
        "z = e;"),
    "sigmoid_bce_head": (
        "T b, T x, T k", "T z, T dz",
        "T a = z + b;"
        "T s = tanh(a * (T)0.5) * (T)0.5 + (T)0.5;"
        "T abs_a = a < (T)0 ? -a : a;"
        "dz = (s - x) * k;"
        "z = (a > (T)0 ? a : (T)0) + log1p(exp(-abs_a)) - x * a;"),
    "sigmoid_backward": ("T y, T row", "T dy", "dy = ((T)1 - y) * y * (dy + row);"),
    "bias_relu": ("T b", "T z", "T a = z + b; z = a > (T)0 ? a : (T)0;"),
    "relu_backward": ("T y, T row", "T dy", "dy = y > (T)0 ? dy + row : (T)0;"),
    "add_scaled": ("T W, T lam", "T dW", "dW += lam * W;"),
}
_COMPILED = {}


def cupy_kernel(xp, name, table=None):
    """The ElementwiseKernel `name` (of _CUPY_KERNELS, or of `table`), compiled on first use
    with the CuPy module xp."""
    source = (table or _CUPY_KERNELS)[name]
    kernel = _COMPILED.get((xp.__name__, source))
    if kernel is None:
        in_params, out_params, operation = source
        kernel = _COMPILED[(xp.__name__, source)] = xp.ElementwiseKernel(
            in_params, out_params, operation, "minisae_" + name)
    return kernel


_NUMBA = {}  # name: the tuple of compiled loops, or None where numba is missing or switched off
_NUMBA_LOCK = threading.Lock()


def numba_loops(name, *loops, fastmath=False, helpers=()):
    """The plain-Python loops compiled by numba (on first use, cached on disk), as a tuple; None
    where numba is not installed or MINISAE_NUMBA=0 is set, and the caller keeps its NumPy
    passes. fastmath: numba's fast-math flags for these loops (False: none, every operation
    in the written order). helpers: plain-Python functions of one number that the loops call
    by name, compiled first and inlined into them. numba's disk cache knows a loop by its code
    and its file, not by these settings: give each loop one setting, always. Threads that ask
    at once all get the compiled loops (one compiles, the others wait)."""
    if name not in _NUMBA:
        with _NUMBA_LOCK:
            if name not in _NUMBA:
                _NUMBA[name] = _compiled(loops, fastmath, helpers)
    return _NUMBA[name]


def _compiled(loops, fastmath, helpers):
    if os.environ.get("MINISAE_NUMBA", "1").strip() in ("0", "false", "no"):
        return None
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(nogil=True, cache=True, error_model="numpy", fastmath=fastmath)
    inline = numba.njit(inline="always", cache=True, fastmath=fastmath)
    compiled = {helper.__name__: inline(helper) for helper in helpers}
    return tuple(jit(_seeing(loop, compiled)) for loop in loops)


def _seeing(loop, names):
    """loop, its global names extended by `names` (a new function object; loop is unchanged)."""
    if not names:
        return loop
    return types.FunctionType(loop.__code__, {**loop.__globals__, **names}, loop.__name__,
                              loop.__defaults__, loop.__closure__)


def bias_sigmoid_(z, b):
    """z = sigmoid(z + b), in place; z (batch, n), b (n,). Returns z.

    Reproduces functional.sigmoid(z + b) (the Dense layer's bias, then the Sigmoid layer); in
    float32 with numba, by one compiled loop and a rational tanh (TANH_BOUND), to a few units
    in the last place."""
    xp = array_module(z)
    if xp is not np:
        cupy_kernel(xp, "bias_sigmoid")(b, z)
        return z
    loops = _float32_loops() if z.dtype == np.float32 == b.dtype else None
    if loops is not None:  # one compiled pass, with the rational tanh (TANH_BOUND)
        loops[1](z, b)
        return z
    z += b
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    return z


def bias_relu_(z, b):
    """z = max(z + b, 0), in place; z (batch, n), b (n,). Returns z.

    Reproduces the Dense layer's bias, then functional.relu."""
    xp = array_module(z)
    if xp is not np:
        cupy_kernel(xp, "bias_relu")(b, z)
        return z
    z += b
    np.maximum(z, 0.0, out=z)
    return z


def relu_backward_(dy, y, row=None):
    """dy = (dy + row) where y > 0, else 0, in place: the ReLU's backward, with a per-unit
    term `row` (n,) first added to every row of dy (a penalty's gradient).

    Reproduces `dh + functional.mean_activation_backward(...)` then functional.relu_backward."""
    xp = array_module(dy)
    if xp is not np:
        if row is None:
            row = xp.zeros(dy.shape[-1], dtype=dy.dtype)
        cupy_kernel(xp, "relu_backward")(y, row, dy)
        return dy
    if row is not None:
        dy += row
    dy *= y > 0
    return dy


def topk_(z, b, k, relu, units_gather=None):
    """The TopK coding layer in place: z = z + b, then keep each row's k largest (through a
    ReLU when relu), zero the rest. Returns (z, rows, kept, mask): z now holds h, and kept
    (batch, k) the column of each row's kept units (rows (batch, 1) indexes the rows beside
    it); mask (batch, k) says which of them stayed (None: all).

    units_gather: a communicator's (a sharded dictionary's ranks each hold some units): the
    row's k candidates of every rank, side by side; a candidate below the row's k-th largest
    of them all is dropped (its code 0, mask False). Alone (or None) every candidate stays.

    Reproduces layers.TopK.forward. Selection in linear time, not a sort: on NumPy with numba,
    each row's k-th largest by np.partition, then a compiled scan for the columns above it
    and, for ties at it, the lowest columns (the reference's choice); else argpartition, whose
    ties at the k-th value, which continuous data all but never have, may keep another unit
    than the reference's lower index."""
    xp = array_module(z)
    z += b
    n = z.shape[1]
    top = min(k, n)
    kept = _kept_columns(z, top) if xp is np and top < n else None
    if kept is None:
        kept = xp.argpartition(z, n - top, axis=1)[:, n - top:]
    rows = xp.arange(z.shape[0])[:, None]
    values = z[rows, kept]
    mask = None
    if units_gather is not None:
        candidates = units_gather(padded(values, k))
        mask = values >= kth_of_rows(candidates, k)
        values *= mask
    if relu:
        xp.maximum(values, 0, out=values)
    z.fill(0)
    z[rows, kept] = values
    return z, rows, kept, mask


def _kept_columns(z, k):
    """The columns of each row's k largest values (batch, k): those above the row's k-th
    value in column order, then those tied at it, the lowest first (so exactly k, as the
    reference's stable sort chooses them); None without numba, or where a row holds NaN
    (then argpartition decides, as it did before this scan existed)."""
    loops = numba_loops("topk_scan", _kept_columns_loop)
    if loops is None:
        return None
    kth = kth_of_rows(z, k)[:, 0]
    kept = np.empty((z.shape[0], k), dtype=np.intp)
    return kept if loops[0](z, kth, kept) else None


def _kept_columns_loop(z, kth, kept):
    # kept[i] = the columns of row i above kth[i], then those equal to it, k in all; returns
    # False at a NaN (which no comparison sees)
    batch, n = z.shape
    k = kept.shape[1]
    for i in range(batch):
        c = 0
        for j in range(n):
            v = z[i, j]
            if v != v:
                return False
            if v > kth[i]:
                kept[i, c] = j
                c += 1
        j = 0
        while c < k and j < n:
            if z[i, j] == kth[i]:
                kept[i, c] = j
                c += 1
            j += 1
        if c < k:
            return False
    return True


def padded(values, k):
    """values (batch, <= k) with -inf columns after them to make k."""
    xp = array_module(values)
    if values.shape[1] == k:
        return values
    pad = xp.full((values.shape[0], k - values.shape[1]), -xp.inf, dtype=values.dtype)
    return xp.concatenate([values, pad], axis=1)


def kth_of_rows(values, k):
    """functional.kth_of_rows by partial selection: the k-th largest of each row (batch, 1)."""
    n = values.shape[1]
    return array_module(values).partition(values, n - k, axis=1)[:, n - k:n - k + 1]


def largest(a, n):
    """functional.largest by partial selection: the n largest entries of a (1-d, n of them,
    in no order), padded with -inf where a has fewer."""
    xp = array_module(a)
    flat = a.reshape(-1)
    if flat.shape[0] <= n:
        return xp.concatenate([flat, xp.full(n - flat.shape[0], -xp.inf, dtype=a.dtype)])
    return xp.partition(flat, flat.shape[0] - n)[flat.shape[0] - n:]


def kth_largest(values, n):
    """functional.kth_largest by partial selection: the n-th largest of a 1-d array (a 0-d
    array: no wait for a GPU)."""
    return array_module(values).partition(values, values.shape[0] - n)[values.shape[0] - n]


def topk_backward_(dh, h, rows, kept, relu, mask=None):
    """dh = the TopK layer's backward, in place: dh where kept (and h > 0 with relu), else 0.
    mask: which of kept stayed (topk_'s), or None for all.

    Reproduces layers.TopK.backward."""
    g = dh[rows, kept]
    if mask is not None:
        g *= mask
    if relu:
        g *= h[rows, kept] > 0
    dh.fill(0)
    dh[rows, kept] = g
    return dh


BLOCK_BYTES = 1 << 19
"""The heads below run their chain of passes over blocks of rows of at most this many bytes
an array: a block's z, x and dz stay in the core's cache from the first pass to the last,
where the whole batch (3 MB at 1000 x 784) would go out to memory and back at each pass."""


def row_blocks(a):
    """Slices of a's rows, each of at most BLOCK_BYTES (one row at the least)."""
    rows = max(1, BLOCK_BYTES // max(1, a.shape[1] * a.itemsize))
    return [slice(i, i + rows) for i in range(0, a.shape[0], rows)]


def sigmoid_mse_head_(z, b, x, scale, dz):
    """A sigmoid output layer and the squared error, forward and backward, in one go:

        y = sigmoid(z + b),   dz = d(scale * sum((y - x)^2)) / dz = 2 scale (y - x) y (1 - y)

    Reproduces functional.sigmoid, functional.mse, functional.mse_backward and
    functional.sigmoid_backward. Returns sum((y - x)^2) (a float on NumPy, a 0-d array on
    CuPy); z is used as scratch. y itself is never stored: with t = tanh((z + b) / 2),
    y = (1 + t) / 2 and y (1 - y) = (1 - t^2) / 4, so dz = (scale / 2) (y - x) (1 - t^2).
    On NumPy in float32, one compiled loop where numba is installed (_sigmoid_mse_loop, with
    a rational tanh: TANH_BOUND); else NumPy's passes, block by block of rows (row_blocks)."""
    xp = array_module(z)
    if xp is not np:
        cupy_kernel(xp, "sigmoid_mse_head")(b, x, z.dtype.type(0.5 * scale), z, dz)
        return xp.vdot(z.ravel(), z.ravel())  # the kernel leaves y - x in z
    loop = _float32_loops() if z.dtype == np.float32 == x.dtype == b.dtype == dz.dtype else None
    if loop is not None:
        return loop[0](z, b, x, np.float32(0.5 * scale), dz)
    return sum(_sigmoid_mse_block(z[r], b, x[r], scale, dz[r]) for r in row_blocks(z))


def _sigmoid_mse_block(z, b, x, scale, dz):
    z += b
    z *= 0.5
    t = np.tanh(z, out=z)
    e = np.multiply(t, 0.5, out=dz)
    e += 0.5                      # y
    e -= x                        # y - x
    squared_error = float(np.vdot(e, e))
    t *= t
    np.subtract(1.0, t, out=t)    # 1 - t^2 = 4 y (1 - y)
    e *= t
    e *= 0.5 * scale
    return squared_error


# tanh in float32 as a rational function, for the compiled loops: NumPy's np.tanh is vectorised
# (SIMD) but runs as a pass of its own over memory, and numba's math.tanh calls the C library
# once per number (45x slower than np.tanh, BENCHMARKS.md). With s = a^2, for |a| < TANH_BOUND,
#
#     tanh(a) = a (1 + P1 s + P2 s^2 + P3 s^3 + P4 s^4 + P5 s^5) / (1 + Q1 s + Q2 s^2 + Q3 s^3)
#
# and +-1 beyond (tanh(8) = 1 - 2.3e-7: y is then exactly 0 or 1 from |z + b| >= 16, where
# functional.sigmoid's float32 reaches them near 17). Only multiplications, additions and one division, so
# the compiler can vectorise it (16 float32 to an AVX-512 register). The coefficients are our
# own fit of tanh(a)/a on [0, 8] (40,000 even points and 2,000 geometric ones in [1e-6, 0.1];
# least squares on the relative error, 80 Sanathanan-Koerner iterations with Lawson's
# reweighting toward the minimax, the best kept; degrees (5, 3), where (6, 3) and (5, 4)
# gave a pole and a zero that nearly cancel); Q's coefficients are positive: no pole. Error measured on
# every 2^-17 step of [-10, 10] in float32 (tests/test_fast.py; every 2^-20 step: 5.5): at
# most 5.4 units in the last place of the exact tanh, 0.86 on average; NumPy's own float32
# tanh: 1.4 and 0.37. So the engine's float32 sigmoids are not the reference's to the last bit
# but to a few units in the last place (README, "How to read this code", the fast engine).
TANH_BOUND = np.float32(8.0)
TANH_P1, TANH_P2 = np.float32(0.13015515), np.float32(0.0030252892)
TANH_P3, TANH_P4 = np.float32(1.0248684e-05), np.float32(-1.5860694e-08)
TANH_P5 = np.float32(2.6621618e-11)
TANH_Q1, TANH_Q2 = np.float32(0.46348846), np.float32(0.024188157)
TANH_Q3 = np.float32(0.00024271828)
TANH_ONE, TANH_HALF = np.float32(1.0), np.float32(0.5)


def _float32_loops():
    """(sigmoid_mse_head, bias_sigmoid, tanh): the compiled float32 loops, or None without
    numba. Fast-math lets the compiler reorder the squared error's sum (so that it vectorises)
    and fuse multiply-adds; it assumes nothing about NaN or inf, which pass through as they
    pass through NumPy's passes."""
    return numba_loops("float32", _sigmoid_mse_loop, _bias_sigmoid_loop, _tanh_loop,
                       fastmath={"reassoc", "contract"}, helpers=(_tanh_f32,))


def _tanh_f32(a):
    # tanh(a) of a float32 number, by the rational function above (every constant a float32,
    # so the arithmetic stays in float32); NaN stays NaN
    c = min(max(a, -TANH_BOUND), TANH_BOUND)
    s = c * c
    p = ((((TANH_P5 * s + TANH_P4) * s + TANH_P3) * s + TANH_P2) * s + TANH_P1) * s + TANH_ONE
    q = ((TANH_Q3 * s + TANH_Q2) * s + TANH_Q1) * s + TANH_ONE
    t = c * p / q
    if not abs(a) < TANH_BOUND:
        t = a if a != a else (TANH_ONE if a > 0 else -TANH_ONE)
    return t


def _sigmoid_mse_loop(z, b, x, k, dz):
    # _sigmoid_mse_block's eleven passes in one, a row at a time: t = tanh((z + b) / 2),
    # e = (1 + t) / 2 - x = y - x, dz = k e (1 - t^2) with k = scale / 2. Returns sum(e^2).
    batch, n = z.shape
    total = 0.0
    for i in range(batch):
        row_sum = np.float32(0.0)
        for j in range(n):
            t = _tanh_f32((z[i, j] + b[j]) * TANH_HALF)
            e = t * TANH_HALF + TANH_HALF - x[i, j]
            row_sum += e * e
            dz[i, j] = e * (TANH_ONE - t * t) * k
        total += row_sum
    return total


def _bias_sigmoid_loop(z, b):
    # bias_sigmoid_'s five passes in one: z = sigmoid(z + b) = (1 + tanh((z + b) / 2)) / 2
    batch, n = z.shape
    for i in range(batch):
        for j in range(n):
            z[i, j] = _tanh_f32((z[i, j] + b[j]) * TANH_HALF) * TANH_HALF + TANH_HALF


def _tanh_loop(a, out):
    # out = tanh(a) over flat float32 arrays (the tests' handle on _tanh_f32)
    for i in range(a.size):
        out[i] = _tanh_f32(a[i])


def linear_mse_head_(z, b, x, scale, dz):
    """A linear output layer and the squared error: y = z + b, dz = 2 scale (y - x).

    Reproduces the Identity layer, functional.mse and functional.mse_backward. Returns
    sum((y - x)^2); z is used as scratch. On NumPy, one compiled loop where numba is installed
    (dz and the sum to rounding; dz the passes' bits on the machines tested)."""
    xp = array_module(z)
    if xp is not np:
        cupy_kernel(xp, "linear_mse_head")(b, x, z.dtype.type(2.0 * scale), z, dz)
        return xp.vdot(z.ravel(), z.ravel())
    loops = numba_loops("linear_mse", _linear_mse_loop, fastmath={"reassoc"})
    if loops is not None and z.dtype == x.dtype == b.dtype == dz.dtype:
        return loops[0](z, b, x, z.dtype.type(2.0 * scale), dz)
    z += b
    e = np.subtract(z, x, out=dz)
    squared_error = float(np.vdot(e, e))
    e *= 2.0 * scale
    return squared_error


def _linear_mse_loop(z, b, x, k, dz):
    # linear_mse_head_'s four passes in one: dz = ((z + b) - x) k, the passes' operations in
    # their order; sum(e^2) is summed in another (fast-math's reassociation only, so that it
    # vectorises)
    batch, n = z.shape
    total = 0.0
    for i in range(batch):
        row_sum = k - k  # zero in z's dtype (k is finite)
        for j in range(n):
            e = (z[i, j] + b[j]) - x[i, j]
            row_sum += e * e
            dz[i, j] = e * k
        total += row_sum
    return total


def sigmoid_bce_head_(z, b, x, dz, work=None):
    """A sigmoid output layer and binary cross-entropy from the logits a = z + b:

        loss_sum = sum(softplus(a) - x a),    dz = (sigmoid(a) - x) / x.size

    Reproduces functional.bce_with_logits (times x.size) and bce_with_logits_backward.
    Returns loss_sum; z is used as scratch. work: scratch of z's shape (NumPy only)."""
    xp = array_module(z)
    k = 1.0 / x.size
    if xp is not np:
        cupy_kernel(xp, "sigmoid_bce_head")(b, x, z.dtype.type(k), z, dz)
        return z.sum()            # the kernel leaves softplus(a) - x a in z
    z += b                        # a
    s = np.multiply(z, 0.5, out=dz)
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5                      # sigmoid(a)
    w = np.abs(z, out=work)
    np.negative(w, out=w)
    np.exp(w, out=w)
    np.log1p(w, out=w)            # log(1 + exp(-|a|))
    x_dot_a = float(np.vdot(x, z))
    np.maximum(z, 0.0, out=z)     # softplus(a) = max(a, 0) + log(1 + exp(-|a|))
    loss_sum = float(z.sum()) + float(w.sum()) - x_dot_a
    s -= x
    s *= k
    return loss_sum


def sigmoid_backward_(dy, y, row=None, work=None):
    """dy = (dy + row) * y * (1 - y), in place: the sigmoid's backward, with a per-unit term
    `row` (n,) first added to every row of dy (the KL gradient). work: scratch of y's shape.

    Reproduces `dh + functional.mean_activation_backward(...)` then functional.sigmoid_backward."""
    xp = array_module(dy)
    if xp is not np:
        if row is None:
            row = xp.zeros(dy.shape[-1], dtype=dy.dtype)
        cupy_kernel(xp, "sigmoid_backward")(y, row, dy)
        return dy
    loops = numba_loops("sigmoid_backward", _sigmoid_backward_loop)
    if loops is not None and y.dtype == dy.dtype and (row is None or row.dtype == dy.dtype):
        # one compiled pass, the same operations in the same order; no row adds -0.0, which
        # leaves every number as it is (-0.0 too)
        row = np.full(dy.shape[-1], -0.0, dy.dtype) if row is None else row
        loops[0](dy, y, row, dy.dtype.type(1))
        return dy
    if row is not None:
        dy += row
    work = np.subtract(1.0, y, out=work)
    work *= y
    dy *= work
    return dy


def _sigmoid_backward_loop(dy, y, row, one):
    # sigmoid_backward_'s passes in one: dy = (dy + row) ((1 - y) y), rounded as they round
    # (one: 1 in dy's dtype, so that float32 stays float32)
    batch, n = dy.shape
    for i in range(batch):
        for j in range(n):
            dy[i, j] = (dy[i, j] + row[j]) * ((one - y[i, j]) * y[i, j])


def add_weight_decay_grad_(dW, W, lam, work=None):
    """dW += lam * W, in place. work: scratch of W's shape (NumPy only).

    Reproduces `grads += functional.weight_decay_backward(W, lam)`."""
    if lam == 0:
        return dW
    xp = array_module(dW)
    if xp is not np:
        cupy_kernel(xp, "add_scaled")(W, dW.dtype.type(lam), dW)
        return dW
    np.multiply(W, lam, out=work)
    dW += work
    return dW
