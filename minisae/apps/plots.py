"""Pictures of a sparse autoencoder, written as PNG files.

Each picture has two functions: `<name>_figure(...)` builds and returns a matplotlib Figure
(to show in a notebook, or to inspect in a test), and `<name>(..., path)` writes that figure
to `path` as a PNG and returns it as a Path. Arrays may be NumPy or CuPy (they are copied to
the host here, at the edge). Figures are built with matplotlib's object API and the Agg
canvas, never pyplot, so nothing global is touched: this works headless and in threads.
The PNG goes to a temporary file in the same folder and is then renamed over `path`, so a
crash never leaves a half-written image behind.

Images only where the data are images. The figures that draw rows or filters as pictures
(feature_grid, feature_grids_side_by_side, tile_images, reconstructions) take image_shape,
(height, width) in pixels: (28, 28) for MNIST (their default), (p, p) for p x p patches, a
user's --image-shape; None means the rows are vectors (activations of a language model,
embeddings), and those functions refuse it rather than fold a vector into a "picture" because
its width happens to be square. For vectors, draw what says something about vectors:
feature_density (log10 of each unit's firing frequency, dead units counted apart),
decoder_norms (the norms of the decoder's rows) and l0_curves (the codes' L0 per epoch).
run_figures writes the right set for a trained model, by image_shape; figure_names lists it.

No axis carries an offset ("+7.999" above a constant L0 of 8 reads as a drop): every figure
passes through _no_offsets, and a curve that barely moves gets limits that show it flat.
"""

import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, ScalarFormatter

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
NOT_LOSSES = ("mean_activation", "l0", "dead_fraction", "dense_fraction", "fvu", "log10_density")
"""History keys of a split that are diagnostics, not loss parts."""
SHOWABLE = 1e100
"""The largest magnitude a figure is given to draw (see _showable)."""


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
    # no pyplot registry holds fig: once dropped, the garbage collector frees it (a
    # fig.clear() here would only rebuild every axes, empty, for nothing: 0.1 s for 20 axes)
    return path


def _tight_layout(fig):
    """fig.tight_layout(), once, now. It leaves a placeholder layout engine on the figure,
    and savefig, seeing an engine, would first run a whole draw just to lay it out (it does
    nothing) and then draw again: the figure's cost twice. Nothing is left to lay out, so
    the figure goes back to having no engine, as when it was made."""
    fig.tight_layout()
    if hasattr(fig, "set_layout_engine"):  # matplotlib >= 3.6 (3.5 has no layout engines)
        fig.set_layout_engine(None)


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


VECTORS = ("image_shape=None: the rows are vectors, not images, so there is nothing to draw "
           "as a picture; draw feature_density, decoder_norms and l0_curves instead (run_figures "
           "does), or give image_shape=(height, width) if the rows are images")


def _image_shape(image_shape):
    """(height, width) as two positive ints, or ConfigError (None: the rows are vectors)."""
    if image_shape is None:
        raise ConfigError(VECTORS)
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


