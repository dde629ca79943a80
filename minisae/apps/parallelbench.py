"""`minisae bench --workers N [--shard]`: training on N processes of this machine against one
process, through `fit`, as a user runs it; data parallel, or with --shard the dictionary
sharded.

Each round trains the benchmark's model (bench.model_settings: the book's KL model, or TopK)
for one epoch of `steps` global batches of random data of MNIST's width, Adam, float32, the
fast engine, twice, in fresh processes, one after the other (interleaved rounds):

- alone:    one process with BLAS on every core (`--threads` as fit's default decides);
- workers:  N processes (minisae.distributed.launch, gloo) with the cores shared out (fit's
            default on several processes: cores // N threads each), either
            data parallel (distributed.join(): TorchComm), each rank taking batch / N rows
                of every global batch and holding every unit, the gradients all-reduced; or
            sharded (--shard, distributed.join(shard=True): Shards), each rank holding
                n_hidden / N of the units and taking every batch whole, the decoder's partial
                outputs all-reduced (and TopK's per-row cut all-gathered from each rank's k
                candidates: minisae/comm.py).

Each reports fit's samples/s for the epoch (the global batch's rows; the first step, the
warm-up, left out), and the workers their time in collectives (comm_seconds, rank 0's: waiting
for the others included) and the bytes each rank put into collectives per step. The median
round of each is reported, and the ratio workers / alone per round; the table's first line
says which way the work was split.

    minisae bench --workers 2 --configs 1000x256,196x1000
    minisae bench --workers 2 --shard --sparsity topk --k 32 --configs 4096x256
    python -m minisae.apps.parallelbench --worker OUT HIDDEN BATCH STEPS MODEL [SPLIT]
        (a round's process or rank; SPLIT: rows, the default, or units for a sharded dictionary)
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


SPLITS = ("rows", "units")
"""How the workers share the work: the batch's rows (data parallel) or the dictionary's units
(sharded)."""


def worker(out, hidden, batch, steps, model, threads="auto", split="rows"):
    """One process (or rank) of a round: fit for one epoch; rank 0 writes its numbers to out.
    model: SparseAutoencoder's other arguments (bench.model_settings'). split: "rows" (data
    parallel) or "units" (the dictionary sharded); one process alone trains the whole model
    either way."""
    from .. import distributed
    from ..model import SparseAutoencoder
    from ..optim import Adam
    from ..training import Engine, fit
    comm = distributed.join(shard=split == "units")
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


def _round(workers, hidden, batch, steps, model, folder, split="rows"):
    """One contender's epoch in fresh processes; its rank 0's numbers."""
    out = os.path.join(folder, f"{workers}.json")
    argv = ["-m", "minisae.apps.parallelbench", "--worker", out, str(hidden), str(batch),
            str(steps), json.dumps(model), split]
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
                           rounds=3, sparsity="kl", say=None, shard=False):
    """{"workers", "split", "configs": [{"hidden", "batch", "alone", "workers", "ratios"}]}:
    each contender's rounds (fit's numbers) and the ratio workers / alone of each round. model:
    SparseAutoencoder's arguments besides the sizes (bench.model_settings(sparsity)). shard:
    the workers split the dictionary's units (every one taking the whole batch) instead of
    the batch's rows; result["split"] says which ("units" or "rows")."""
    split = "units" if shard else "rows"
    for hidden, batch in configs:  # refused before any round runs
        if split == "rows" and batch < workers:
            raise ConfigError(f"a batch of {batch} cannot be shared by {workers} workers")
        if split == "units" and hidden < workers:
            raise ConfigError(f"a dictionary of {hidden} units cannot be split over {workers} "
                              f"workers: give each at least one unit")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for hidden, batch in configs:
            runs = {1: [], workers: []}
            for r in range(rounds):
                for n in (1, workers):
                    runs[n].append(_round(n, hidden, batch, steps, model, folder, split))
                    if say:
                        say(f"{hidden}x{batch} round {r + 1}: {n} process(es) "
                            f"{runs[n][-1]['samples_per_second']:,.0f} samples/s")
            ratios = [w["samples_per_second"] / a["samples_per_second"]
                      for w, a in zip(runs[workers], runs[1])]
            results.append({"hidden": hidden, "batch": batch, "alone": runs[1],
                            "workers": runs[workers], "ratios": ratios})
    return {"workers": workers, "split": split, "sparsity": sparsity, "k": model.get("k"),
            "steps": steps, "rounds": rounds, "configs": results}


def format_parallel_result(result):
    n = result["workers"]
    how = ("sharded dictionary through fit (units split, every process the whole batch)"
           if result.get("split") == "units" else
           "data parallel through fit (rows split, every process every unit)")
    model = result["sparsity"] + (f" (k {result['k']})" if result.get("k") else "")
    lines = [f"{how}: {n} processes against one, {model}, "
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
    split = sys.argv[7] if len(sys.argv) > 7 else "rows"
    if split not in SPLITS:
        sys.exit(f"minisae: error: SPLIT must be one of {', '.join(SPLITS)}, got {split!r}")
    worker(out, int(hidden), int(batch), int(steps), json.loads(model), split=split)
