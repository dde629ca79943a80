"""A model's settings: every choice a SparseAutoencoder is built from, defined once.

    config = Config(n_inputs=784, n_hidden=196, sparsity_weight=3.0).validated()
    param_shapes(config)        # {"encoder.W": (784, 196), "encoder.b": (196,), ...}

The enumerations below are what the model, the command line (its flags are made from
FIELDS), the checkpoint and the tests read; a new choice is added here and nowhere else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from . import checks
from .backend import DTYPES
from .errors import ConfigError
from .losses import SPARSITY

OUTPUT_ACTIVATIONS = ("sigmoid", "linear")
HIDDEN_ACTIVATIONS = ("sigmoid", "relu", "linear")
RECONSTRUCTION_LOSSES = ("mse", "bce")
REDUCTIONS = ("mean", "halfsum")
INITS = ("uniform", "gao")
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
    k: int | None = None                 # topk: units kept per sample
    tied_weights: bool = False           # the decoder is the encoder's transpose
    l1_decoder_norm: bool = False        # l1: weigh unit j by ||W2[j, :]||
    aux_k: int | None = None             # topk: AuxK's dead units per sample (None: no AuxK)
    aux_weight: float = 1 / 32           # AuxK's weight, alpha
    subtract_decoder_bias: bool = False  # encode x - b2 (Gao et al.; Anthropic)
    init: str = "uniform"                # "gao": unit-norm decoder rows, encoder = their transpose
    jump_bandwidth: float = 0.001        # jumprelu: eps, the rectangle kernel's width
    jump_threshold: float = 0.001        # jumprelu: theta's initial value

    def __post_init__(self):
        """Every value is checked when a Config is made (a ConfigError names the first bad
        one) and kept in plain Python types: a NumPy float64 scalar would upcast the float32
        math it meets, and cannot be written to JSON."""
        for name, value in self._checked().items():
            object.__setattr__(self, name, value)

    def validated(self):
        """This config, once its settings are known to go together (each value was checked
        when it was made), or a ConfigError saying which do not."""
        problem = combination_problem(self)
        if problem:
            raise ConfigError(problem)
        return self

    def _checked(self):
        return dict(
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
            k=None if self.k is None else checks.check_int(self.k, "k", 1),
            tied_weights=checks.check_bool(self.tied_weights, "tied_weights"),
            l1_decoder_norm=checks.check_bool(self.l1_decoder_norm, "l1_decoder_norm"),
            aux_k=None if self.aux_k is None else checks.check_int(self.aux_k, "aux_k", 1),
            aux_weight=checks.check_real(self.aux_weight, "aux_weight", 0.0, MAX_WEIGHT),
            subtract_decoder_bias=checks.check_bool(self.subtract_decoder_bias,
                                                    "subtract_decoder_bias"),
            init=checks.check_choice(self.init, "init", INITS),
            jump_bandwidth=checks.check_real(self.jump_bandwidth, "jump_bandwidth", 0.0,
                                             MAX_WEIGHT, low_open=True),
            jump_threshold=checks.check_real(self.jump_threshold, "jump_threshold", 0.0,
                                             MAX_WEIGHT, low_open=True),
        )

    def as_dict(self):
        return asdict(self)

    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class Mechanism:
    """What a sparsity mechanism takes: the coding activations it works with (and why), and
    the settings it reads beyond those every model reads."""

    activations: tuple
    why: str
    reads: frozenset


_RHO = frozenset({"sparsity_target", "sparsity_weight"})
MECHANISMS = {
    "kl": Mechanism(("sigmoid",), "compares mean activations in (0, 1) with rho", _RHO),
    "squared": Mechanism(("sigmoid", "relu"), "makes nonnegative codes sparse", _RHO),
    "absolute": Mechanism(("sigmoid", "relu"), "makes nonnegative codes sparse", _RHO),
    "l1": Mechanism(("sigmoid", "relu"), "makes nonnegative codes sparse",
                    frozenset({"sparsity_weight", "l1_decoder_norm"})),
    "topk": Mechanism(("relu", "linear"), "keeps the largest pre-activations as they are "
                      "(linear) or through a ReLU", frozenset({"k", "aux_k", "aux_weight"})),
    "batchtopk": Mechanism(("relu",), "keeps the largest ReLU codes of the batch",
                           frozenset({"k", "aux_k", "aux_weight"})),
    "jumprelu": Mechanism(("relu",), "keeps each code above its unit's learned threshold "
                          "(a ReLU with a jump)",
                          frozenset({"sparsity_weight", "jump_bandwidth", "jump_threshold"})),
}
"""Which settings go together, decided here once: the model (combination_problem), the
command line (applies: a flag a run would not use is refused) and the presets' test read it."""

OPTIONAL = {"k": None, "aux_k": None, "l1_decoder_norm": False, "jump_bandwidth": 0.001,
            "jump_threshold": 0.001}
"""Settings that only some mechanisms read, with their defaults: set to anything else for a
mechanism that does not read them, they are refused (never silently ignored)."""