def _no_offsets(fig):
    """Plain tick labels on every linear axis of fig: no "+7.999" or "1e-3" offset text, which
    turns a constant into what looks like a change. Returns fig."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            formatter = axis.get_major_formatter()
            if isinstance(formatter, ScalarFormatter):
                formatter.set_useOffset(False)
    return fig


def _flat_stays_flat(ax):
    """A linear y axis whose curves barely move (less than 1% of their size, e.g. TopK's L0,
    which is k at every epoch) gets limits of +-5% around them, so they show flat, not
    magnified into a slope."""
    if ax.get_yscale() != "linear":
        return
    y = [np.asarray(line.get_ydata(), float) for line in ax.lines]
    y = np.concatenate([v[np.isfinite(v)] for v in y]) if y else np.array([])
    if y.size == 0:
        return
    lo, hi = y.min(), y.max()
    size = max(abs(lo), abs(hi))
    if size > 0 and hi - lo < 0.01 * size:
        ax.set_ylim(lo - 0.05 * size, hi + 0.05 * size)


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
    return _no_offsets(fig)


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
    gap = max(1, round(max(h, w) / 6))  # between tiles, in image pixels: 5 for 28x28 digits
    row_w = n * w + (n - 1) * gap
    fig = _figure(max(1.1 * n, 2.5), 2.5)
    fig_w, fig_h = fig.get_size_inches()
    margin, margin_left = 0.15, 0.32  # inches; the left one holds the row labels
    room_w, room_h = fig_w - margin_left - margin, fig_h - 2 * margin
    inch = min(room_w / row_w, room_h / (2 * h + gap))  # inches per image pixel
    width, height = inch * row_w, inch * h
    for row, (images, label) in enumerate([(x, "original"), (x_hat, "reconstruction")]):
        # One image per row, its n tiles side by side with NaN between them (a mosaic), not
        # n small axes of one tile each: matplotlib takes ~10 ms to make, lay out and draw an
        # axes, and a mosaic draws in a few. NaN is transparent: the gaps show the background.
        mosaic = np.full((h, row_w), np.nan)
        for i in range(n):
            mosaic[:, i * (w + gap):i * (w + gap) + w] = images[i].reshape(h, w)
        middle = fig_h - margin - room_h * (2 * row + 1) / 4  # of this row's half of the room
        ax = fig.add_axes([(margin_left + (room_w - width) / 2) / fig_w,
                           (middle - height / 2) / fig_h, width / fig_w, height / fig_h])
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        # a thin black frame around each tile, as an axes of its own would draw (its spines)
        frames = [Rectangle((i * (w + gap) - 0.5, -0.5), w, h) for i in range(n)]
        ax.add_collection(PatchCollection(frames, facecolor="none", edgecolor="black",
                                          linewidth=0.8, clip_on=False), autolim=False)
        ax.annotate(label, (-0.5, (h - 1) / 2), xytext=(-4, 0), textcoords="offset points",
                    rotation=90, ha="right", va="center", fontsize=8, annotation_clip=False)
    return _no_offsets(fig)


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


def _bins(values):
    """(lo, hi, edges): _bin_range's span cut into 10 to 50 bins, as many as NumPy's "auto"
    rule would give it (the smaller of the Freedman-Diaconis and Sturges widths), computed
    here: NumPy would allocate its edges first, trillions of them for values alike but for
    their rounding noise."""
    lo, hi = _bin_range(values)
    n = values.size
    q25, q75 = np.percentile(values, [25, 75])
    sturges = (hi - lo) / (np.log2(n) + 1)
    fd = 2 * (q75 - q25) / n ** (1 / 3)
    width = min(fd, sturges) if fd > 0 else sturges
    alike = np.ptp(values) < 1e-6 * max(1.0, abs(values.min()))
    n_bins = 10 if alike or not width > 0 else int(np.clip(np.ceil((hi - lo) / width), 10, 50))
    return lo, hi, np.linspace(lo, hi, n_bins + 1)


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
    lo, hi, bins = _bins(rho_hat)
    view_lo, view_hi = (lo, hi) if target is None else (min(lo, target), max(hi, target))
    margin = 0.05 * (view_hi - view_lo)

    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ax.hist(rho_hat, bins=bins, color="tab:blue", alpha=0.8,
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
    _tight_layout(fig)
    return _no_offsets(fig)


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
    _tight_layout(fig)
    return _no_offsets(fig)


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


def _diagnostic_curves(ax, series, title="sparsity"):
    """L0 on the left axis, the dead and dense shares on a right axis from 0 to 1."""
    right = ax.twinx()
    for y, style, color, label, side in series:
        (ax if side == "left" else right).plot(np.arange(1, len(y) + 1), y, style, color=color,
                                               marker=".", label=label)
    right.set_ylim(-0.02, 1.02)
    right.set_ylabel("share of the units")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    _finish_curves(ax, title, "active units per sample (L0)", {})
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
    _flat_stays_flat(ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, **legend)
    if not ax.lines or all(len(line.get_xdata()) == 0 for line in ax.lines):
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def training_curves(history, path, val_label="validation", sparsity_target=None):
    """Losses per epoch and mean activation; see training_curves_figure."""
    return _save(training_curves_figure(history, val_label, sparsity_target), path)


# ------------------------------------------------------------------------------ vectors

def _density_bins(alive):
    """(lo, n_bins) of the log10 axis: whole decades from below the rarest live unit up to 0
    (a unit firing on every row), ten bins a decade."""
    lo = math.floor(np.log10(alive.min())) if alive.size else -1
    lo = min(lo, -1)
    return lo, 10 * (0 - lo)


def feature_density_figure(frequency, n_rows=None):
    """Histogram of log10 of each unit's firing frequency (the share of the rows on which it
    fires: its "feature density", as SAELens and Anthropic draw it), (n_hidden,) in [0, 1].

    A dead unit (frequency 0) has no logarithm: the dead are a bar of their own, left of the
    axis, labelled with their count (0 included). n_rows, if given, is how many rows the
    frequencies were measured on (the title says it; 1 / n_rows is the lowest a live unit can
    show)."""
    hint = "pass each unit's firing frequency: inspect.unit_activity(model, x).frequency"
    f = _array(frequency, "frequency", hint).ravel()
    if f.size == 0 or not np.isfinite(f).all() or f.min() < 0 or f.max() > 1:
        raise InputError(f"frequency must hold one share in [0, 1] per hidden unit (the share "
                         f"of the rows it fires on), got {f.size} values"
                         + (f" from {f.min():.3g} to {f.max():.3g}" if f.size else "")
                         + f"; {hint}")
    if n_rows is not None:
        n_rows = _positive_int(n_rows, "n_rows", 10000)
    alive = f[f > 0]
    n_dead = f.size - alive.size
    lo, n_bins = _density_bins(alive)
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    ax.hist(np.log10(alive), bins=np.linspace(lo, 0, n_bins + 1), color="tab:blue",
            edgecolor="white", linewidth=0.5, label=f"{alive.size} units that fire")
    dead_x = lo - 0.8  # the dead: a bar apart, half a decade left of the axis's start
    ax.bar([dead_x], [n_dead], width=0.5, color="tab:red", hatch="//", edgecolor="white",
           label=f"{n_dead} dead (fire on no row)")
    ax.annotate(f"{n_dead} dead", (dead_x, n_dead), xytext=(0, 3), textcoords="offset points",
                ha="center", va="bottom", fontsize=9, color="tab:red")
    ax.axvline(lo - 0.4, color="0.5", linewidth=0.8, linestyle=":")
    decades = list(range(lo, 1))
    ax.set_xticks([dead_x] + decades, ["dead"] + [str(d) for d in decades])
    ax.set_xlim(dead_x - 0.5, 0.2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("log10 of the unit's firing frequency (share of the rows it fires on)")
    ax.set_ylabel("number of units")
    rows = f" over {n_rows:,} rows" if n_rows else ""
    median = f"; median of the live {np.median(alive):.3g}" if alive.size else ""
    ax.set_title(f"feature density of {f.size} units{rows}\n{n_dead} dead "
                 f"({100 * n_dead / f.size:.1f}%){median}", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    _tight_layout(fig)
    return _no_offsets(fig)


def feature_density(frequency, path, n_rows=None):
    """Histogram of log10 firing frequency per unit, the dead apart; see feature_density_figure."""
    return _save(feature_density_figure(frequency, n_rows), path)


def decoder_norms_figure(W_dec):
    """Histogram of the norms of the decoder's rows ||W2[j, :]||, W_dec (n_hidden, n_inputs):
    how strongly each unit writes into the reconstruction (a unit with a tiny norm does
    little, whatever its activations; L1 penalties push the norms around, some trainers hold
    them at 1). Far outliers are counted in the title, as in activation_histogram."""
    hint = "pass the decoder weights model.decoder.W, of shape (n_hidden, n_inputs)"
    W = _array(W_dec, "W_dec", hint)
    if W.ndim != 2 or W.shape[0] == 0 or W.shape[1] == 0:
        raise InputError(f"W_dec must be decoder weights of shape (n_hidden, n_inputs), got "
                         f"{W.shape}; {hint}")
    if not np.isfinite(W).all() or not _showable(W):
        raise InputError(f"W_dec holds NaN, inf or values beyond {SHOWABLE:g} (did training "
                         f"diverge?); pass finite weights")
    norms = np.linalg.norm(W, axis=1)
    lo, hi, bins = _bins(norms)
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ax.hist(norms, bins=bins, color="tab:purple", alpha=0.85,
            edgecolor="white", linewidth=0.5)
    ax.axvline(np.median(norms), color="k", linestyle=":",
               label=f"median {np.median(norms):.3g}")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("norm of the unit's decoder row ||W2[j, :]||")
    ax.set_ylabel("number of units")
    title = f"{norms.size} decoder rows, norms from {norms.min():.3g} to {norms.max():.3g}"
    below, above = int((norms < lo).sum()), int((norms > hi).sum())
    if below or above:
        title += f"\n{below + above} off this axis: {below} below {lo:.3g}, {above} above {hi:.3g}"
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=9)
    _tight_layout(fig)
    return _no_offsets(fig)


def decoder_norms(W_dec, path):
    """Histogram of the decoder rows' norms; see decoder_norms_figure."""
    return _save(decoder_norms_figure(W_dec), path)


