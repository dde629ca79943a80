"""The `minisae` command: train | show | gradcheck | bench | data.

Errors a user can cause (MinisaeError) print as one line on stderr and exit with status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from . import __version__
from .backend import get_backend
from .errors import ConfigError, MinisaeError
from .fileio import atomic_write

FIGURES = ("features.png", "reconstructions.png", "activations.png", "curves.png")


def _add_backend(p):
    p.add_argument("--backend", default=None, choices=("numpy", "cupy", "auto"),
                   help="array backend (default: $MINISAE_BACKEND, else auto: CuPy when a GPU "
                        "answers, else NumPy)")


# ----------------------------------------------------------------------------- train

TRAIN_FLAGS = ("hidden", "sparsity_target", "sparsity_weight", "weight_decay", "output", "loss",
               "reduction", "lr", "epochs", "batch_size")
MODEL_FLAGS = ("hidden", "sparsity_target", "sparsity_weight", "weight_decay", "output", "loss",
               "reduction", "lr", "batch_size", "dataset", "seed")


def _add_train(sub):
    from .datasets import DATASETS
    from .train import PRESETS
    p = sub.add_parser("train", help="train a sparse autoencoder on MNIST (or Fashion-MNIST)",
                       description="Train a sparse autoencoder; write checkpoint.npz, "
                                   "metrics.json and figures into --out.")
    _add_backend(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default="book",
                   help="a setting's values (book: Géron's; ufldl: UFLDL's); flags override them")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="default: mnist")
    p.add_argument("--data-dir", default=None, help="folder with the four IDX files "
                                                    "(default: $MINISAE_DATA, cache, download)")
    p.add_argument("--no-download", action="store_true",
                   help="never try the internet (offline, MNIST falls back to its 5,000-digit subset)")
    p.add_argument("--hidden", type=int, help="hidden units")
    p.add_argument("--sparsity-target", type=float, help="rho, the target mean activation")
    p.add_argument("--sparsity-weight", type=float, help="beta, the KL penalty's weight")
    p.add_argument("--weight-decay", type=float, help="lambda, the L2 weight decay")
    p.add_argument("--output", choices=("sigmoid", "linear"), help="output activation")
    p.add_argument("--loss", choices=("mse", "bce"), help="reconstruction loss")
    p.add_argument("--reduction", choices=("mean", "halfsum"), help="MSE scale: mean (book) or "
                                                                    "halfsum (UFLDL)")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--epochs", type=int, help="total epochs (with --resume: up to this many)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, default=None, help="weights and shuffling (default 42)")
    p.add_argument("--out", default=None, help="output folder (default runs/<preset>)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint.npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def resolve_settings(args):
    """The preset's values with explicit flags on top."""
    from .train import PRESETS
    settings = dict(PRESETS[args.preset], preset=args.preset, dataset="mnist", seed=42)
    for name in TRAIN_FLAGS + ("dataset", "seed"):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    return settings


