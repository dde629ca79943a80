"""Dead units during training: how long each unit has been silent, AuxK's dead set, and the
resampling of dead units (Anthropic, "Towards Monosemanticity", 2023).

A unit fires on a batch when it is active on at least one of its samples; for ReLU and TopK
codes (h >= 0) that is rho_hat_j > 0, read off the step's loss record at no cost. A unit is
dead once it has been silent for a window of training samples (Gao et al. use 10 million
tokens; minisae's default, 10,000 samples, is a sixth of an MNIST epoch: a unit of a TopK
model with k = 25 of 1000 units that is alive fires there about 250 times). fit takes the
window, and how often to resample, as one setting: DeadUnits(window, resample_every).

    activity = UnitActivity(model)
    ...after each step: activity.update(loss, batch_size)
    model.dead[...] = activity.dead(window)               # what AuxK reads
    resample(model, optimizer, x_train, dead, rng)         # new life for the dead units

The silent counts live on the model (`model.silent`, saved in checkpoints), so a resumed run
judges its units exactly as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np

from .. import checks
from ..backend import namespace, to_numpy
from ..errors import ConfigError

DEAD_WINDOW = 10_000
"""Training samples a unit may stay silent before it counts as dead."""
RESAMPLE_ROWS = 8_192
"""Training rows whose reconstruction errors choose the resampled units' new directions."""
ENCODER_SCALE = 0.2
"""A resampled unit's encoder vector: the chosen input's direction times this times the mean
norm of the living units' encoder vectors (Anthropic's recipe)."""


def tracks(model):
    """Why this model's dead units cannot be tracked during training, or None: firing is told
    from rho_hat > 0, which needs codes that are 0 when off (ReLU, TopK through a ReLU)."""
    if model.config.hidden_activation != "relu":
        return (f"dead units are told during training by their never firing, which needs "
                f"hidden_activation='relu' (got {model.config.hidden_activation!r})")
    return None


class UnitActivity:
    """Samples since each unit last fired, kept in model.silent (NumPy int64, (n_hidden,))."""

    def __init__(self, model):
        self.model = model

    def update(self, loss, batch):
        """After a step on `batch` samples whose loss record is `loss`."""
        silent = self.model.silent
        fired = loss.mean_activation > 0
        silent[fired] = 0
        silent[~fired] += batch

    def dead(self, window):
        """The units silent for at least `window` samples, (n_hidden,) NumPy bool."""
        return self.model.silent >= window

    def publish(self, window):
        """Set model.dead, on the model's device, for AuxK's next step."""
        dead = self.dead(window)
        model = self.model
        model.dead[...] = model.backend.asarray(dead, dtype=model.backend.xp.bool)
        return dead