def l0_curves_figure(history, val_label="validation"):
    """The codes' L0 (active units per sample) per epoch, train solid, held out dashed, and
    the share of dead units on a right axis from 0 to 1, from a history's "train_l0",
    "val_l0", "*_dead_fraction" (as fit records them). A constant L0 (TopK's k) shows flat."""
    history = _check_history(history)
    if not isinstance(val_label, str) or not val_label.strip():
        raise ConfigError(f"val_label must name the held-out split, e.g. 'test' or "
                          f"'validation', got {shown(val_label)}")
    splits = {"train": ("-", "train"), "val": ("--", val_label.strip())}
    series = [s for s in _diagnostic_series(history, splits) if "dense" not in s[3]]
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    _diagnostic_curves(ax, series, "the codes' L0 over training")
    _tight_layout(fig)
    return _no_offsets(fig)


def l0_curves(history, path, val_label="validation"):
    """L0 and the dead share per epoch; see l0_curves_figure."""
    return _save(l0_curves_figure(history, val_label), path)


IMAGE_FIGURES = ("features.png", "reconstructions.png", "activations.png", "curves.png",
                 "density.png")
"""What run_figures writes for data that are images."""
VECTOR_FIGURES = ("activations.png", "curves.png", "density.png", "decoder_norms.png", "l0.png")
"""What run_figures writes for data that are vectors (image_shape=None)."""


