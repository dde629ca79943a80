"""`minisae bench`: how fast a training step runs, against PyTorch and against the roofline.

For each configuration (n_hidden x batch) the model of the book's exercise is trained for a
fixed number of steps: 784 inputs, sigmoid coding layer, sigmoid output, mean-MSE + beta *
sum KL(rho || rho_hat), Adam, float32, on random data of MNIST's shape (60,000 x 784). Three
things are timed in alternating rounds, and each one's median round is reported:

- minisae: `model.loss_and_grads(x)` then `opt.step()`;
- PyTorch (when installed): the same model written the usual way (nn.Linear, autograd,
  torch.optim.Adam), with the same threads, starting weights and batches;
- the step's five matrix products alone (x @ W1, h @ W2, h.T @ dz2, dz2 @ W2.T, x.T @ dz1),
  10 * 784 * n_hidden flops per sample. Their rate is the machine's float32 matmul speed on
  exactly these shapes, and batch / (their time) is the roofline: the samples/s of a step
  that did nothing but its matrix products.

    minisae bench                                   # the four configurations, a table
    minisae bench --configs 1000x1000 --json b.json
    minisae bench --backend cupy                    # GPU, against PyTorch CUDA

    from minisae.bench import run_benchmark, format_table
    print(format_table(run_benchmark(configs="196x256", steps=20)))
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack

import numpy as np

from ..backend import get_backend, to_numpy
from ..functional import RHO_EPS
from ..errors import ConfigError, MinisaeError
from ..fileio import atomic_write

N_INPUTS = 784
N_SAMPLES = 60_000
DEFAULT_CONFIGS = "196x256,196x1000,1000x256,1000x1000"
QUICK_CONFIGS = "16x32,24x64"
LR = 1e-3
SPARSITY_TARGET, SPARSITY_WEIGHT = 0.1, 0.2

COLUMNS = ("hidden", "batch", "minisae samples/s", "torch samples/s", "ratio",
           "matmul GFLOP/s", "roofline samples/s", "of roofline")
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


class MinisaeRunner:
    """minisae's training step: loss_and_grads, then Adam."""

    name = "minisae"

    def __init__(self, backend, hidden, data, batch, seed):
        from ..model import SparseAutoencoder
        from ..optim import Adam
        self.backend = backend
        self.model = SparseAutoencoder(n_inputs=data.shape[1], n_hidden=hidden,
                                       sparsity_target=SPARSITY_TARGET,
                                       sparsity_weight=SPARSITY_WEIGHT, backend=backend,
                                       dtype="float32", seed=seed)
        self.opt = Adam(self.model.params, self.model.grads, lr=LR)  # its own default threads
        self.batches = _Batches(data, batch)
        self.adam_seconds = 0.0  # time inside opt.step (NumPy only: CuPy's returns at launch)

    def loss(self, k):
        """The loss of batch k, without a step (for the agreement check)."""
        return self.model.loss_and_grads(self.batches[k], validate=False).total

    def run(self, first, steps):
        model, opt, batches = self.model, self.opt, self.batches
        clock = time.perf_counter
        for k in range(first, first + steps):
            model.loss_and_grads(batches[k], validate=False)
            t0 = clock()
            opt.step()
            self.adam_seconds += clock() - t0

    def sync(self):
        self.backend.synchronize()


