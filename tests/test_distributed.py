"""Data parallelism: N gloo processes with batch B/N each train the same model as one process
with batch B (float64, to 1e-12, every mechanism, both paths), the naive version does not,
`minisae train --workers N` writes one run that resumes on any number of ranks, and a rank
that dies or a Ctrl-C ends every rank with one line each."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minisae
from minisae.comm import Alone
from minisae.distributed import free_port, join
from minisae.errors import ConfigError
from minisae.training.batches import share_of

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ranks  # noqa: E402  (the rank script, tests/ranks.py)

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this PyTorch has no gloo", allow_module_level=True)


def ranks_env(rank, size, port, **extra):
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size),
            "LOCAL_WORLD_SIZE": str(size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            **{k: str(v) for k, v in extra.items()}}


def run_ranks(size, out, **extra):
    """tests/ranks.py on `size` processes; rank 0's results."""
    port = free_port()
    envs = [ranks_env(r, size, port, **extra) for r in range(size)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "ranks.py"), str(out)], env=env,
                              stderr=subprocess.PIPE, text=True) for env in envs]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)
    return dict(np.load(out))


def relative(a, b):
    scale = max(float(np.max(np.abs(a))), 1e-300)
    return float(np.max(np.abs(a - b))) / scale


@pytest.fixture(scope="module")
def one_process():
    """The single-process results for both batch sizes the ranks use (in this process)."""
    return {batch: ranks.results(Alone(), batch) for batch in (12, 10)}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """2 ranks of 6 rows: every case, then 12 units sharded over the 2 (SHARD_HIDDEN), then
    the naive split of the coupled ones (NAIVE=after)."""
    return run_ranks(2, tmp_path_factory.mktemp("two") / "out.npz", BATCH=12, NAIVE="after",
                     SHARD_HIDDEN=12)


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory):
    """3 ranks of 3, 3 and 4 rows: every case, then 7 units sharded over the 3."""
    return run_ranks(3, tmp_path_factory.mktemp("three") / "out.npz", BATCH=10,
                     SHARD_HIDDEN=7)


@pytest.mark.slow
@pytest.mark.parametrize("size, batch", [(2, 12), (3, 10)], ids=["2 ranks of 6", "3 ranks of 3-4"])
def test_ranks_train_what_one_process_trains(size, batch, one_process, two_ranks,
                                             three_ranks):
    """Every mechanism (KL with BCE, squared with halfsum, absolute, L1 with decoder norms and
    tied weights, TopK and BatchTopK with AuxK and x - b2, JumpReLU), the fast engine and the
    reference: parameters, losses, held-out FVU, dead-unit counts and BatchTopK's threshold
    after 10 Adam steps, and the normaliser's moments (each rank reading its part of the
    rows), to 1e-12 relative."""
    alone = one_process[batch]
    split = two_ranks if size == 2 else three_ranks
    split = {k: v for k, v in split.items() if not k.startswith(("naive/", "shard/"))}
    assert set(split) == set(alone) and len(alone) == 2 * len(ranks.CASES) * 3 + 2 + 2
    worst = {key: relative(alone[key], split[key]) for key in alone}
    assert max(worst.values()) < 1e-12, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.slow
@pytest.mark.parametrize("size, hidden", [(2, 12), (3, 7)],
                         ids=["2 shards of 6 units", "3 shards of 2-3 units (fewer than k)"])
def test_a_sharded_dictionary_trains_what_one_process_trains(size, hidden, one_process,
                                                             two_ranks, three_ranks):
    """The units split over the ranks (each the whole batch of 12): every mechanism (but
    resampling, which a sharded run refuses), both paths, the model put back together on
    rank 0 against one process, to 1e-12 relative; on 3 ranks of 7 units, a rank holds fewer
    units than TopK's k and AuxK's k_aux."""
    alone = one_process[12] if hidden == ranks.HIDDEN else ranks.results(Alone(), 12, hidden)
    split = {k[len("shard/"):]: v for k, v in (two_ranks if size == 2 else three_ranks).items()
             if k.startswith("shard/")}
    alone = {k: v for k, v in alone.items() if not k.startswith("topk-resampled/")}
    assert set(split) == set(alone) and len(alone) == 2 * (len(ranks.CASES) - 1) * 3 + 2 + 2
    worst = {key: relative(alone[key], split[key]) for key in alone}
    assert max(worst.values()) < 1e-12, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.slow
def test_the_naive_split_is_wrong_where_the_penalty_is_not_linear(one_process, two_ranks):
    """Each rank's penalty on its own rho_hat, gradients averaged: KL and squared move away
    from one process's run; L1, linear in rho_hat, does not (the mean of the ranks'
    penalties is the penalty of their mean)."""
    alone, naive = one_process[12], two_ranks
    for case in ("kl", "kl-bce", "squared-halfsum"):
        assert relative(alone[f"{case}/fast/params"], naive[f"naive/{case}/fast/params"]) > 1e-5
    assert relative(alone["l1-tied-norms/fast/params"],
                    naive["naive/l1-tied-norms/fast/params"]) < 1e-12