def cmd_train(args):
    from . import checkpoint, datasets
    from .optim import Adam
    from .model import SparseAutoencoder
    from .train import History, fit

    if args.resume:
        ck = checkpoint.load(args.resume, backend=get_backend(args.backend))
        settings = dict(ck.extra.get("settings") or {})
        if not settings:
            raise ConfigError(f"{args.resume} was not written by `minisae train`; it has no settings")
        for name in MODEL_FLAGS:
            value = getattr(args, name, None)
            if value is not None and value != settings.get(name):
                raise ConfigError(f"--{name.replace('_', '-')} {value} differs from the resumed "
                                  f"run's {settings.get(name)}; drop the flag or start a new run")
        if args.epochs is not None:
            settings["epochs"] = args.epochs
        model, optimizer, history = ck.model, ck.optimizer, ck.history
        out = args.out or os.path.dirname(os.path.abspath(args.resume))
    else:
        settings = resolve_settings(args)
        out = args.out or os.path.join("runs", settings["preset"])
        model = SparseAutoencoder(
            n_inputs=784, n_hidden=settings["hidden"], sparsity_target=settings["sparsity_target"],
            sparsity_weight=settings["sparsity_weight"], weight_decay=settings["weight_decay"],
            output_activation=settings["output"], reconstruction_loss=settings["loss"],
            reduction=settings["reduction"], backend=args.backend, seed=settings["seed"])
        optimizer = Adam(model.params, model.grads, lr=settings["lr"])
        history = History()
    for name in ("epochs", "batch_size"):
        if settings[name] < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {settings[name]}")
    os.makedirs(out, exist_ok=True)

    data = datasets.load(settings["dataset"], args.data_dir, download=not args.no_download,
                         progress=not args.no_progress)
    print(f"data: {data.name}, {len(data.x_train):,} train / {len(data.x_test):,} test, from "
          f"{data.source}")
    print(f"model: {model}")
    ckpt_path = os.path.join(out, "checkpoint.npz")
    extra = {"settings": settings, "data_source": data.source, "subset": data.subset}

    def save(history):
        checkpoint.save(ckpt_path, model, optimizer, history, extra)

    if len(history) >= settings["epochs"]:
        print(f"the checkpoint already has {len(history)} epochs (--epochs {settings['epochs']}); "
              f"nothing to train")
    t0 = time.perf_counter()
    fit(model, optimizer, data.x_train, settings["epochs"], settings["batch_size"],
        seed=settings["seed"], x_val=data.x_test, progress=not args.no_progress,
        history=history, on_epoch_end=save)
    wall = time.perf_counter() - t0
    metrics = write_results(model, history, data, out, settings)
    metrics["wall_seconds_this_run"] = wall
    print(summary_table(metrics, out))
    return 0


