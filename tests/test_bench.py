"""`minisae bench`: the form of its output at a tiny size. No test asserts a time."""
import argparse
import json

import numpy as np
import pytest

from minisae import Adam, SparseAutoencoder
from minisae import fast as engine
from minisae.apps import bench
from minisae.errors import ConfigError, MinisaeError

TINY = dict(configs="8x16,12x32", steps=2, warmup=1, rounds=2, n_samples=96, n_inputs=20)

ROW_KEYS = {"hidden", "batch", "minisae_samples_per_s", "reference_samples_per_s",
            "torch_samples_per_s", "ratio", "compiled_samples_per_s", "compiled_ratio",
            "matmul_gflops", "roofline_samples_per_s", "roofline_fraction", "round_seconds",
            "threads", "thread_trials"}


def has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def parser():
    p = argparse.ArgumentParser(prog="minisae")
    bench.add_parser(p.add_subparsers(dest="command"))
    return p


def test_parse_configs():
    assert bench.parse_configs("196x256, 1000X1000") == [(196, 256), (1000, 1000)]
    for bad in ("", "196", "196x", "ax2", "0x10", "10x-1"):
        with pytest.raises(ConfigError):
            bench.parse_configs(bad)


def test_run_benchmark_without_torch():
    result = bench.run_benchmark(torch=False, **TINY)
    assert set(result) == {"backend", "machine", "settings", "results"}
    assert result["backend"] == "numpy"
    assert {"cpu", "cores", "blas", "numpy", "torch", "python"} <= set(result["machine"])
    s = result["settings"]
    assert s["configs"] == ["8x16", "12x32"] and s["steps"] == 2 and s["rounds"] == 2
    assert s["torch"] is False and "no-torch" in s["torch_note"]
    assert s["threads"] == "auto" and s["path"] == "fast" and s["compiled"] is False
    assert s["adam_kernel"] in ("numba", "numpy")
    assert [(r["hidden"], r["batch"]) for r in result["results"]] == [(8, 16), (12, 32)]
    for r in result["results"]:
        assert ROW_KEYS <= set(r)
        assert r["torch_samples_per_s"] is None and r["ratio"] is None
        assert r["compiled_samples_per_s"] is None and r["reference_samples_per_s"] is None
        assert r["threads"] == 1  # auto: products this small run on one thread
        assert r["minisae_samples_per_s"] > 0 and r["roofline_samples_per_s"] > 0
        assert r["roofline_fraction"] == pytest.approx(
            r["minisae_samples_per_s"] / r["roofline_samples_per_s"])
        # GFLOP/s = roofline samples/s times 10 * n_inputs * hidden flops per sample
        assert r["matmul_gflops"] == pytest.approx(
            r["roofline_samples_per_s"] * 10 * 20 * r["hidden"] / 1e9)
        assert set(r["round_seconds"]) == {"minisae", "fit", "matmul"}
        split = r["time_split"]
        assert set(split) == {"matmul", "adam", "elementwise_and_other"}
        assert sum(split.values()) == pytest.approx(1.0) and split["adam"] > 0
        assert all(len(t) == 2 for t in r["round_seconds"].values())
    json.dumps(result)  # JSON-ready as it is

    table = bench.format_table(result)
    header = [line for line in table.splitlines() if line.lstrip().startswith("hidden")]
    assert len(header) == 1
    for column in bench.COLUMNS:
        assert column in header[0]
    assert len(table.splitlines()) == table.count("\n") + 1
    assert "PyTorch: skipped" in table


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
def test_run_benchmark_with_torch_same_model():
    result = bench.run_benchmark(torch=True, compile=False, threads=1, **TINY)
    assert result["settings"]["torch"] is True and result["settings"]["threads"] == 1
    assert result["settings"]["torch_threads"] == 1
    for r in result["results"]:
        assert r["torch_samples_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["minisae_samples_per_s"] / r["torch_samples_per_s"])
        # same weights, same batch, same loss: the PyTorch model is the same model
        losses = r["first_loss"]
        assert losses["minisae"] == pytest.approx(losses["torch"], rel=1e-5)
        assert set(r["round_seconds"]) == {"minisae", "fit", "torch", "matmul"}


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
@pytest.mark.parametrize("policy", ["auto", "adaptive"])
def test_thread_policies_leave_pytorch_at_its_default(policy):
    """A policy is minisae's; PyTorch keeps its own count (a review found "adaptive" handed to
    torch.set_num_threads as a string)."""
    import torch
    before = torch.get_num_threads()
    result = bench.run_benchmark(torch=True, compile=False, threads=policy,
                                 **dict(TINY, configs="8x16"))
    assert result["settings"]["threads"] == policy
    assert result["settings"]["torch_threads"] == before == torch.get_num_threads()
    assert parser().parse_args(["bench", "--threads", policy]).threads == policy


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("target", ["fifo", ""])
def test_cli_json_target_is_checked_before_the_benchmark(tmp_path, capsys, monkeypatch, target):
    """`--json /dev/null` used to replace the device with a regular file after the run, and
    `--json ''` was ignored; both are refused before any timing."""
    import os
    import stat
    if target == "fifo":
        target = str(tmp_path / "pipe")
        os.mkfifo(target)
    monkeypatch.setattr(bench, "run_benchmark", lambda **kw: pytest.fail("ran the benchmark"))
    from minisae.apps import cli
    code = cli.main(["bench", "--no-torch", "--configs", "8x16", "--json", target])
    err = capsys.readouterr().err
    assert code == 2 and "--json" in err and err.count("\n") == 1
    if target:
        assert stat.S_ISFIFO(os.stat(target).st_mode)


@pytest.mark.parametrize("argv, word", [
    (["--stream-rows", "100"], "--stream-rows applies to --stream"),
    (["--stream-folder", "."], "--stream-folder applies to --stream"),
    (["--stream", "--configs", "8x16"], "--configs applies to the step benchmark"),
    (["--stream", "--sparsity", "topk"], "--sparsity topk applies to the step benchmark"),
    (["--stream", "--no-torch"], "--no-torch applies to the step benchmark"),
    (["--k", "3"], "--k applies to --sparsity topk"),
])
def test_cli_flags_the_benchmark_would_not_use_are_refused(capsys, monkeypatch, argv, word):
    """Found by a sweep of the CLI: these were accepted and ignored."""
    from minisae.apps import cli, streambench
    monkeypatch.setattr(bench, "run_benchmark", lambda **kw: pytest.fail("ran the benchmark"))
    monkeypatch.setattr(streambench, "run_stream_benchmark",
                        lambda **kw: pytest.fail("ran the stream benchmark"))
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1


def test_cli_k_reaches_the_topk_benchmark(monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run_benchmark", lambda **kw: seen.update(kw) or {})
    monkeypatch.setattr(bench, "format_table", lambda result: "")
    from minisae.apps import cli
    assert cli.main(["bench", "--sparsity", "topk", "--k", "3", "-q"]) == 0 and seen["k"] == 3
    assert cli.main(["bench", "-q"]) == 0 and seen["k"] == bench.K


def test_cli_quick_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = parser().parse_args(["bench", "--quick", "--no-torch", "--configs", "8x16",
                                "--samples", "64", "--steps", "2", "-q", "--json", str(out)])
    assert args.func is bench.main
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "minisae samples/s" in printed and "of roofline" in printed
    result = json.loads(out.read_text())
    assert result["settings"]["configs"] == ["8x16"] and result["settings"]["steps"] == 2
    assert result["settings"]["n_samples"] == 64 and len(result["results"]) == 1


def test_user_errors_are_minisae_errors(tmp_path):
    with pytest.raises(ConfigError):
        bench.run_benchmark(configs="8x100", n_samples=50, torch=False)  # batch > data
    with pytest.raises(ConfigError):
        bench.run_benchmark(configs="8x16", steps=0, torch=False)
    with pytest.raises(ConfigError):
        bench.run_benchmark(configs="8x16", threads=0, torch=False, n_samples=32)
    with pytest.raises(MinisaeError):
        bench.run_benchmark(backend="tpu", configs="8x16", torch=False)
    args = parser().parse_args(["bench", "--quick", "--no-torch", "--configs", "8x16", "-q",
                                "--json", str(tmp_path / "missing-dir" / "b.json")])
    with pytest.raises(ConfigError):
        args.func(args)


def test_batches_are_views_that_wrap():
    data = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    b = bench._Batches(data, 4)
    assert b.per_epoch == 2
    assert np.shares_memory(b[0], data)
    assert np.array_equal(b[1], data[4:8]) and np.array_equal(b[2], data[0:4])


def test_reference_path_runs_beside_the_fast_one():
    result = bench.run_benchmark(torch=False, path="both", **dict(TINY, configs="8x16"))
    (r,) = result["results"]
    assert r["minisae_samples_per_s"] > 0 and r["reference_samples_per_s"] > 0
    assert set(r["round_seconds"]) == {"minisae", "reference", "fit", "matmul"}
    assert "reference path" in bench.format_table(result)
    only = bench.run_benchmark(torch=False, path="reference", **dict(TINY, configs="8x16"))
    (r,) = only["results"]
    assert r["minisae_samples_per_s"] is None and "time_split" not in r
    assert r["roofline_fraction"] == pytest.approx(
        r["reference_samples_per_s"] / r["roofline_samples_per_s"])
    with pytest.raises(ConfigError):
        bench.run_benchmark(torch=False, path="slow", **TINY)


def test_runners_compute_the_same_first_loss_on_both_paths():
    be = bench.get_backend("numpy", "float32")
    data = np.random.default_rng(0).random((32, 20), dtype=np.float32)
    fast, reference = (bench.MinisaeRunner(be, 6, data, 16, seed=3, fast=f) for f in (True, False))
    assert (fast.name, reference.name) == ("minisae", "reference")
    # the fast runner steps the engine (fused loss_and_grads, FastAdam on the same Adam);
    # the reference one model.loss_and_grads and Adam.step
    assert engine.fused(fast.model) is None and fast.compute is engine.loss_and_grads
    assert isinstance(fast.step_opt, engine.FastAdam) and fast.step_opt.opt is fast.opt
    assert reference.compute is SparseAutoencoder.loss_and_grads
    assert reference.step_opt is reference.opt and type(reference.opt) is Adam
    assert fast.loss(0) == pytest.approx(reference.loss(0), rel=1e-6)


@pytest.mark.skipif(not has_torch(), reason="PyTorch is not installed")
def test_a_failing_torch_compile_is_reported_not_raised(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(bench, "CompiledTorchRunner", refuse)
    result = bench.run_benchmark(torch=True, compile=True, threads=1, **dict(TINY, configs="8x16"))
    s = result["settings"]
    assert s["compiled"] is False and "no C++ compiler found" in s["compile_note"]
    assert "more detail" not in s["compile_note"]
    assert result["results"][0]["compiled_samples_per_s"] is None
    assert "torch.compile: torch.compile failed" in bench.format_table(result)


def test_cli_threads_flag_takes_a_number_or_auto():
    args = parser().parse_args(["bench", "--threads", "1", "--no-torch"])
    assert bench._settings_from_args(args)["threads"] == "1"
    assert parser().parse_args(["bench"]).threads == "auto"
    with pytest.raises(ConfigError, match="threads"):
        bench.run_benchmark(configs="8x16", threads="two", torch=False, n_samples=32)
    quick = bench._settings_from_args(parser().parse_args(["bench", "--quick"]))
    assert quick["compile"] is False and quick["configs"] == bench.QUICK_CONFIGS


def test_time_split_never_goes_below_zero():
    split = bench._time_split({"minisae": [1.0], "matmul": [1.2]}, [0.1])
    assert split["elementwise_and_other"] == pytest.approx(0.0)
    assert split["matmul"] + split["adam"] == pytest.approx(1.0)


def test_the_fit_contender_trains_through_fit_and_can_be_skipped(monkeypatch):
    import minisae.training as training
    calls = []
    real = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: (calls.append(k), real(*a, **k))[1])
    r = bench.run_benchmark(configs="8x16", steps=2, warmup=1, rounds=2, torch=False,
                            n_samples=64, compile=False)["results"][0]
    assert r["fit_samples_per_s"] > 0 and calls
    assert all(k["progress"] is False for k in calls)
    r = bench.run_benchmark(configs="8x16", steps=2, warmup=1, rounds=1, torch=False,
                            n_samples=64, compile=False, fit=False)["results"][0]
    assert r["fit_samples_per_s"] is None


def test_the_topk_model_is_benchmarked_against_torch_topk():
    pytest.importorskip("torch")
    result = bench.run_benchmark(configs="12x16", steps=2, warmup=1, rounds=1, n_samples=64,
                                 compile=False, sparsity="topk", k=3)
    r = result["results"][0]
    assert result["settings"]["sparsity"] == "topk" and result["settings"]["k"] == 3
    losses = r["first_loss"]        # the same model, weights and batch: the same loss
    assert losses["minisae"] == pytest.approx(losses["torch"], rel=1e-4)
    assert "TopK, k = 3" in bench.format_table(result)
