"""Named settings that reproduce a known result, usable from Python and from the command line.

    model = SparseAutoencoder.from_preset("ufldl")           # the model's part
    PRESETS["ufldl"].training                                 # how it is trained
    PRESETS["topk"].source                                    # where it comes from
    SparseAutoencoder(**PRESETS["activations"].model_for(n_inputs=64))   # sized to the data

Each preset has two parts: `model`, keyword arguments of SparseAutoencoder, and `training`,
the optimizer and its settings (and the data set) that `minisae train --preset` uses; and
`source`, the work it follows, with what minisae changes. A preset made for data of any
width (`activations`) has a `sizing` too (SIZING): its hidden units, k and AuxK's k follow
the width, its epochs the number of rows; its `model` holds those values for 784 inputs.

Which preset a run of `minisae train` gets when it names none (default_preset): the
mechanism's own where --sparsity is given (MECHANISM_PRESETS), else `activations` for your
own data (--data) and `book` for MNIST. A --data run without --preset is sized to its data
by SIZING whichever preset it gets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .checks import shown
from .errors import ConfigError


@dataclass(frozen=True)
class Sizing:
    """How a model is sized to data of any width (and its training to any number of rows).

    n_hidden = expansion x width, at most max_hidden (a 4096-wide model of 8,192 units holds
               67 M parameters, 1.1 GB with their gradients and Adam's moments, and takes
               about 2 s per step of 256 rows on 2 CPU cores)
    k        = k, at most a quarter of the width (at least 1): the codes stay sparse on
               narrow data (64 wide: 16 of 256 units)
    aux_k    = half the width, at most n_hidden (Gao et al.'s 512 for GPT-2's 768)
    epochs   = enough to show the model `samples` training rows, at least 1 and at most
               max_epochs: a small file is seen many times, a large one once
    """

    expansion: int = 4
    max_hidden: int = 8192
    k: int = 32
    samples: int = 1 << 17
    max_epochs: int = 200

    def model(self, width, n_hidden=None):
        """{"n_inputs", "n_hidden", "k", "aux_k"} for data `width` features wide (n_hidden:
        the user's, which k and aux_k then fit in)."""
        n_hidden = min(self.expansion * width, self.max_hidden) if n_hidden is None else n_hidden
        return {"n_inputs": width, "n_hidden": n_hidden,
                "k": max(1, min(self.k, width // 4, n_hidden)),
                "aux_k": max(1, min(width // 2, n_hidden))}

    def epochs(self, n_rows):
        """The epochs that show the model about `samples` rows of a set of n_rows."""
        return max(1, min(self.max_epochs, math.ceil(self.samples / max(1, n_rows))))

    def describe(self, key):
        """The rule for one setting, in words (the command line's help)."""
        return {"n_hidden": f"{self.expansion} x the width, at most {self.max_hidden:,}",
                "k": f"{self.k}, at most a quarter of the width",
                "aux_k": "half the width",
                "epochs": f"enough for {self.samples:,} samples, 1 to {self.max_epochs}"}[key]


SIZING = Sizing()
"""The sizing of `activations`, and of every --data run that names no preset."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    source: str = ""
    sizing: Sizing | None = None

    def model_for(self, n_inputs, sizing=None, n_hidden=None):
        """The model's keyword arguments for data n_inputs wide, sized by `sizing` (default:
        the preset's own; none: the preset's model with its n_inputs replaced). A sizing sets
        n_hidden (unless given), and k and aux_k where the preset sets them (where it keeps k
        units)."""
        sizing = self.sizing if sizing is None else sizing
        model = dict(self.model, n_inputs=n_inputs)
        if n_hidden is not None:
            model["n_hidden"] = n_hidden
        if sizing is not None:
            model.update({key: value for key, value in sizing.model(n_inputs, n_hidden).items()
                          if key in ("n_inputs", "n_hidden") or key in self.model})
        return model


_GAO = dict(n_inputs=784, n_hidden=1000, k=25, hidden_activation="relu", aux_k=392,
            aux_weight=1 / 32, subtract_decoder_bias=True, init="gao", output_activation="linear",
            reconstruction_loss="mse", reduction="mean")
"""Gao et al.'s model on MNIST, which the topk and batchtopk presets share (with their own
mechanism)."""
_MODERN_TRAINING = dict(dataset="mnist", optimizer="adam", lr=1e-3, epochs=50, batch_size=256)

PRESETS = {
    "book": Preset(
        "book",
        "Géron's notebook: MSE averaged over pixels, 1,000 sigmoid units, target 0.1, weight 0.2",
        model=dict(n_inputs=784, n_hidden=1000, sparsity_target=0.1, sparsity_weight=0.2,
                   weight_decay=0.0, output_activation="sigmoid", reconstruction_loss="mse",
                   reduction="mean"),
        training=dict(dataset="mnist", optimizer="adam", lr=0.01, epochs=100, batch_size=1000),
        source="Géron, Hands-On Machine Learning (2nd ed.), chapter 17, 'Sparse Autoencoders' "
               "(the notebook's KL model); epochs and batch as in its notebook"),
    "ufldl": Preset(
        "ufldl",
        "UFLDL's MNIST exercise: half the squared error summed over pixels, 196 units, beta 3, "
        "lambda 3e-3",
        model=dict(n_inputs=784, n_hidden=196, sparsity_target=0.1, sparsity_weight=3.0,
                   weight_decay=3e-3, output_activation="sigmoid", reconstruction_loss="mse",
                   reduction="halfsum"),
        training=dict(dataset="mnist", optimizer="adam", lr=0.01, epochs=200, batch_size=1000),
        source="Ng, UFLDL tutorial, 'Vectorization' and 'Self-Taught Learning' exercises (MNIST, "
               "196 units); UFLDL trains with L-BFGS, this preset with Adam"),
    "ufldl-patches": Preset(
        "ufldl-patches",
        "UFLDL's sparse autoencoder exercise: 8x8 whitened natural-image patches, 25 units, "
        "rho 0.01, beta 3, lambda 1e-4, L-BFGS for 400 iterations in float64",
        model=dict(n_inputs=64, n_hidden=25, sparsity_target=0.01, sparsity_weight=3.0,
                   weight_decay=1e-4, output_activation="sigmoid", reconstruction_loss="mse",
                   reduction="halfsum", dtype="float64"),
        training=dict(dataset="patches", optimizer="lbfgs", max_iter=400, n_patches=10_000,
                      patch_size=8),
        source="Ng, UFLDL tutorial, 'Sparse Autoencoder' exercise (sparseae_exercise): the same "
               "settings; its ten photographs are replaced by eight bundled ones"),
    "k-sparse": Preset(
        "k-sparse",
        "Makhzani & Frey's k-sparse autoencoder: 1,000 linear units of which each digit keeps "
        "its 25 largest, tied weights, linear output, MSE",
        model=dict(n_inputs=784, n_hidden=1000, sparsity="topk", k=25,
                   hidden_activation="linear", tied_weights=True, output_activation="linear",
                   reconstruction_loss="mse", reduction="mean"),
        training=dict(dataset="mnist", optimizer="adam", lr=1e-3, epochs=50, batch_size=256),
        source="Makhzani & Frey, 'k-Sparse Autoencoders' (ICLR 2014, arXiv:1312.5663): MNIST, "
               "1000 units, k = 25, tied weights, linear; they train with SGD and momentum and "
               "anneal k from 100 down to 25 in the first epochs (not done here), and encode "
               "with 3k units at test time for classification (not done here)"),
    "l1": Preset(
        "l1",
        "an L1 autoencoder after Anthropic's 2024 recipe: 1,000 ReLU units, beta * sum of "
        "|h_j| ||W2[j]||, the decoder bias subtracted first, linear output, MSE",
        model=dict(n_inputs=784, n_hidden=1000, sparsity="l1", sparsity_weight=1e-3,
                   hidden_activation="relu", l1_decoder_norm=True, subtract_decoder_bias=True,
                   output_activation="linear", reconstruction_loss="mse", reduction="mean"),
        training=dict(dataset="mnist", optimizer="adam", lr=1e-3, epochs=50, batch_size=256),
        source="Anthropic, 'Circuits Updates - April 2024' (the L1 penalty weighted by decoder "
               "norms) and 'Towards Monosemanticity' (2023; ReLU codes, decoder bias subtracted "
               "from the input); beta 1e-3 gives about 40 active units per digit here"),
    "topk": Preset(
        "topk",
        "Gao et al.'s TopK autoencoder: 1,000 ReLU units of which each digit keeps its 25 "
        "largest, AuxK against dead units, the decoder bias subtracted first, linear output",
        model=dict(_GAO, sparsity="topk"),
        training=dict(_MODERN_TRAINING),
        source="Gao et al., 'Scaling and Evaluating Sparse Autoencoders' (2024, "
               "arXiv:2406.04093): TopK with ReLU, AuxK (the residual's normalized MSE) with "
               "alpha = 1/32 and k_aux about half the input width (they use 512 for GPT-2's "
               "768), dead after a window of samples, the decoder bias subtracted before "
               "encoding and started at the data's mean (they use the geometric median), "
               "unit-norm decoder rows with the encoder their transpose at the start (kept at "
               "unit norm during training there, not here)"),
    "batchtopk": Preset(
        "batchtopk",
        "Bussmann et al.'s BatchTopK autoencoder: 1,000 ReLU units, the 25 x batch largest "
        "codes of each batch kept, AuxK, the decoder bias subtracted first, linear output",
        model=dict(_GAO, sparsity="batchtopk"),
        training=dict(_MODERN_TRAINING),
        source="Bussmann, Leask & Nanda, 'BatchTopK Sparse Autoencoders' (2024, "
               "arXiv:2412.06410): the top k x batch ReLU codes of the batch, an inference "
               "threshold estimated in training (here a running mean of momentum 0.99 of "
               "each batch's smallest kept code), AuxK and the initialisation as for TopK"),
    "jumprelu": Preset(
        "jumprelu",
        "Rajamanoharan et al.'s JumpReLU autoencoder: 1,000 units with learned thresholds, "
        "an L0 penalty through a straight-through estimator, linear output",
        model=dict(n_inputs=784, n_hidden=1000, sparsity="jumprelu", sparsity_weight=0.01,
                   jump_bandwidth=0.05, jump_threshold=0.3, hidden_activation="relu",
                   output_activation="linear", reconstruction_loss="mse", reduction="mean"),
        training=dict(dataset="mnist", optimizer="adam", lr=1e-3, epochs=50, batch_size=256),
        source="Rajamanoharan et al., 'Jumping Ahead: Improving Reconstruction Fidelity with "
               "JumpReLU Sparse Autoencoders' (2024, arXiv:2407.14435): JumpReLU with log-"
               "thresholds, the rectangle kernel's pseudo-derivatives (their eqs. 11-12), the L0 "
               "penalty; their bandwidth and initial threshold (0.001 both, for activations "
               "scaled to unit mean squared norm) are scaled here to MNIST's pixels (0.05 and "
               "0.3, chosen on the offline digits: at 0.1 or less the thresholds hardly leave "
               "their start in 50 epochs of Adam at lr 1e-3)"),
    "activations": Preset(
        "activations",
        "today's sparse autoencoder for your own data (--data): TopK with AuxK, ReLU codes, "
        "the decoder bias subtracted first, linear output, the data normalized (norm); "
        "hidden units 4 x the width (at most 8,192), k = 32 (at most a quarter of the width), "
        "epochs enough for 131,072 samples",
        model=dict(n_inputs=784, n_hidden=3136, sparsity="topk", k=32,
                   hidden_activation="relu", aux_k=392, aux_weight=1 / 32,
                   subtract_decoder_bias=True, init="gao", output_activation="linear",
                   reconstruction_loss="mse", reduction="mean"),
        training=dict(dataset="files", optimizer="adam", lr=1e-3, epochs=28, batch_size=256,
                      normalize="norm"),
        source="Gao et al., 'Scaling and Evaluating Sparse Autoencoders' (2024, "
               "arXiv:2406.04093) as the topk preset follows them, on data normalized as "
               "Anthropic and SAELens normalize activations (a row's mean squared norm equal "
               "to its width); Adam at lr 1e-3 and batches of 256 (Gao et al. tune the rate "
               "per size, lower for wider models; 1e-3 trained every width measured here, 64 "
               "to 1,000, see the README's 'Your own data'); the expansion is 4, not their "
               "16 to 256, so that a model trains on a CPU",
        sizing=SIZING),
}

MECHANISM_PRESETS = {"kl": "book", "squared": "book", "absolute": "book", "l1": "l1",
                     "topk": "topk", "batchtopk": "batchtopk", "jumprelu": "jumprelu"}
"""The preset a run gets when it names a mechanism (--sparsity) and no preset: the
mechanism's own values (its weight, learning rate, batch), never another mechanism's."""


def default_preset(sparsity=None, own_data=False):
    """The name of the preset a run gets without --preset: the mechanism's own (topk on your
    own data: activations), else activations for your own data and book for MNIST."""
    if own_data and sparsity in (None, "topk"):
        return "activations"
    if sparsity is not None:
        try:
            return MECHANISM_PRESETS[sparsity]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown sparsity {shown(sparsity)}; choose one of "
                              f"{', '.join(MECHANISM_PRESETS)}") from None
    return "book"


def get_preset(name) -> Preset:
    """The preset called `name`, or a ConfigError listing the names there are."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown preset {shown(name)}; choose one of {', '.join(PRESETS)}") \
            from None
