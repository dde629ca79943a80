"""`minisae bench --workers N`: data-parallel training on this machine against one process,
through `fit`, as a user runs it.

Each round trains the benchmark's model (bench.model_settings: the book's KL model, or TopK)
for one epoch of `steps` global batches of random data of MNIST's width, Adam, float32, the
fast engine, twice, in fresh processes, one after the other (interleaved rounds):

- alone:    one process with BLAS on every core (`--threads` as fit's default decides);
- workers:  N processes (minisae.distributed.launch, gloo) with the cores shared out (fit's
            default under data parallelism: cores // N threads each), each taking batch / N
            rows of every global batch.

Each reports fit's samples/s for the epoch (the global batch's rows; the first step, the
warm-up, left out), and the workers their time in collectives (comm_seconds, rank 0's: waiting
for the others included) and the bytes each rank put into collectives per step. The median
round of each is reported, and the ratio workers / alone per round.

    minisae bench --workers 2 --configs 1000x256,196x1000
    python -m minisae.apps.parallelbench --worker OUT HIDDEN BATCH STEPS MODEL  (a round's rank)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from ..errors import ConfigError

N_INPUTS = 784


def worker(out, hidden, batch, steps, model, threads="auto"):
    """One process (or rank) of a round: fit for one epoch; rank 0 writes its numbers to out.
    model: SparseAutoencoder's other arguments (bench.model_settings')."""
    from .. import distributed
    from ..model import SparseAutoencoder
    from ..optim import Adam
    from ..training import Engine, fit
    comm = distributed.join()
    x = np.random.default_rng(0).random((steps * batch, N_INPUTS), dtype=np.float32)
    model = SparseAutoencoder(n_inputs=N_INPUTS, n_hidden=hidden, seed=0, comm=comm, **model)
    history = fit(model, Adam(model.params, model.grads, lr=1e-3), x, epochs=1,
                  batch_size=batch, progress=False, engine=Engine(threads=threads))
    last = history.last()
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump({k: last.get(k) for k in ("samples_per_second", "seconds", "threads",
                                                "comm_seconds", "comm_bytes_per_step")}, f)
    getattr(comm, "close", lambda: None)()


def _round(workers, hidden, batch, steps, model, folder):
    """One contender's epoch in fresh processes; its rank 0's numbers."""
    out = os.path.join(folder, f"{workers}.json")
    argv = ["-m", "minisae.apps.parallelbench", "--worker", out, str(hidden), str(batch),
            str(steps), json.dumps(model)]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    if workers == 1:
        code = subprocess.run([sys.executable, *argv], env=env).returncode
    else:
        from ..distributed import launch
        code = launch(argv[2:], workers, module="minisae.apps.parallelbench")
    if code != 0:
        raise ConfigError(f"a benchmark round on {workers} process(es) failed (exit {code})")
    with open(out) as f:
        return json.load(f)


def run_parallel_benchmark(model, workers=2, configs=((1000, 256), (196, 1000)), steps=100,
                           rounds=3, sparsity="kl", say=None):
    """{"workers", "configs": [{"hidden", "batch", "alone", "workers", "ratios"}]}: each
    contender's rounds (fit's numbers) and the ratio workers / alone of each round. model:
    SparseAutoencoder's arguments besides the sizes (bench.model_settings(sparsity))."""
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for hidden, batch in configs:
            if batch < workers:
                raise ConfigError(f"a batch of {batch} cannot be shared by {workers} workers")
            runs = {1: [], workers: []}
            for r in range(rounds):
                for n in (1, workers):
                    runs[n].append(_round(n, hidden, batch, steps, model, folder))
                    if say:
                        say(f"{hidden}x{batch} round {r + 1}: {n} process(es) "
                            f"{runs[n][-1]['samples_per_second']:,.0f} samples/s")
            ratios = [w["samples_per_second"] / a["samples_per_second"]
                      for w, a in zip(runs[workers], runs[1])]
            results.append({"hidden": hidden, "batch": batch, "alone": runs[1],
                            "workers": runs[workers], "ratios": ratios})
    return {"workers": workers, "sparsity": sparsity, "steps": steps, "rounds": rounds,
            "configs": results}


def format_parallel_result(result):
    n = result["workers"]
    lines = [f"data parallel through fit: {n} processes against one, {result['sparsity']}, "
             f"{result['steps']} steps of the global batch, median of {result['rounds']} rounds",
             f"{'hidden x batch':>15} {'one process':>12} {f'{n} processes':>12} {'ratio':>6} "
             f"{'in collectives':>15} {'sent/step':>10}"]
    for c in result["configs"]:
        alone = statistics.median(r["samples_per_second"] for r in c["alone"])
        many = statistics.median(r["samples_per_second"] for r in c["workers"])
        share = statistics.median(r["comm_seconds"] / r["seconds"] for r in c["workers"])
        sent = statistics.median(r["comm_bytes_per_step"] for r in c["workers"])
        lines.append(f"{c['hidden']:>7} x {c['batch']:<5} {alone:>12,.0f} {many:>12,.0f} "
                     f"{statistics.median(c['ratios']):>6.2f} {share:>14.0%} "
                     f"{sent / 1e6:>8.2f} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    out, hidden, batch, steps, model = sys.argv[2:7]  # --worker ...: a round's process
    worker(out, int(hidden), int(batch), int(steps), json.loads(model))
