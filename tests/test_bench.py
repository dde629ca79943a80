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
    assert set(result) == {"backend", "machine", "settings", "results", "load"}
    assert result["load"] is None and result["settings"]["load"] == "none"
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
        assert r["fit_threads"] == [1]  # and fit's own decision, recorded beside it
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
    (["--aux-k", "8"], "--aux-k applies to --sparsity topk"),
    (["--sparsity", "topk", "--dead-share", "0.5"], "--dead-share applies to --aux-k"),
    (["--sparsity", "topk", "--aux-k", "0", "--dead-share", "0.5"],
     "--dead-share applies to --aux-k"),
    (["--stream", "--aux-k", "8"], "--aux-k applies to the step benchmark"),
    (["--stream", "--inputs", "20"], "--inputs applies to the step benchmark"),
    (["--stream", "--load", "busy"], "--load busy applies to the step benchmark"),
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


def test_cli_auxk_inputs_and_load_reach_the_benchmark(monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run_benchmark", lambda **kw: seen.update(kw) or {})
    monkeypatch.setattr(bench, "format_table", lambda result: "")
    from minisae.apps import cli
    assert cli.main(["bench", "--sparsity", "topk", "--aux-k", "8", "--dead-share", "0.5",
                     "--inputs", "20", "--load", "busy", "-q"]) == 0
    assert (seen["aux_k"], seen["dead_share"], seen["n_inputs"], seen["load"]) == \
        (8, 0.5, 20, "busy")
    assert cli.main(["bench", "--load", "train", "-q"]) == 0 and seen["load"] == "train"
    assert cli.main(["bench", "-q"]) == 0
    assert (seen["aux_k"], seen["dead_share"], seen["n_inputs"], seen["load"]) == \
        (None, bench.DEAD_SHARE, bench.N_INPUTS, "none")
    assert cli.main(["bench", "--sparsity", "topk", "--aux-k", "0", "-q"]) == 0  # AuxK off
    assert seen["aux_k"] == 0
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "--load", "spin"])


@pytest.mark.parametrize("kwargs, word", [
    (dict(aux_k=4), "aux_k applies to sparsity='topk'"),
    (dict(sparsity="topk", k=3, aux_k=13), "--aux-k 13 is larger than the hidden layer"),
    (dict(sparsity="topk", k=3, aux_k=4, dead_share=1.0), "dead_share"),
    (dict(sparsity="topk", k=3, aux_k=4, dead_share=-0.1), "dead_share"),
    (dict(sparsity="topk", k=3, aux_k=4, dead_share=0.9), "leaves fewer than k = 3"),
    (dict(load="spin"), "load must be one of"),
])
def test_auxk_and_load_settings_are_checked(monkeypatch, kwargs, word):
    monkeypatch.setattr(bench, "LoadProcess", lambda kind: pytest.fail("started a load"))
    with pytest.raises(ConfigError, match=word):
        bench.run_benchmark(torch=False, **dict(TINY, configs="12x16"), **kwargs)


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


# ----------------------------------------------------------------------------- TopK + AuxK

AUXK = dict(sparsity="topk", k=3, aux_k=4)


def test_a_tiny_topk_auxk_benchmark_has_every_row():
    pytest.importorskip("torch")
    result = bench.run_benchmark(configs="12x16,16x32", steps=2, warmup=1, rounds=2,
                                 n_samples=96, n_inputs=20, compile=False, threads=1,
                                 path="both", **AUXK)
    s = result["settings"]
    assert (s["sparsity"], s["k"], s["aux_k"], s["dead_share"]) == ("topk", 3, 4, 0.25)
    assert s["subtract_decoder_bias"] is True and s["aux_weight"] == pytest.approx(1 / 32)
    for r in result["results"]:
        assert set(r["round_seconds"]) == {"minisae", "reference", "fit", "torch", "matmul"}
        for key in ("minisae_samples_per_s", "reference_samples_per_s", "fit_samples_per_s",
                    "torch_samples_per_s"):
            assert r[key] > 0
        assert r["dead_units"] == round(0.25 * r["hidden"])
        assert r["fit_dead_share"] == r["dead_units"] / r["hidden"]  # fit kept the same set
        losses = r["first_loss"]  # the same model, weights and batch, AuxK included
        assert losses["minisae"] == pytest.approx(losses["torch"], rel=1e-5)
        assert losses["reference"] == pytest.approx(losses["torch"], rel=1e-5)
    table = bench.format_table(result)
    assert "AuxK k_aux = 4" in table and "25% of the units dead" in table
    assert "12x16 3 (25.0%)" in table  # round(0.25 * 12) dead units, held by fit
    json.dumps(result)


