"""Your own data through `minisae train --data`: .npy, .npz and shard folders, streamed,
normalised, checkpointed mid-epoch and resumed exactly, bad rows found late."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minisae import Adam, Checkpoints, Engine, SparseAutoencoder, Stream, fit
from minisae.apps import cli, plots
from minisae.data import ArrayFiles
from minisae.files import checkpoint

BASE = ["--output", "linear", "--hidden", "12", "--sparsity", "topk", "--k", "3",
        "--hidden-activation", "relu", "--batch-size", "50", "--no-progress", "--backend",
        "numpy", "--lr", "0.01", "--threads", "1"]


@pytest.fixture
def acts(tmp_path):
    """Activations-like rows: 1,200 x 20 float32 around 3 with scale 2, as .npy, .npz and a
    folder of three shards."""
    x = np.random.default_rng(0).normal(3, 2, (1200, 20)).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    np.savez(tmp_path / "acts.npz", acts=x, other=np.zeros(3))
    (tmp_path / "shards").mkdir()
    for i in range(3):
        np.save(tmp_path / "shards" / f"part-{i:03d}.npy", x[400 * i:400 * (i + 1)])
    return x


def history(run):
    return {k: v for k, v in checkpoint.load(run).history.as_dict().items()
            if k not in ("seconds", "samples_per_second")}


@pytest.mark.parametrize("data", [["acts.npy"], ["acts.npz", "--data-key", "acts"], ["shards"]])
def test_train_checkpoint_resume_and_figures_on_each_layout(acts, tmp_path, data, capsys):
    path, *key = data
    argv = ["train", "--data", str(tmp_path / path), *key, *BASE, "--normalize", "norm"]
    assert cli.main([*argv, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "1,140 train / 60 test" in out and "FVU" in out and "per feature" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["figures"] == list(plots.VECTOR_FIGURES)   # vectors: no image figures
    for name in ("checkpoint.npz", *plots.VECTOR_FIGURES):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert not (tmp_path / "run" / "features.png").exists()  # 20 features are no picture
    run = checkpoint.load(tmp_path / "run")
    assert run.model.normalizer is not None and run.model.normalizer.mode == "norm"
    # resumed to 3 epochs: the same as 3 uninterrupted
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3",
                     "--no-progress", "--backend", "numpy", "--threads", "1"]) == 0
    assert cli.main([*argv, "--epochs", "3", "--out", str(tmp_path / "full")]) == 0
    assert history(tmp_path / "run") == history(tmp_path / "full")
    np.testing.assert_array_equal(checkpoint.load(tmp_path / "run").model.flat_params,
                                  checkpoint.load(tmp_path / "full").model.flat_params)


def test_a_run_killed_at_a_random_step_resumes_exactly(acts, tmp_path):
    rng = np.random.default_rng()
    argv = [sys.executable, "-m", "minisae", "train", "--data", str(tmp_path / "acts.npy"),
            *BASE, "--epochs", "6", "--checkpoint-every", "1"]
    full = subprocess.run([*argv, "--out", str(tmp_path / "full")], capture_output=True,
                          text=True)
    assert full.returncode == 0, full.stderr
    p = subprocess.Popen([*argv, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint.npz"
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.8))          # then a kill at a random step
    p.send_signal(signal.SIGKILL)
    p.wait()
    if not ckpt.exists():
        pytest.skip("the run finished or failed before its first checkpoint")
    saved = checkpoint.load(ckpt)
    r = subprocess.run([sys.executable, "-m", "minisae", "train", "--resume",
                        str(tmp_path / "killed"), "--epochs", "6", "--no-progress",
                        "--backend", "numpy", "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert history(tmp_path / "killed") == history(tmp_path / "full"), saved.extra.get("position")
    np.testing.assert_array_equal(checkpoint.load(tmp_path / "killed").model.flat_params,
                                  checkpoint.load(tmp_path / "full").model.flat_params)


def test_resuming_mid_epoch_from_python_is_exact(acts, tmp_path):
    source = ArrayFiles(tmp_path / "acts.npy")

    def model_and_opt():
        m = SparseAutoencoder(20, 12, sparsity="l1", sparsity_weight=0.01,
                              hidden_activation="relu", output_activation="linear", seed=1)
        return m, Adam(m.params, m.grads, lr=0.01)

    m1, o1 = model_and_opt()
    streamed = Stream(source, chunk_rows=100, buffer_rows=300)
    h1 = fit(m1, o1, streamed, 3, 64, progress=False, engine=Engine(threads=1))
    m2, o2 = model_and_opt()
    saved = {}

    def keep(history, position):   # the state at step 7 of epoch 2, as a checkpoint holds it
        if position is not None and position["epoch"] == 2 and position["step"] == 7:
            path = tmp_path / "mid.npz"
            checkpoint.save(path, m2, o2, history, {"position": position})
            saved["path"] = path
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(m2, o2, streamed, 3, 64, progress=False, engine=Engine(threads=1),
            checkpoints=Checkpoints(keep, every=1))
    ck = checkpoint.load(saved["path"])
    h3 = fit(ck.model, ck.optimizer, streamed, 3, 64, progress=False, history=ck.history,
             checkpoints=Checkpoints(position=ck.extra["position"]), engine=Engine(threads=1))
    drop = ("seconds", "samples_per_second")
    assert {k: v for k, v in h3.as_dict().items() if k not in drop} == \
        {k: v for k, v in h1.as_dict().items() if k not in drop}
    np.testing.assert_array_equal(ck.model.flat_params, m1.flat_params)


def test_bad_rows_found_late_stop_the_run_naming_file_and_row(acts, tmp_path, capsys):
    bad = acts.copy()
    bad[1000 + 37, 5] = np.nan                     # row 237 of the third shard
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"part-{i:03d}.npy", bad[400 * i:400 * (i + 1)])
    out = tmp_path / "run"
    argv = ["train", "--data", str(folder), "--val-data", str(tmp_path / "acts.npy"), *BASE,
            "--out", str(out), "--checkpoint-every", "3"]
    assert cli.main([*argv, "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "part-002.npy" in err and "row 237" in err
    if (out / "checkpoint.npz").exists():        # the last checkpoint is whole
        assert len(checkpoint.load(out).history) >= 0


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(b"not an array at all"), "not a .npy"),
    (lambda p: p.write_bytes(open(p.with_name("acts.npy"), "rb").read()[:2000]), "truncated"),
    (lambda p: np.save(p, np.zeros((10, 3, 2), np.float32)), "2-D"),
    (lambda p: np.save(p, np.zeros((10, 3), np.complex64)), "complex"),
])
def test_bad_files_are_refused_before_training(acts, tmp_path, capsys, make, problem):
    path = tmp_path / "bad.npy"
    make(path)
    assert cli.main(["train", "--data", str(path), *BASE, "--epochs", "1", "--out",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npy" in err and err.count("\n") == 0
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


def test_resume_on_changed_files_is_refused(acts, tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path / "acts.npy"), *BASE, "--out", str(tmp_path / "r")]
    assert cli.main([*argv, "--epochs", "1"]) == 0
    np.save(tmp_path / "acts.npy", acts[:1100])
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2",
                     "--no-progress", "--backend", "numpy"]) == 2
    assert "trained on other data" in capsys.readouterr().err


def test_data_flags_need_data_and_a_linear_output(acts, tmp_path, capsys):
    assert cli.main(["train", "--normalize", "norm", "--out", str(tmp_path / "r")]) == 2
    assert "--normalize applies to --data" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tmp_path / "acts.npy"), "--sparsity", "kl",
                     "--hidden", "8", "--epochs", "1", "--no-progress", "--backend", "numpy",
                     "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "acts.npy" in err and "--output" in err   # values outside [0, 1], a sigmoid output


def structured(tmp_path, n=1500, width=20, seed=0):
    """Rows made of a few of 40 directions each (sparse codes), offset and scaled as a
    network's activations are, as a .npy."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(40, width))
    codes = rng.exponential(size=(n, 40)) * (rng.random((n, 40)) < 0.1)
    path = tmp_path / "structured.npy"
    np.save(path, (7 + 4 * codes @ directions).astype(np.float32))
    return path


