"""The `minisae` command, run in-process on a small synthetic MNIST the tests write."""
import dataclasses
import hashlib
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from minisae import checkpoint, cli, datasets
from minisae import functional as F
from minisae.datasets import FILES, write_idx


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A 300/60-image "MNIST" in a folder, accepted by its md5s; mirrors are dead ports."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (300, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 300, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 60, dtype=np.uint8)}
    md5s = {}
    for stem in FILES:
        write_idx(folder / stem, arrays[stem])
        md5s[stem] = hashlib.md5((folder / stem).read_bytes()).hexdigest()
    for name, spec in datasets.SPECS.items():
        monkeypatch.setitem(datasets.SPECS, name, dataclasses.replace(
            spec, mirrors=(closed_port_url(),), system_dirs=(), content_md5s=md5s))
    monkeypatch.setenv("MINISAE_DATA", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return folder


TINY = ["--hidden", "8", "--batch-size", "50", "--no-progress", "--backend", "numpy"]


def test_train_writes_checkpoint_metrics_and_figures(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    for name in ("checkpoint.npz", "metrics.json") + cli.FIGURES:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["n_train"] == 300 and metrics["n_test"] == 60
    assert metrics["settings"]["hidden"] == 8 and metrics["settings"]["preset"] == "book"
    assert 0 < metrics["mean_activation"] < 1 and 0 < metrics["test_mse_per_pixel"] < 1
    text = capsys.readouterr().out
    assert "test MSE per pixel" in text and "mean activation" in text


def test_resume_matches_an_uninterrupted_run(tiny_mnist, tmp_path):
    assert cli.main(["train", *TINY, "--epochs", "3", "--out", str(tmp_path / "full")]) == 0
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "part" / "checkpoint.npz"),
                     "--epochs", "3", "--no-progress", "--backend", "numpy"]) == 0
    full = checkpoint.load(tmp_path / "full" / "checkpoint.npz")
    resumed = checkpoint.load(tmp_path / "part" / "checkpoint.npz")
    assert resumed.history.train_total == full.history.train_total
    np.testing.assert_array_equal(resumed.model.flat_params, full.model.flat_params)


def test_resume_refuses_a_changed_setting(tiny_mnist, tmp_path, capsys):
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    code = cli.main(["train", "--resume", str(tmp_path / "r" / "checkpoint.npz"), "--hidden", "9"])
    err = capsys.readouterr().err
    assert code == 1 and "--hidden 9 differs" in err and "Traceback" not in err


def test_presets_and_overrides():
    args = cli.build_parser().parse_args(["train", "--preset", "ufldl", "--sparsity-weight", "2"])
    s = cli.resolve_settings(args)
    assert (s["hidden"], s["reduction"], s["weight_decay"]) == (196, "halfsum", 3e-3)
    assert s["sparsity_weight"] == 2.0
    book = cli.resolve_settings(cli.build_parser().parse_args(["train"]))
    assert (book["hidden"], book["sparsity_weight"], book["lr"], book["batch_size"]) == \
        (1000, 0.2, 0.01, 1000)


def test_show_remakes_figures(tiny_mnist, tmp_path):
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    figs = tmp_path / "figs"
    assert cli.main(["show", str(tmp_path / "r" / "checkpoint.npz"), "--out", str(figs),
                     "--backend", "numpy"]) == 0
    assert sorted(p.name for p in figs.iterdir()) == sorted(("metrics.json",) + cli.FIGURES)


@pytest.mark.parametrize("argv, message", [
    (["train", "--hidden", "0"], "n_hidden"),
    (["train", "--sparsity-target", "1.5"], "sparsity_target"),
    (["train", "--loss", "bce", "--output", "linear"], "bce"),
    (["train", "--epochs", "0"], "--epochs"),
    (["show", "missing.npz"], "no checkpoint"),
    (["train", "--resume", "missing.npz"], "no checkpoint"),
])
def test_bad_arguments_give_one_line_errors(tiny_mnist, tmp_path, capsys, argv, message):
    code = cli.main(argv + ["--out", str(tmp_path / "o")] if argv[0] == "train" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("minisae: error:") and message in err and "\n" not in err


def test_gradcheck_passes_and_prints_a_table(capsys):
    assert cli.main(["gradcheck", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    for name in ("encoder.W", "encoder.b", "decoder.W", "decoder.b", "rel. error"):
        assert name in out
    assert out.count("output=") == len(cli.GRADCHECK_OPTIONS)


def test_gradcheck_fails_on_a_wrong_gradient(monkeypatch, capsys):
    right = F.kl_divergence_backward
    monkeypatch.setattr(F, "kl_divergence_backward", lambda rho, q: 1.01 * right(rho, q))
    assert cli.main(["gradcheck", "--backend", "numpy"]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_data_lists_the_places(tiny_mnist, capsys):
    assert cli.main(["data", "--dataset", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "found" in out and str(tiny_mnist) in out


def test_python_dash_m_and_version():
    r = subprocess.run([sys.executable, "-m", "minisae", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("minisae ")
    r = subprocess.run([sys.executable, "-m", "minisae", "train", "--hidden", "-3", "--out", "/nonexistent/x"],
                       capture_output=True, text=True, env={"MINISAE_BACKEND": "numpy", "PATH": ""})
    assert r.returncode != 0


@pytest.mark.skipif(__import__("minisae").backend.cupy_available(), reason="needs a machine without CuPy")
def test_resume_honours_the_backend_default(tiny_mnist, tmp_path, monkeypatch, capsys):
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("MINISAE_BACKEND", "cupy")  # not installed here: the resume must say so
    for argv in (["train", "--resume", str(tmp_path / "r" / "checkpoint.npz"), "--epochs", "2"],
                 ["show", str(tmp_path / "r" / "checkpoint.npz")]):
        assert cli.main(argv) == 1
        assert "cupy" in capsys.readouterr().err.lower()


def test_unwritable_output_is_a_one_line_error(tiny_mnist, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["train", *TINY, "--epochs", "1", "--out", str(blocker / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("minisae: error:") and "\n" not in err
    assert "Traceback" not in err