def write_results(model, history, data, out, settings):
    """metrics.json and the figures for a trained model; returns the metrics."""
    from . import plots
    from .backend import to_numpy
    from .train import evaluate, reconstruction_mse

    x_test = data.x_test
    val = evaluate(model, x_test)
    metrics = {
        "dataset": data.name, "data_source": data.source, "subset": data.subset,
        "n_train": len(data.x_train), "n_test": len(x_test), "settings": settings,
        "epochs": len(history), "train_seconds": float(sum(history.seconds)),
        "test_mse_per_pixel": reconstruction_mse(model, x_test),
        "test_loss": {k: val[k] for k in ("total", "reconstruction", "sparsity", "weight_decay")},
        "mean_activation": val["mean_activation"], "sparsity_target": model.config.sparsity_target,
        "dead_fraction": val["dead_fraction"], "backend": model.backend.name,
        "history": history.as_dict(),
    }
    with atomic_write(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    W = to_numpy(model.params["encoder.W"])
    plots.feature_grid(W, os.path.join(out, "features.png"),
                       title=f"encoder weights ({settings.get('preset', '')})")
    plots.reconstructions(x_test[:10], to_numpy(model.reconstruct(x_test[:10])),
                          os.path.join(out, "reconstructions.png"))
    plots.activation_histogram(val["rho_hat"], model.config.sparsity_target,
                               os.path.join(out, "activations.png"))
    plots.training_curves(history.as_dict(), os.path.join(out, "curves.png"))
    return metrics


def summary_table(m, out, written=("checkpoint.npz", "metrics.json") + FIGURES):
    rows = [
        ("data", f"{m['dataset']} ({m['data_source']})"),
        ("epochs", f"{m['epochs']}"),
        ("training time", f"{m['train_seconds']:.1f} s"),
        ("test MSE per pixel", f"{m['test_mse_per_pixel']:.4f}"),
        ("test loss", f"{m['test_loss']['total']:.4f} (reconstruction "
                      f"{m['test_loss']['reconstruction']:.4f}, sparsity {m['test_loss']['sparsity']:.4f}, "
                      f"weight decay {m['test_loss']['weight_decay']:.4f})"),
        ("mean activation", f"{m['mean_activation']:.4f} (target {m['sparsity_target']})"),
        ("dead units", f"{100 * m['dead_fraction']:.1f}%"),
        ("written", ", ".join(written) + f" in {out}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# ----------------------------------------------------------------------------- show

def _add_show(sub):
    p = sub.add_parser("show", help="remake a run's figures from its checkpoint")
    p.add_argument("checkpoint", help="a checkpoint.npz written by `minisae train`")
    p.add_argument("--out", default=None, help="folder for the figures (default: the checkpoint's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-download", action="store_true", help="never try the internet")
    _add_backend(p)
    p.set_defaults(func=cmd_show)


def cmd_show(args):
    from . import checkpoint, datasets
    ck = checkpoint.load(args.checkpoint, backend=get_backend(args.backend))
    settings = ck.extra.get("settings") or {"dataset": "mnist"}
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(out, exist_ok=True)
    data = datasets.load(settings.get("dataset", "mnist"), args.data_dir,
                         download=not args.no_download)
    metrics = write_results(ck.model, ck.history, data, out, settings)
    print(summary_table(metrics, out, written=("metrics.json",) + FIGURES))
    return 0


# ----------------------------------------------------------------------------- gradcheck

def _add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="check every gradient against central differences")
    _add_backend(p)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_gradcheck)


GRADCHECK_OPTIONS = [  # every valid (output, loss, reduction)
    ("sigmoid", "mse", "mean"), ("sigmoid", "mse", "halfsum"), ("sigmoid", "bce", "mean"),
    ("linear", "mse", "mean"), ("linear", "mse", "halfsum"),
]


def cmd_gradcheck(args):
    from .gradcheck import THRESHOLD, check_model, format_table
    from .model import SparseAutoencoder
    rng = np.random.default_rng(args.seed)
    x = rng.random((5, 6))
    failed = []
    print(f"central differences in float64, threshold {THRESHOLD:.0e} on "
          f"||num - ana|| / ||num + ana||; 5 samples, 6 inputs, 4 hidden units\n")
    for output, loss, reduction in GRADCHECK_OPTIONS:
        model = SparseAutoencoder(6, 4, sparsity_target=0.1, sparsity_weight=3.0,
                                  weight_decay=1e-2, output_activation=output,
                                  reconstruction_loss=loss, reduction=reduction,
                                  backend=args.backend, dtype="float64", seed=args.seed)
        rows = check_model(model, x)
        print(format_table(rows, f"output={output}, loss={loss}, reduction={reduction}, "
                                 f"beta=3, lambda=0.01 ({model.backend.name})"))
        print()
        failed += [(output, loss, reduction, r) for r in rows if not r.ok]
    if failed:
        worst = max(failed, key=lambda f: f[3].rel_error)
        print(f"FAILED: {len(failed)} parameter(s); worst {worst[3].name} with {worst[:3]}: "
              f"{worst[3].rel_error:.2e}", file=sys.stderr)
        return 1
    print("all gradients match")
    return 0


# ----------------------------------------------------------------------------- data

def _add_data(sub):
    from .datasets import DATASETS
    p = sub.add_parser("data", help="show where each dataset would load from; --fetch downloads")
    p.add_argument("--dataset", choices=DATASETS + ("all",), default="all")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--fetch", action="store_true", help="download into the cache")
    p.set_defaults(func=cmd_data)


def cmd_data(args):
    from . import datasets
    names = datasets.DATASETS if args.dataset == "all" else (args.dataset,)
    for name in names:
        if args.fetch:
            print(f"{name}: fetched into {datasets.fetch(name)}")
        print(f"{name}:")
        for where, status in datasets.describe(name, args.data_dir):
            print(f"  {status:<12} {where}")
    return 0


# ----------------------------------------------------------------------------- main

def build_parser():
    parser = argparse.ArgumentParser(prog="minisae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minisae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_show(sub)
    _add_gradcheck(sub)
    from .fast import bench
    bench.add_parser(sub)
    _add_data(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except MinisaeError as e:
        print(f"minisae: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a folder we cannot write, a full disk: the OS says which file
        print(f"minisae: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("minisae: interrupted", file=sys.stderr)
        return 130
