"""`minisae bench`: how fast a training step runs, against PyTorch and against the roofline.

For each configuration (n_hidden x batch) a model is trained for a fixed number of steps, on
random data of MNIST's shape (60,000 x 784), Adam, float32. Two models (--sparsity):

- kl (the default), the book's exercise: 784 inputs, sigmoid coding layer, sigmoid output,
  mean-MSE + beta * sum KL(rho || rho_hat);
- topk, Gao et al.'s: ReLU codes of which each sample keeps its k largest (--k, 25), linear
  output, mean-MSE; PyTorch's the usual way, with torch.topk and a scatter;
- topk with --aux-k N: Gao et al.'s whole model, the topk preset's: AuxK (the N largest
  pre-activations among the dead units reconstruct the residual e = x - y, held fixed;
  alpha * ||e_hat - e||^2 / ||e - mean(e)||^2, alpha 1/32), the decoder bias subtracted before
  encoding (and started at the data's mean), their initialisation. A fixed share of the units
  (--dead-share, 25%) is dead, the same units for every contender (see bench_model).

--inputs N sets the data's width (784, MNIST's, by default). The two sizes of issue 25:

    minisae bench --sparsity topk --k 25 --aux-k 256 --configs 1000x256
    minisae bench --sparsity topk --k 32 --aux-k 256 --inputs 384 --configs 3072x1024

The contenders are timed in alternating rounds, and each one's median round is reported:

- minisae: the fast engine's step (minisae.fast.loss_and_grads, then FastAdam) with
  --path fast, the reference (model.loss_and_grads, then Adam.step) with --path reference,
  or both;
- torch (when installed): the same model written the usual way (nn.Linear, autograd,
  torch.optim.Adam), with the same starting weights and batches;
- torch.compile: that training step (zero_grad, loss, backward, Adam) under torch.compile,
  where inductor can compile it (it needs a C++ compiler; --no-compile skips it);
- fit: minisae.fit on the same model, one epoch of the same number of steps per round: the
  step as users run it, with each shuffled batch gathered (and moved to a GPU) included;
- the step's five matrix products alone (x @ W1, h @ W2, h.T @ dz2, dz2 @ W2.T, x.T @ dz1),
  10 * 784 * n_hidden flops per sample. Their rate is the machine's float32 matmul speed on
  exactly these shapes at minisae's BLAS thread count, and batch / (their time) is the
  roofline: the samples/s of a step that did nothing but its matrix products.

Threads: --threads auto (the default) lets minisae's thread policy (threads.py) choose BLAS's
count for each configuration once, by timing its step on one thread and on every core (small
products take one thread untimed), --threads adaptive lets it keep timing steps and follow the
machine's load; both leave PyTorch at its own default. --threads N gives N to
both.

Under load (--load, for every contender alike, from before the first configuration is built
to the end): busy, one process spinning on one core; train, a second process training the
book's KL model with minisae.fit in a loop. The process is stopped at the end, on an error or
Ctrl-C too, and ends by itself if the benchmark's process dies; the kind, and the CPU time
the load process took, are in the JSON ("load") and the table's header.

    minisae bench                                   # the four configurations, a table
    minisae bench --configs 1000x1000 --json b.json
    minisae bench --path both                       # also the reference path's speed
    minisae bench --backend cupy                    # GPU, against PyTorch CUDA
    minisae bench --sparsity topk --configs 1000x256 # TopK, k = 25
    minisae bench --sparsity topk --aux-k 256 --configs 1000x256 --load busy

    from minisae.apps.bench import run_benchmark, format_table
    print(format_table(run_benchmark(configs="196x256", steps=20)))
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import checks
from .. import fast as engine
from ..backend import array_module, get_backend, to_numpy
from ..errors import ConfigError, MinisaeError
from ..fast.adam import numba_adam
from ..fast.threads import parse_threads, thread_limits
from ..files.atomic import atomic_write, check_target
from ..functional import RHO_EPS
from ..model import SparseAutoencoder
from ..optim import Adam

N_INPUTS = 784
N_SAMPLES = 60_000
DEFAULT_CONFIGS = "196x256,196x1000,1000x256,1000x1000"
QUICK_CONFIGS = "16x32,24x64"
LR = 1e-3
SPARSITY_TARGET, SPARSITY_WEIGHT = 0.1, 0.2
PATHS = ("fast", "reference", "both")
MODELS = {
    "kl": dict(sparsity="kl", sparsity_target=SPARSITY_TARGET, sparsity_weight=SPARSITY_WEIGHT),
    "topk": dict(sparsity="topk", hidden_activation="relu", output_activation="linear"),
}
"""The benchmark's models: SparseAutoencoder arguments (topk adds k)."""
K = 25
AUX_WEIGHT = 1 / 32
"""AuxK's alpha with --aux-k (Gao et al.'s; the topk preset's)."""
DEAD_SHARE = 0.25
"""With --aux-k, the share of units made dead (--dead-share). Dead shares measured in issue 25:
about 0 with Gao et al.'s whole recipe once trained, 7.4% after a first epoch on a sentence
encoder's activations, 0.43-0.69 on digits without the decoder bias subtracted: a quarter is
between them, more AuxK work than a healthy run has. At 1000 units that is 250, fewer than
k_aux = 256: AuxK then decodes every dead unit (both sides cap k_aux at the dead count);
--dead-share 0.5 has it select 256 of 500."""
DEAD_ROWS = 2048
"""Rows whose pre-activations place the dead units' biases (bench_model)."""
FIXED_WINDOW = 2**40
"""fit's dead window for the AuxK model, and the dead units' silent count at the start: the
chosen units count as dead from the first step, and no other unit ever does."""
LOADS = ("none", "busy", "train")
TRAIN_LOAD = {"n_inputs": 784, "n_hidden": 1000, "batch": 256, "rows": 256 * 20}
"""--load train: the book's KL model the second process trains (its default threads), an epoch
of `rows` random rows per fit call."""
LOAD_READY_SECONDS = 300
"""How long a load process may take to start its work (import, first epoch)."""
MAX_STEPS, MAX_ROUNDS = 10**6, 10**4
"""More steps or rounds than a benchmark ever times (a typo, not a plan: refused)."""

COLUMNS = ("hidden", "batch", "minisae samples/s", "torch samples/s", "ratio",
           "compiled samples/s", "ratio to compiled", "fit samples/s", "fit / torch",
           "matmul GFLOP/s", "roofline samples/s", "of roofline", "threads")
"""The table's columns, in order; the JSON has one entry per row in result["results"]."""


def parse_configs(text):
    """"196x256,1000x1000" -> [(196, 256), (1000, 1000)]: (n_hidden, batch) pairs."""
    configs = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            hidden, batch = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--configs takes HIDDENxBATCH pairs separated by commas, e.g. "
                              f"'196x256,1000x1000'; cannot read {part!r}") from None
        if hidden < 1 or batch < 1:
            raise ConfigError(f"hidden size and batch must be positive, got {part!r}")
        configs.append((hidden, batch))
    if not configs:
        raise ConfigError("--configs is empty; give at least one HIDDENxBATCH pair")
    return configs