def figure_names(image_shape):
    """The files run_figures writes: IMAGE_FIGURES for images, VECTOR_FIGURES for None."""
    if image_shape is None:
        return VECTOR_FIGURES
    _image_shape(image_shape)
    return IMAGE_FIGURES


def _first_rows(x, n):
    """The first n rows of an array or a row source (ArrayFiles), as NumPy."""
    if all(hasattr(x, a) for a in ("n_rows", "read")):
        return x.read(0, min(n, x.n_rows))
    return to_numpy(x[:n])


def run_figures(model, history, x, out, image_shape=None, title=None, val_label="test",
                batch_size=None):
    """The figures of a trained model, written into the folder out; returns their names
    (figure_names(image_shape)). x: held-out rows (an array, or an ArrayFiles source, read in
    batches); image_shape: (height, width) when the rows are images, None for vectors.

    Images: the encoder's filters as pictures (features.png, title above them), the first
    rows over their reconstructions. Vectors: decoder norms, L0 per epoch. Both: the units'
    mean activations (against the target where the penalty has one), the training curves and
    the feature density (each unit's firing frequency, a log10 histogram)."""
    from ..model import SparseAutoencoder
    from .inspect import unit_activity
    if not isinstance(model, SparseAutoencoder):
        raise ConfigError(f"model must be a minisae SparseAutoencoder, got {type(model).__name__}")
    names = figure_names(image_shape)
    if image_shape is not None and math.prod(image_shape) != model.config.n_inputs:
        raise ConfigError(f"image_shape {tuple(image_shape)} holds {math.prod(image_shape)} "
                          f"pixels, but the model takes n_inputs={model.config.n_inputs}; give "
                          f"the rows' own (height, width), or None for vectors")
    _title(title, "title")
    _check_history(history)
    out = Path(check_path(out, "out (the run's folder)"))
    activity = unit_activity(model, x, batch_size)
    c = model.config
    target = c.sparsity_target if c.sparsity in ("kl", "squared", "absolute") else None
    if image_shape is not None:
        feature_grid(model.params["encoder.W"], out / "features.png", image_shape=image_shape,
                     max_units=196, title=title)
        first = _first_rows(x, 10)
        reconstructions(first, model.reconstruct(first), out / "reconstructions.png",
                        image_shape=image_shape)
    activation_histogram(activity.mean_activation, target, out / "activations.png")
    training_curves(history, out / "curves.png", val_label=val_label, sparsity_target=target)
    feature_density(activity.frequency, out / "density.png", n_rows=activity.n_rows)
    if image_shape is None:
        decoder_norms(model.decoder.W, out / "decoder_norms.png")
        l0_curves(history, out / "l0.png", val_label=val_label)
    return list(names)


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
    _tight_layout(fig)
    return _no_offsets(fig)


def sparsity_loss_curves(path, target=0.1):
    """Géron's figure: KL(p || q), |p - q| and (p - q)^2 against the actual sparsity q."""
    return _save(sparsity_loss_curves_figure(target), path)


# ------------------------------------------------------------------------------ experiments

MECHANISM_COLORS = {"kl": "tab:blue", "squared": "tab:orange", "absolute": "tab:green",
                    "l1": "tab:purple", "topk": "tab:red", "batchtopk": "tab:brown",
                    "jumprelu": "tab:olive"}


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
    _tight_layout(fig)
    return _no_offsets(fig)


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
    _tight_layout(fig)
    return _no_offsets(fig)


def penalties(deviation, gradients, path, target=0.1):
    """penalty_figure written as a PNG."""
    return _save(penalty_figure(deviation, gradients, target), path)