def resample(model, optimizer, x, dead, rng, rows=RESAMPLE_ROWS):
    """Give each dead unit a new direction: an input the model reconstructs badly.

    1. the squared reconstruction error of up to `rows` random training rows;
    2. for each dead unit, one of them drawn with probability proportional to its error
       squared (Anthropic: the inputs the model gets most wrong);
    3. that input's direction, centred (minus the decoder bias the model subtracts, else
       minus the rows' mean), becomes the unit's decoder row, at the mean length of the rows
       of the units that live (Anthropic's decoder rows all have length 1; minisae's are not
       held to a length, and a row of length 1 among rows of 0.1 would swamp the
       reconstruction); its encoder column is the same direction scaled to ENCODER_SCALE
       times the mean encoder norm of the units that live, and its encoder bias is 0;
    4. the optimizer's state for those entries (Adam's m and v, SGD's u) is reset to 0, so no
       stale momentum pushes the new unit; the unit's silent count starts again.

    x: the training set (NumPy, checked), or a row source (minisae.data.ArrayFiles), of which
    a random run of `rows` consecutive rows is read. dead: (n_hidden,) bool. Returns how many
    units were resampled. Everything else (the other units, their state) is left exactly as
    it was."""
    dead = np.asarray(dead, dtype=bool)
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0
    sample = _sample(x, rng, rows)
    error = np.square(to_numpy(model.reconstruct(sample)).astype(np.float64) - sample).sum(axis=1)
    weights = error ** 2
    total = weights.sum()
    p = weights / total if total > 0 and math.isfinite(total) else None
    chosen = sample[rng.choice(len(sample), size=n_dead, p=p)].astype(np.float64)
    if model.normalizer is not None:  # the model's directions live where its inputs do
        chosen = model.normalizer.apply(chosen)
        sample = model.normalizer.apply(sample.astype(np.float64))
    # centred as the encoder sees it (x - b2 with a subtracted decoder bias, else minus the
    # rows' mean): an uncentred image direction would fire on every input alike
    centre = to_numpy(model.params["decoder.b"]).astype(np.float64) \
        if model.config.subtract_decoder_bias else sample.mean(axis=0)
    chosen = chosen - centre
    lengths = np.linalg.norm(chosen, axis=1, keepdims=True)
    directions = chosen / np.where(lengths > 0, lengths, 1.0)

    W1 = to_numpy(model.params["encoder.W"]).astype(np.float64)
    alive = _mean_norm(np.linalg.norm(W1, axis=0), dead)
    units = np.flatnonzero(dead)
    _set_columns(model.params["encoder.W"], units, (ENCODER_SCALE * alive * directions).T)
    _set_entries(model.params["encoder.b"], units, np.zeros(n_dead))
    if "decoder.W" in model.params:  # at the length of the living units' rows (Anthropic's
        W2 = to_numpy(model.params["decoder.W"]).astype(np.float64)  # are all 1)
        _set_rows(model.params["decoder.W"], units,
                  _mean_norm(np.linalg.norm(W2, axis=1), dead) * directions)
    _reset_state(optimizer, units)
    model.silent[units] = 0
    return n_dead


def _mean_norm(norms, dead):
    """The mean of the living units' norms (1 when none lives)."""
    return float(norms[~dead].mean()) if (~dead).any() else 1.0


def _sample(x, rng, rows):
    """Up to `rows` training rows: drawn at random from an array; a random run of consecutive
    rows of a source (reading scattered rows of a file would cost a read each)."""
    if isinstance(x, np.ndarray):
        return x[rng.choice(len(x), size=min(rows, len(x)), replace=False)]
    n = min(rows, x.n_rows)
    start = int(rng.integers(0, x.n_rows - n + 1))
    return x.read(start, start + n)


def _device(array, values):
    return namespace(array).asarray(values, dtype=array.dtype, device=array.device)


def _set_columns(W, units, values):
    for i, j in enumerate(units):
        W[:, int(j)] = _device(W, values[:, i])


def _set_rows(W, units, values):
    for i, j in enumerate(units):
        W[int(j), :] = _device(W, values[i])


def _set_entries(b, units, values):
    for i, j in enumerate(units):
        b[int(j)] = float(values[i])


def _reset_state(optimizer, units):
    """Zero the optimizer's per-parameter state for the resampled units' entries."""
    for slot in getattr(type(optimizer), "SLOTS", ()):
        state = getattr(optimizer, slot)
        for j in units:
            j = int(j)
            state["encoder.W"][:, j] = 0.0
            state["encoder.b"][j] = 0.0
            if "decoder.W" in state:
                state["decoder.W"][j, :] = 0.0


class DeadUnits:
    """How training treats dead units (ReLU codes): what fit takes as dead_units.

        fit(model, opt, x, epochs=30, batch_size=256,
            dead_units=DeadUnits(window=10_000, resample_every=1_000))

    window: training samples a unit may stay silent before it counts as dead (what AuxK
    reconstructs from, what is resampled, and the history's train_dead_fraction).
    resample_every: give the dead units new directions every this many steps (resample);
    None: never. Resampling needs ReLU codes, which fit checks against the model."""

    def __init__(self, window=DEAD_WINDOW, resample_every=None):
        self.window = checks.check_int(window, "window", 1)
        self.resample_every = checks.check_optional(resample_every, checks.check_int,
                                                    "resample_every", 1)

    def __repr__(self):
        return f"DeadUnits(window={self.window:_}, resample_every={self.resample_every})"


def check_resampling(model, dead_units):
    """dead_units (a DeadUnits) checked against the model: its resample_every, or None."""
    every = dead_units.resample_every
    problem = tracks(model) if every is not None else None
    if problem:
        raise ConfigError(f"resample_every={every}: resampling dead units: {problem}")
    return every