# ----------------------------------------------------------------------------- the contenders

def _flops_per_sample(n_inputs, hidden):
    """Five products of 2 * n_inputs * hidden flops each, per sample."""
    return 10 * n_inputs * hidden


class _Batches:
    """Batch k of a step count: rows [k * batch, (k + 1) * batch) of the data, wrapping round
    at the end of an epoch. Views, no copies; every contender sees the same sequence."""

    def __init__(self, data, batch):
        self.data, self.batch = data, batch
        self.per_epoch = len(data) // batch

    def __getitem__(self, k):
        start = (k % self.per_epoch) * self.batch
        return self.data[start:start + self.batch]


def model_settings(sparsity="kl", k=K, aux_k=None):
    """SparseAutoencoder's arguments for the benchmark's model: MODELS[sparsity], TopK's k, and
    with aux_k (TopK only) the rest of Gao et al.'s model, as the topk preset has it: AuxK
    (alpha AUX_WEIGHT), the decoder bias subtracted before encoding, their initialisation."""
    settings = dict(MODELS[sparsity])
    if sparsity == "topk":
        settings["k"] = k
        if aux_k:
            settings.update(aux_k=aux_k, aux_weight=AUX_WEIGHT, subtract_decoder_bias=True,
                            init="gao")
    return settings


def dead_units(hidden, share, seed):
    """The units made dead: round(share * hidden) of them, drawn from the seed, in order."""
    n = int(round(share * hidden))
    return np.sort(np.random.default_rng([seed, hidden]).choice(hidden, size=n, replace=False))


def bench_model(backend, data, hidden, seed, sparsity="kl", k=K, aux_k=None,
                dead_share=DEAD_SHARE):
    """The benchmark's model on `backend` for data of data.shape[1] inputs, float32, from the
    seed; with aux_k, started as Gao et al.'s and with dead units (_start_with_dead_units)."""
    model = SparseAutoencoder(n_inputs=data.shape[1], n_hidden=hidden, backend=backend,
                              dtype="float32", seed=seed, **model_settings(sparsity, k, aux_k))
    if aux_k:
        _start_with_dead_units(model, to_numpy(data[:DEAD_ROWS]),
                               dead_units(hidden, dead_share, seed))
    return model


def _start_with_dead_units(model, x, units):
    """Gao et al.'s start, the decoder bias at the data's mean (as fit sets it), with `units`
    dead: their encoder biases lowered until, on the rows x, their pre-activations lie below
    every other unit's by the whole range of the pre-activations. They never enter the top k
    (k is at most the living units' count: run_benchmark checks it), so they get no
    gradient and stay dead, in fit's own tracking too; AuxK selects among them, and its ReLU
    passes zeros (as it does for most of a real dead unit's selected pre-activations). AuxK's
    work does not depend on those values: the same selection, the same products.
    model.dead marks them (the raw step reads it); model.silent counts FIXED_WINDOW samples
    for them (fit, with that window, publishes the same set at each step)."""
    be, P = model.backend, model.params
    b2 = x.mean(axis=0, dtype=np.float64)
    W1 = to_numpy(P["encoder.W"]).astype(np.float64)
    b1 = to_numpy(P["encoder.b"]).astype(np.float64)
    z = (x - b2) @ W1 + b1
    dead = np.zeros(W1.shape[1], dtype=bool)
    dead[units] = True
    if dead.any():
        floor = z[:, ~dead].min() - (z.max() - z.min())
        b1[dead] += floor - z[:, dead].max(axis=0)
    P["decoder.b"][...] = be.asarray(b2)
    P["encoder.b"][...] = be.asarray(b1)
    model.dead[...] = be.asarray(dead, dtype=be.xp.bool)
    model.silent[dead] = FIXED_WINDOW


class MinisaeRunner:
    """minisae's training step: loss_and_grads, then Adam; on the fast engine
    (minisae.fast.loss_and_grads and FastAdam), or the reference (model.loss_and_grads and
    Adam.step) with fast=False. With aux_k, the AuxK model with its fixed dead units."""

    def __init__(self, backend, hidden, data, batch, seed, fast=True, sparsity="kl", k=K,
                 aux_k=None, dead_share=DEAD_SHARE):
        self.name = "minisae" if fast else "reference"
        self.backend = backend
        self.model = bench_model(backend, data, hidden, seed, sparsity, k, aux_k, dead_share)
        self.opt = Adam(self.model.params, self.model.grads, lr=LR)
        self.step_opt = engine.fast_optimizer(self.opt) if fast else self.opt
        self.compute = engine.loss_and_grads if fast else \
            type(self.model).loss_and_grads
        self.batches = _Batches(data, batch)
        self.adam_seconds = 0.0  # time inside opt.step (NumPy only: CuPy's returns at launch)

    def loss(self, k):
        """The loss of batch k, without a step (for the agreement check)."""
        return self.compute(self.model, self.batches[k], validate=False).total

    def run(self, first, steps):
        model, opt, batches, compute = self.model, self.step_opt, self.batches, self.compute
        clock = time.perf_counter
        for k in range(first, first + steps):
            compute(model, batches[k], validate=False)
            t0 = clock()
            opt.step()
            self.adam_seconds += clock() - t0

    def sync(self):
        self.backend.synchronize()


class FitRunner:
    """minisae.fit on the same model: the step as users run it, each epoch's shuffled batches
    gathered from a NumPy array (and moved to the device) included. Each round is one more
    epoch of `steps` batches, on the fast engine. With aux_k, fit tracks the dead units itself
    (its window FIXED_WINDOW), and finds the fixed ones (dead_share() says what it holds)."""

    name = "fit"

    def __init__(self, backend, hidden, data_host, batch, seed, threads, sparsity="kl", k=K,
                 aux_k=None, dead_share=DEAD_SHARE):
        from ..training import DeadUnits, History
        self.model = bench_model(backend, data_host, hidden, seed, sparsity, k, aux_k,
                                 dead_share)
        self.opt = Adam(self.model.params, self.model.grads, lr=LR)
        self.backend, self.data, self.batch, self.seed = backend, data_host, batch, seed
        self.threads = threads
        self.dead_units = DeadUnits(window=FIXED_WINDOW) if aux_k else None
        self.history = History()

    def run(self, first, steps):
        from ..training import Engine, fit
        if steps < 1:  # no warm-up asked for: no epoch
            return
        fit(self.model, self.opt, self.data[:steps * self.batch], len(self.history) + 1,
            self.batch, seed=self.seed, progress=False, history=self.history,
            engine=Engine(threads=self.threads), dead_units=self.dead_units)

    def dead_share(self):
        """The share of units fit's tracking holds dead now (the AuxK model), else None."""
        if self.dead_units is None:
            return None
        return float((self.model.silent >= FIXED_WINDOW).mean())

    def sync(self):
        self.backend.synchronize()


