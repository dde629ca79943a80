"""Named settings that reproduce a known result, usable from Python and from the command line.

    model = SparseAutoencoder.from_preset("ufldl")           # the model's part
    PRESETS["ufldl"].training                                 # how it is trained

Each preset has two parts: `model`, keyword arguments of SparseAutoencoder, and `training`,
the optimizer and its settings (and the data set) that `minisae train --preset` uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


PRESETS = {
    "book": Preset(
        "book",
        "Géron's notebook: MSE averaged over pixels, 1,000 sigmoid units, target 0.1, weight 0.2",
        model=dict(n_inputs=784, n_hidden=1000, sparsity_target=0.1, sparsity_weight=0.2,
                   weight_decay=0.0, output_activation="sigmoid", reconstruction_loss="mse",
                   reduction="mean"),
        training=dict(dataset="mnist", optimizer="adam", lr=0.01, epochs=100, batch_size=1000)),
    "ufldl": Preset(
        "ufldl",
        "UFLDL's MNIST exercise: half the squared error summed over pixels, 196 units, beta 3, "
        "lambda 3e-3",
        model=dict(n_inputs=784, n_hidden=196, sparsity_target=0.1, sparsity_weight=3.0,
                   weight_decay=3e-3, output_activation="sigmoid", reconstruction_loss="mse",
                   reduction="halfsum"),
        training=dict(dataset="mnist", optimizer="adam", lr=0.01, epochs=200, batch_size=1000)),
    "ufldl-patches": Preset(
        "ufldl-patches",
        "UFLDL's sparse autoencoder exercise: 8x8 whitened natural-image patches, 25 units, "
        "rho 0.01, beta 3, lambda 1e-4, L-BFGS for 400 iterations in float64",
        model=dict(n_inputs=64, n_hidden=25, sparsity_target=0.01, sparsity_weight=3.0,
                   weight_decay=1e-4, output_activation="sigmoid", reconstruction_loss="mse",
                   reduction="halfsum", dtype="float64"),
        training=dict(dataset="patches", optimizer="lbfgs", max_iter=400, n_patches=10_000,
                      patch_size=8)),
}


def get_preset(name) -> Preset:
    """The preset called `name`, or a ConfigError listing the names there are."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