class TorchRunner:
    """The same model the usual PyTorch way, starting from minisae's weights."""

    name = "torch"

    def __init__(self, torch, device, params, data, batch):
        self.torch, self.device = torch, device
        nn = torch.nn
        n_inputs, hidden = params["encoder.W"].shape
        self.encoder = nn.Linear(n_inputs, hidden).to(device)
        self.decoder = nn.Linear(hidden, n_inputs).to(device)
        with torch.no_grad():  # nn.Linear keeps W as (n_out, n_in): minisae's transposed
            for layer, name in ((self.encoder, "encoder"), (self.decoder, "decoder")):
                layer.weight.copy_(torch.from_numpy(to_numpy(params[name + ".W"]).T.copy()))
                layer.bias.copy_(torch.from_numpy(to_numpy(params[name + ".b"]).copy()))
        self.opt = torch.optim.Adam(list(self.encoder.parameters()) +
                                    list(self.decoder.parameters()), lr=LR)
        tdata = torch.from_numpy(data)
        self.batches = _Batches(tdata.to(device) if device != "cpu" else tdata, batch)

    def _loss(self, x):
        torch = self.torch
        h = torch.sigmoid(self.encoder(x))
        y = torch.sigmoid(self.decoder(h))
        rho, beta = SPARSITY_TARGET, SPARSITY_WEIGHT
        rho_hat = h.mean(dim=0).clamp(RHO_EPS, 1.0 - RHO_EPS)  # minisae's clip
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return torch.nn.functional.mse_loss(y, x) + beta * kl.sum()

    def loss(self, k):
        with self.torch.no_grad():
            return float(self._loss(self.batches[k]))

    def run(self, first, steps):
        opt, batches = self.opt, self.batches
        for k in range(first, first + steps):
            opt.zero_grad()
            self._loss(batches[k]).backward()
            opt.step()

    def sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()


class MatmulRunner:
    """The step's five matrix products alone, on arrays of the step's shapes and layouts."""

    name = "matmul"

    def __init__(self, backend, hidden, n_inputs, batch, seed):
        xp, rng = backend.xp, np.random.default_rng(seed)
        self.backend = backend

        def rand(*shape):
            return backend.asarray(rng.random(shape, dtype=np.float32))

        x, W1, h, W2 = rand(batch, n_inputs), rand(n_inputs, hidden), rand(batch, hidden), \
            rand(hidden, n_inputs)
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