class TorchRunner:
    """The same model the usual PyTorch way, starting from minisae's weights (their dtype).

    AuxK (aux_k, with `dead` the (n_hidden,) mask of dead units, fixed) as OpenAI's
    sparse_autoencoder and SAELens write it: the pre-activations of the living units masked
    to -inf, torch.topk, a ReLU, a scatter into a (batch, n_hidden) code decoded by the whole
    decoder weight, the residual detached; and the decoder bias subtracted before encoding."""

    name = "torch"

    def __init__(self, torch, device, params, data, batch, sparsity="kl", k=K, aux_k=None,
                 dead=None):
        self.torch, self.device = torch, device
        self.sparsity, self.k = sparsity, k
        n_inputs, hidden = params["encoder.W"].shape
        dtype = torch.from_numpy(np.empty(0, dtype=to_numpy(params["encoder.W"]).dtype)).dtype
        self.encoder = torch.nn.Linear(n_inputs, hidden, device=device, dtype=dtype)
        self.decoder = torch.nn.Linear(hidden, n_inputs, device=device, dtype=dtype)
        with torch.no_grad():  # nn.Linear keeps W as (n_out, n_in): minisae's transposed
            for layer, name in ((self.encoder, "encoder"), (self.decoder, "decoder")):
                layer.weight.copy_(torch.from_numpy(to_numpy(params[name + ".W"]).T.copy()))
                layer.bias.copy_(torch.from_numpy(to_numpy(params[name + ".b"]).copy()))
        self.subtract = bool(aux_k)  # Gao et al.'s model: x - b2 encoded
        self.aux_k = 0
        if aux_k:
            dead = np.asarray(to_numpy(dead), dtype=bool)
            self.dead = torch.from_numpy(dead).to(device)
            self.aux_k = min(aux_k, int(dead.sum()))  # as minisae: at most the dead units
        self.opt = torch.optim.Adam(list(self.encoder.parameters()) +
                                    list(self.decoder.parameters()), lr=LR)
        tdata = torch.from_numpy(data)
        self.batches = _Batches(tdata.to(device) if device != "cpu" else tdata, batch)
        self.train_step = self._step

    def _loss(self, x):
        torch = self.torch
        if self.sparsity == "topk":  # keep each row's k largest, through a ReLU; linear output
            z = self.encoder(x - self.decoder.bias if self.subtract else x)
            values, kept = torch.topk(z, self.k, dim=1)
            h = torch.zeros_like(z).scatter(1, kept, torch.relu(values))
            y = self.decoder(h)
            loss = torch.nn.functional.mse_loss(y, x)
            if self.aux_k:
                loss = loss + self._auxk(z, (x - y).detach())
            return loss
        h = torch.sigmoid(self.encoder(x))
        y = torch.sigmoid(self.decoder(h))
        rho, beta = SPARSITY_TARGET, SPARSITY_WEIGHT
        rho_hat = h.mean(dim=0).clamp(RHO_EPS, 1.0 - RHO_EPS)  # minisae's clip
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return torch.nn.functional.mse_loss(y, x) + beta * kl.sum()

    def _auxk(self, z, e):
        """alpha * ||e_hat - e||^2 / ||e - mean_batch(e)||^2, e_hat decoded (without the bias)
        from the aux_k largest pre-activations z of the dead units through a ReLU; 0 when the
        residual has no variance (a batch of one), as minisae's."""
        torch = self.torch
        values, kept = torch.topk(torch.where(self.dead, z, -torch.inf), self.aux_k, dim=1,
                                  sorted=False)
        h_aux = torch.zeros_like(z).scatter(1, kept, torch.relu(values))
        e_hat = h_aux @ self.decoder.weight.T
        variance = ((e - e.mean(dim=0)) ** 2).sum()  # e is detached: a constant
        scale = torch.where(variance > 0, AUX_WEIGHT / variance, torch.zeros_like(variance))
        return scale * ((e_hat - e) ** 2).sum()

    def _step(self, x):
        self.opt.zero_grad()
        self._loss(x).backward()
        self.opt.step()

    def loss(self, k):
        with self.torch.no_grad():
            return float(self._loss(self.batches[k]))

    def run(self, first, steps):
        step, batches = self.train_step, self.batches
        for k in range(first, first + steps):
            step(batches[k])

    def sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()


class CompiledTorchRunner(TorchRunner):
    """TorchRunner's whole training step under torch.compile (inductor: the elementwise work
    and Adam become fused C++ loops; backward() splits it into a few graphs)."""

    name = "compiled"

    def __init__(self, torch, device, params, data, batch, sparsity="kl", k=K, aux_k=None,
                 dead=None):
        super().__init__(torch, device, params, data, batch, sparsity, k, aux_k, dead)
        torch._dynamo.reset()  # a fresh cache per configuration: shapes stay static
        self.train_step = torch.compile(self._step, dynamic=False)


class MatmulRunner:
    """The step's five matrix products alone, on arrays of the step's shapes and layouts."""

    name = "matmul"

    def __init__(self, backend, hidden, n_inputs, batch, seed):
        rng = np.random.default_rng(seed)
        self.backend = backend

        def rand(*shape):
            return backend.asarray(rng.random(shape, dtype=np.float32))

        x, W1, h, W2 = rand(batch, n_inputs), rand(n_inputs, hidden), rand(batch, hidden), \
            rand(hidden, n_inputs)
        xp = array_module(x)  # the raw module: out= buffers
        dz2, dz1 = rand(batch, n_inputs), rand(batch, hidden)
        self.products = [(x, W1, xp.empty((batch, hidden), np.float32)),        # forward
                         (h, W2, xp.empty((batch, n_inputs), np.float32)),
                         (h.T, dz2, xp.empty((hidden, n_inputs), np.float32)),   # backward
                         (dz2, W2.T, xp.empty((batch, hidden), np.float32)),
                         (x.T, dz1, xp.empty((n_inputs, hidden), np.float32))]
        self.matmul = xp.matmul

    def run(self, first, steps):
        matmul, products = self.matmul, self.products
        for _ in range(steps):
            for a, b, out in products:
                matmul(a, b, out=out)

    def sync(self):
        self.backend.synchronize()


def _timed_round(runner, first, steps):
    runner.sync()
    t0 = time.perf_counter()
    runner.run(first, steps)
    runner.sync()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- setup helpers

