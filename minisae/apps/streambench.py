"""`minisae bench --stream`: training from a file larger than the buffer, against training in
memory: samples/s (page cache and cold) and peak resident memory.

A float32 .npy of `rows` x `n_inputs` uniform [0, 1) values is written (in blocks; never whole
in memory) into `folder` (default: the system's temporary folder), and removed at the end.
The model: n_inputs -> n_hidden, the book's sigmoid one, Adam, the fast engine, BLAS threads
as fit sets them, WARMUP untimed steps on a constant batch first (kernels compile). Each
measurement runs in a fresh process, so that each peak resident set (VmHWM) is its own:

- speed: timed rounds of `steps` training steps, alternating between batches from
         batches.ArrayBatches over rows of the file loaded into memory (fit's way) and
         batches from training.stream.StreamBatches over the whole file in the page cache;
         then alternating memory with the stream after the file's pages are dropped from the
         page cache before each round (posix_fadvise DONTNEED, where the OS has it: "cold").
         Each feed goes on from where its last round stopped (epoch after epoch), so the
         stream's window reads fall into the rounds as they do in training. The median
         round of each is reported, as samples/s;
- rss:   steps * rounds training steps from the stream, and nothing else: the peak
         resident set of training from the file;
- pass:  one whole epoch of streamed batches without training (every row of the file read,
         checked and gathered through the buffer): rows/s, and the peak resident set;
- cold pass: the same after the file's pages are dropped from the page cache.
On a machine shared with other work, the rounds' times vary; the ratio of each streamed round
to the memory round just before it is reported (its median), and the passes give reading's
cost apart from training's.

    from minisae.apps.streambench import run_stream_benchmark, format_stream_result
    print(format_stream_result(run_stream_benchmark(rows=200_000, steps=20, rounds=3)))
    python -m minisae.apps.streambench --rows 3000000        # the issue's 9.4 GB run
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from .. import checks
from ..errors import ConfigError

ROWS, N_INPUTS, N_HIDDEN, BATCH, STEPS, ROUNDS = 3_000_000, 784, 1000, 1000, 40, 5
WARMUP = 3          # untimed steps on a constant batch first (the engine compiles its kernels)
KINDS = ("speed", "rss", "pass", "cold pass")


def _status_bytes(field):
    """A size from /proc/self/status ("VmHWM", "VmRSS") in bytes, or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss():
    """The process's peak resident set in bytes (VmHWM; else getrusage)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _rss():
    """The process's resident set now in bytes (VmRSS), or None."""
    return _status_bytes("VmRSS")


def write_rows(path, rows, n_inputs, seed=0, block_bytes=1 << 26):
    """A float32 .npy of uniform [0, 1) rows, written a block at a time."""
    rng = np.random.default_rng(seed)
    block = max(1, block_bytes // (4 * n_inputs))
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (rows, n_inputs)})
        for a in range(0, rows, block):
            f.write(rng.random((min(block, rows - a), n_inputs), dtype=np.float32).data)
        f.flush()
        os.fsync(f.fileno())


