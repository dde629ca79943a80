"""A rank of the data-parallel equivalence tests (tests/test_distributed.py): run as
`python tests/ranks.py OUT` by each of N processes with torchrun's environment set, it
trains every model of CASES on both paths with `fit` and writes rank 0's results to OUT (a
.npz). `results(Alone(), batch)` is the one process the ranks are compared with.

    SHARD_HIDDEN=H: then, in the same processes, a sharded dictionary of H units, every rank
    the batch of 12, results named "shard/...".

    NAIVE=after: then, rho_hat each rank's own, and only the gradients and losses combined:
    the naive data parallelism the README measures, for the cases whose penalty reads rho_hat
    (COUPLED; the others would disagree on their dead units, and so on their collectives);
    those results are named "naive/..."."""
import os
import sys

import numpy as np

import minisae
from minisae.backend import to_numpy
from minisae.distributed import Shards, join, whole
from minisae.fast import step as fast_step
from minisae.normalize import Normalizer
from minisae.training import DeadUnits, Engine

# TopK's sparse products at these tiny sizes too (the engine would take the dense ones here):
# the ranks and the one process they are compared with then run them, sharded cut and AuxK
# included
fast_step.SPARSE_RATIO = 0

ROWS, WIDTH, EPOCHS = 60, 8, 2
BATCH = int(os.environ.get("BATCH", 12))
HIDDEN = int(os.environ.get("HIDDEN", 12))  # 7 on 3 shards: 2-3 units a rank, fewer than k
BASE = dict(n_inputs=WIDTH, dtype="float64", seed=3)
LINEAR = dict(hidden_activation="relu", output_activation="linear")
CASES = {
    "kl": dict(sparsity="kl", sparsity_weight=3.0, weight_decay=1e-3),
    "kl-bce": dict(sparsity="kl", sparsity_weight=3.0, reconstruction_loss="bce"),
    "squared-halfsum": dict(sparsity="squared", sparsity_weight=3.0, reduction="halfsum"),
    "absolute": dict(sparsity="absolute", sparsity_weight=1.0),
    "l1-tied-norms": dict(LINEAR, sparsity="l1", sparsity_weight=0.1, l1_decoder_norm=True,
                          tied_weights=True),
    "topk-auxk": dict(LINEAR, sparsity="topk", k=3, aux_k=4, subtract_decoder_bias=True,
                      init="gao", weight_decay=1e-3),
    "batchtopk-auxk": dict(LINEAR, sparsity="batchtopk", k=3, aux_k=4, init="gao"),
    "jumprelu": dict(LINEAR, sparsity="jumprelu", sparsity_weight=0.01, jump_bandwidth=0.05,
                     jump_threshold=0.1),
    "topk-resampled": dict(LINEAR, sparsity="topk", k=2),
}
RESAMPLE_EVERY = {"topk-resampled": 3}
"""Cases whose dead units are resampled (every this many steps), on every rank alike."""
PATHS = {"fast": True, "reference": False}
COUPLED = ("kl", "kl-bce", "squared-halfsum", "absolute", "l1-tied-norms")


def data():
    rng = np.random.default_rng(7)
    return rng.random((ROWS, WIDTH)), rng.random((20, WIDTH))


def train(name, fast, comm, batch=BATCH, hidden=HIDDEN):
    """The case's model after EPOCHS epochs of Adam: {what: array} to compare."""
    x, x_val = data()
    model = minisae.SparseAutoencoder(**BASE, n_hidden=hidden, **CASES[name], comm=comm)
    opt = minisae.Adam(model.params, model.grads, lr=1e-2)
    history = minisae.fit(model, opt, x, epochs=EPOCHS, batch_size=batch, x_val=x_val,
                          progress=False,
                          dead_units=DeadUnits(window=batch,
                                               resample_every=RESAMPLE_EVERY.get(name)),
                          engine=Engine(fast=fast, threads=1))
    last = history.last()
    assert RESAMPLE_EVERY.get(name) is None or last["resampled"] > 0, "nothing was resampled"
    units = comm.units(hidden)
    assert model.params["encoder.W"].shape == (WIDTH, units[1] - units[0])  # this rank's own
    model = whole(model)[0] or model  # a sharded dictionary's ranks: rank 0 holds it whole
    out = {"params": to_numpy(model.flat_params),
           "losses": np.nan_to_num(np.array([  # the history's figures, per-unit ones too
               last["train_total"], last["val_total"], last["val_fvu"], last["val_l0"],
               last["train_mean_activation"], last["val_mean_activation"],
               last["val_dead_fraction"], last["val_log10_density"],
               last.get("train_dead_fraction", 0.0)])),
           "silent": model.silent.copy()}
    if hasattr(model.coding, "threshold"):
        out["threshold"] = np.array(float(model.coding.threshold))
    return out


def results(comm, batch=BATCH, hidden=HIDDEN):
    """{case/path/what: array} for every case on both paths (a sharded dictionary: every
    case it trains)."""
    out = {}
    x = data()[0] * 3.0 + 1.0  # the normaliser's moments, each rank reading its part of the rows
    for mode in ("norm", "standard"):
        norm = Normalizer.fit(x, mode, comm=comm)
        out[f"normalizer/{mode}"] = np.concatenate([norm.mean, norm.scale, [norm.rows]])
    for name in CASES:
        if comm.splits == "units" and name in RESAMPLE_EVERY:
            continue
        for path, fast in PATHS.items():
            for what, value in train(name, fast, comm, batch, hidden).items():
                out[f"{name}/{path}/{what}"] = value
    return out


def main(out):
    comm = join(timeout=60)
    results_ = results(comm)
    if os.environ.get("SHARD_HIDDEN"):  # then, in the same processes, a sharded dictionary
        shards = Shards(timeout=60)
        for key, value in results(shards, 12, int(os.environ["SHARD_HIDDEN"])).items():
            results_[f"shard/{key}"] = value
    if os.environ.get("NAIVE") == "after":
        comm.batch_mean = lambda a: a
        for name in COUPLED:
            for what, value in train(name, True, comm).items():
                results_[f"naive/{name}/fast/{what}"] = value
    if comm.rank == 0:
        np.savez(out, **results_)
    getattr(comm, "close", lambda: None)()


if __name__ == "__main__":
    main(sys.argv[1])