def _import_torch(backend_name):
    """(torch, device), or (None, reason) when PyTorch cannot take part."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed (pip install 'minisae[bench]')"
    if backend_name == "cupy":
        if not torch.cuda.is_available():
            return None, "this PyTorch has no CUDA device (a CPU-only build?)"
        return torch, "cuda"
    return torch, "cpu"


def _torch_threads(stack, torch, threads):
    """PyTorch gets `threads` when it is a number; under a policy ("auto", "adaptive") it
    keeps its own default."""
    if torch is None or isinstance(threads, str):
        return None if torch is None else torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    stack.callback(torch.set_num_threads, before)
    return threads


def _compiled_runner(torch, device, params, data, batch, say, **model):
    """A CompiledTorchRunner that has compiled and run one step, or (None, why not)."""
    say(f"compiling the PyTorch step for batch {batch} (torch.compile; a minute or more "
        f"the first time)")
    try:
        runner = CompiledTorchRunner(torch, device, params, data, batch, **model)
        runner.run(0, 2)  # compiles here
        return runner, None
    except Exception as e:  # no C++ compiler, an inductor limitation, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return None, f"torch.compile failed here ({type(e).__name__}: {first})"


def machine_info(backend_name="numpy", torch=None):
    """What the figures were measured on: CPU, cores, BLAS, versions, load (and the GPU)."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
            "blas": _blas_info(), "platform": platform.platform(), "load_average": _load()}
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                      "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MINISAE_NUMBA")
           if k in os.environ}
    if env:
        info["environment"] = env
    if backend_name == "cupy":
        info.update(_gpu_info())
    return info


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _gpu_info():
    try:
        cupy = get_backend("cupy").xp
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return {"gpu": name.decode() if isinstance(name, bytes) else str(name),
                "cupy": cupy.__version__}
    except Exception as e:  # informative only
        return {"gpu": f"unknown ({e})"}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_info():
    """NumPy's BLAS as threadpoolctl sees it at run time (library, version, kernel, threads),
    else as numpy.show_config recorded it at build time."""
    try:
        from threadpoolctl import threadpool_info
        for lib in threadpool_info():
            if lib.get("user_api") == "blas" and "numpy" in lib.get("filepath", ""):
                return (f"{lib.get('internal_api')} {lib.get('version')} "
                        f"({lib.get('architecture')} kernel, {lib.get('num_threads')} threads)")
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return "unknown"


def _adam_kernel(backend_name):
    if backend_name != "numpy":
        return "cupy"
    return "numba" if numba_adam() is not None else "numpy"


# ----------------------------------------------------------------------------- under load

_BUSY_CODE = """\
import os, sys
parent = int(sys.argv[1])
open(sys.argv[2], "w").close()
while os.getppid() == parent:  # spin on one core until stopped, or the benchmark is gone
    for _ in range(100000):
        pass
"""

_TRAIN_CODE = """\
import json, os, sys
import numpy as np
import minisae
parent, ready, size = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
x = np.random.default_rng(1).random((size["rows"], size["n_inputs"]), dtype=np.float32)
model = minisae.SparseAutoencoder(n_inputs=size["n_inputs"], n_hidden=size["n_hidden"], seed=1)
opt = minisae.Adam(model.params, model.grads, lr=1e-3)
history = minisae.History()  # one run, continued: its thread count is decided once
started = False
while os.getppid() == parent:  # epochs until stopped, or the benchmark is gone
    minisae.fit(model, opt, x, epochs=len(history) + 1, batch_size=size["batch"],
                progress=False, history=history)
    if not started:
        open(ready, "w").close()
        started = True
"""


def _load_description(kind):
    if kind == "busy":
        return "one process spinning in a Python loop (a core's worth of work)"
    t = TRAIN_LOAD
    return (f"a second process training the book's KL model ({t['n_inputs']} -> "
            f"{t['n_hidden']}, batch {t['batch']}, Adam) with minisae.fit in a loop, its "
            f"default threads")


def _cpu_seconds(pid):
    """User + system CPU seconds of process pid so far (Linux's /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class LoadProcess:
    """A second process on the machine while the benchmark runs: --load busy or train.

        with LoadProcess("busy") as load:   # started, and at work, here
            ...                             # the timed part
        load.info                           # kind, pid, CPU seconds it took, its share of a core

    It is stopped (terminated, killed if it must be, and reaped) when the block ends, by an
    error or Ctrl-C too; it runs in its own session, so a Ctrl-C at the terminal reaches the
    benchmark alone, and it ends by itself when its parent is gone (killed outright)."""

    def __init__(self, kind):
        self.kind = checks.check_choice(kind, "load", LOADS[1:])
        self.info = {"kind": kind, "description": _load_description(kind), "pid": None}
        self.proc, self.folder, self.started = None, None, None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc):
        self._stop()
        return False

    def _start(self):
        self.folder = tempfile.mkdtemp(prefix="minisae-load-")
        ready, errors = (os.path.join(self.folder, name) for name in ("ready", "stderr"))
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        code = _BUSY_CODE if self.kind == "busy" else _TRAIN_CODE
        with open(errors, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(os.getpid()), ready, json.dumps(TRAIN_LOAD)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                start_new_session=True)
        self.info["pid"] = self.proc.pid
        deadline = time.monotonic() + LOAD_READY_SECONDS
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(errors, errors="replace") as f:
                    last = (f.read().strip().splitlines() or ["(nothing on stderr)"])[-1]
                what = f"ended (exit status {self.proc.returncode})" if \
                    self.proc.returncode is not None else \
                    f"did not start its work in {LOAD_READY_SECONDS} s"
                raise ConfigError(f"the --load {self.kind} process {what}: {last[:300]}")
            time.sleep(0.02)
        self.started = (time.perf_counter(), _cpu_seconds(self.proc.pid))

    def _stop(self):
        proc = self.proc
        if proc is not None:
            running = proc.poll() is None
            if running and self.started is not None:
                (t0, cpu0), cpu = self.started, _cpu_seconds(proc.pid)
                wall = time.perf_counter() - t0
                used = None if cpu is None or cpu0 is None else cpu - cpu0
                self.info.update(wall_seconds=wall, cpu_seconds=used,
                                 cores_used=used / wall if used is not None and wall > 0
                                 else None)
            self.info["running_at_end"] = running
            if running:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            self.info["exit_status"] = proc.returncode
            self.proc = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def _load_block(kind):
    """A LoadProcess of that kind, or a block that does nothing for "none" (info None)."""
    if kind == "none":
        return contextlib.nullcontext(None)
    return LoadProcess(kind)


# ----------------------------------------------------------------------------- the run

class _Run:
    """What every configuration of one run shares: backend, data, contenders' settings."""

    def __init__(self, backend, threads, torch, compile, path, n_samples, n_inputs, seed,
                 progress, sparsity="kl", k=K, fit=True, aux_k=None, dead_share=DEAD_SHARE):
        self.sparsity, self.k, self.fit = sparsity, k, fit
        self.aux_k, self.dead_share = aux_k, dead_share
        self.be = get_backend(backend, dtype="float32")
        self.threads = parse_threads(threads)
        if self.be.name == "cupy" and self.threads != "auto":
            raise ConfigError("--threads applies to the CPU (numpy backend) only")
        self.torch, info = _import_torch(self.be.name) if torch else (None, "skipped (--no-torch)")
        self.device, self.torch_note = (info, None) if self.torch is not None else (None, info)
        self.compile = compile and self.torch is not None
        self.compile_note = None if self.compile or self.torch is None else \
            "skipped (--no-compile; --quick never compiles)"
        self.path, self.n_inputs, self.seed = path, n_inputs, seed
        self.say = progress or (lambda line: None)
        self.data_host = np.random.default_rng(seed).random((n_samples, n_inputs), dtype=np.float32)
        self.data = self.be.asarray(self.data_host)  # on the GPU once, outside the clocks

    def runners(self, hidden, batch):
        """The contenders of one configuration, built, in round order."""
        model = dict(sparsity=self.sparsity, k=self.k, aux_k=self.aux_k)
        ours = dict(model, dead_share=self.dead_share)
        runners = [MinisaeRunner(self.be, hidden, self.data, batch, self.seed, fast=fast, **ours)
                   for fast in {"fast": (True,), "reference": (False,), "both": (True, False)}[self.path]]
        params = runners[0].model.params  # every contender starts from these weights
        theirs = dict(model, dead=runners[0].model.dead if self.aux_k else None)
        if self.fit:
            runners.append(FitRunner(self.be, hidden, self.data_host, batch, self.seed,
                                     self.threads, **ours))
        if self.torch is not None:
            runners.append(TorchRunner(self.torch, self.device, params, self.data_host, batch,
                                       **theirs))
        if self.compile:
            compiled, why = _compiled_runner(self.torch, self.device, params, self.data_host,
                                             batch, self.say, **theirs)
            runners += [compiled] if compiled is not None else []
            self.compile_note = why or self.compile_note
        runners.append(MatmulRunner(self.be, hidden, self.n_inputs, batch, self.seed + 1))
        return runners

    def policy(self, hidden, batch):
        """The thread policy's block for a configuration (nothing on the GPU)."""
        if self.be.name != "numpy":
            return contextlib.nullcontext(None)
        return thread_limits(self.threads, self.n_inputs, hidden, batch)