def test_own_data_with_no_flags_trains_todays_autoencoder_sized_to_it(tmp_path, capsys):
    """Issue 27: `minisae train --data FILE` trained the book's 64 -> 1000 sigmoid/KL model
    (activations were refused, out of [0, 1]; other data ended with 99.9% of the units dead).
    Now it is the activations preset: TopK with AuxK, ReLU codes, x - b2 encoded, Gao et al.'s
    start, a linear output, the data normalized, sized to the data's width and rows."""
    path = structured(tmp_path)
    out = tmp_path / "r"
    assert cli.main(["train", "--data", str(path), "--no-progress", "--backend", "numpy",
                     "--threads", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "preset: activations, sized to 20 features and 1,425 rows: --hidden 80, --k 5, " \
           "--aux-k 10, --epochs 92; --normalize norm" in captured.out
    assert "fail" not in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["settings"]
    assert (s["preset"], s["hidden"], s["k"], s["aux_k"], s["epochs"], s["normalize"]) == \
        ("activations", 80, 5, 10, 92, "norm")
    c = checkpoint.load(out).model.config
    assert (c.sparsity, c.hidden_activation, c.output_activation, c.init) == \
        ("topk", "relu", "linear", "gao")
    assert c.subtract_decoder_bias and c.aux_weight == 1 / 32
    assert metrics["fvu"] < 0.5 and metrics["train_dead_fraction"] < 0.2, metrics
    assert cli.failure(metrics, s) is None


def test_samples_per_second_counts_training_alone(acts, tmp_path):
    """Issue 27: samples/s swung 17,255 -> 160,184 -> 24,497 between epochs. It is measured
    over the epoch's steps alone: not the checkpoints saved inside it (here 20 ms each, far
    longer than a step), nor the first step's warm-up."""
    import time
    source = ArrayFiles(tmp_path / "acts.npy")
    m = SparseAutoencoder(20, 12, sparsity="topk", k=3, hidden_activation="relu",
                          output_activation="linear", seed=1)
    history = fit(m, Adam(m.params, m.grads, lr=0.01), source, 3, 100, progress=False,
                  engine=Engine(threads=1),
                  checkpoints=Checkpoints(lambda h, at: time.sleep(0.02), every=1))
    for seconds, rate in zip(history.seconds, history.samples_per_second):
        # 11 steps an epoch, 10 saves inside it: 0.2 s of the epoch's seconds are saving
        assert seconds > 0.2 and rate > 3 * 1100 / seconds, (seconds, rate)


def test_a_shard_folder_with_other_files_is_refused_naming_them(acts, tmp_path, capsys):
    """Issue 27: a folder of mixed files took two unrelated .npy files as shards and ignored
    the rest without a word."""
    (tmp_path / "shards" / "labels.txt").write_text("a\nb\n")
    assert cli.main(["train", "--data", str(tmp_path / "shards"), *BASE, "--epochs", "1",
                     "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds labels.txt beside its 3 .npy shards" in err and "\n" not in err
    assert not (tmp_path / "r").exists()