def test_auxk_is_at_work_in_the_equivalence_cases():
    """The AuxK cases have dead units (the window is one batch), so the term is compared."""
    x, _ = ranks.data()
    model = minisae.SparseAutoencoder(**ranks.BASE, n_hidden=ranks.HIDDEN,
                                      **ranks.CASES["topk-auxk"])
    history = minisae.fit(model, minisae.Adam(model.params, model.grads, lr=1e-2), x, epochs=2,
                          batch_size=12, progress=False,
                          dead_units=minisae.DeadUnits(window=12))
    assert history.last()["train_auxk"] > 0


# ----------------------------------------------------------------------------- the pieces

def test_alone_gives_back_what_it_is_given():
    comm, a = Alone(), np.arange(3.0)
    comm.begin(7)
    assert (comm.rank, comm.size, comm.rows, comm.share) == (0, 1, 7, 1.0)
    for method in (comm.batch_mean, comm.sum, comm.gather, comm.broadcast):
        assert method(a) is a
    loss = minisae.Loss({"reconstruction": 1.0})
    assert comm.combine(loss, a) is loss


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 500), size=st.integers(1, 16))
def test_shares_cover_the_batch_in_order(n, size):
    parts = [share_of(n, r, size) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [last - first for first, last in parts]
    assert max(sizes) - min(sizes) <= 1


def test_join_without_torchrun_is_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert isinstance(join(), Alone)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert isinstance(join(), Alone)


def test_half_an_environment_says_what_is_missing(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="RANK.*MASTER_PORT|MASTER_PORT.*RANK"):
        join()


def test_without_pytorch_the_error_says_what_to_install(monkeypatch):
    from minisae import distributed
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch.distributed", None)
    with pytest.raises(ConfigError, match=r"minisae\[distributed\]"):
        distributed.TorchComm()


class TwoRanks(Alone):
    """A communicator that says there are two ranks (for checks made before any collective)."""
    size, splits = 2, "rows"


class FirstOfTwoShards(Alone):
    """Rank 0 of a dictionary sharded over two ranks, as far as checks made before any
    collective see it."""
    size, splits = 2, "units"

    def units(self, n):
        return share_of(n, 0, 2)


def whole_params(n_hidden):
    return minisae.SparseAutoencoder(5, n_hidden).params


def test_a_shard_holds_its_units_of_the_same_draw():
    whole = minisae.SparseAutoencoder(5, 7, sparsity="topk", k=2, hidden_activation="relu",
                                      output_activation="linear", tied_weights=False)
    part = minisae.SparseAutoencoder(5, 7, sparsity="topk", k=2, hidden_activation="relu",
                                     output_activation="linear", comm=FirstOfTwoShards())
    assert part.units == (0, 3) and part.dead.shape == part.silent.shape == (3,)
    np.testing.assert_array_equal(part.params["encoder.W"], whole.params["encoder.W"][:, :3])
    np.testing.assert_array_equal(part.params["decoder.W"], whole.params["decoder.W"][:3])
    np.testing.assert_array_equal(part.params["decoder.b"], whole.params["decoder.b"])
    with pytest.raises(ConfigError, match="1 hidden unit.* 2 ranks"):
        minisae.SparseAutoencoder(5, 1, comm=FirstOfTwoShards())
    with pytest.raises(ConfigError, match="holds units 0 to 7 of 7.*shard"):
        whole.comm = FirstOfTwoShards()
    with pytest.raises(ConfigError, match="resampl"):
        minisae.fit(part, minisae.Adam(part.params, part.grads), np.zeros((8, 5)), epochs=1,
                    batch_size=4, progress=False, dead_units=minisae.DeadUnits(resample_every=2))
    with pytest.raises(ConfigError, match="adaptive"):
        minisae.fit(part, minisae.Adam(part.params, part.grads), np.zeros((8, 5)), epochs=1,
                    batch_size=4, progress=False, engine=minisae.Engine(threads="adaptive"))
    with pytest.raises(minisae.InputError, match="expected .batch, 3."):  # its own units only
        part.decode(np.zeros((2, 7)))
    from minisae.distributed import whole
    with pytest.raises(ConfigError, match="not built on this model"):  # before any gather
        whole(part, minisae.Adam(whole_params(7), whole_params(7)))


def test_shard_splits_a_model_and_its_optimizer_and_alone_whole_gives_it_back():
    from minisae.distributed import shard, whole
    model = minisae.SparseAutoencoder(5, 7, sparsity="batchtopk", k=2, hidden_activation="relu",
                                      output_activation="linear", aux_k=3)
    opt = minisae.Adam(model.params, model.grads, lr=0.01)
    x = np.random.default_rng(1).standard_normal((16, 5))
    minisae.fit(model, opt, x, epochs=2, batch_size=8, progress=False,
                dead_units=minisae.DeadUnits(window=8))
    part, part_opt = shard(model, opt, FirstOfTwoShards())
    assert part_opt.t == opt.t and part_opt.lr == opt.lr
    for name, a in part.params.items():
        axis = 1 if name == "encoder.W" else 0
        want = model.params[name] if name == "decoder.b" else np.take(model.params[name],
                                                                       range(3), axis=axis)
        np.testing.assert_array_equal(a, want)
        np.testing.assert_array_equal(part_opt.v[name], want * 0 + np.take(
            opt.v[name], range(3), axis=axis) if name != "decoder.b" else opt.v[name])
    np.testing.assert_array_equal(part.silent, model.silent[:3])
    assert float(part.coding.threshold) == float(model.coding.threshold)
    with pytest.raises(ConfigError, match="whole model"):
        shard(part, part_opt, FirstOfTwoShards())
    with pytest.raises(ConfigError, match="not built on this model"):
        shard(model, part_opt, FirstOfTwoShards())
    with pytest.raises(ConfigError, match="minibatch optimizer"):
        shard(model, "adam", FirstOfTwoShards())
    assert whole(model, opt) == (model, opt)  # a model of every unit is whole already


def test_fit_refuses_what_ranks_cannot_share():
    x = np.random.default_rng(0).random((20, 4))
    model = minisae.SparseAutoencoder(4, 3, comm=TwoRanks())
    with pytest.raises(ConfigError, match="at least 2"):
        minisae.fit(model, minisae.Adam(model.params, model.grads), x, epochs=1, batch_size=1,
                    progress=False)
    with pytest.raises(ConfigError, match="one process"):
        minisae.fit(model, minisae.LBFGS(model.flat_params, model.flat_grads), x, epochs=1,
                    progress=False)
    with pytest.raises(ConfigError, match="communicator"):
        minisae.SparseAutoencoder(4, 3, comm="gloo")


# ----------------------------------------------------------------------------- the command

@pytest.fixture
def acts(tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, np.random.default_rng(0).standard_normal((400, 12)).astype(np.float32))
    return path


def minisae_train(*args, cwd, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "minisae", "train", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=240, **kw)


def final_params(run):
    return minisae.to_numpy(minisae.load(run / "checkpoint.npz").model.flat_params)


@pytest.mark.slow
def test_workers_train_one_run_that_resumes_on_any_number_of_ranks(acts, tmp_path):
    """3 workers, data parallel, for 2 epochs; 2 workers with the dictionary sharded (a TopK
    with AuxK) for 1 epoch, then 1 process resuming it to 2: one run folder each, rank 0
    alone printing, and the same model."""
    common = ["--data", acts, "--batch-size", 24, "--no-progress"]
    three = minisae_train(*common, "--epochs", 2, "--out", tmp_path / "three", "--workers", 3,
                          cwd=tmp_path)
    assert three.returncode == 0, three.stderr
    two = minisae_train(*common, "--epochs", 1, "--out", tmp_path / "two", "--workers", 2,
                        "--shard", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["three", "two"]
    assert two.stdout.count("model: SparseAutoencoder") == 1  # rank 0 alone prints
    assert "sharded: the 48 units split over 2 ranks (24 on rank 0)" in two.stdout
    alone = minisae_train("--resume", tmp_path / "two", "--epochs", 2, "--no-progress",
                          cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    np.testing.assert_allclose(final_params(tmp_path / "two"), final_params(tmp_path / "three"),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_killed_rank_ends_every_rank_with_the_checkpoint_kept(acts, tmp_path):
    """Rank 1 killed mid-run: rank 0 stops at its next collective (at once: the connection
    closes), says so in one line with the resume command, and the checkpoint loads."""
    port, run = free_port(), tmp_path / "run"
    argv = [sys.executable, "-m", "minisae", "train", "--data", str(acts), "--batch-size", "8",
            "--epochs", "500", "--checkpoint-every", "20", "--no-progress", "--out", str(run),
            "--comm-timeout", "60"]
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=ranks_env(r, 2, port), text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for r in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.npz").exists() and time.monotonic() < deadline:
            assert procs[0].poll() is None, procs[0].communicate()[1]
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        err = procs[0].communicate(timeout=60)[1]
        assert time.monotonic() - t0 < 30
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()  # its pipe read and closed
    lines = err.strip().splitlines()
    assert procs[0].returncode != 0 and len(lines) == 1, err
    assert "rank 0 of 2" in lines[0] and "another rank stopped" in lines[0]
    assert "minisae train --resume" in lines[0]
    assert len(minisae.load(run / "checkpoint.npz").history) >= 0


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_with_one_line_each(acts, tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "minisae", "train", "--data", str(acts),
                          "--batch-size", "8", "--epochs", "500", "--checkpoint-every", "20",
                          "--no-progress", "--out", str(run), "--workers", "2"],
                         cwd=tmp_path, text=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE,  # SIGINT as a terminal leaves it:
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    lines = err.strip().splitlines()
    assert p.returncode == 130 and len(lines) == 2, err
    assert all(line.startswith("minisae: ") for line in lines)
    assert any("--workers 2" in line and "--resume" in line for line in lines)
    minisae.load(run / "checkpoint.npz")


@pytest.mark.slow
@pytest.mark.parametrize("flags, heading", [
    ((), "data parallel"),
    (("--shard", "--sparsity", "topk", "--k", "3"), "sharded dictionary")])
def test_bench_workers_times_fit_on_ranks_against_one_process(flags, heading, capsys):
    from minisae.apps import cli
    assert cli.main(["bench", "--workers", "2", "--configs", "16x8", "--steps", "3",
                     "--rounds", "1", "-q", *flags]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith(heading + " through fit")
    row = next(line for line in table if line.split()[:3] == ["16", "x", "8"])
    alone, many, ratio = (float(v.replace(",", "")) for v in row.split()[3:6])
    assert alone > 0 and many > 0 and ratio == pytest.approx(many / alone, abs=0.006)
    assert row.endswith("MB") and float(row.split()[-2]) > 0  # the ranks sent something


def test_train_shard_needs_several_processes(capsys, tmp_path, monkeypatch):
    from minisae.apps import cli
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.main(["train", "--shard", "--out", str(tmp_path / "r")]) == 2
    assert "--shard splits the dictionary over several processes" in capsys.readouterr().err


def test_bench_workers_refuses_flags_it_does_not_use(capsys):
    from minisae.apps import cli
    assert cli.main(["bench", "--workers", "2", "--path", "both"]) == 2
    assert "--path both does not apply" in capsys.readouterr().err
    assert cli.main(["bench", "--workers", "1"]) == 2
    capsys.readouterr()
    assert cli.main(["bench", "--shard"]) == 2  # --shard without --workers
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--shard applies to --workers" in err
    assert cli.main(["bench", "--workers", "2", "--shard", "--configs", "1x8"]) == 2
    assert "cannot be split over 2 workers" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_rank_0_refuses_stops_every_rank_at_once(acts, tmp_path):
    """Rank 0 alone checks the run's folder; the others wait for it at a barrier (agree) and
    stop with a line that points to rank 0's, not at their first collective's timeout."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")  # a run's folder, for the refusal
    again = minisae_train("--data", acts, "--batch-size", 24, "--epochs", 1, "--no-progress",
                          "--out", tmp_path / "run", "--workers", 2, cwd=tmp_path)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 2 and len(lines) == 2, again.stderr
    assert any("already holds a run" in line for line in lines)
    assert any("rank 1 of 2: rank 0 could not start the run" in line for line in lines)


@pytest.mark.gpu
def test_nccl_with_one_rank_on_cupy_matches_one_process(monkeypatch):
    """On a GPU (the GPU check runs it): a world of one rank over NCCL, CuPy arrays through
    DLPack, trains what comm.Alone trains (BatchTopK with AuxK: every collective is used)."""
    from minisae.backend import cupy_available
    from minisae.distributed import Shards, TorchComm
    import torch
    if not (cupy_available() and torch.cuda.is_available() and dist.is_nccl_available()):
        pytest.skip("needs CuPy on a GPU and a PyTorch with CUDA and NCCL")
    for name, value in ranks_env(0, 1, free_port()).items():
        monkeypatch.setenv(name, value)
    x, x_val = ranks.data()
    case = dict(ranks.BASE, n_hidden=ranks.HIDDEN, **ranks.CASES["batchtopk-auxk"],
                backend="cupy")

    def trained(comm):
        model = minisae.SparseAutoencoder(**case, comm=comm)
        minisae.fit(model, minisae.Adam(model.params, model.grads, lr=1e-2), x, epochs=2,
                    batch_size=12, x_val=x_val, progress=False,
                    dead_units=minisae.DeadUnits(window=12))
        return minisae.to_numpy(model.flat_params)

    alone = trained(Alone())
    for kind in (TorchComm, Shards):  # data parallel, and a dictionary of one shard
        comm = kind(timeout=60, backend="nccl")
        try:
            over_nccl = trained(comm)
        finally:
            comm.close()
        assert relative(alone, over_nccl) < 1e-12, kind.__name__