def _check_counts(**counts):
    """The counts checked, as Python ints, in the order given."""
    return [checks.check_int(v, name, low, high) for name, (v, low, high) in counts.items()]


def _config_pairs(configs):
    """A list of (n_hidden, batch) pairs of positive integers, or a ConfigError."""
    try:
        pairs = [(h, b) for h, b in configs]
    except (TypeError, ValueError):
        raise ConfigError(f"configs must be 'HxB,HxB' or a list of (n_hidden, batch) pairs, got "
                          f"{checks.shown(configs)}") from None
    if not pairs:
        raise ConfigError("configs is empty; give at least one (n_hidden, batch) pair")
    return [(checks.check_int(h, "configs' n_hidden", 1), checks.check_int(b, "configs' batch", 1))
            for h, b in pairs]


def run_benchmark(backend="numpy", configs=DEFAULT_CONFIGS, steps=40, warmup=5, rounds=7,
                  threads="auto", torch=True, compile=True, path="fast", n_samples=N_SAMPLES,
                  n_inputs=N_INPUTS, seed=0, progress=None, sparsity="kl", k=K, fit=True,
                  aux_k=None, dead_share=DEAD_SHARE, load="none"):
    """Time minisae (and PyTorch, eager and compiled, and the five products) on each
    (n_hidden, batch) config.

    configs: "HxB,HxB" or a list of (n_hidden, batch). steps: steps per contender per round;
    rounds: how many alternating rounds (the median is reported); warmup: untimed steps first.
    threads: "auto" or "adaptive" (minisae's thread policies; PyTorch keeps its default) or a
    number for both.
    torch=False skips PyTorch, compile=False its torch.compile contender. path: "fast",
    "reference" or "both" (minisae's paths). progress: a function given one line per round.
    sparsity: the model, "kl" (the book's) or "topk" (k units kept per sample). fit: also
    time minisae.fit (batches gathered from NumPy and moved to the device, as users run it).
    aux_k (topk; None or 0: none): Gao et al.'s model, AuxK with aux_k dead units per sample,
    the decoder bias subtracted, with the share dead_share of the units dead (bench_model).
    n_inputs: the data's width. load: "none", "busy" (a process spinning on one core) or
    "train" (a second process training with minisae.fit) during the whole run (LoadProcess).
    Returns a dict (JSON-ready): "machine", "settings", and "results", one entry per config."""
    configs = parse_configs(configs) if isinstance(configs, str) else _config_pairs(configs)
    steps, warmup, rounds, n_samples, n_inputs, seed = _check_counts(
        steps=(steps, 1, MAX_STEPS), warmup=(warmup, 0, MAX_STEPS),
        rounds=(rounds, 1, MAX_ROUNDS), n_samples=(n_samples, 1, None),
        n_inputs=(n_inputs, 1, None), seed=(seed, 0, None))
    checks.check_fits(8 * n_samples * n_inputs, checks.physical_memory(),
                      f"random data of n_samples={n_samples:,} x n_inputs={n_inputs:,}",
                      "use fewer samples")
    checks.check_choice(path, "path", PATHS)
    checks.check_choice(sparsity, "sparsity", tuple(MODELS))
    torch, compile, fit = (checks.check_bool(v, name) for v, name in
                           ((torch, "torch"), (compile, "compile"), (fit, "fit")))
    checks.check_optional(progress, checks.check_function, "progress", 1,
                          "a function of one line of text (e.g. print)")
    k, = _check_counts(k=(k, 1, None))
    if sparsity == "topk" and k > min(h for h, _ in configs):
        raise ConfigError(f"--k {k} is larger than the hidden layer of a config "
                          f"({min(h for h, _ in configs)} units)")
    if max(b for _, b in configs) > n_samples:
        raise ConfigError(f"batch {max(b for _, b in configs)} is larger than the data "
                          f"({n_samples} samples)")
    aux_k, dead_share = _check_auxk(aux_k, dead_share, sparsity, k, configs)
    checks.check_choice(load, "load", LOADS)
    run = _Run(backend, threads, torch, compile, path, n_samples, n_inputs, seed, progress,
               sparsity, k, fit, aux_k, dead_share)
    load_before = _load()
    with contextlib.ExitStack() as stack:
        torch_threads = _torch_threads(stack, run.torch, run.threads) if run.be.name == "numpy" else None
        under = stack.enter_context(_load_block(load))
        if under is not None:
            run.say(f"under load: {under.info['description']} (pid {under.info['pid']})")
        results = [_bench_config(run, hidden, batch, steps, warmup, rounds)
                   for hidden, batch in configs]
    machine = dict(machine_info(run.be.name, run.torch), load_average_before=load_before)
    settings = {"configs": [f"{h}x{b}" for h, b in configs], "steps": steps, "warmup": warmup,
                "rounds": rounds, "threads": run.threads if run.be.name == "numpy" else None,
                "torch_threads": torch_threads, "path": path, "adam_kernel": _adam_kernel(run.be.name),
                "n_samples": n_samples, "n_inputs": n_inputs, "lr": LR, "sparsity": sparsity,
                "k": k if sparsity == "topk" else None, "aux_k": aux_k,
                "aux_weight": AUX_WEIGHT if aux_k else None,
                "dead_share": dead_share if aux_k else None,
                "subtract_decoder_bias": bool(aux_k), "load": load,
                "sparsity_target": SPARSITY_TARGET, "sparsity_weight": SPARSITY_WEIGHT,
                "torch": run.torch is not None, "torch_note": run.torch_note,
                "compiled": run.compile and run.compile_note is None, "compile_note": run.compile_note}
    return {"backend": run.be.name, "machine": machine, "settings": settings, "results": results,
            "load": None if under is None else under.info}


