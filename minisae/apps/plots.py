"""Pictures of a sparse autoencoder, written as PNG files.

Each picture has two functions: `<name>_figure(...)` builds and returns a matplotlib Figure
(to show in a notebook, or to inspect in a test), and `<name>(..., path)` writes that figure
to `path` as a PNG and returns it as a Path. Arrays may be NumPy or CuPy (they are copied to
the host here, at the edge). Figures are built with matplotlib's object API and the Agg
canvas, never pyplot, so nothing global is touched: this works headless and in threads.
The PNG goes to a temporary file in the same folder and is then renamed over `path`, so a
crash never leaves a half-written image behind.
"""

import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..checks import check_fits, check_int, check_path, is_real, physical_memory, shown
from ..backend import to_numpy
from ..errors import ConfigError, InputError
from ..files.atomic import atomic_write
from ..functional import kl_divergence

DPI = 100
LOSS_COLORS = {"total": "k", "reconstruction": "tab:blue", "sparsity": "tab:orange",
               "weight_decay": "tab:purple"}
"""Colours of the usual loss parts; training_curves draws every part the history has (keys
"train_<part>", "val_<part>"), other parts in the colours of OTHER_COLORS."""
OTHER_COLORS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
NOT_LOSSES = ("mean_activation", "l0", "dead_fraction", "dense_fraction", "fvu")
SHOWABLE = 1e100
"""The largest magnitude a figure is given to draw (see _showable)."""
"""History keys of a split that are diagnostics, not loss parts."""


# ------------------------------------------------------------------------------ checks

def _figure(width, height):
    """A Figure (width x height inches) on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write fig as a PNG to path atomically (temp file + os.replace); return the Path."""
    path = Path(check_path(path, "path (a file name such as "
                                        "'runs/book/features.png')"))
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass a file name such as {path / 'figure.png'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: its folder cannot be made "
                          f"({e.strerror or e})") from None
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=DPI)
    fig.clear()  # no pyplot registry holds it: dropping the last reference frees it
    return path


def _array(a, name, hint):
    """a (NumPy or CuPy) as a float64 NumPy array; InputError if it is not numeric."""
    try:
        return np.asarray(to_numpy(a), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric array; {hint}") from None


def _positive_int(value, name, example):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer such as {example}, got "
                          f"{shown(value)}")
    return int(value)


def _image_shape(image_shape):
    """(height, width) as two positive ints, or ConfigError."""
    try:
        h, w = image_shape
    except (TypeError, ValueError):
        h = w = None
    if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0
               for n in (h, w)):
        raise ConfigError(f"image_shape must be (height, width) in pixels, e.g. (28, 28) for "
                          f"MNIST or (8, 8) for image patches; got {shown(image_shape)}")
    return int(h), int(w)


def _unit_interval(value, name):
    """A float strictly inside (0, 1), or ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ConfigError(f"{name} must be a number in (0, 1), such as 0.1, got "
                          f"{shown(value)}")
    return float(value)


def _check_weights(W, image_shape, name="W"):
    """W as a finite float64 (n_pixels, n_units) NumPy array, n_units >= 1."""
    h, w = _image_shape(image_shape)
    hint = "pass model.params['encoder.W'], of shape (n_inputs, n_hidden)"
    W = _array(W, name, hint)
    if W.ndim != 2 or W.shape[0] != h * w:
        raise InputError(f"{name} must be encoder weights of shape ({h * w}, n_units) for "
                         f"images of shape {(h, w)} (image_shape), got {W.shape}; {hint}, and "
                         f"image_shape to match")
    if W.shape[1] == 0:
        raise InputError(f"{name} has no units (shape {W.shape}); {hint}")
    if not np.isfinite(W).all():
        raise InputError(f"{name} holds NaN or inf (did training diverge?); pass finite weights")
    return W


def _title(title, name):
    if title is not None and not isinstance(title, str):
        raise ConfigError(f"{name} must be a str (or None), got {shown(title)}")


def _showable(a):
    """Values a figure can place on an axis (beyond 1e100 its transforms overflow: such a
    number comes from a diverged run)."""
    return np.abs(a).max(initial=0.0) <= SHOWABLE


def _check_points(points):
    """frontier's points: {mechanism (str): [(l0, fvu, label (str)), ...]}."""
    ok = isinstance(points, Mapping) and all(
        isinstance(kind, str) and isinstance(pts, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 3 and is_real(p[0]) and is_real(p[1])
            and _showable(np.array(p[:2], float))
            and isinstance(p[2], str) for p in pts) for kind, pts in points.items())
    if not ok:
        raise InputError(f"points must map each mechanism to a list of (l0, fvu, label), as "
                         f"experiments.frontier gives; got {shown(points)}")


