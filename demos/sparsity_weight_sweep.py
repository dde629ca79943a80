"""Sweep the sparsity weight beta: what sparsity costs in reconstruction, on MNIST.

    python demos/sparsity_weight_sweep.py --out runs/sparsity_weight_sweep.png

Trains one moderate model per beta (196 sigmoid units, target rho 0.1, the book's MSE
averaged over pixels, Adam lr 0.01, batches of 1,000, the same seed for all), then prints
a table of test reconstruction MSE per pixel, achieved mean activation and dead units
against beta, and draws it: reconstruction error on the left, mean activation (against the
target) and dead units on the right. What it shows: beta = 0 leaves the code dense (mean
activation far from 0.1) and reconstructs best; a little beta already pulls the mean
activation onto the target, and larger betas buy nothing more in sparsity but cost
reconstruction.

Offline it trains on the 4,000-digit subset of MNIST; the defaults take under a minute on
2 CPU cores. --quick is a seconds-long smoke run for the tests.
"""

import argparse
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minisae import Adam, SparseAutoencoder
from minisae import functional as F
from minisae.data import datasets
from minisae.training import evaluate, fit
from minisae.training.fit import reconstruction_mse

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="runs/sparsity_weight_sweep.png", help="PNG to write")
parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.05, 0.1, 0.2, 0.5, 1],
                    help="the sparsity weights beta to try")
parser.add_argument("--hidden", type=int, default=196, help="hidden units")
parser.add_argument("--target", type=float, default=0.1, help="sparsity target rho")
parser.add_argument("--epochs", type=int, default=30, help="epochs per run")
parser.add_argument("--batch-size", type=int, default=1000)
parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
parser.add_argument("--seed", type=int, default=42, help="weights and shuffling, for every run")
parser.add_argument("--backend", default=None, choices=("numpy", "cupy", "auto"),
                    help="array backend (default: $MINISAE_BACKEND, else auto)")
parser.add_argument("--data-dir", default=None, help="folder with the four MNIST IDX files")
parser.add_argument("--no-download", action="store_true",
                    help="never try the internet (offline: the 4,000/1,000 subset)")
parser.add_argument("--quick", action="store_true",
                    help="smoke test: 3 weights, 2 epochs, 50 units, 1,000 training digits")
args = parser.parse_args()
if args.quick:
    args.weights, args.epochs, args.hidden = [0, 0.2, 1], 2, 50

data = datasets.load("mnist", args.data_dir, download=not args.no_download, progress=False)
x_train = data.x_train[:1000] if args.quick else data.x_train
print(f"data: {data.name}, {len(x_train):,} train / {len(data.x_test):,} test, from {data.source}")
print(f"model: 784 -> {args.hidden} -> 784, rho {args.target}, mean MSE, {args.epochs} epochs, "
      f"Adam lr {args.lr}, batch {args.batch_size}\n")

header = (f"{'beta':>6} {'MSE/pixel':>10} {'mean act':>9} {'(target)':>8} {'dead':>6} "
          f"{'KL sum':>8} {'train s':>8}")
print(header)
print("-" * len(header))
rows = []
for beta in args.weights:
    model = SparseAutoencoder(784, args.hidden, sparsity_target=args.target, sparsity_weight=beta,
                              reduction="mean", backend=args.backend, seed=args.seed)
    history = fit(model, Adam(model.params, model.grads, lr=args.lr), x_train, args.epochs,
                  args.batch_size, seed=args.seed, progress=False)
    val, rho_hat = evaluate(model, data.x_test, per_unit=True)
    # summed over units without beta, so that every row is on one scale (beta = 0 too)
    kl = float(F.kl_divergence(args.target, F.clip_rho_hat(rho_hat)).sum())
    row = dict(beta=beta, mse=reconstruction_mse(model, data.x_test),
               act=val["mean_activation"], dead=val["dead_fraction"], kl=kl,
               seconds=float(sum(history.seconds)))
    rows.append(row)
    print(f"{beta:>6g} {row['mse']:>10.4f} {row['act']:>9.4f} {args.target:>8g} "
          f"{100 * row['dead']:>5.1f}% {row['kl']:>8.3f} {row['seconds']:>8.1f}")
print("MSE/pixel: test reconstruction error per pixel; mean act: mean over units of each "
      "unit's mean activation on the test set; dead: units with mean activation < 1e-3; "
      "KL sum: sum_j KL(rho || rho_hat_j) on the test set, without beta.")

# ----------------------------------------------------------------------------- figure
x = np.arange(len(rows))   # evenly spaced: beta = 0 has no place on a log axis
labels = [f"{r['beta']:g}" for r in rows]
fig = Figure(figsize=(11, 4.2), dpi=100)
FigureCanvasAgg(fig)
ax_mse, ax_act = fig.subplots(1, 2)
ax_mse.plot(x, [r["mse"] for r in rows], "o-", color="tab:blue")
ax_mse.set_ylabel("test MSE per pixel")
ax_mse.set_title("reconstruction error")
ax_act.plot(x, [r["act"] for r in rows], "o-", color="tab:green", label="mean activation")
ax_act.axhline(args.target, color="tab:red", linestyle="--", label=f"target rho = {args.target:g}")
ax_act.set_ylim(0, None)
ax_act.set_ylabel("mean activation of the hidden units")
ax_act.set_title("sparsity achieved")
ax_dead = ax_act.twinx()
ax_dead.bar(x, [100 * r["dead"] for r in rows], width=0.35, color="0.6", alpha=0.5,
            label="dead units")
for xi, r in zip(x, rows):
    ax_dead.text(xi, 100 * r["dead"] + 1, f"{100 * r['dead']:.0f}% dead", ha="center",
                 fontsize=7, color="0.4")
ax_dead.set_ylim(0, 100)
ax_dead.set_ylabel("dead units (%)")
ax_act.set_zorder(ax_dead.get_zorder() + 1)   # lines over the bars
ax_act.patch.set_visible(False)
handles = [h for ax in (ax_act, ax_dead) for h in ax.get_legend_handles_labels()[0]]
ax_act.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
for ax in (ax_mse, ax_act):
    ax.set_xticks(x, labels)
    ax.set_xlabel("sparsity weight beta")
    ax.grid(alpha=0.3)
fig.suptitle(f"{args.hidden} units, {args.epochs} epochs on {len(x_train):,} digits "
             f"({data.source})", fontsize=9)
fig.tight_layout()
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
fig.savefig(args.out)
print(f"\nwrote {args.out}")