def _check_auxk(aux_k, dead_share, sparsity, k, configs):
    """(aux_k, dead_share) checked: aux_k None (also for 0: no AuxK) or at most the smallest
    hidden layer, TopK only; dead_share in [0, 1), leaving at least k units alive."""
    aux_k = checks.check_optional(aux_k, checks.check_int, "aux_k", 0) or None
    dead_share = checks.check_real(dead_share, "dead_share", 0.0, 1.0, high_open=True)
    if aux_k is None:
        return None, dead_share
    if sparsity != "topk":
        raise ConfigError(f"aux_k applies to sparsity='topk' (AuxK against dead units), not "
                          f"{sparsity!r}; drop it")
    smallest = min(h for h, _ in configs)
    if aux_k > smallest:
        raise ConfigError(f"--aux-k {aux_k} is larger than the hidden layer of a config "
                          f"({smallest} units)")
    for hidden, _ in configs:
        if hidden - int(round(dead_share * hidden)) < k:
            raise ConfigError(f"--dead-share {dead_share} leaves fewer than k = {k} of "
                              f"{hidden} units alive; give a smaller share")
    return aux_k, dead_share


def _bench_config(run, hidden, batch, steps, warmup, rounds):
    """One configuration's row: build the contenders, warm them up, time the rounds."""
    with run.policy(hidden, batch) as policy:
        runners = run.runners(hidden, batch)
        row = {"hidden": hidden, "batch": batch}
        if run.torch is not None:  # same weights and batch: the same loss, up to rounding
            row["first_loss"] = {r.name: r.loss(0) for r in runners
                                 if r.name in ("minisae", "reference", "torch")}
        for r in runners:
            r.run(0, warmup)
        times, adam = _rounds(run, runners, hidden, batch, steps, warmup, rounds)
        if policy is not None:
            row.update(threads=policy.threads, thread_trials=policy.trials)
    fit_runner = next((r for r in runners if r.name == "fit"), None)
    if fit_runner is not None and len(fit_runner.history):  # the count fit's own "auto" chose
        row["fit_threads"] = sorted({t for t in fit_runner.history.as_dict().get("threads", [])
                                     if t is not None})
    if run.aux_k:  # the dead units every contender had, and those fit's tracking held at the end
        row["dead_units"] = int(to_numpy(runners[0].model.dead).sum())
        row["fit_dead_share"] = next((r.dead_share() for r in runners if r.name == "fit"), None)
    row.update(_summarise(times, batch, steps, _flops_per_sample(run.n_inputs, hidden)))
    if run.be.name == "numpy" and "minisae" in times and run.sparsity != "topk":
        row["time_split"] = _time_split(times, adam)  # (TopK's products are not the dense ones)
    return row


def _rounds(run, runners, hidden, batch, steps, warmup, rounds):
    """Alternating timed rounds: {name: [seconds per round]}, and minisae's Adam seconds."""
    times = {r.name: [] for r in runners}
    adam = []
    for i in range(rounds):
        # rotate the order so that no contender always follows the same one
        for r in runners[i % len(runners):] + runners[:i % len(runners)]:
            before = getattr(r, "adam_seconds", 0.0)
            times[r.name].append(_timed_round(r, warmup + i * steps, steps))
            if r.name == "minisae":
                adam.append(r.adam_seconds - before)
        run.say(f"{hidden}x{batch} round {i + 1}/{rounds}: " + ", ".join(
            f"{name} {batch * steps / t[-1]:,.0f}/s" for name, t in times.items()))
    return times, adam


def _summarise(times, batch, steps, flops_per_sample):
    """Median samples/s of each contender, the ratios, the matmul rate and the roofline."""
    rate = {name: batch * steps / statistics.median(t) for name, t in times.items()}
    ours = rate.get("minisae", rate.get("reference"))  # the fast path, when it ran
    roofline = rate["matmul"]  # samples/s if a step were its five products only

    def ratio(other):
        return ours / rate[other] if other in rate else None

    return {"minisae_samples_per_s": rate.get("minisae"), "fit_samples_per_s": rate.get("fit"),
            "fit_ratio": rate["fit"] / rate["torch"] if "fit" in rate and "torch" in rate
            else None,
            "reference_samples_per_s": rate.get("reference"),
            "torch_samples_per_s": rate.get("torch"), "ratio": ratio("torch"),
            "compiled_samples_per_s": rate.get("compiled"), "compiled_ratio": ratio("compiled"),
            "matmul_gflops": roofline * flops_per_sample / 1e9,
            "roofline_samples_per_s": roofline, "roofline_fraction": ours / roofline,
            "round_seconds": {name: t for name, t in times.items()}}


def _time_split(times, adam):
    """Where minisae's step goes, as fractions of its median round: the five products (timed
    alone, so approximately), Adam (timed inside the step), and the rest (elementwise work,
    sums, Python; never below 0, though the products alone can come out slower)."""
    step = statistics.median(times["minisae"])
    adam = statistics.median(adam) / step
    matmul = min(statistics.median(times["matmul"]) / step, 1.0 - adam)
    return {"matmul": matmul, "adam": adam, "elementwise_and_other": 1.0 - matmul - adam}


# ----------------------------------------------------------------------------- the table

def _rate(value):
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def _table_row(r):
    return (str(r["hidden"]), str(r["batch"]), _rate(r["minisae_samples_per_s"]),
            _rate(r["torch_samples_per_s"]), _ratio(r["ratio"]),
            _rate(r["compiled_samples_per_s"]), _ratio(r["compiled_ratio"]),
            _rate(r.get("fit_samples_per_s")), _ratio(r.get("fit_ratio")),
            f"{r['matmul_gflops']:,.1f}", f"{r['roofline_samples_per_s']:,.0f}",
            f"{100 * r['roofline_fraction']:.0f}%", str(r.get("threads", "-")))


def _header(result):
    m, s = result["machine"], result["settings"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['blas']}"
    load = m.get("load_average_before")
    lines = [f"minisae bench, backend {result['backend']}, model {_model_words(s)}: {where}",
             f"{s['steps']} steps x {s['rounds']} rounds per contender (median round), warmup "
             f"{s['warmup']}, threads {s['threads']} (torch {s.get('torch_threads') or '-'}), "
             f"Adam kernel {s.get('adam_kernel')}, torch {m['torch'] or '-'}"
             + (f", load average {load[0]:.2f}" if load else "")
             + f", under load: {s.get('load', 'none')}"]
    under = result.get("load")
    if under:
        used = under.get("cores_used")
        lines.append(f"load {under['kind']}: {under['description']}, pid {under['pid']}"
                     + (f"; it used {used:.2f} of a core over {under['wall_seconds']:.0f} s"
                        if used is not None else "")
                     + ("" if under.get("running_at_end", True) else
                        "; IT ENDED BEFORE THE BENCHMARK DID"))
    lines += [f"PyTorch: {s['torch_note']}"] if s.get("torch_note") else []
    lines += [f"torch.compile: {s['compile_note']}"] if s.get("compile_note") else []
    return lines