def applies(name, s):
    """Whether the setting `name` means anything to a model with settings s (a Config or a
    dict of its fields): a mechanism's own settings apply to it alone, AuxK's weight applies
    when AuxK is on."""
    get = s.get if isinstance(s, dict) else (lambda n: getattr(s, n))
    if name == "aux_weight":
        return get("aux_k") is not None and name in MECHANISMS[get("sparsity")].reads
    owners = [m for m in MECHANISMS.values() if name in m.reads]
    return not owners or name in MECHANISMS[get("sparsity")].reads


def combination_problem(c):
    """Why this combination of settings is not a valid model, or None when it is."""
    if c.reconstruction_loss == "bce" and c.output_activation != "sigmoid":
        return ("reconstruction_loss='bce' needs output_activation='sigmoid' (cross-entropy "
                "compares probabilities); use 'mse' with a linear output")
    if c.reconstruction_loss == "bce" and c.reduction != "mean":
        return ("reduction='halfsum' is UFLDL's half squared error and applies to 'mse' only; "
                "use reduction='mean' with 'bce'")
    for name, off in OPTIONAL.items():
        value = getattr(c, name)
        if value != off and not applies(name, c):
            owners = " or ".join(repr(n) for n, m in MECHANISMS.items() if name in m.reads)
            return (f"{name}={value!r} applies to sparsity={owners} only, got "
                    f"sparsity={c.sparsity!r}; drop {name}")
    m = MECHANISMS[c.sparsity]
    if c.hidden_activation not in m.activations:
        return (f"sparsity={c.sparsity!r} {m.why}: use hidden_activation="
                + " or ".join(repr(a) for a in m.activations)
                + f", got hidden_activation={c.hidden_activation!r}")
    if "k" in m.reads and (c.k is None or c.k > c.n_hidden):
        return (f"sparsity={c.sparsity!r} keeps k of the n_hidden={c.n_hidden} units per sample"
                f"{' on average' if c.sparsity == 'batchtopk' else ''}: give k between 1 and "
                f"{c.n_hidden}, got k={c.k!r}")
    if c.aux_k is not None and c.hidden_activation != "relu":
        return ("AuxK (aux_k) tells dead units by their never firing, which needs "
                "hidden_activation='relu'")
    if c.aux_k is not None and c.aux_k > c.n_hidden:
        return f"aux_k must be at most n_hidden={c.n_hidden}, got {c.aux_k}"
    return None


def param_shapes(c, units=None):
    """The model's parameters by name, with their shapes, in the order of its flat buffer.
    With tied weights there is no decoder.W: the decoder uses encoder.W transposed. units:
    how many of the n_hidden units the model holds (a rank of a sharded dictionary: its
    share; None: all)."""
    m = c.n_hidden if units is None else units
    shapes = {"encoder.W": (c.n_inputs, m), "encoder.b": (m,),
              "decoder.W": (m, c.n_inputs), "decoder.b": (c.n_inputs,)}
    if c.tied_weights:
        del shapes["decoder.W"]
    if c.sparsity == "jumprelu":  # each unit's threshold, as its log
        shapes["coding.log_theta"] = (m,)
    return shapes


UNIT_AXIS = {"encoder.W": 1, "encoder.b": 0, "decoder.W": 0, "decoder.b": None,
             "coding.log_theta": 0}
"""The axis of each parameter along which its units lie (None: it has none, every rank of a
sharded dictionary holds it whole)."""


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
    "k": Field("--k", "units kept per sample by sparsity topk", metavar="K", type=int),
    "hidden_activation": Field("--hidden-activation", "the coding layer's activation",
                               HIDDEN_ACTIVATIONS),
    "tied_weights": Field("--tied-weights", "the decoder is the encoder's transpose",
                          type=bool),
    "l1_decoder_norm": Field("--l1-decoder-norm", "weigh the l1 penalty of unit j by the norm "
                             "of its decoder row (Anthropic 2024)", type=bool),
    "aux_k": Field("--aux-k", "AuxK: dead units per sample that reconstruct the residual "
                   "(Gao et al.; topk and batchtopk; 0 turns a preset's off)", metavar="N",
                   type=int),
    "aux_weight": Field("--aux-weight", "AuxK's weight alpha", metavar="ALPHA", type=float),
    "init": Field("--init", "initial weights: uniform (UFLDL's) or gao (unit-norm decoder rows, "
                  "the encoder their transpose: Gao et al.)", INITS),
    "jump_bandwidth": Field("--jump-bandwidth", "JumpReLU: eps, the width of the straight-"
                            "through rectangle", metavar="EPS", type=float),
    "jump_threshold": Field("--jump-threshold", "JumpReLU: each unit's initial threshold theta",
                            metavar="THETA", type=float),
    "subtract_decoder_bias": Field("--subtract-decoder-bias", "encode x - b2, the decoder's bias "
                                   "(Gao et al.; training starts b2 at the data's mean)",
                                   type=bool),
    "output_activation": Field("--output", "output activation", OUTPUT_ACTIVATIONS),
    "reconstruction_loss": Field("--loss", "reconstruction loss", RECONSTRUCTION_LOSSES),
    "reduction": Field("--reduction", "MSE scale: mean (book) or halfsum (UFLDL)", REDUCTIONS),
    "dtype": Field("--dtype", "float type", DTYPES),
}
"""The Config fields a user sets from the command line (n_inputs comes from the data, seed
from --seed), in the order `minisae train --help` lists them."""
