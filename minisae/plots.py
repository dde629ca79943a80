"""Pictures of a sparse autoencoder, written as PNG files.

Every function takes plain NumPy arrays (convert CuPy arrays first), writes a PNG to
`path` and returns it as a Path. Figures are built with matplotlib's object API and the
Agg canvas, never pyplot, so nothing global is touched: this works headless and in
threads. The PNG goes to a temporary file in the same folder and is then renamed over
`path`, so a crash never leaves a half-written image behind.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from minisae.errors import ConfigError, InputError
from minisae.fileio import atomic_write
from minisae.functional import kl_divergence

DPI = 100


def _figure(width, height):
    """A Figure (width x height inches) on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Write fig as a PNG to path atomically (temp file + os.replace); return the Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=DPI)
    fig.clear()  # no pyplot registry holds it: dropping the last reference frees it
    return path


def _check_weights(W, image_shape):
    W = np.asarray(W, dtype=np.float64)
    n_pixels = math.prod(image_shape)
    if W.ndim != 2 or W.shape[0] != n_pixels:
        raise InputError(
            f"expected encoder weights of shape ({n_pixels}, n_units) for images of shape "
            f"{tuple(image_shape)}, got {W.shape}; pass model.params['encoder.W'] as NumPy"
        )
    return W


def tile_images(W, image_shape=(28, 28), n_cols=None, pad=1):
    """UFLDL's display_network: one tile per column of W, (n_inputs, n_units) -> 2-D image.

    Each tile is centred and divided by its largest |value|, so it lies in [-1, 1]
    (a constant tile becomes 0). Unit k sits at grid row k // n_cols, column k % n_cols;
    n_cols defaults to ceil(sqrt(n_units)). Padding and empty slots are -1 (black).
    Shape: (pad + n_rows * (h + pad), pad + n_cols * (w + pad)).
    """
    W = _check_weights(W, image_shape)
    h, w = image_shape
    n_units = W.shape[1]
    n_cols = n_cols or max(1, math.ceil(math.sqrt(n_units)))
    n_rows = max(1, math.ceil(n_units / n_cols))

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


def _grid_axes(ax, W, image_shape, max_units, title):
    W = _check_weights(W, image_shape)[:, :max_units]
    ax.imshow(tile_images(W, image_shape), cmap="gray", vmin=-1, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title if title is not None else f"first {W.shape[1]} units")


def feature_grid(W, path, image_shape=(28, 28), max_units=196, title=None):
    """Grayscale grid of the first max_units filters (columns of W, (n_inputs, n_units))."""
    fig = _figure(6, 6.3)
    _grid_axes(fig.add_subplot(), W, image_shape, max_units, title)
    fig.tight_layout()
    return _save(fig, path)


def feature_grids_side_by_side(panels, path, image_shape=(28, 28), max_units=196):
    """One feature grid per (title, W) in panels, side by side, e.g. two training presets."""
    panels = list(panels)
    if not panels:
        raise InputError("feature_grids_side_by_side needs at least one (title, W) panel")
    fig = _figure(5 * len(panels), 5.4)
    for ax, (title, W) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        _grid_axes(ax, W, image_shape, max_units, title)
    fig.tight_layout()
    return _save(fig, path)


def reconstructions(x, x_hat, path, n=10, image_shape=(28, 28)):
    """Originals x over reconstructions x_hat, both (batch, n_in) in [0, 1]; first n rows."""
    x, x_hat = np.asarray(x), np.asarray(x_hat)
    if x.shape != x_hat.shape or x.ndim != 2 or x.shape[1] != math.prod(image_shape):
        raise InputError(
            f"x and x_hat must both be (batch, {math.prod(image_shape)}), "
            f"got {x.shape} and {x_hat.shape}"
        )
    if len(x) == 0:
        raise InputError("reconstructions needs at least one image, got an empty batch")
    n = max(1, min(n, len(x)))
    fig = _figure(1.1 * n, 2.5)
    axes = fig.subplots(2, n, squeeze=False)
    for row, (images, label) in enumerate([(x, "original"), (x_hat, "reconstruction")]):
        for i, ax in enumerate(axes[row]):
            ax.imshow(images[i].reshape(image_shape), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def activation_histogram(mean_activation, target, path):
    """Histogram of the per-unit mean activations rho_hat, (n_hidden,), against the target rho."""
    rho_hat = np.asarray(mean_activation, dtype=np.float64).ravel()
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ax.hist(rho_hat, bins=50, range=(0.0, 1.0), color="tab:blue", alpha=0.8)
    ax.axvline(target, color="tab:red", linestyle="--", label=f"target rho = {target:g}")
    if rho_hat.size:
        ax.axvline(rho_hat.mean(), color="k", linestyle=":",
                   label=f"mean rho_hat = {rho_hat.mean():.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean activation of a hidden unit (rho_hat_j)")
    ax.set_ylabel("number of units")
    ax.set_title(f"{rho_hat.size} hidden units")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _series(values):
    """A history list as floats, None -> nan (an array entry counts as its mean)."""
    return np.array([np.nan if v is None else float(np.mean(v)) for v in values], dtype=float)


def training_curves(history, path):
    """Losses per epoch (left; log y when every value is positive) and mean activation (right).

    history maps names like "train_total", "val_sparsity", "train_mean_activation" to
    per-epoch lists; missing keys, empty lists and None entries are skipped.
    """
    fig = _figure(11, 4)
    ax_loss, ax_act = fig.subplots(1, 2)
    colors = {"total": "k", "reconstruction": "tab:blue", "sparsity": "tab:orange"}
    styles = {"train": "-", "val": "--"}
    plotted = []
    for part, color in colors.items():
        for split, style in styles.items():
            y = _series(history.get(f"{split}_{part}") or [])
            if np.isfinite(y).any():
                ax_loss.plot(np.arange(1, len(y) + 1), y, style, color=color, marker=".",
                             label=f"{split} {part}")
                plotted.append(y[np.isfinite(y)])
    if plotted and (np.concatenate(plotted) > 0).all():
        ax_loss.set_yscale("log")
    for split, style in styles.items():
        y = _series(history.get(f"{split}_mean_activation") or [])
        if np.isfinite(y).any():
            ax_act.plot(np.arange(1, len(y) + 1), y, style, color="tab:green", marker=".",
                        label=f"{split} mean rho_hat")
    for ax, title in [(ax_loss, "loss"), (ax_act, "mean activation")]:
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax_loss.set_ylabel("loss")
    ax_act.set_ylabel("mean over units of rho_hat_j")
    fig.tight_layout()
    return _save(fig, path)


def sparsity_loss_curves(path, target=0.1):
    """Géron's figure: KL(p || q), |p - q| and (p - q)^2 against the actual sparsity q."""
    if not 0 < target < 1:
        raise ConfigError(f"target sparsity must lie in (0, 1), got {target}")
    p, q = target, np.linspace(0.001, 0.999, 500)
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
    return _save(fig, path)