def _model_words(s):
    """The model, in the header's words."""
    if s.get("sparsity") != "topk":
        words = "KL (the book's)"
    else:
        words = f"TopK, k = {s.get('k')}"
        if s.get("aux_k"):
            words += (f", AuxK k_aux = {s['aux_k']} (alpha 1/32, {s['dead_share']:.0%} of the "
                      f"units dead), x - b2 encoded")
    return f"{words}, {s.get('n_inputs', N_INPUTS)} inputs"


def _grid(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_table(result):
    """The result of run_benchmark as a plain-text table (COLUMNS), with header and notes."""
    keys = {"backend", "machine", "settings", "results"}
    if not (isinstance(result, dict) and keys <= set(result) and isinstance(result["results"], list)):
        raise ConfigError(f"result must be what run_benchmark returned, got "
                          f"{checks.shown(result)}")
    results = result["results"]
    lines = _header(result) + _grid([COLUMNS] + [_table_row(r) for r in results])
    refs = [r for r in results if r.get("reference_samples_per_s")]
    if refs:
        lines.append("the reference path (fast=False), samples/s: " + ", ".join(
            f"{r['hidden']}x{r['batch']} {r['reference_samples_per_s']:,.0f}" for r in refs))
    if result["settings"].get("sparsity") == "topk":
        lines.append("TopK's step does three of its five products on the kept codes only "
                     "(fast/sparse.py), so it can pass the dense roofline")
    if result["settings"].get("aux_k"):
        lines.append("AuxK: the same dead units in every contender (dead units; fit's tracking "
                     "held): " + ", ".join(
                         f"{r['hidden']}x{r['batch']} {r.get('dead_units')}"
                         + (f" ({r['fit_dead_share']:.1%})" if r.get("fit_dead_share")
                            is not None else "") for r in results)
                     + "; minisae decodes AuxK from the dead units' rows of W2, PyTorch (the "
                       "usual way) from a (batch, n_hidden) code; the roofline counts the five "
                       "products alone")
    splits = [r for r in results if r.get("time_split")]
    if splits:
        lines.append("where minisae's step goes (the products timed alone, so roughly):")
        lines.extend(f"  {r['hidden']}x{r['batch']}: products {s['matmul']:.0%}, Adam "
                     f"{s['adam']:.0%}, elementwise and the rest {s['elementwise_and_other']:.0%}"
                     for r in splits for s in (r["time_split"],))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def add_parser(subparsers):
    """Register `minisae bench` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "bench", help="training throughput against PyTorch and the matmul roofline",
        description="Train a sparse autoencoder (784 inputs; the book's sigmoid, MSE + KL, or "
                    "TopK with --sparsity topk; Adam, float32) "
                    "for a fixed number of steps per configuration on random data of MNIST's "
                    "shape; report samples/s for minisae, for the same model in PyTorch (eager, "
                    "and under torch.compile where it compiles), the float32 matmul rate on the "
                    "step's five products, and the roofline (samples/s if a step were only "
                    "those products).")
    p.add_argument("--sparsity", choices=tuple(MODELS), default="kl",
                   help="the model: kl (the book's, default) or topk (ReLU, k kept per sample, "
                        "linear output)")
    p.add_argument("--k", type=int, default=None, help=f"units kept per sample with topk "
                                                       f"(default {K})")
    p.add_argument("--aux-k", type=int, default=None, metavar="N",
                   help="with topk: Gao et al.'s whole model, AuxK with N dead units per sample "
                        "(alpha 1/32), the decoder bias subtracted before encoding, their "
                        "initialisation; a fixed share of the units dead (--dead-share), the "
                        "same in every contender. 0: no AuxK. Issue 25's sizes: --aux-k 256 "
                        "--configs 1000x256, and --k 32 --aux-k 256 --inputs 384 --configs "
                        "3072x1024 (default: none, no AuxK)")
    p.add_argument("--dead-share", type=float, default=None, metavar="F",
                   help=f"with --aux-k: the share of units made dead (default {DEAD_SHARE})")
    p.add_argument("--inputs", type=int, default=None, metavar="N",
                   help=f"features of the random data (default {N_INPUTS}, MNIST's)")
    p.add_argument("--load", choices=LOADS, default="none",
                   help="run every contender under load: busy (one process spinning on a core "
                        "for the whole run), train (a second process training the book's KL "
                        "model with minisae.fit in a loop), or none (default)")
    p.add_argument("--backend", default=None, choices=("numpy", "cupy", "auto"),
                   help="array backend (default: $MINISAE_BACKEND, else auto: CuPy when a GPU "
                        "answers, else NumPy); cupy compares against PyTorch CUDA")
    p.add_argument("--configs", default=None,
                   help=f"HIDDENxBATCH pairs, comma-separated (default {DEFAULT_CONFIGS})")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per contender in each round (default 40)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5)")
    p.add_argument("--rounds", type=int, default=None,
                   help="alternating timed rounds; the median is reported (default 7)")
    p.add_argument("--threads", default="auto", metavar="N|auto|adaptive",
                   help="BLAS threads: auto (default: minisae times its step on one thread "
                        "and on every core once, and keeps the faster), adaptive (minisae times steps and follows the load), PyTorch "
                        "keeping its default under both; or a number (for minisae and PyTorch)")
    p.add_argument("--path", choices=PATHS, default="fast",
                   help="minisae's path: the fast engine (default), the readable reference "
                        "(fast=False), or both")
    p.add_argument("--samples", type=int, default=None,
                   help=f"rows of random data (default {N_SAMPLES:,}, MNIST's training set)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-fit", action="store_true",
                   help="skip the minisae.fit contender (the step as users run it)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the torch.compile contender (it compiles for a minute or more)")
    p.add_argument("--quick", action="store_true",
                   help=f"a seconds-long smoke run: configs {QUICK_CONFIGS}, 2,048 samples, "
                        "3 steps, 2 rounds, no torch.compile (overridden by the flags above)")
    p.add_argument("--stream", action="store_true",
                   help="instead: training from a generated float32 .npy larger than the "
                        "shuffle buffer against training in memory (samples/s, page cache and "
                        "cold) and the peak resident memory (minisae.apps.streambench)")
    p.add_argument("--stream-rows", type=int, default=None, metavar="N",
                   help="rows of the --stream file (default 3,000,000: 9.4 GB at 784 "
                        "features; the disk must hold it and 1 GB more)")
    p.add_argument("--stream-folder", default=None, metavar="DIR",
                   help="where the --stream file is written and removed (default: the "
                        "system's temporary folder)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="instead: training through fit on N processes of this machine, data "
                        "parallel (or the dictionary sharded, --shard), against one process, "
                        "interleaved rounds of one epoch of "
                        "--steps global batches each, with the time in collectives and the "
                        "bytes sent (--configs, --sparsity kl or topk, --k, --steps, "
                        "--rounds, --shard; "
                        "minisae.apps.parallelbench; needs PyTorch) (default: the step "
                        "benchmark, one process)")
    p.add_argument("--shard", action="store_true",
                   help="with --workers: shard the dictionary instead, each of the N processes "
                        "holding n_hidden / N of the units and taking every batch whole (the "
                        "decoder's partial outputs summed over the processes), as `minisae "
                        "train --workers N --shard` trains (default: data parallel, each "
                        "process batch / N rows of every batch and every unit)")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the result as JSON (default: the table only)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    p.set_defaults(func=main)
    return p


def _settings_from_args(args):
    quick = getattr(args, "quick", False)
    defaults = dict(configs=QUICK_CONFIGS, steps=3, warmup=1, rounds=2, n_samples=2048) if quick \
        else dict(configs=DEFAULT_CONFIGS, steps=40, warmup=5, rounds=7, n_samples=N_SAMPLES)
    given = dict(configs=args.configs, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                 n_samples=args.samples)
    settings = {k: defaults[k] if v is None else v for k, v in given.items()}
    return dict(settings, backend=args.backend, threads=getattr(args, "threads", "auto"),
                torch=not args.no_torch, path=getattr(args, "path", "fast"),
                sparsity=getattr(args, "sparsity", "kl"),
                k=K if getattr(args, "k", None) is None else args.k,
                aux_k=getattr(args, "aux_k", None),
                dead_share=DEAD_SHARE if getattr(args, "dead_share", None) is None
                else args.dead_share,
                n_inputs=N_INPUTS if getattr(args, "inputs", None) is None else args.inputs,
                load=getattr(args, "load", "none"),
                fit=not getattr(args, "no_fit", False),
                compile=not (quick or getattr(args, "no_compile", False)))


def _write_json(path, result):
    try:
        with atomic_write(path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    except OSError as e:
        raise ConfigError(f"cannot write --json {path!r}: {e.strerror or e}") from None


_STEP_FLAGS = {"configs": "--configs", "steps": "--steps", "warmup": "--warmup",
               "rounds": "--rounds", "samples": "--samples", "k": "--k", "aux_k": "--aux-k",
               "dead_share": "--dead-share", "inputs": "--inputs"}
_STEP_SWITCHES = {"no_torch": "--no-torch", "no_fit": "--no-fit", "no_compile": "--no-compile",
                  "quick": "--quick"}


def _given(args, values, switches, defaults):
    """The flags of args that were given: those of `values` set, of `switches` on, of
    `defaults` ({name: default}) away from their default."""
    flag = "--{}".format
    return ([flag(n.replace("_", "-")) for n in values if getattr(args, n, None) is not None]
            + [flag(n.replace("_", "-")) for n in switches if getattr(args, n, False)]
            + [f"--{n} {getattr(args, n)}" for n, default in defaults.items()
               if getattr(args, n, default) != default])


def _refuse_flags_that_do_not_apply(args):
    """A flag the benchmark asked for would not use is an error, never ignored."""
    modes = {"path": "fast", "threads": "auto", "load": "none"}
    if getattr(args, "shard", False) and getattr(args, "workers", None) is None:
        raise ConfigError("--shard applies to --workers N (the dictionary's units split over "
                          "the N processes); give --workers N or drop the flag")
    if getattr(args, "workers", None) is not None:
        if getattr(args, "k", None) is not None and getattr(args, "sparsity", "kl") != "topk":
            raise ConfigError("--k applies to --sparsity topk (the units each sample keeps); "
                              "drop the flag")
        given = _given(args, ("aux_k", "dead_share", "inputs", "samples", "warmup",
                              "stream_rows", "stream_folder", "backend"),
                       ("stream", *_STEP_SWITCHES), modes)
        if given:
            raise ConfigError(f"--workers times fit on N processes against one with the model "
                              f"of --sparsity (and --k) and --configs; {', '.join(given)} does "
                              f"not apply to it: drop it or --workers")
        return
    if getattr(args, "stream", False):
        given = _given(args, _STEP_FLAGS, _STEP_SWITCHES, {"sparsity": "kl", **modes})
        if given:
            raise ConfigError(f"--stream times one fixed model (784 -> 1000, the book's, batch "
                              f"1000) from a file against from memory; {', '.join(given)} "
                              f"applies to the step benchmark: drop it or --stream")
        return
    for name in ("stream_rows", "stream_folder"):
        if getattr(args, name, None) is not None:
            raise ConfigError(f"--{name.replace('_', '-')} applies to --stream; give --stream "
                              f"or drop the flag")
    if getattr(args, "k", None) is not None and getattr(args, "sparsity", "kl") != "topk":
        raise ConfigError("--k applies to --sparsity topk (the units each sample keeps); drop "
                          "the flag")
    if getattr(args, "aux_k", None) is not None and getattr(args, "sparsity", "kl") != "topk":
        raise ConfigError("--aux-k applies to --sparsity topk (AuxK against its dead units); "
                          "drop the flag")
    if getattr(args, "dead_share", None) is not None and not getattr(args, "aux_k", None):
        raise ConfigError("--dead-share applies to --aux-k N (the dead units AuxK reads); drop "
                          "the flag")


def main(args):
    """Run `minisae bench` from parsed arguments; print the table; 0 on success."""
    if args.json is not None and not args.json.strip():
        raise ConfigError("--json takes a file name to write the results to, got ''")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise ConfigError(f"cannot write --json {args.json!r}: its folder does not exist")
    if args.json:
        try:  # refused now, not after the benchmark has run
            check_target(args.json)
        except OSError as e:
            raise ConfigError(f"cannot write --json {args.json!r}: {e.strerror}") from None
    _refuse_flags_that_do_not_apply(args)
    progress = None if getattr(args, "quiet", False) else \
        (lambda line: print(line, file=sys.stderr, flush=True))
    if getattr(args, "workers", None) is not None:
        from .parallelbench import format_parallel_result, run_parallel_benchmark
        _check_counts(workers=(args.workers, 2, None))
        configs = _config_pairs(parse_configs(args.configs or "1000x256,196x1000"))
        k, = _check_counts(k=(K if getattr(args, "k", None) is None else args.k, 1, None))
        if args.sparsity == "topk" and k > min(h for h, _ in configs):
            raise ConfigError(f"--k {k} is larger than the hidden layer of a config "
                              f"({min(h for h, _ in configs)} units)")
        result = run_parallel_benchmark(
            model_settings(args.sparsity, k), args.workers, configs, steps=args.steps or 100,
            rounds=args.rounds or 3, sparsity=args.sparsity, say=progress,
            shard=getattr(args, "shard", False))
        print(format_parallel_result(result))
    elif getattr(args, "stream", False):
        from .streambench import ROWS, format_stream_result, run_stream_benchmark
        rows = ROWS if args.stream_rows is None else args.stream_rows
        _check_counts(stream_rows=(rows, 1, None))
        result = run_stream_benchmark(rows=rows, folder=args.stream_folder, say=progress)
        print(format_stream_result(result))
    else:
        result = run_benchmark(progress=progress, **_settings_from_args(args))
        print(format_table(result))
    if args.json:
        _write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _standalone(argv=None):
    """`python -m minisae.apps.bench ...`, for when the CLI is not wired up."""
    import argparse
    parser = argparse.ArgumentParser(prog="minisae")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except MinisaeError as e:
        print(f"minisae: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_standalone())
