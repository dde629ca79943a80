"""A model's settings: every choice a SparseAutoencoder is built from, defined once.

    config = Config(n_inputs=784, n_hidden=196, sparsity_weight=3.0).validated()
    param_shapes(config)        # {"encoder.W": (784, 196), "encoder.b": (196,), ...}

The enumerations below are what the model, the command line (its flags are made from
FIELDS), the checkpoint and the tests read; a new choice is added here and nowhere else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from . import checks
from .backend import DTYPES
from .errors import ConfigError
from .losses import SPARSITY

OUTPUT_ACTIVATIONS = ("sigmoid", "linear")
HIDDEN_ACTIVATIONS = ("sigmoid",)
RECONSTRUCTION_LOSSES = ("mse", "bce")
REDUCTIONS = ("mean", "halfsum")
MAX_WEIGHT = 1e6
"""The largest sparsity or weight-decay weight accepted: past it float32 overflows."""


@dataclass(frozen=True)
class Config:
    """Everything that defines a model (not its weights); saved in checkpoints."""

    n_inputs: int
    n_hidden: int
    sparsity: str = "kl"
    sparsity_target: float = 0.1
    sparsity_weight: float = 0.2
    weight_decay: float = 0.0
    hidden_activation: str = "sigmoid"
    output_activation: str = "sigmoid"
    reconstruction_loss: str = "mse"
    reduction: str = "mean"
    dtype: str = "float32"
    seed: int | None = 42

    def validated(self):
        """This config with every value checked and in plain Python types (a NumPy float64
        scalar would upcast the float32 math it meets, and cannot be written to JSON), or a
        ConfigError naming the first bad value."""
        c = replace(
            self,
            n_inputs=checks.check_int(self.n_inputs, "n_inputs", low=1),
            n_hidden=checks.check_int(self.n_hidden, "n_hidden", low=1),
            sparsity=checks.check_choice(self.sparsity, "sparsity", tuple(SPARSITY)),
            sparsity_target=checks.check_real(self.sparsity_target, "sparsity_target", 0.0, 1.0,
                                               low_open=True, high_open=True),
            sparsity_weight=checks.check_real(self.sparsity_weight, "sparsity_weight", 0.0,
                                              MAX_WEIGHT),
            weight_decay=checks.check_real(self.weight_decay, "weight_decay", 0.0, MAX_WEIGHT),
            hidden_activation=checks.check_choice(self.hidden_activation, "hidden_activation",
                                                  HIDDEN_ACTIVATIONS),
            output_activation=checks.check_choice(self.output_activation, "output_activation",
                                                  OUTPUT_ACTIVATIONS),
            reconstruction_loss=checks.check_choice(self.reconstruction_loss,
                                                    "reconstruction_loss", RECONSTRUCTION_LOSSES),
            reduction=checks.check_choice(self.reduction, "reduction", REDUCTIONS),
            dtype=checks.check_choice(checks.dtype_name(self.dtype), "dtype", DTYPES),
            seed=None if self.seed is None else checks.check_int(self.seed, "seed", 0, 2**63 - 1),
        )
        problem = combination_problem(c)
        if problem:
            raise ConfigError(problem)
        return c

    def as_dict(self):
        return asdict(self)

    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls)]


def combination_problem(c):
    """Why this combination of settings is not a valid model, or None when it is."""
    if c.reconstruction_loss == "bce" and c.output_activation != "sigmoid":
        return ("reconstruction_loss='bce' needs output_activation='sigmoid' (cross-entropy "
                "compares probabilities); use 'mse' with a linear output")
    if c.reconstruction_loss == "bce" and c.reduction != "mean":
        return ("reduction='halfsum' is UFLDL's half squared error and applies to 'mse' only; "
                "use reduction='mean' with 'bce'")
    return SPARSITY[c.sparsity].problem(c)


def param_shapes(c):
    """The model's parameters by name, with their shapes, in the order of its flat buffer."""
    return {"encoder.W": (c.n_inputs, c.n_hidden), "encoder.b": (c.n_hidden,),
            "decoder.W": (c.n_hidden, c.n_inputs), "decoder.b": (c.n_inputs,)}


def needs_unit_range(c):
    """True when the data must lie in [0, 1]: a sigmoid output (or cross-entropy) can't
    reconstruct more."""
    return c.output_activation == "sigmoid" or c.reconstruction_loss == "bce"


@dataclass(frozen=True)
class Field:
    """How one Config field appears on the command line: its flag, metavar and help."""

    flag: str
    help: str
    choices: tuple | None = None
    metavar: str | None = None
    type: type = str


FIELDS = {
    "n_hidden": Field("--hidden", "hidden units", metavar="N", type=int),
    "sparsity": Field("--sparsity", "the sparsity mechanism", tuple(SPARSITY)),
    "sparsity_target": Field("--sparsity-target", "rho, the target mean activation",
                             metavar="RHO", type=float),
    "sparsity_weight": Field("--sparsity-weight", "beta, the sparsity penalty's weight",
                             metavar="BETA", type=float),
    "weight_decay": Field("--weight-decay", "lambda, the L2 weight decay", metavar="LAMBDA",
                          type=float),
    "hidden_activation": Field("--hidden-activation", "the coding layer's activation",
                               HIDDEN_ACTIVATIONS),
    "output_activation": Field("--output", "output activation", OUTPUT_ACTIVATIONS),
    "reconstruction_loss": Field("--loss", "reconstruction loss", RECONSTRUCTION_LOSSES),
    "reduction": Field("--reduction", "MSE scale: mean (book) or halfsum (UFLDL)", REDUCTIONS),
    "dtype": Field("--dtype", "float type", DTYPES),
}
"""The Config fields a user sets from the command line (n_inputs comes from the data, seed
from --seed), in the order `minisae train --help` lists them."""
