"""Why data parallelism must reduce rho_hat before the penalty: the book's gradient on one batch
of 256 digits, computed as N ranks would if each put the KL penalty on its own rho_hat and the
gradients were averaged, against the whole batch's gradient, at the start and after training.

    python demos/naive_data_parallel.py            # 5 epochs of the book's model first (~5 s)
    python demos/naive_data_parallel.py --quick    # 1 epoch

minisae's data parallelism (minisae/comm.py) reduces rho_hat in the forward pass, so N ranks
give the whole batch's gradient exactly (tests/test_distributed.py); this is what it avoids.
Float64, one process: rank r's gradient is model.loss_and_grads on its rows alone, weighted
by its share of the batch.
"""
import argparse
import time

import numpy as np

import minisae
from minisae.presets import PRESETS


def book(**overrides):
    return minisae.SparseAutoencoder(**{**PRESETS["book"].model, "dtype": "float64", **overrides})


def report(model, x, label, rank_counts):
    rho_hat = model.loss_and_grads(x).mean_activation
    exact = model.flat_grads.copy()
    no_penalty = book(sparsity_weight=0.0)
    no_penalty.flat_params[...] = model.flat_params
    no_penalty.loss_and_grads(x)
    ratio = np.linalg.norm(no_penalty.flat_grads) / np.linalg.norm(exact)
    print(f"{label}: mean rho_hat {rho_hat.mean():.3f}; the reconstruction's gradient is "
          f"{ratio:.1e} of the whole gradient's length, the rest is the penalty's")
    for n in rank_counts:
        naive = 0.0
        for r in range(n):
            rows = x[len(x) * r // n:len(x) * (r + 1) // n]
            model.loss_and_grads(rows)
            naive = naive + model.flat_grads * (len(rows) / len(x))
        off = np.linalg.norm(naive - exact) / np.linalg.norm(exact)
        print(f"  {n:2d} ranks of {len(x) // n:3d} rows: the naive gradient is off by {off:.1e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 epoch of training, not 5")
    p.add_argument("--no-download", action="store_true", help="the offline MNIST subset")
    args = p.parse_args()
    data = minisae.data.load("mnist", download=not args.no_download, progress=False)
    x = data.x_test[:256].astype(np.float64)
    counts = (2, 4, 8, 16, 32)
    model = book()
    report(model, x, "at the start", counts)
    epochs, t = (1 if args.quick else 5), time.perf_counter()
    training = PRESETS["book"].training
    minisae.fit(model, minisae.Adam(model.params, model.grads, lr=training["lr"]),
                data.x_train.astype(np.float64), epochs=epochs,
                batch_size=training["batch_size"], progress=False)
    report(model, x, f"after {epochs} epochs ({time.perf_counter() - t:.0f} s)", counts)


if __name__ == "__main__":
    main()