def test_the_dead_units_are_the_same_and_stay_dead_in_every_contender():
    """bench_model lowers the chosen units' biases: they never enter the top k, so the raw
    step (model.dead, fixed) and fit (its own tracking) see the same dead units throughout."""
    be = bench.get_backend("numpy", "float32")
    data = np.random.default_rng(0).random((256, 20), dtype=np.float32)
    model = bench.bench_model(be, data, 40, 3, dead_share=0.5, **AUXK)
    dead = np.asarray(model.dead).copy()
    assert dead.sum() == 20 and np.array_equal(np.flatnonzero(dead), bench.dead_units(40, 0.5, 3))
    assert model.config.aux_k == 4 and model.config.subtract_decoder_bias
    assert np.allclose(model.params["decoder.b"], data[:bench.DEAD_ROWS].mean(axis=0))
    step = bench.MinisaeRunner(be, 40, data, 32, seed=3, dead_share=0.5, **AUXK)
    fitted = bench.FitRunner(be, 40, data, 32, 3, "auto", dead_share=0.5, **AUXK)
    assert np.array_equal(np.asarray(step.model.dead), dead)
    assert np.array_equal(step.model.params["encoder.b"], model.params["encoder.b"])
    step.run(0, 16)
    fitted.run(0, 8)
    fitted.run(8, 8)
    assert np.array_equal(np.asarray(step.model.dead), dead)
    assert fitted.dead_share() == 0.5 and np.array_equal(np.asarray(fitted.model.dead), dead)
    loss = engine.loss_and_grads(step.model, data[:64])
    assert np.all(loss.mean_activation[dead] == 0)  # never kept
    assert loss.auxk > 0  # the AuxK term ran
    plain = bench.FitRunner(be, 40, data, 32, 3, "auto", sparsity="topk", k=3)
    assert plain.dead_share() is None and not np.asarray(plain.model.dead).any()