def _check_penalties(deviation, gradients):
    """penalty_figure's data as float64 arrays: deviation {kind: per-epoch values}, gradients
    {kind: (rho_hat values, |gradient| values) of one length}."""
    hint = "as experiments.penalties and experiments.gradient_curves give"
    if not isinstance(deviation, Mapping) or not all(isinstance(k, str) for k in deviation):
        raise InputError(f"deviation must map each penalty to its values per epoch, {hint}; got "
                         f"{shown(deviation)}")
    if not isinstance(gradients, Mapping) or not all(
            isinstance(k, str) and isinstance(v, tuple) and len(v) == 2
            for k, v in gradients.items()):
        raise InputError(f"gradients must map each penalty to (rho_hat, |gradient|), {hint}; "
                         f"got {shown(gradients)}")
    deviation = {k: _array(v, "deviation", hint).ravel() for k, v in deviation.items()}
    gradients = {k: tuple(_array(a, "gradients", hint).ravel() for a in v)
                 for k, v in gradients.items()}
    if any(len(q) != len(g) for q, g in gradients.values()) or not all(
            np.isfinite(a).all() and _showable(a)
            for a in [*deviation.values(), *sum(gradients.values(), ())]):
        raise InputError(f"gradients' two arrays must be of one length, and every value of "
                         f"deviation and gradients finite; {hint}")
    return deviation, gradients


# ------------------------------------------------------------------------------ feature grids