def drop_cache(path):
    """Ask the OS to drop the file's pages from the page cache; True where it could ask."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def _child(kind, settings, queue):
    try:
        queue.put(_measure(kind, **settings))
    except BaseException as e:     # report, the parent raises
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _endless(batches):
    """Batches epoch after epoch (1, 2, ...), forever."""
    epoch = 1
    while True:
        yield from (x for _, x in batches.epoch(epoch))
        epoch += 1


def _measure(kind, path, n_hidden, batch, steps, rounds, seed, chunk_rows, buffer_rows,
             threads):
    from ..data.arrays import ArrayFiles
    from ..fast import FastAdam, loss_and_grads
    from ..fast.threads import thread_limits
    from ..model import SparseAutoencoder
    from ..optim import Adam
    from ..training.batches import ArrayBatches
    from ..training.stream import StreamBatches

    source = ArrayFiles(path)
    n_inputs = source.n_features
    model = SparseAutoencoder(n_inputs, n_hidden, seed=seed)
    opt = FastAdam(Adam(model.params, model.grads, lr=1e-3))

    def stream():
        return StreamBatches(source, batch, seed, model.backend, chunk_rows=chunk_rows,
                             buffer_rows=buffer_rows, unit_range=True)

    def train(batches_iter, n):
        t0 = time.perf_counter()
        for _ in range(n):
            loss_and_grads(model, next(batches_iter), validate=False)
            opt.step()
        return time.perf_counter() - t0

    out = {"kind": kind}
    with thread_limits(threads, n_inputs, n_hidden, batch) as policy:
        warm = np.full((batch, n_inputs), 0.5, np.float32)   # compiles the engine's kernels
        train(itertools.repeat(warm), WARMUP)
        out["threads"] = policy.threads
        out["rss_before"] = _rss()
        if kind == "speed":
            # the rows the in-memory rounds train on, loaded once
            x = source.read(0, min(source.n_rows, max(batch, steps * batch)))
            feeds = {"memory": _endless(ArrayBatches(x, batch, seed, model.backend))}
            s = stream()
            feeds["stream"] = _endless(s)
            times = {"memory": [], "stream": [], "memory (cold phase)": [], "cold": []}
            for _ in range(rounds):            # warm page cache: memory, stream, ...
                for k in ("memory", "stream"):
                    times[k].append(train(feeds[k], steps))
            cold = stream()
            feeds["cold"] = _endless(cold)
            for _ in range(rounds):            # then memory, cold (pages dropped first), ...
                times["memory (cold phase)"].append(train(feeds["memory"], steps))
                out["dropped"] = drop_cache(path)
                times["cold"].append(train(feeds["cold"], steps))
            out["samples_per_s"] = {k: steps * batch / statistics.median(v)
                                    for k, v in times.items()}
            # each round against the memory round just before it: robust to a load that drifts
            out["ratios"] = {
                "stream": statistics.median(m / t for m, t in zip(times["memory"],
                                                                  times["stream"])),
                "cold": statistics.median(m / t for m, t in zip(times["memory (cold phase)"],
                                                                times["cold"]))}
            out["rounds_seconds"] = times
            out.update(chunk_rows=s.chunk_rows, buffer_rows=s.buffer_rows,
                       buffer_bytes=s.memory(), rows_read=s.rows_read + cold.rows_read)
        elif kind == "rss":                    # training from the stream, nothing else
            s = stream()
            seconds = train(_endless(s), steps * rounds)
            out.update(seconds=seconds, samples_per_s=steps * rounds * batch / seconds,
                       rows_read=s.rows_read)
        else:                                  # "pass": every row through the buffer
            if kind == "cold pass":
                out["dropped"] = drop_cache(path)
            s = stream()
            t0 = time.perf_counter()
            n = sum(1 for _ in s.epoch(1)) * batch
            seconds = time.perf_counter() - t0
            out.update(rows=n, seconds=seconds, rows_per_s=n / seconds,
                       rows_read=s.rows_read)
    out["peak_rss"] = _peak_rss()
    return out


def run_stream_benchmark(rows=ROWS, n_inputs=N_INPUTS, n_hidden=N_HIDDEN, batch=BATCH,
                         steps=STEPS, rounds=ROUNDS, folder=None, chunk_rows=None,
                         buffer_rows=None, kinds=KINDS, threads="auto", seed=0, say=None):
    """Write the file, run each measurement of `kinds` in a fresh process, remove the file;
    return {"settings", "file", "results": [one dict per kind]}. say: a function for progress
    lines (None: quiet)."""
    rows = checks.check_int(rows, "rows", 1)
    n_inputs = checks.check_int(n_inputs, "n_inputs", 1)
    n_hidden = checks.check_int(n_hidden, "n_hidden", 1)
    batch = checks.check_int(batch, "batch", 1, rows)
    steps = checks.check_int(steps, "steps", 1)
    rounds = checks.check_int(rounds, "rounds", 1)
    for k in kinds:
        checks.check_choice(k, "kind", KINDS)
    folder = tempfile.gettempdir() if folder is None else checks.check_path(folder, "folder")
    nbytes = rows * n_inputs * 4
    free = shutil.disk_usage(folder).free
    if nbytes + (1 << 30) > free:
        raise ConfigError(f"the benchmark's file would take {nbytes / 1e9:.1f} GB, but {folder} "
                          f"has {free / 1e9:.1f} GB free (and 1 GB is kept free); use fewer "
                          f"rows or another folder")
    say = say or (lambda line: None)
    work = tempfile.mkdtemp(prefix="minisae-stream-", dir=folder)
    path = os.path.join(work, "rows.npy")
    settings = dict(path=path, n_hidden=n_hidden, batch=batch, steps=steps, rounds=rounds,
                    seed=seed, chunk_rows=chunk_rows, buffer_rows=buffer_rows, threads=threads)
    results = []
    try:
        say(f"writing {rows:,} x {n_inputs} float32 ({nbytes / 1e9:.1f} GB) to {path}")
        t0 = time.perf_counter()
        write_rows(path, rows, n_inputs, seed)
        written = time.perf_counter() - t0
        ctx = multiprocessing.get_context("spawn")
        for kind in kinds:
            _read_through(path)        # into the page cache (where it fits)
            say(f"measuring {kind} ...")
            queue = ctx.Queue()
            p = ctx.Process(target=_child, args=(kind, settings, queue))
            p.start()
            result = queue.get()
            p.join()
            if "error" in result:
                raise RuntimeError(f"the {kind} measurement failed: {result['error']}")
            results.append(result)
            say(_line(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"settings": {k: v for k, v in settings.items() if k != "path"},
            "file": {"rows": rows, "n_inputs": n_inputs, "bytes": nbytes,
                     "write_seconds": written, "folder": folder},
            "machine": {"cpus": os.cpu_count(), "load_average": load},
            "results": results}


def _read_through(path, block=1 << 24):
    """Read the file once (into the page cache, when it fits), with one reused buffer."""
    buf = bytearray(block)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _line(r):
    rss = (f"peak RSS {r['peak_rss'] / 2**20:,.0f} MiB (after the warm-up "
           f"{r['rss_before'] / 2**20:,.0f} MiB)")
    if r["kind"] in ("pass", "cold pass"):
        return (f"  {r['kind']} (no training): {r['rows']:,} rows in {r['seconds']:.1f} s, "
                f"{r['rows_per_s']:,.0f} rows/s, {rss}")
    if r["kind"] == "rss":
        return (f"  training from the stream: {r['samples_per_s']:,.0f} samples/s, "
                f"{r['rows_read']:,} rows read, {rss}")
    rates = r["samples_per_s"]
    return (f"  samples/s (median of rounds): memory {rates['memory']:,.0f}, stream (page "
            f"cache) {rates['stream']:,.0f}; memory {rates['memory (cold phase)']:,.0f}, "
            f"stream (cold) {rates['cold']:,.0f}; {r['threads']} BLAS threads")


def format_stream_result(result):
    """The result of run_stream_benchmark as text lines."""
    f, s = result["file"], result["settings"]
    lines = [f"file: {f['rows']:,} x {f['n_inputs']} float32, {f['bytes'] / 1e9:.2f} GB "
             f"(written in {f['write_seconds']:.0f} s); model {f['n_inputs']} -> "
             f"{s['n_hidden']}, batch {s['batch']}, rounds of {s['steps']} steps"]
    speed = next((r for r in result["results"] if r["kind"] == "speed"), None)
    if speed:
        lines.append(f"stream: chunks of {speed['chunk_rows']:,} rows, buffer of "
                     f"{speed['buffer_rows']:,} rows ({speed['buffer_bytes'] / 2**20:,.0f} MiB "
                     f"with the batch and indices)")
    lines += [_line(r) for r in result["results"]]
    if speed:
        ratios = speed["ratios"]
        lines.append(f"stream / memory {ratios['stream']:.3f}, cold / memory "
                     f"{ratios['cold']:.3f} (medians of each round over the memory round "
                     f"before it)" + ("" if speed.get("dropped") else
                                      "; the page cache could not be dropped"))
    passes = {r["kind"]: r for r in result["results"] if "rows_per_s" in r}
    if speed and passes:   # reading's share of a step, from rates measured apart
        rate = max(speed["samples_per_s"]["memory"], speed["samples_per_s"]["memory (cold "
                                                                              "phase)"])
        lines.append("reading, checking and gathering a row costs " + ", ".join(
            f"{rate / p['rows_per_s']:.1%} of a training step ({k})"
            for k, p in passes.items()) + f", at the faster memory rate ({rate:,.0f}/s)")
    load = result.get("machine", {}).get("load_average")
    if load:
        lines.append(f"{result['machine']['cpus']} CPUs, load average {load[0]:.2f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minisae.apps.streambench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=ROWS)
    p.add_argument("--n-inputs", type=int, default=N_INPUTS)
    p.add_argument("--hidden", type=int, default=N_HIDDEN)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--chunk-rows", type=int, default=None)
    p.add_argument("--buffer-rows", type=int, default=None)
    p.add_argument("--folder", default=None)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    a = p.parse_args(argv)
    result = run_stream_benchmark(a.rows, a.n_inputs, a.hidden, a.batch, a.steps, a.rounds,
                                  a.folder, a.chunk_rows, a.buffer_rows,
                                  tuple(a.kinds.split(",")),
                                  say=lambda line: print(line, flush=True))
    print(format_stream_result(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