@pytest.mark.parametrize("aux_k, batch", [(6, 16), (12, 16), (6, 1)])
def test_the_torch_auxk_contender_computes_minisae_loss(aux_k, batch):
    """Same weights, same batch, float64: the PyTorch contender's loss is minisae's (reference
    and engine) to 1e-10, AuxK with live gradients included, and so are its gradients.
    (12 > the 10 dead units: both cap k_aux; a batch of one: the residual has no variance,
    and AuxK is 0 in both.)"""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    model = SparseAutoencoder(n_inputs=12, n_hidden=30, dtype="float64", seed=5,
                              **bench.model_settings("topk", 4, aux_k))
    x = rng.random((batch, 12))
    model.params["decoder.b"][...] = rng.random(12) * 0.5
    model.params["encoder.b"][...] = rng.normal(size=30) * 0.2
    dead = np.zeros(30, dtype=bool)
    dead[rng.choice(30, size=10, replace=False)] = True
    model.dead[...] = dead
    z = (x - model.params["decoder.b"]) @ model.params["encoder.W"] + model.params["encoder.b"]
    assert (np.sort(z[:, dead], axis=1)[:, -min(aux_k, 10):] > 0).any()  # AuxK passes some

    reference = model.loss_and_grads(x)
    grads = {name: g.copy() for name, g in model.grads.items()}
    fast = engine.loss_and_grads(model, x)
    assert (reference.auxk > 0) == (batch > 1)
    runner = bench.TorchRunner(torch, "cpu", model.params, x, batch, "topk", 4, aux_k=aux_k,
                               dead=dead)
    theirs = runner._loss(runner.batches[0])
    assert theirs.dtype == torch.float64
    assert float(theirs.detach()) == pytest.approx(reference.total, rel=1e-10)
    assert fast.total == pytest.approx(reference.total, rel=1e-10)
    theirs.backward()
    for name, layer in (("encoder", runner.encoder), ("decoder", runner.decoder)):
        np.testing.assert_allclose(layer.weight.grad.numpy().T, grads[name + ".W"],
                                   rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(layer.bias.grad.numpy(), grads[name + ".b"],
                                   rtol=1e-9, atol=1e-14)


@pytest.mark.slow
def test_the_auxk_step_compiles_and_trains_as_the_eager_one():
    """torch.compile takes the AuxK step (topk over a -inf mask, the scatter, the detached
    residual), and its training steps are the eager ones' (about 30 s: it compiles)."""
    torch = pytest.importorskip("torch")
    be = bench.get_backend("numpy", "float32")
    data = np.random.default_rng(0).random((64, 20), dtype=np.float32)
    model = bench.bench_model(be, data, 12, 0, **AUXK)
    kw = dict(aux_k=4, dead=model.dead)
    eager = bench.TorchRunner(torch, "cpu", model.params, data, 16, "topk", 3, **kw)
    compiled, why = bench._compiled_runner(torch, "cpu", model.params, data, 16,
                                           lambda line: None, sparsity="topk", k=3, **kw)
    assert why is None and compiled.name == "compiled"  # it has run steps 0 and 1
    eager.run(0, 2)
    for a, b in ((eager.encoder, compiled.encoder), (eager.decoder, compiled.decoder)):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(a.bias, b.bias, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- under load

def running(pid):
    """Whether process pid exists and is not a zombie."""
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def gone_soon(pid, seconds=10.0):
    import time
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


def watch_the_load(monkeypatch, raises=None):
    """Record the run's LoadProcess, and check it is at work while each configuration runs
    (then raise `raises` there, when given)."""
    loads, real_block, real_config = [], bench._load_block, bench._bench_config

    def block(kind):
        loads.append(real_block(kind))
        return loads[-1]

    def config(run, *args):
        load = loads[-1]
        assert load.proc is not None and load.proc.poll() is None and running(load.info["pid"])
        if raises is not None:
            raise raises
        return real_config(run, *args)

    monkeypatch.setattr(bench, "_load_block", block)
    monkeypatch.setattr(bench, "_bench_config", config)
    return loads


@pytest.mark.parametrize("kind", ["busy", "train"])
def test_the_load_process_runs_through_the_run_and_is_gone_after_it(monkeypatch, kind):
    monkeypatch.setattr(bench, "TRAIN_LOAD", dict(n_inputs=20, n_hidden=8, batch=16, rows=64))
    loads = watch_the_load(monkeypatch)
    result = bench.run_benchmark(torch=False, **dict(TINY, configs="8x16"), load=kind)
    info = result["load"]
    assert result["settings"]["load"] == kind and info["kind"] == kind
    assert info["pid"] == loads[0].info["pid"] and info["running_at_end"] is True
    assert info["wall_seconds"] > 0 and info["exit_status"] is not None
    assert not running(info["pid"]) and loads[0].folder is None
    table = bench.format_table(result)
    assert f"under load: {kind}" in table and f"load {kind}: " in table


@pytest.mark.parametrize("error", [RuntimeError("a contender failed"), KeyboardInterrupt()])
def test_the_load_process_is_stopped_on_an_error_and_on_ctrl_c(monkeypatch, error):
    loads = watch_the_load(monkeypatch, raises=error)
    with pytest.raises(type(error)):
        bench.run_benchmark(torch=False, **dict(TINY, configs="8x16"), load="busy")
    assert loads and not running(loads[0].info["pid"])


def test_a_load_process_that_cannot_start_is_reported(monkeypatch):
    monkeypatch.setattr(bench, "_BUSY_CODE", "import sys; sys.exit('no core for me')")
    with pytest.raises(ConfigError, match="--load busy process ended.*no core for me"):
        with bench.LoadProcess("busy"):
            pytest.fail("the block ran")


def test_the_load_process_ends_when_the_benchmark_is_killed():
    """Killed outright (no finally runs), the benchmark leaves no spinning process behind:
    the load watches its parent."""
    import subprocess
    import sys
    code = ("from minisae.apps import bench; import time\n"
            "load = bench.LoadProcess('busy').__enter__()\n"
            "print(load.info['pid'], flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert running(pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    assert gone_soon(pid)