def _thread_limits(stack, threads, torch):
    """Limit BLAS (and PyTorch) to `threads` for the run; returns the count in force."""
    default = os.cpu_count() or 1
    if threads is None:
        threads = default
    if isinstance(threads, bool) or not (isinstance(threads, int) and threads >= 1):
        raise ConfigError(f"--threads must be a positive integer, got {threads!r}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if threads != default:
            raise ConfigError("--threads needs threadpoolctl to limit NumPy's BLAS; "
                              "pip install 'minisae[bench]'") from None
    else:
        stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
    if torch is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        stack.callback(torch.set_num_threads, before)
    return threads


def machine_info(backend_name="numpy", torch=None):
    """What the figures were measured on: CPU, cores, BLAS, versions (and the GPU on CuPy)."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
            "blas": _blas_info(), "platform": platform.platform()}
    coretype = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                if k in os.environ}
    if coretype:
        info["environment"] = coretype
    if backend_name == "cupy":
        try:
            import cupy
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["cupy"] = cupy.__version__
        except Exception as e:  # informative only
            info["gpu"] = f"unknown ({e})"
    return info


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


# ----------------------------------------------------------------------------- the run

def run_benchmark(backend="numpy", configs=DEFAULT_CONFIGS, steps=40, warmup=5, rounds=7,
                  threads=None, torch=True, n_samples=N_SAMPLES, n_inputs=N_INPUTS, seed=0,
                  progress=None):
    """Time minisae (and PyTorch, and the five products) on each (n_hidden, batch) config.

    configs: "HxB,HxB" or a list of (n_hidden, batch). steps: steps per contender per round;
    rounds: how many alternating rounds (the median is reported); warmup: untimed steps first.
    threads: CPU threads for NumPy's BLAS and for PyTorch (default: every core). torch=False skips
    PyTorch. progress: a function given one line of text per round (None: quiet).
    Returns a dict (JSON-ready): "machine", "settings", and "results", one entry per config."""
    if isinstance(configs, str):
        configs = parse_configs(configs)
    configs = [(int(h), int(b)) for h, b in configs]
    for name, v, low in (("steps", steps, 1), ("warmup", warmup, 0), ("rounds", rounds, 1),
                         ("n_samples", n_samples, 1), ("n_inputs", n_inputs, 1)):
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low):
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    too_big = [b for _, b in configs if b > n_samples]
    if too_big:
        raise ConfigError(f"batch {max(too_big)} is larger than the data ({n_samples} samples)")
    be = get_backend(backend, dtype="float32")
    if be.name == "cupy" and threads is not None:
        raise ConfigError("--threads applies to the CPU (numpy backend) only")
    torch_mod, info = _import_torch(be.name) if torch else (None, "skipped (--no-torch)")
    device, torch_note = (info, None) if torch_mod is not None else (None, info)

    say = progress or (lambda line: None)
    rng = np.random.default_rng(seed)
    data_host = rng.random((n_samples, n_inputs), dtype=np.float32)
    data = be.asarray(data_host)  # on the GPU once, outside the clocks

    results = []
    with ExitStack() as stack:
        n_threads = _thread_limits(stack, threads, torch_mod) if be.name == "numpy" else None
        for hidden, batch in configs:
            runners = [MinisaeRunner(be, hidden, data, batch, seed)]
            row = {"hidden": hidden, "batch": batch}
            if torch_mod is not None:
                runners.append(TorchRunner(torch_mod, device, runners[0].model.params,
                                           data_host, batch))
                # Same weights and batch, so the same loss (up to float32 rounding).
                row["first_loss"] = {r.name: r.loss(0) for r in runners}
            runners.append(MatmulRunner(be, hidden, n_inputs, batch, seed + 1))
            for r in runners:
                r.run(0, warmup)
            times = {r.name: [] for r in runners}
            adam = []
            for i in range(rounds):
                # rotate the order so that no contender always follows the same one
                for r in runners[i % len(runners):] + runners[:i % len(runners)]:
                    before = getattr(r, "adam_seconds", 0.0)
                    times[r.name].append(_timed_round(r, warmup + i * steps, steps))
                    if r.name == "minisae":
                        adam.append(r.adam_seconds - before)
                say(f"{hidden}x{batch} round {i + 1}/{rounds}: " + ", ".join(
                    f"{name} {batch * steps / t[-1]:,.0f}/s" for name, t in times.items()))
            row.update(_summarise(times, batch, steps, _flops_per_sample(n_inputs, hidden)))
            if be.name == "numpy":
                row["time_split"] = _time_split(times, adam)
            results.append(row)
            del runners

    return {"backend": be.name,
            "machine": machine_info(be.name, torch_mod),
            "settings": {"configs": [f"{h}x{b}" for h, b in configs], "steps": steps,
                         "warmup": warmup, "rounds": rounds, "threads": n_threads,
                         "n_samples": n_samples, "n_inputs": n_inputs, "lr": LR,
                         "sparsity_target": SPARSITY_TARGET, "sparsity_weight": SPARSITY_WEIGHT,
                         "torch": torch_mod is not None, "torch_note": torch_note},
            "results": results}


def _summarise(times, batch, steps, flops_per_sample):
    """Median samples/s of each contender, their ratio, the matmul rate and the roofline."""
    rate = {name: batch * steps / statistics.median(t) for name, t in times.items()}
    roofline = rate["matmul"]  # samples/s if a step were its five products only
    out = {"minisae_samples_per_s": rate["minisae"],
           "torch_samples_per_s": rate.get("torch"),
           "ratio": rate["minisae"] / rate["torch"] if "torch" in rate else None,
           "matmul_gflops": roofline * flops_per_sample / 1e9,
           "roofline_samples_per_s": roofline,
           "roofline_fraction": rate["minisae"] / roofline,
           "round_seconds": {name: t for name, t in times.items()}}
    return out


def _time_split(times, adam):
    """Where minisae's step goes, as fractions of its median round: the five products (timed
    alone, so approximately), Adam (timed inside the step), and the rest (elementwise work,
    sums, Python)."""
    step = statistics.median(times["minisae"])
    matmul = statistics.median(times["matmul"]) / step
    adam = statistics.median(adam) / step
    return {"matmul": matmul, "adam": adam, "elementwise_and_other": 1.0 - matmul - adam}


def format_table(result):
    """The result of run_benchmark as a plain-text table (COLUMNS), with a header line."""
    m, s = result["machine"], result["settings"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['blas']}"
    lines = [f"minisae bench, backend {result['backend']}: {where}",
             f"{s['steps']} steps x {s['rounds']} rounds per contender (median round), "
             f"warmup {s['warmup']}, threads {s['threads']}, torch {m['torch'] or '-'}"]
    if s.get("torch_note"):
        lines.append(f"PyTorch: {s['torch_note']}")
    rows = [COLUMNS]
    for r in result["results"]:
        torch_rate = r["torch_samples_per_s"]
        rows.append((str(r["hidden"]), str(r["batch"]), f"{r['minisae_samples_per_s']:,.0f}",
                     "-" if torch_rate is None else f"{torch_rate:,.0f}",
                     "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                     f"{r['matmul_gflops']:,.1f}", f"{r['roofline_samples_per_s']:,.0f}",
                     f"{100 * r['roofline_fraction']:.0f}%"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for j, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    splits = [(r["hidden"], r["batch"], r["time_split"]) for r in result["results"]
              if r.get("time_split")]
    if splits:
        lines.append("where minisae's step goes (the products timed alone, so roughly):")
        lines.extend(f"  {h}x{b}: products {s['matmul']:.0%}, Adam {s['adam']:.0%}, "
                     f"elementwise and the rest {s['elementwise_and_other']:.0%}"
                     for h, b, s in splits)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def add_parser(subparsers):
    """Register `minisae bench` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "bench", help="training throughput against PyTorch and the matmul roofline",
        description="Train the sparse autoencoder (784 inputs, sigmoid, MSE + KL, Adam, float32) "
                    "for a fixed number of steps per configuration on random data of MNIST's "
                    "shape; report samples/s for minisae, for the same model in PyTorch (when "
                    "installed), the float32 matmul rate on the step's five products, and the "
                    "roofline (samples/s if a step were only those products).")
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
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for NumPy's BLAS and for PyTorch (default: all cores)")
    p.add_argument("--samples", type=int, default=None,
                   help=f"rows of random data (default {N_SAMPLES:,}, MNIST's training set)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--quick", action="store_true",
                   help=f"a seconds-long smoke run: configs {QUICK_CONFIGS}, 2,048 samples, "
                        "3 steps, 2 rounds (overridden by the flags above)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    p.set_defaults(func=main)
    return p


def main(args):
    """Run `minisae bench` from parsed arguments; print the table; 0 on success."""
    quick = getattr(args, "quick", False)
    defaults = dict(configs=QUICK_CONFIGS, steps=3, warmup=1, rounds=2, n_samples=2048) if quick \
        else dict(configs=DEFAULT_CONFIGS, steps=40, warmup=5, rounds=7, n_samples=N_SAMPLES)

    def pick(name, attr=None):
        v = getattr(args, attr or name, None)
        return defaults[name] if v is None else v

    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise ConfigError(f"cannot write --json {args.json!r}: its folder does not exist")
    progress = None if getattr(args, "quiet", False) else \
        (lambda line: print(line, file=sys.stderr, flush=True))
    result = run_benchmark(backend=args.backend, configs=pick("configs"), steps=pick("steps"),
                           warmup=pick("warmup"), rounds=pick("rounds"), threads=args.threads,
                           torch=not args.no_torch, n_samples=pick("n_samples", "samples"),
                           progress=progress)
    print(format_table(result))
    if args.json:
        try:
            with atomic_write(args.json, "w") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
        except OSError as e:
            raise ConfigError(f"cannot write --json {args.json!r}: {e.strerror or e}") from None
        print(f"wrote {args.json}")
    return 0


def _standalone(argv=None):
    """`python -m minisae.bench ...`, for when the CLI is not wired up."""
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