def tile_images(W, image_shape=(28, 28), n_cols=None, pad=1):
    """UFLDL's display_network: one tile per column of W, (n_inputs, n_units) -> 2-D image.

    Each tile is centred and divided by its largest |value|, so it lies in [-1, 1]
    (a constant tile becomes 0). Unit k sits at grid row k // n_cols, column k % n_cols;
    n_cols defaults to ceil(sqrt(n_units)). Padding and empty slots are -1 (black).
    Shape: (pad + n_rows * (h + pad), pad + n_cols * (w + pad)).
    """
    W = _check_weights(W, image_shape)
    h, w = _image_shape(image_shape)
    if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
        raise ConfigError(f"pad must be a whole number of pixels >= 0, such as 1, got "
                          f"{shown(pad)}")
    pad = int(pad)
    n_units = W.shape[1]
    if n_cols is None:
        n_cols = math.ceil(math.sqrt(n_units))
    n_cols = _positive_int(n_cols, "n_cols", 14)
    n_rows = math.ceil(n_units / n_cols)
    check_fits(8 * (pad + n_rows * (h + pad)) * (pad + n_cols * (w + pad)),
                      physical_memory(), f"a grid of n_cols={n_cols:,} and pad={pad:,}",
                      "use fewer columns or less padding")

    centred = W - W.mean(axis=0)
    scale = np.abs(centred).max(axis=0, initial=0.0)
    # test the raw spread, not scale > 0: rounding in the mean leaves ~1e-17 residues
    # in a constant column, and dividing by them would blow noise up to +-1
    varies = np.ptp(W, axis=0) > 0
    tiles = np.where(varies, centred / np.where(varies, scale, 1.0), 0.0)

    canvas = np.full((pad + n_rows * (h + pad), pad + n_cols * (w + pad)), -1.0)
    for k in range(n_units):
        r, c = divmod(k, n_cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        canvas[top:top + h, left:left + w] = tiles[:, k].reshape(h, w)
    return canvas


def unit_count(n_shown, n_units):
    """ "first 196 of 1000 units" for a subset, "all 25 units" when every unit is shown."""
    n_units = check_int(n_units, "n_units", 0)
    n_shown = check_int(n_shown, "n_shown", 0)
    if n_shown > n_units:
        raise ConfigError(f"n_shown={n_shown} is more than n_units={n_units}")
    if n_shown < n_units:
        return f"first {n_shown} of {n_units} units"
    return f"all {n_units} unit" + ("s" if n_units != 1 else "")


def _grid_panel(W, image_shape, max_units, title, name="W"):
    """(canvas, title lines) for one feature grid; the count line is added unless the
    caller's title already says it."""
    W = _check_weights(W, image_shape, name)
    max_units = _positive_int(max_units, "max_units", 196)
    shown = W[:, :max_units]
    count = unit_count(shown.shape[1], W.shape[1])
    title = "" if title is None else str(title)
    says_count = count in title or (shown.shape[1] == W.shape[1] and f"{W.shape[1]} units" in title)
    lines = title if says_count else f"{title}\n{count}".strip()
    return tile_images(shown, image_shape), lines


def _zoom(canvas, long_px):
    """Screen pixels per canvas pixel so the long side comes near long_px: a whole number
    from 1 to 8, so every tile pixel and every 1-pixel gap shows at the same size (a 5x5
    grid of 8x8 patches: 8x; 14x14 MNIST tiles: 2x); below 1 only for huge grids."""
    long_side = max(canvas.shape)
    if long_side > long_px:
        return long_px / long_side
    return min(8, long_px // long_side)


GRID_CAPTION = "each tile centred and scaled on its own (gray = its mean)"


def _grids_figure(panels, image_shape, max_units, long_px):
    """One row of feature grids, each shown at a whole-number zoom (_zoom), titles above and
    a caption below; the figure is sized around them (no tight_layout guesswork)."""
    grids = [_grid_panel(W, image_shape, max_units, title, name)
             for name, (title, W) in panels]
    sizes = [np.array(canvas.shape[::-1]) * _zoom(canvas, long_px) / DPI for canvas, _ in grids]
    box_w, box_h = max(w for w, _ in sizes), max(h for _, h in sizes)
    n_lines = max(lines.count("\n") + 1 for _, lines in grids)
    top, bottom = 0.15 + 0.22 * n_lines, 0.35
    panel_w = max(box_w, 3.0) + 0.4  # at least 3 in, so a title fits
    fig = _figure(panel_w * len(grids), box_h + top + bottom)
    fig_w, fig_h = fig.get_size_inches()
    for i, ((canvas, lines), (w, h)) in enumerate(zip(grids, sizes)):
        left, low = i * panel_w + (panel_w - w) / 2, bottom + box_h - h
        ax = fig.add_axes([left / fig_w, low / fig_h, w / fig_w, h / fig_h])
        ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1,
                  interpolation="nearest" if w * DPI >= canvas.shape[1] else "antialiased")
        ax.set_axis_off()
        ax.set_title(lines, fontsize=11)
    fig.text(0.5, 0.08 / fig_h, GRID_CAPTION, ha="center", va="bottom", fontsize=8,
             color="0.3")
    return fig


def feature_grid_figure(W, image_shape=(28, 28), max_units=196, title=None):
    """A Figure of the first max_units filters (columns of W, (n_inputs, n_units)), tiled as
    by tile_images; the title says how many of the units it shows."""
    _title(title, "title")
    return _grids_figure([("W", (title, W))], image_shape, max_units, long_px=900)


def feature_grid(W, path, image_shape=(28, 28), max_units=196, title=None):
    """Grayscale grid of the first max_units filters (columns of W, (n_inputs, n_units))."""
    return _save(feature_grid_figure(W, image_shape, max_units, title), path)


def feature_grids_side_by_side_figure(panels, image_shape=(28, 28), max_units=196):
    """A Figure with one feature grid per (title, W) in panels, side by side."""
    pairs = [tuple(p) for p in panels if isinstance(p, (tuple, list)) and len(p) == 2] \
        if isinstance(panels, (list, tuple)) else []
    if not pairs or len(pairs) != len(panels):
        raise InputError("panels must be a list of (title, W) pairs, e.g. [('book', W_book), "
                         f"('ufldl', W_ufldl)]; got {shown(panels)}")
    for i, (title, _) in enumerate(pairs):
        _title(title, f"panels[{i}]'s title")
    return _grids_figure([(f"panels[{i}]'s W", p) for i, p in enumerate(pairs)], image_shape,
                         max_units, long_px=600)


def feature_grids_side_by_side(panels, path, image_shape=(28, 28), max_units=196):
    """One feature grid per (title, W) in panels, side by side, e.g. two training presets."""
    return _save(feature_grids_side_by_side_figure(panels, image_shape, max_units), path)


# ------------------------------------------------------------------------------ reconstructions

def reconstructions_figure(x, x_hat, n=10, image_shape=(28, 28)):
    """Originals x over reconstructions x_hat, both (batch, n_in) in [0, 1]; first n rows."""
    h, w = _image_shape(image_shape)
    hint = f"pass x and model.reconstruct(x), both of shape (batch, {h * w})"
    x, x_hat = _array(x, "x", hint), _array(x_hat, "x_hat", hint)
    if x.shape != x_hat.shape or x.ndim != 2 or x.shape[1] != h * w:
        raise InputError(f"x and x_hat must both be (batch, {h * w}) for images of shape "
                         f"{(h, w)} (image_shape), got {x.shape} and {x_hat.shape}; {hint}")
    if len(x) == 0:
        raise InputError(f"reconstructions needs at least one image, got an empty batch; {hint}")
    n = min(_positive_int(n, "n", 10), len(x))
    fig = _figure(max(1.1 * n, 2.5), 2.5)
    axes = fig.subplots(2, n, squeeze=False)
    for row, (images, label) in enumerate([(x, "original"), (x_hat, "reconstruction")]):
        for i, ax in enumerate(axes[row]):
            ax.imshow(images[i].reshape(h, w), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def reconstructions(x, x_hat, path, n=10, image_shape=(28, 28)):
    """Originals x over reconstructions x_hat, both (batch, n_in) in [0, 1]; first n rows."""
    return _save(reconstructions_figure(x, x_hat, n, image_shape), path)


# ------------------------------------------------------------------------------ activations

def _bin_range(rho_hat):
    """(lo, hi) for the bins: all of rho_hat, unless a few far outliers (a dead unit at 0,
    one stuck near 1) would squeeze the rest into one bar; then the 1st..99th percentile
    widened by half its width on each side, and the caller counts the units left out."""
    lo, hi = rho_hat.min(), rho_hat.max()
    q_lo, q_hi = np.percentile(rho_hat, [1, 99])
    if q_hi - q_lo < 0.1 * (hi - lo):
        pad = 0.5 * (q_hi - q_lo)
        lo, hi = max(lo, q_lo - pad), min(hi, q_hi + pad)
    if hi - lo < 1e-6 * max(1.0, abs(lo)):  # every unit alike: one narrow bar
        pad = 5e-4 * max(1.0, abs(lo))
        lo, hi = lo - pad, hi + pad
    return lo, hi


def activation_histogram_figure(mean_activation, target=None):
    """Histogram of the per-unit mean activations rho_hat, (n_hidden,), against the target
    (None: a model whose sparsity has no target, L1 or TopK).

    The x axis spans the data and the target (plus 5%), not all of [0, 1]; 10 to 50 bins
    (NumPy's "auto" rule) cover the data, so a tight cluster near the target shows its
    spread. Far outliers are counted in the title instead of stretching the axis."""
    hint = "pass rho_hat, one mean activation per hidden unit: evaluate(model, x, per_unit=True)[1]"
    rho_hat = _array(mean_activation, "mean_activation", hint).ravel()
    if rho_hat.size == 0 or not np.isfinite(rho_hat).all() or not _showable(rho_hat):
        raise InputError(f"mean_activation must hold one finite value per hidden unit, got "
                         f"{rho_hat.size} values (NaN/inf, or beyond {SHOWABLE:g}, included); "
                         f"{hint}")
    target = None if target is None else _unit_interval(target, "target")
    lo, hi = _bin_range(rho_hat)
    edges = np.histogram_bin_edges(rho_hat, "auto", range=None if np.ptp(rho_hat) else (lo, hi))
    n_bins = int(np.clip(len(edges) - 1, 10, 50))
    view_lo, view_hi = (lo, hi) if target is None else (min(lo, target), max(hi, target))
    margin = 0.05 * (view_hi - view_lo)

    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ax.hist(rho_hat, bins=np.linspace(lo, hi, n_bins + 1), color="tab:blue", alpha=0.8,
            edgecolor="white", linewidth=0.5)
    if target is not None:
        ax.axvline(target, color="tab:red", linestyle="--", label=f"target rho = {target:g}")
    ax.axvline(rho_hat.mean(), color="k", linestyle=":",
               label=f"mean rho_hat = {rho_hat.mean():.3g}")
    ax.set_xlim(view_lo - margin, view_hi + margin)
    ax.ticklabel_format(axis="x", useOffset=False)  # 0.0995, not "-5e-4 + 1e-1"
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("mean activation of a hidden unit (rho_hat_j)")
    ax.set_ylabel("number of units")
    ax.set_title(_histogram_title(rho_hat, lo, hi), fontsize=11)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def _histogram_title(rho_hat, lo, hi):
    """ "1000 hidden units, rho_hat from 0.0964 to 0.109", plus a line counting the units
    outside [lo, hi] when there are any."""
    title = f"{rho_hat.size} hidden units, rho_hat from {rho_hat.min():.3g} to {rho_hat.max():.3g}"
    below, above = int((rho_hat < lo).sum()), int((rho_hat > hi).sum())
    if below or above:
        title += (f"\n{below + above} off this axis: {below} below {lo:.3g}, "
                  f"{above} above {hi:.3g}")
    return title


def activation_histogram(mean_activation, target, path):
    """Histogram of the per-unit mean activations rho_hat, (n_hidden,), against the target rho."""
    return _save(activation_histogram_figure(mean_activation, target), path)


# ------------------------------------------------------------------------------ training curves

def _series(history, key):
    """history[key] as floats, None/NaN/inf -> nan (an array entry counts as its mean)."""
    values = history.get(key) or []
    try:
        y = np.array([np.nan if v is None else float(np.mean(to_numpy(v))) for v in values],
                     dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"history[{key!r}] must be a list with one number per epoch (None "
                         f"where not measured); pass History.as_dict()") from None
    y[~np.isfinite(y)] = np.nan
    return y


def _loss_series(history, splits):
    """[(y, style, color, label)] for every loss series with a nonzero value, and the labels
    of the parts that are 0 at every epoch ("weight decay" when both splits are; "train
    sparsity" when only one is): a log axis cannot show them, so they get a legend note."""
    drawn, zero = [], []
    for part, color in _loss_parts(history).items():
        name, zero_here, n_drawn = part.replace("_", " "), [], len(drawn)
        for split, (style, split_label) in splits.items():
            y = _series(history, f"{split}_{part}")
            if not np.isfinite(y).any():
                continue  # missing key, empty list, or never measured
            if np.nanmax(np.abs(y)) == 0:
                zero_here.append(f"{split_label} {name}")
            else:
                drawn.append((y, style, color, f"{split_label} {name}"))
        if zero_here:
            zero += zero_here if len(drawn) > n_drawn else [name]
    return drawn, zero


def _loss_parts(history):
    """{part: colour} for the loss parts the history records, the usual ones first."""
    found = []
    for key in history:
        split, _, part = key.partition("_")
        if split in ("train", "val") and part and part not in NOT_LOSSES and part not in found:
            found.append(part)
    known = [p for p in LOSS_COLORS if p in found]
    others = [p for p in found if p not in LOSS_COLORS]
    return {**{p: LOSS_COLORS[p] for p in known},
            **{p: OTHER_COLORS[i % len(OTHER_COLORS)] for i, p in enumerate(others)}}


def _check_history(history):
    """history as a Mapping (a History is turned into its dict), or InputError."""
    if hasattr(history, "as_dict"):
        history = history.as_dict()
    if not isinstance(history, Mapping):
        raise InputError(f"history must map names like 'train_total' to per-epoch lists; "
                         f"pass History.as_dict(), got {type(history).__name__}")
    return history


def training_curves_figure(history, val_label="validation", sparsity_target=None):
    """Losses per epoch (left) and the mean activation (right), train solid, held out dashed.

    history maps "train_<part>" and "val_<part>" (part: total, reconstruction, sparsity,
    weight_decay, mean_activation) to per-epoch lists, as History.as_dict() gives; missing
    keys, empty lists and None entries are skipped. val_label names the held-out split in
    the legend ("test" when it is the test set). A part that is 0 at every epoch (weight
    decay with lambda = 0) is not drawn but named in the legend; the loss axis is log
    when every drawn value is positive. sparsity_target, if given, is marked on the right.
    """
    history = _check_history(history)
    if not isinstance(val_label, str) or not val_label.strip():
        raise ConfigError(f"val_label must name the held-out split, e.g. 'test' or "
                          f"'validation', got {shown(val_label)}")
    splits = {"train": ("-", "train"), "val": ("--", val_label.strip())}
    diagnostics = _diagnostic_series(history, splits)
    fig = _figure(18 if diagnostics else 12, 4.2)
    axes = fig.subplots(1, 3 if diagnostics else 2)
    ax_loss, ax_act = axes[0], axes[1]
    drawn, zero = _loss_series(history, splits)
    for y, style, color, label in drawn:
        ax_loss.plot(np.arange(1, len(y) + 1), y, style, color=color, marker=".", label=label)
    for label in zero:
        ax_loss.plot([], [], " ", label=f"{label} = 0 (not drawn)")
    log = bool(drawn) and all((y[np.isfinite(y)] > 0).all() for y, *_ in drawn)
    if log:
        ax_loss.set_yscale("log")
    # up to 8 loss curves: their legend goes outside, to the right, where it hides none
    _finish_curves(ax_loss, "loss" + (" (log scale)" if log else ""), "loss",
                   dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0))
    _activation_curves(ax_act, history, splits, sparsity_target)
    _finish_curves(ax_act, "mean activation", "mean over units of rho_hat_j", {})
    if diagnostics:
        _diagnostic_curves(axes[2], diagnostics)
    fig.tight_layout()
    return fig


DIAGNOSTICS = {"l0": ("L0 (active units per sample)", "tab:blue", "left"),
               "dead_fraction": ("dead units (share)", "tab:red", "right"),
               "dense_fraction": ("dense units (share)", "tab:orange", "right")}
"""The sparsity diagnostics the third panel draws, when the history has them."""


def _diagnostic_series(history, splits):
    """[(y, style, color, label, side)] for L0 and the dead and dense shares per epoch."""
    found = []
    for key, (label, color, side) in DIAGNOSTICS.items():
        for split, (style, split_label) in splits.items():
            y = _series(history, f"{split}_{key}")
            if np.isfinite(y).any():
                found.append((y, style, color, f"{split_label} {label}", side))
    return found


def _diagnostic_curves(ax, series):
    """L0 on the left axis, the dead and dense shares on a right axis from 0 to 1."""
    right = ax.twinx()
    for y, style, color, label, side in series:
        (ax if side == "left" else right).plot(np.arange(1, len(y) + 1), y, style, color=color,
                                               marker=".", label=label)
    right.set_ylim(-0.02, 1.02)
    right.set_ylabel("share of the units")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    _finish_curves(ax, "sparsity", "active units per sample (L0)", {})
    if handles:
        ax.legend(handles, labels, fontsize=8)


def _activation_curves(ax, history, splits, sparsity_target):
    """Mean rho_hat per epoch for each split, and the target rho as a line kept in view."""
    if sparsity_target is not None:
        sparsity_target = _unit_interval(sparsity_target, "sparsity_target")
    for split, (style, split_label) in splits.items():
        y = _series(history, f"{split}_mean_activation")
        if np.isfinite(y).any():
            ax.plot(np.arange(1, len(y) + 1), y, style, color="tab:green", marker=".",
                    label=f"{split_label} mean rho_hat")
    if sparsity_target is not None and ax.lines:
        ax.axhline(sparsity_target, color="tab:red", linestyle=":",
                   label=f"target rho = {sparsity_target:g}")
        low, high = ax.get_ylim()  # axhline leaves the limits alone: widen them to show it
        pad = 0.05 * (max(high, sparsity_target) - min(low, sparsity_target))
        ax.set_ylim(min(low, sparsity_target - pad), max(high, sparsity_target + pad))


def _finish_curves(ax, title, ylabel, legend):
    """Epoch axis with integer ticks, title, y label, and a legend or a "no data" note."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, **legend)
    if not ax.lines or all(len(line.get_xdata()) == 0 for line in ax.lines):
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def training_curves(history, path, val_label="validation", sparsity_target=None):
    """Losses per epoch and mean activation; see training_curves_figure."""
    return _save(training_curves_figure(history, val_label, sparsity_target), path)


# ------------------------------------------------------------------------------ the KL penalty

def sparsity_loss_curves_figure(target=0.1):
    """Géron's figure: KL(p || q), |p - q| and (p - q)^2 against the actual sparsity q."""
    p, q = _unit_interval(target, "target sparsity"), np.linspace(0.001, 0.999, 500)
    kl = kl_divergence(p, q)
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    ax.plot([p, p], [0, 0.3], "k:")
    ax.text(p, 0.32, "Target\nsparsity", ha="center")
    ax.plot(q, kl, "b-", label="KL divergence")
    ax.plot(q, np.abs(p - q), "g--", label=r"MAE ($\ell_1$)")
    ax.plot(q, (p - q) ** 2, "r--", linewidth=1, label=r"MSE ($\ell_2$)")
    ax.axis([0, 1, 0, 0.95])
    ax.set_xlabel("Actual sparsity q")
    ax.set_ylabel("Cost")
    ax.set_title(f"Sparsity loss for target p = {p:g}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def sparsity_loss_curves(path, target=0.1):
    """Géron's figure: KL(p || q), |p - q| and (p - q)^2 against the actual sparsity q."""
    return _save(sparsity_loss_curves_figure(target), path)


# ------------------------------------------------------------------------------ experiments

MECHANISM_COLORS = {"kl": "tab:blue", "squared": "tab:orange", "absolute": "tab:green",
                    "l1": "tab:purple", "topk": "tab:red"}


def frontier_figure(points):
    """Fraction of variance unexplained against L0 (log scale), one line per mechanism:
    points = {mechanism: [(l0, fvu, label), ...]} (experiments.frontier's figure data)."""
    _check_points(points)
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    for kind, pts in points.items():
        pts = sorted(p for p in pts if p[0] > 0 and np.isfinite(p[1]))
        if not pts:
            continue
        l0, fvu = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(l0, fvu, marker="o", color=MECHANISM_COLORS.get(kind), label=kind)
        for x, y, label in pts:
            ax.annotate(label, (x, y), fontsize=7, textcoords="offset points", xytext=(4, 3))
    ax.set_xscale("log")
    ax.set_xlabel("L0: active units per sample (log scale)")
    ax.set_ylabel("fraction of variance unexplained (test)")
    ax.set_title("the sparsity-reconstruction frontier")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    return fig


def frontier(points, path):
    """frontier_figure written as a PNG."""
    return _save(frontier_figure(points), path)


def penalty_figure(deviation, gradients, target=0.1):
    """Left: each penalty's test mean |rho_hat_j - rho| per epoch (experiments.penalties);
    right: |d penalty / d rho_hat| against rho_hat at beta = 1 (experiments.gradient_curves),
    log scale, the target marked."""
    deviation, gradients = _check_penalties(deviation, gradients)
    target = _unit_interval(target, "target")
    fig = _figure(12, 4.2)
    left, right = fig.subplots(1, 2)
    for kind, y in deviation.items():
        left.plot(np.arange(1, len(y) + 1), y, color=MECHANISM_COLORS.get(kind), label=kind)
    left.set_yscale("log")
    _finish_curves(left, "how close rho_hat gets to rho (test)", "mean over units of "
                   "|rho_hat_j - rho|", {})
    for kind, (q, g) in gradients.items():
        right.plot(q, np.where(g > 0, g, np.nan), color=MECHANISM_COLORS.get(kind), label=kind)
    right.axvline(target, color="k", linestyle=":", label=f"target rho = {target:g}")
    right.set_yscale("log")
    right.set_xlabel("rho_hat_j")
    right.set_ylabel("|d penalty / d rho_hat_j| at beta = 1")
    right.set_title("the gradient each penalty gives a unit")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def penalties(deviation, gradients, path, target=0.1):
    """penalty_figure written as a PNG."""
    return _save(penalty_figure(deviation, gradients, target), path)
