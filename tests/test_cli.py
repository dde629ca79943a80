"""The `minisae` command, run in-process on a small synthetic MNIST the tests write."""
import json
import subprocess
import sys

import numpy as np
import pytest

from minisae.apps import cli
from minisae.files import checkpoint
from minisae import functional as F
from minisae.errors import ConfigError


TINY = ["--hidden", "8", "--batch-size", "50", "--no-progress", "--backend", "numpy"]


def test_train_writes_checkpoint_metrics_and_figures(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    for name in ("checkpoint.npz", "metrics.json") + cli.FIGURES:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["n_train"] == 300 and metrics["n_test"] == 60
    assert metrics["settings"]["hidden"] == 8 and metrics["settings"]["preset"] == "book"
    assert 0 < metrics["mean_activation"] < 1 and 0 < metrics["test_mse_per_feature"] < 1
    assert metrics["test_mse_per_pixel"] == metrics["test_mse_per_feature"]   # images: 0.3's name
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
    assert code == 2 and "--hidden 9 differs" in err and "Traceback" not in err


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
    (["train", "--sparsity-target", "1.5"], "--sparsity-target must"),
    (["train", "--sparsity-weight", "-1"], "--sparsity-weight must"),
    (["train", "--loss", "bce", "--output", "linear"], "--loss"),
    (["train", "--lr", "0"], "--lr must"),
    (["train", "--hidden", "10000000000"], "use fewer hidden units"),
    (["show", "missing.npz"], "no checkpoint"),
    (["train", "--resume", "missing.npz"], "no checkpoint"),
])
def test_bad_arguments_give_one_line_errors_that_name_the_flag(tiny_mnist, tmp_path, capsys, argv,
                                                               message):
    code = cli.main(argv + ["--out", str(tmp_path / "o")] if argv[0] == "train" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("minisae: error:") and message in err and "\n" not in err
    assert not any(name in err for name in ("n_hidden", "sparsity_target", "sparsity_weight",
                                            "output_activation", "reconstruction_loss"))


@pytest.mark.parametrize("argv, message", [
    (["train", "--hidden", "0"], "--hidden: must be at least 1"),
    (["train", "--epochs", "0"], "--epochs: must be at least 1"),
    (["train", "--out", ""], "--out: must name a folder"),
    (["train", "--threads", "0"], "--threads"),
    (["gradcheck", "--seed", "-1"], "--seed: must be 0 or more"),
    (["train", "--hiden", "5"], "did you mean --hidden?"),
    (["train", "--sparsity_weight", "2"], "did you mean --sparsity-weight?"),
    (["show", "x.npz", "--dat-dir", "d"], "did you mean --data-dir?"),
])
def test_argument_errors_show_the_subcommands_usage(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"usage: minisae {argv[0]}" in err and message in err and "Traceback" not in err


def test_every_option_has_help_with_its_default():
    parser = cli.build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    assert set(subparsers) == {"train", "show", "gradcheck", "bench", "data", "selftaught",
                               "inspect"}
    for name, sub in subparsers.items():
        for action in sub._actions:
            if not action.option_strings or action.help == "show this help message and exit":
                continue
            assert action.help, f"{name} {action.option_strings} has no help text"
            if action.nargs != 0:  # an option that takes a value says its default
                assert "default" in action.help, f"{name} {action.option_strings}: {action.help}"


def test_gradcheck_passes_and_prints_both_paths(capsys):
    assert cli.main(["gradcheck", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    for name in ("encoder.W", "encoder.b", "decoder.W", "decoder.b", "rel. error"):
        assert name in out
    valid = [c for c in cli.gradcheck_combinations() if c[3] is None]
    invalid = [c for c in cli.gradcheck_combinations() if c[3] is not None]
    assert len(valid) == 5 and len(invalid) == 3
    for output, loss, reduction, _ in valid:
        for path in ("reference", "fast"):
            assert f"output={output}, loss={loss}, reduction={reduction}, path={path}" in out
    for output, loss, reduction, problem in invalid:
        assert f"output={output}, loss={loss}, reduction={reduction}: {problem}" in out
    assert "all gradients match, on both paths" in out


def test_gradcheck_fails_on_a_wrong_gradient_in_the_fast_engine(monkeypatch, capsys):
    from minisae.fast import kernels
    right = kernels.sigmoid_backward_
    monkeypatch.setattr(kernels, "sigmoid_backward_",
                        lambda dy, y, row=None, work=None: 1.01 * right(dy, y, row, work))
    assert cli.main(["gradcheck", "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "'fast'" in err and "'reference'" not in err


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
        assert cli.main(argv) == 2
        assert "cupy" in capsys.readouterr().err.lower()


def test_unwritable_output_is_a_one_line_error(tiny_mnist, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["train", *TINY, "--epochs", "1", "--out", str(blocker / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("minisae: error:") and "\n" not in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- manners

def test_an_existing_run_is_not_replaced_without_force(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    before = (out / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"--resume {out}" in err and "--force" in err
    assert (out / "checkpoint.npz").read_bytes() == before
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out), "--force"]) == 0
    assert len(checkpoint.load(out / "checkpoint.npz").history) == 1


def test_resume_takes_a_run_folder_and_refuses_another_preset(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert len(checkpoint.load(out / "checkpoint.npz").history) == 2
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--preset", "ufldl", "--epochs", "3"]) == 2
    assert "--preset ufldl differs from the resumed run's book" in capsys.readouterr().err


def _interrupt_after(monkeypatch, calls):
    """Ctrl-C during the model's `calls`-th training step, on either path: the fast engine's
    fused step (what `minisae train` runs) or the reference, model.loss_and_grads."""
    from minisae.fast import step
    from minisae.model import SparseAutoencoder
    count = [0]

    def interrupting(real):
        def counted(*args, **kwargs):
            count[0] += 1
            if count[0] == calls:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        return counted

    monkeypatch.setattr(SparseAutoencoder, "loss_and_grads",
                        interrupting(SparseAutoencoder.loss_and_grads))
    monkeypatch.setattr(step, "_loss_and_grads", interrupting(step._loss_and_grads))


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tiny_mnist, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    with pytest.MonkeyPatch.context() as mp:
        _interrupt_after(mp, calls=6 + 3)  # 6 steps an epoch: inside the second epoch
        assert cli.main(["train", *TINY, "--epochs", "3", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("minisae: interrupted; the checkpoint in") and "holds 1 of 3 epochs" in err
    command = err.split("continue with: ")[1]
    assert command.startswith(f"minisae train --resume {out} --epochs 3")
    assert cli.main(command.split()[1:]) == 0  # the printed command finishes the run ...
    assert cli.main(["train", *TINY, "--epochs", "3", "--out", str(tmp_path / "full")]) == 0
    resumed = checkpoint.load(out)  # ... exactly as an uninterrupted one
    full = checkpoint.load(tmp_path / "full")
    np.testing.assert_array_equal(resumed.model.flat_params, full.model.flat_params)


def test_ctrl_c_before_anything_was_saved(tiny_mnist, tmp_path, capsys, monkeypatch):
    _interrupt_after(monkeypatch, calls=2)
    assert cli.main(["train", *TINY, "--epochs", "3", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "interrupted; nothing was saved yet" in err and "Traceback" not in err
    monkeypatch.setattr(cli, "build_parser", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(["train"]) == 130
    assert capsys.readouterr().err.strip() == "minisae: interrupted"


@pytest.mark.parametrize("delay", [0.2, 0.5])
def test_ctrl_c_at_any_moment_never_prints_a_traceback(tiny_mnist, tmp_path, delay):
    import os
    import signal
    import time
    env = dict(os.environ, MINISAE_DATA=str(tiny_mnist), MINISAE_BACKEND="numpy")
    p = subprocess.Popen([sys.executable, "-m", "minisae", "train", *TINY, "--epochs", "50",
                          "--out", str(tmp_path / "r")], env=env, stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True,
                         # Ctrl-C reaches it even where this test runs with SIGINT ignored
                         # (started in the background by a shell)
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "minisae: interrupted" in err


def test_show_takes_a_run_folder(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    (out / "metrics.json").unlink()
    assert cli.main(["show", str(out), "--backend", "numpy"]) == 0
    assert (out / "metrics.json").exists()


def test_show_says_plainly_when_a_file_is_not_a_checkpoint(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    for path in (out / "metrics.json", out / "features.png"):
        assert cli.main(["show", str(path)]) == 2
        err = capsys.readouterr().err
        assert "not a minisae checkpoint" in err and "allow_pickle" not in err
        assert err.count("\n") == 1


def test_metrics_and_curves_name_the_test_set(tiny_mnist, tmp_path):
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert "test_total" in history and not any(k.startswith("val_") for k in history)


def test_the_book_preset_points_to_ufldl(tiny_mnist, tmp_path, capsys):
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert "--preset ufldl" in capsys.readouterr().out
    assert cli.main(["train", *TINY, "--epochs", "1", "--preset", "ufldl",
                     "--out", str(tmp_path / "u")]) == 0
    assert "--preset ufldl" not in capsys.readouterr().out


def test_output_files_honour_the_umask(tiny_mnist, tmp_path):
    import os
    old = os.umask(0o027)
    try:
        assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.npz", "metrics.json") + cli.FIGURES:
        assert (tmp_path / "r" / name).stat().st_mode & 0o777 == 0o640, name


def test_reference_flag_runs_the_reference_path_end_to_end(tiny_mnist, tmp_path, monkeypatch):
    from minisae import Adam
    from minisae.fast import FastAdam, step
    from minisae.layers import Dense
    calls = {"dense": 0, "adam": 0, "engine": 0}

    def count(owner, name, key):
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)

    count(Dense, "backward", "dense")
    count(Adam, "step", "adam")
    count(FastAdam, "step", "engine")
    count(step, "_loss_and_grads", "engine")
    assert cli.main(["train", *TINY, "--epochs", "1", "--reference", "--out", str(tmp_path / "r")]) == 0
    assert calls == {"dense": 2 * 6, "adam": 6, "engine": 0}  # 6 steps of 50 in 300 digits


def test_threads_flag(tiny_mnist, tmp_path):
    assert cli.main(["train", *TINY, "--epochs", "1", "--threads", "1",
                     "--out", str(tmp_path / "r")]) == 0


@pytest.mark.parametrize("settings", [["not", "a", "dict"], {"hidden": "eight"},
                                      {"optimizer": "rmsprop"}, {"bogus": 1}, {"seed": True},
                                      {"preset": "nope"}, {"batch_size": -1}, {"seed": -5},
                                      {"reduction": "sum"}])
def test_damaged_run_settings_are_one_line_errors(tiny_mnist, tmp_path, capsys, settings):
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    ck = checkpoint.load(out)
    checkpoint.save(out / "checkpoint.npz", ck.model, ck.optimizer, ck.history,
                    {"settings": settings})
    capsys.readouterr()
    for argv in (["train", "--resume", str(out), "--epochs", "2"], ["show", str(out)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("minisae: error:") and "settings" in err and err.count("\n") == 1


def test_train_on_patches_with_lbfgs_and_resume(tmp_path, capsys):
    out = tmp_path / "p"
    small = ["--dataset", "patches", "--preset", "ufldl-patches", "--n-patches", "400",
             "--no-progress", "--backend", "numpy", "--out", str(out)]
    assert cli.main(["train", *small, "--max-iter", "12"]) == 0
    text = capsys.readouterr().out
    assert "L-BFGS" in text and "iterations" in text and "edge filters" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 12 and metrics["settings"]["optimizer"] == "lbfgs"
    assert set(metrics["filter_score"]) >= {"orientation", "orientation_random", "localization"}
    for name in ("checkpoint.npz",) + cli.FIGURES:
        assert (out / name).stat().st_size > 0
    ck = checkpoint.load(out)
    assert ck.model.config.n_inputs == 64 and ck.model.config.dtype == "float64"
    assert type(ck.optimizer).__name__ == "LBFGS" and ck.optimizer.t == 12
    assert cli.main(["train", "--resume", str(out), "--max-iter", "15", "--no-progress"]) == 0
    assert len(checkpoint.load(out).history) == 15


def test_ctrl_c_while_the_command_loads(monkeypatch, capsys):
    """The console script enters through minisae.__main__.main, which loads cli.py itself."""
    import configparser
    import importlib.abc
    from pathlib import Path

    import minisae.__main__ as entry
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert "minisae = minisae.__main__:main" in cfg["options.entry_points"]["console_scripts"]

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "minisae.apps.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "minisae.apps.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert entry.main(["--version"]) == 130
    assert capsys.readouterr().err.strip() == "minisae: interrupted"


def test_resume_into_another_run_folder_needs_force(tiny_mnist, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(a)]) == 0
    assert cli.main(["train", *TINY, "--hidden", "9", "--epochs", "3", "--out", str(b)]) == 0
    before = (b / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(a), "--epochs", "2", "--out", str(b),
                     "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (b / "checkpoint.npz").read_bytes() == before
    assert cli.main(["train", "--resume", str(a), "--epochs", "2", "--out", str(b),
                     "--no-progress", "--force"]) == 0
    assert len(checkpoint.load(b).history) == 2 and len(checkpoint.load(a).history) == 1


def test_ctrl_c_before_training_and_after_it(tiny_mnist, tmp_path, capsys, monkeypatch):
    a = tmp_path / "a"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(a)]) == 0
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:  # while the data load, on a resume
        mp.setattr(cli, "load_data", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        assert cli.main(["train", "--resume", str(a), "--epochs", "2", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"holds 1 of 2 epochs; continue with: minisae train --resume {a} --epochs 2" in err
    with pytest.MonkeyPatch.context() as mp:  # while the figures are written
        mp.setattr(cli, "write_results", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        assert cli.main(["train", "--resume", str(a), "--epochs", "2", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "training was done" in err and f"minisae show {a}" in err
    assert len(checkpoint.load(a).history) == 2


def test_flag_names_rename_arguments_not_words():
    msg = "n_hidden must be positive; output_activation='linear' needs more than this machine's memory"
    assert cli.flag_names(msg) == ("--hidden must be positive; --output='linear' needs more than "
                                   "this machine's memory")


def test_patch_errors_name_the_flags(tmp_path, capsys):
    for flags, word in ((["--patch-size", "1000"], "--patch-size 1000"),
                        (["--n-patches", str(10**12)], "--n-patches")):
        assert cli.main(["train", "--dataset", "patches", "--preset", "ufldl-patches", *flags,
                         "--no-progress", "--out", str(tmp_path / "p")]) == 2
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- issue 19

def test_show_refuses_to_write_over_another_runs_folder(tiny_mnist, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(a)]) == 0
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(b), "--seed", "3"]) == 0
    before = (b / "metrics.json").read_bytes()
    capsys.readouterr()
    assert cli.main(["show", str(a), "--out", str(b), "--backend", "numpy"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (b / "metrics.json").read_bytes() == before
    assert cli.main(["show", str(a), "--out", str(b), "--force", "--backend", "numpy"]) == 0


def test_a_second_writer_of_a_run_folder_is_refused(tiny_mnist, tmp_path, capsys):
    from minisae.files.lock import RunLock
    out = tmp_path / "r"
    with RunLock(out):  # as if another `minisae train --out r` were running
        assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "being written by another minisae run" in err and err.count("\n") == 1
    assert not (out / "checkpoint.npz").exists()
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0  # free again


def test_resume_on_other_data_is_refused_unless_forced(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    from minisae.files import checkpoint as ck
    run = ck.load(out)
    run.extra["data_shape"] = [999, 784]   # as if it had been trained on other data
    ck.save(out / "checkpoint.npz", run.model, run.optimizer, run.history, run.extra)
    capsys.readouterr()
    argv = ["train", "--resume", str(out), "--epochs", "2", "--no-progress", "--backend", "numpy"]
    assert cli.main(argv) == 2
    assert "trained on other data" in capsys.readouterr().err
    assert cli.main(argv + ["--force"]) == 0


@pytest.fixture
def selftaught_config(monkeypatch):
    """What `minisae selftaught` hands the experiment, which then stops (SystemExit(0))."""
    seen = {}

    def fake(name, log=None, autoencoder=None, softmax=None, split=None, **config):
        seen.update(config, **vars(autoencoder), **vars(split),
                    **{f"softmax_{k}": v for k, v in vars(softmax).items()})
        raise SystemExit(0)

    import minisae.apps.selftaught as S
    monkeypatch.setattr(S, "self_taught", fake)
    return seen


def test_selftaught_quick_honours_the_flags_given(selftaught_config):
    seen = selftaught_config
    with pytest.raises(SystemExit):
        cli.main(["selftaught", "--quick", "--hidden", "12"])
    assert seen["n_hidden"] == 12 and seen["max_iter"] == cli.SELFTAUGHT_QUICK["max_iter"]


# ----------------------------------------------------------------------------- flags a run would not use

@pytest.mark.parametrize("flags, word", [
    (["--momentum", "0.5"], "--momentum applies to --optimizer sgd"),
    (["--max-iter", "5"], "--max-iter applies to --optimizer lbfgs"),
    (["--memory", "5"], "--memory applies to --optimizer lbfgs"),
    (["--optimizer", "lbfgs", "--lr", "0.1"], "--lr applies to --optimizer adam or sgd"),
    (["--optimizer", "lbfgs", "--batch-size", "10"], "--batch-size applies to"),
    (["--n-patches", "100"], "--n-patches applies to --dataset patches"),
    (["--patch-size", "4"], "--patch-size applies to --dataset patches"),
    (["--sparsity", "l1", "--hidden-activation", "relu", "--output", "linear",
      "--sparsity-target", "0.05"], "--sparsity-target applies to --sparsity kl"),
    (["--aux-weight", "0.1"], "--aux-weight applies to AuxK"),
    (["--dead-window", "100"], "--dead-window applies to dead units"),
    (["--val-fraction", "0.5"], "--val-fraction applies to --data"),
])
def test_a_flag_the_run_would_not_use_is_refused(tiny_mnist, tmp_path, capsys, flags, word):
    """Found by a sweep of the CLI: these flags were accepted and ignored (exit 0)."""
    out = tmp_path / "r"
    assert cli.main(["train", *TINY, "--epochs", "1", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert word in err and "drop the flag" in err and err.count("\n") == 1
    assert not out.exists()


def test_epochs_with_lbfgs_are_refused_on_a_new_run_and_on_resume(tmp_path, capsys):
    base = ["train", "--dataset", "patches", "--preset", "ufldl-patches", "--n-patches", "200",
            "--hidden", "4", "--no-progress"]
    assert cli.main([*base, "--epochs", "3", "--out", str(tmp_path / "a")]) == 2
    assert "--epochs applies to --optimizer adam or sgd (lbfgs counts --max-iter)" in \
        capsys.readouterr().err
    assert cli.main([*base, "--max-iter", "2", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "b"), "--epochs", "5",
                     "--no-progress"]) == 2
    assert "--epochs applies to" in capsys.readouterr().err


def test_data_dir_beside_data_and_val_fraction_beside_val_data(tmp_path, capsys):
    x = np.random.default_rng(0).random((60, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    base = ["train", "--data", str(tmp_path / "x.npy"), "--hidden", "4", "--epochs", "1",
            "--batch-size", "20", "--no-progress"]
    assert cli.main([*base, "--data-dir", str(tmp_path), "--out", str(tmp_path / "a")]) == 2
    assert "drop --data-dir" in capsys.readouterr().err
    assert cli.main([*base, "--val-data", str(tmp_path / "x.npy"), "--val-fraction", "0.5",
                     "--out", str(tmp_path / "b")]) == 2
    assert "--val-fraction applies to --data without --val-data" in capsys.readouterr().err


def test_a_wrong_image_shape_is_refused_before_training(tmp_path, capsys):
    x = np.random.default_rng(0).random((60, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r"
    assert cli.main(["train", "--data", str(tmp_path / "x.npy"), "--image-shape", "3x5",
                     "--hidden", "4", "--epochs", "1", "--batch-size", "20", "--no-progress",
                     "--out", str(out)]) == 2
    assert "--image-shape 3x5 holds 15 pixels" in capsys.readouterr().err
    assert not (out / "checkpoint.npz").exists()  # nothing trained, nothing saved


@pytest.mark.parametrize("flags, word", [
    (["--epochs", "3"], "--epochs applies to --optimizer adam"),
    (["--lr", "0.1"], "--lr applies to --optimizer adam"),
    (["--batch-size", "10"], "--batch-size applies to --optimizer adam"),
    (["--optimizer", "adam", "--max-iter", "3"], "--max-iter applies to --optimizer lbfgs"),
])
def test_selftaught_refuses_the_other_optimizers_flags(monkeypatch, capsys, flags, word):
    import minisae.apps.selftaught as S
    monkeypatch.setattr(S, "self_taught", lambda *a, **k: pytest.fail("it ran"))
    assert cli.main(["selftaught", "--quick", *flags]) == 2
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1


def test_selftaught_passes_adams_flags_and_defaults(selftaught_config):
    seen = selftaught_config
    with pytest.raises(SystemExit):
        cli.main(["selftaught", "--quick", "--optimizer", "adam", "--lr", "0.2"])
    assert seen["lr"] == 0.2 and seen["batch_size"] == 1000
    with pytest.raises(SystemExit):
        cli.main(["selftaught", "--quick"])
    assert seen["optimizer"] == "lbfgs" and seen["lr"] == 0.01


def train_settings(*flags):
    """The settings `minisae train FLAGS` would run with (nothing is trained)."""
    return cli.resolve_settings(cli.build_parser().parse_args(["train", *flags]))


def test_aux_k_0_turns_a_presets_auxk_off():
    assert train_settings("--preset", "topk")["aux_k"] == 392
    settings = train_settings("--preset", "topk", "--aux-k", "0")
    assert settings["aux_k"] is None
    # ...and with it AuxK's own flags no longer apply
    with pytest.raises(ConfigError, match="--aux-weight applies to AuxK"):
        train_settings("--preset", "topk", "--aux-k", "0", "--aux-weight", "0.1")


def test_dead_window_applies_where_dead_units_are_read():
    with pytest.raises(ConfigError, match="--dead-window applies to dead units"):
        train_settings("--preset", "topk", "--aux-k", "0", "--dead-window", "100")
    assert train_settings("--preset", "topk", "--dead-window", "100")["dead_window"] == 100
    assert train_settings("--preset", "l1", "--resample-every", "50", "--dead-window",
                          "100")["dead_window"] == 100


def test_which_model_flags_apply_is_the_configs_table():
    """The command line asks config.applies, as the model does: one table."""
    for mechanism in ("batchtopk", "jumprelu"):
        with pytest.raises(ConfigError, match="--sparsity-target applies to --sparsity kl"):
            train_settings("--sparsity", mechanism, "--hidden-activation", "relu",
                           "--sparsity-target", "0.2")
    with pytest.raises(ConfigError, match="--jump-bandwidth applies to --sparsity jumprelu"):
        train_settings("--preset", "topk", "--jump-bandwidth", "0.1")


# ----------------------------------------------------------------------------- issue 27

def rows(path, n=400, width=16, seed=0):
    """Activations-like rows (not in [0, 1]) saved as a .npy: sparse mixtures of a few
    directions, around 3 with a scale of 5."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(24, width))
    codes = rng.exponential(size=(n, 24)) * (rng.random((n, 24)) < 0.15)
    np.save(path, (3 + 5 * codes @ directions).astype(np.float32))
    return path


QUIET = ["--no-progress", "--backend", "numpy", "--threads", "1"]


def test_a_mechanism_without_a_preset_gets_its_own_presets_values():
    """Issue 27: `--sparsity l1` ran with the book's weight 0.2 and lr 0.01 and died. A
    mechanism named without a preset now brings its own preset's values."""
    l1 = train_settings("--sparsity", "l1")
    assert (l1["preset"], l1["sparsity_weight"], l1["lr"], l1["batch_size"]) == \
        ("l1", 1e-3, 1e-3, 256)
    assert (l1["hidden_activation"], l1["output"]) == ("relu", "linear")
    for mechanism in ("topk", "batchtopk", "jumprelu"):
        assert train_settings("--sparsity", mechanism)["preset"] == mechanism
    for mechanism in ("kl", "squared", "absolute"):
        assert train_settings("--sparsity", mechanism)["preset"] == "book"
    assert train_settings()["preset"] == "book"                  # MNIST keeps the book's model
    own = train_settings("--data", "acts.npy")                   # nothing is read yet
    assert (own["preset"], own["sparsity"], own["output"], own["normalize"], own["init"]) == \
        ("activations", "topk", "linear", "norm", "gao")
    assert own["subtract_decoder_bias"] and own["aux_k"] is not None
    assert train_settings("--data", "acts.npy", "--sparsity", "l1")["preset"] == "l1"
    assert train_settings("--data", "acts.npy", "--sparsity", "l1")["normalize"] == "norm"
    assert train_settings("--data", "acts.npy", "--sparsity", "kl")["normalize"] == "none"
    assert train_settings("--data", "a.npy", "--normalize", "none")["normalize"] == "none"
    assert train_settings("--preset", "topk", "--data", "a.npy")["hidden"] == 1000
    with pytest.raises(ConfigError, match="--preset activations trains on your own data: give "
                                          "--data PATH"):
        train_settings("--preset", "activations")


def test_k_says_what_it_does_and_topk_runs_without_it(tiny_mnist, tmp_path, capsys):
    """Issue 27: `--sparsity topk --hidden 64` without --k failed with "got --k=None" while
    --help said "(default: preset, 25)". The mechanism's preset now gives k, and the help
    says where a k comes from and when --k is needed."""
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    (k,) = [a for a in train._actions if "--k" in a.option_strings]
    assert "topk: 25" in k.help and "activations: 32, at most a quarter of the width" in k.help
    assert "needs --k with --sparsity topk or batchtopk" in k.help
    out = tmp_path / "r"
    assert cli.main(["train", "--sparsity", "topk", "--hidden", "64", "--epochs", "1",
                     "--batch-size", "50", *QUIET, "--out", str(out)]) == 0
    assert checkpoint.load(out).model.config.k == 25
    capsys.readouterr()
    assert cli.main(["train", "--preset", "book", "--sparsity", "topk", "--hidden-activation",
                     "relu", "--hidden", "64", "--epochs", "1", *QUIET, "--out",
                     str(tmp_path / "r2")]) == 2
    assert "give k between 1 and 64" in capsys.readouterr().err


def test_a_missing_data_file_is_named_before_the_output_folder(tmp_path, capsys):
    """Issue 27: after a first run, `minisae train --data nope.npy` said "runs/book already
    holds a run": the folder was checked before the data."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"a run")
    assert cli.main(["train", "--data", str(tmp_path / "nope.npy"), *QUIET, "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"minisae: error: {tmp_path / 'nope.npy'}: no such file or folder"


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys,
                                                                       monkeypatch):
    """Issue 27: failed runs left empty output folders behind. Now the folders a run made
    go with it while they hold nothing (a run that saved a checkpoint keeps its folder)."""
    data = rows(tmp_path / "acts.npy")
    new = tmp_path / "new"
    for flags in (["--hidden", "8", "--k", "20"],                      # refused by the model
                  ["--data-key", "x"]):                                # refused with the data
        assert cli.main(["train", "--data", str(data), *flags, *QUIET, "--epochs", "1",
                         "--out", str(new / "deeper" / "run")]) == 2
        assert not new.exists(), flags
    with pytest.MonkeyPatch.context() as mp:                           # Ctrl-C in epoch 1
        _interrupt_after(mp, calls=1)
        assert cli.main(["train", "--data", str(data), *QUIET, "--epochs", "2", "--out",
                         str(new / "run")]) == 130
    assert not new.exists()
    assert "nothing was saved yet" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as mp:                           # Ctrl-C in epoch 2
        _interrupt_after(mp, calls=5)                                  # 3 steps an epoch
        assert cli.main(["train", "--data", str(data), *QUIET, "--epochs", "2",
                         "--batch-size", "100", "--out", str(new / "run")]) == 130
    assert sorted(p.name for p in (new / "run").iterdir()) == ["checkpoint.npz"]
    (tmp_path / "kept").mkdir()                                        # not made by the run
    assert cli.main(["train", "--data", str(data), "--hidden", "8", "--k", "20", *QUIET,
                     "--out", str(tmp_path / "kept")]) == 2
    assert (tmp_path / "kept").is_dir()


def test_an_unwritable_run_folder_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    from forbid import forbid
    data = rows(tmp_path / "acts.npy")
    (tmp_path / "locked").mkdir()
    forbid(monkeypatch)(tmp_path / "locked")
    assert cli.main(["train", "--data", str(data), *QUIET, "--epochs", "1", "--out",
                     str(tmp_path / "locked")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"minisae: error: {tmp_path / 'locked'}") and "\n" not in err
    assert "cannot be written (Permission denied); check its permissions, or choose another " \
           "--out" in err


def test_a_run_that_failed_says_so_at_each_epoch_and_at_the_end(tmp_path, capsys):
    """Issue 27: runs that ended at FVU 1.0 or with 99.9% of their units dead said nothing.
    Each epoch's line is followed by one that says so, and the run ends with one naming what
    failed and the flag to change."""
    data = rows(tmp_path / "acts.npy")
    assert cli.main(["train", "--data", str(data), "--sparsity", "l1", "--sparsity-weight",
                     "50", "--epochs", "2", "--backend", "numpy", "--threads", "1", "--out",
                     str(tmp_path / "dead")]) == 0
    err = capsys.readouterr().err.splitlines()
    epochs = [line for line in err if line.startswith("epoch ")]
    assert [line.split(": failing so far: ")[0] for line in epochs] == ["epoch 1", "epoch 2"]
    assert all("lower --sparsity-weight (now 50)" in line for line in epochs)
    (last,) = [line for line in err if line.startswith("minisae: this run failed:")]
    assert "it reconstructs (almost) nothing but the mean" in last
    assert last.endswith("; lower --sparsity-weight (now 50)")
    assert cli.main(["train", "--data", str(data), "--epochs", "2", "--backend", "numpy",
                     "--threads", "1", "--out", str(tmp_path / "alive")]) == 0
    assert "fail" not in capsys.readouterr().err


@pytest.mark.parametrize("figures, settings, says", [
    ({"dead_fraction": 0.95, "l0": 2.0, "fvu": 0.5},
     {"sparsity": "kl", "sparsity_weight": 0.2, "sparsity_target": 0.1},
     "95.0% of its units are dead; lower --sparsity-weight (now 0.2), or raise "
     "--sparsity-target (now 0.1)"),
    ({"val_dead_fraction": 0.2, "train_dead_fraction": 0.93, "val_l0": 25, "val_fvu": 0.4},
     {"sparsity": "topk", "aux_k": 8, "lr": 0.01, "hidden_activation": "relu"},
     "93.0% of its units are dead; lower --lr (now 0.01), or train longer (--epochs)"),
    ({"dead_fraction": 0.97, "l0": 25, "fvu": 0.5},
     {"sparsity": "topk", "aux_k": None, "lr": 0.001, "hidden_activation": "relu"},
     "turn AuxK on (--aux-k N"),
    ({"dead_fraction": 0.0, "l0": 25, "fvu": 1.0},
     {"sparsity": "topk", "aux_k": 8, "dataset": "files", "normalize": "none",
      "output": "linear"}, "its FVU is 1.000: it reconstructs (almost) nothing but the mean; "
                          "normalize the data (--normalize norm)"),
    ({"dead_fraction": 0.5, "l0": 1.0, "fvu": 0.98}, {"sparsity": "l1"}, None),
])
def test_failure_names_what_failed_and_the_flag(figures, settings, says):
    verdict = cli.failure(figures, settings)
    assert verdict == says if says is None else says in verdict


def test_error_figures_name_their_units(tmp_path, capsys):
    """Issue 27: "test MSE per feature 0.6113" beside "test loss 0.0622", one in the data's
    units and one after --normalize, and a metrics key test_mse_per_pixel for data with no
    pixels. Now each says which it is; metrics.json says test_mse_per_feature (and, for
    images, still test_mse_per_pixel, which older readers read)."""
    data = rows(tmp_path / "acts.npy")
    out = tmp_path / "r"
    assert cli.main(["train", "--data", str(data), "--epochs", "1", *QUIET, "--out",
                     str(out)]) == 0
    text = capsys.readouterr().out
    assert "test MSE per feature, the data's units" in text
    assert "test loss, after --normalize norm" in text and "pixel" not in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_mse_per_feature"] > 0 and "test_mse_per_pixel" not in metrics
    assert metrics["normalize"] == "norm" and metrics["image_shape"] is None
    old = {**metrics, "test_mse_per_pixel": 0.25, "dataset": "mnist"}   # 0.3's metrics.json
    for key in ("test_mse_per_feature", "normalize", "image_shape"):
        del old[key]
    (row,) = [line for line in cli.summary_table(old, "there").splitlines() if "MSE" in line]
    assert row.split() == ["test", "MSE", "per", "pixel", "0.2500"]


def test_an_fvu_still_falling_is_learning_not_failing(capsys):
    """The book's model starts above FVU 1 and takes a dozen epochs to come under it: an epoch
    whose FVU fell by more than 1% gets no line for its FVU; one that stalled does, and dead
    units are named whatever the FVU does."""
    from minisae.training import History
    settings = {"sparsity": "kl", "sparsity_weight": 0.2, "sparsity_target": 0.1, "lr": 0.01,
                "aux_k": None, "hidden_activation": "sigmoid"}

    def said(*fvus, dead=0.0):
        history = History()
        for i, fvu in enumerate(fvus, 1):
            history.append(epoch=i, val_fvu=fvu, val_l0=5.0, val_dead_fraction=dead)
        cli._say_failing(history, settings)
        return capsys.readouterr().err

    assert said(1.30, 1.10) == ""                     # falling: learning
    assert "its FVU is 1.090" in said(1.10, 1.09)     # stalled
    assert "its FVU is 1.500" in said(1.50)           # one epoch: nothing to compare
    assert "are dead" in said(1.30, 1.10, dead=0.95)  # dead units are named all the same
