"""The figures (minisae.apps.plots): feature grids, reconstructions, histograms, curves as PNGs."""
import ast
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.text import Text

from minisae import SparseAutoencoder
from minisae.apps import plots
from minisae.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_size=(100, 100)):
    path = Path(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file
    return image


def weights(n_units=196, seed=0, n_inputs=784):
    return np.random.default_rng(seed).normal(size=(n_inputs, n_units))


def texts(fig):
    """Every string the figure shows (titles, labels, legend entries, notes)."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def visible_ticks(ax, axis="x"):
    ax.figure.canvas.draw()
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    return [t for t in ticks if lo <= t <= hi]


def history(n_epochs=20, weight_decay=0.002):
    e = np.arange(1, n_epochs + 1, dtype=float)
    h = {}
    for split, k in [("train", 1.0), ("val", 1.1)]:
        h[f"{split}_reconstruction"] = list(k * 0.5 / e + 0.02)
        h[f"{split}_sparsity"] = list(k * 0.3 / e + 0.01)
        h[f"{split}_weight_decay"] = list(weight_decay * np.sqrt(e))
        h[f"{split}_total"] = [a + b + c for a, b, c in zip(
            h[f"{split}_reconstruction"], h[f"{split}_sparsity"], h[f"{split}_weight_decay"])]
        h[f"{split}_mean_activation"] = list(0.1 + k * 0.2 / e)
    return h


# ------------------------------------------------------------------------------ tile_images

def test_tile_images_shape():
    assert plots.tile_images(weights(196)).shape == (14 * 29 + 1, 14 * 29 + 1)
    # 10 units -> 4 columns, 3 rows; no padding
    assert plots.tile_images(weights(10), pad=0).shape == (3 * 28, 4 * 28)
    assert plots.tile_images(np.ones((12, 5)), image_shape=(3, 4), n_cols=5).shape == (5, 26)
    # UFLDL's natural-image exercise: 25 units of 8x8 -> 5x5 tiles
    assert plots.tile_images(weights(25, n_inputs=64), image_shape=(8, 8)).shape == (46, 46)


def test_tile_images_normalises_each_tile():
    W = weights(4) * np.array([1e-3, 1.0, 50.0, 1.0])
    W[:, 3] = 0.3  # constant tile (its mean rounds off by 6e-17): zeros, no 0/0 warning
    canvas = plots.tile_images(W, n_cols=2, pad=1)
    tiles = [canvas[1 + r * 29:1 + r * 29 + 28, 1 + c * 29:1 + c * 29 + 28]
             for r in range(2) for c in range(2)]
    for tile in tiles[:3]:
        assert np.isclose(np.abs(tile).max(), 1.0)
        assert np.isclose(tile.mean(), 0.0)
    assert np.array_equal(tiles[3], np.zeros((28, 28)))
    assert canvas[0].tolist() == [-1.0] * canvas.shape[1]  # padding is black


def test_tile_images_maps_column_to_tile():
    W = np.zeros((12, 7))
    pattern = np.arange(12.0).reshape(3, 4) ** 2  # no pixel normalises to -1 (padding)
    W[:, 5] = pattern.ravel()
    canvas = plots.tile_images(W, image_shape=(3, 4), n_cols=3, pad=1)
    # unit 5 -> row 1, column 2 of the grid
    tile = canvas[1 + 1 * 4:1 + 1 * 4 + 3, 1 + 2 * 5:1 + 2 * 5 + 4]
    expected = (pattern - pattern.mean()) / np.abs(pattern - pattern.mean()).max()
    np.testing.assert_allclose(tile, expected)
    assert np.count_nonzero(canvas[canvas != -1]) == 12


@pytest.mark.parametrize("W, kwargs, error, match", [
    (np.zeros((100, 3)), {}, InputError, r"\(784, n_units\).*encoder\.W"),
    (np.zeros(784), {}, InputError, "n_units"),
    (np.zeros((784, 0)), {}, InputError, "no units"),
    (np.full((784, 2), np.nan), {}, InputError, "NaN"),
    ([["a"]], {}, InputError, "numeric"),
    (np.zeros((64, 2)), {"image_shape": (8,)}, ConfigError, r"\(8, 8\)"),
    (np.zeros((64, 2)), {"image_shape": (8, 8.0)}, ConfigError, "height, width"),
    (np.zeros((64, 2)), {"image_shape": (8, 8), "n_cols": 0}, ConfigError, "n_cols"),
    (np.zeros((64, 2)), {"image_shape": (8, 8), "pad": -1}, ConfigError, "pad"),
])
def test_tile_images_says_what_to_pass(W, kwargs, error, match):
    with pytest.raises(error, match=match):
        plots.tile_images(W, **kwargs)


# ------------------------------------------------------------------------------ feature grids

def test_feature_grid_title_says_how_many_units_it_shows():
    fig = plots.feature_grid_figure(weights(1000), title="encoder weights (book)")
    assert fig.axes[0].get_title() == "encoder weights (book)\nfirst 196 of 1000 units"
    assert plots.feature_grid_figure(weights(25)).axes[0].get_title() == "all 25 units"
    assert plots.feature_grid_figure(weights(50), max_units=10).axes[0].get_title() == \
        "first 10 of 50 units"
    # a title that already says it is not repeated
    assert plots.feature_grid_figure(weights(300), title="first 196 of 300 units, 5 epochs") \
        .axes[0].get_title() == "first 196 of 300 units, 5 epochs"
    assert plots.unit_count(1, 1) == "all 1 unit"


def test_feature_grid_shows_the_tiles_at_a_whole_number_zoom():
    W = weights(300)
    fig = plots.feature_grid_figure(W)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), plots.tile_images(W[:, :196]))
    fig.canvas.draw()
    box = ax.get_window_extent()
    assert (round(box.width), round(box.height)) == (407 * 2, 407 * 2)  # 14x14 tiles, 2x
    assert plots.GRID_CAPTION in texts(fig)


def test_feature_grid_of_8x8_patches_renders_crisp_and_small(tmp_path):
    """UFLDL's natural-image exercise: a 64-input model's 25 filters as a 5x5 grid of 8x8
    tiles, each canvas pixel an 8x8 block of one colour, in a figure smaller than MNIST's."""
    model = SparseAutoencoder(n_inputs=64, n_hidden=25, seed=0)
    W = model.params["encoder.W"]
    fig = plots.feature_grid_figure(W, image_shape=(8, 8), title="natural patches")
    ax = fig.axes[0]
    assert ax.get_title() == "natural patches\nall 25 units"
    canvas = plots.tile_images(W, image_shape=(8, 8))
    fig.canvas.draw()
    box = ax.get_window_extent()
    x0, top = round(box.x0), round(fig.bbox.height - box.y1)
    assert (round(box.width), round(box.height)) == (46 * 8, 46 * 8)
    gray = np.asarray(fig.canvas.buffer_rgba())[top:top + 368, x0:x0 + 368, 0].astype(float)
    blocks = gray.reshape(46, 8, 46, 8)
    assert np.ptp(blocks, axis=(1, 3)).max() == 0  # no pixel straddles two canvas pixels
    shown = blocks[:, 0, :, 0] / 255 * 2 - 1  # gray level back to [-1, 1]
    np.testing.assert_allclose(shown, canvas, atol=2 / 255 * 2)
    width, height = fig.get_size_inches()
    mnist_width, _ = plots.feature_grid_figure(weights(196)).get_size_inches()
    assert 3 <= width < mnist_width / 2 and height < 6

    path = plots.feature_grid(W, tmp_path / "patches.png", image_shape=(8, 8))
    image = check_png(path, (400, 380))
    assert image.shape[0] < 600 and image.shape[1] < 500


def test_feature_grid_writes_png(tmp_path):
    path = plots.feature_grid(weights(300), tmp_path / "sub" / "features.png", title="W1")
    assert path == tmp_path / "sub" / "features.png"
    check_png(path, (500, 500))


def test_feature_grids_side_by_side(tmp_path):
    fig = plots.feature_grids_side_by_side_figure(
        [("book", weights(1000)), ("ufldl", weights(196, seed=1))])
    assert [ax.get_title() for ax in fig.axes] == \
        ["book\nfirst 196 of 1000 units", "ufldl\nall 196 units"]
    path = plots.feature_grids_side_by_side(
        [("mean", weights(49)), ("halfsum", weights(25, seed=1))], tmp_path / "both.png")
    image = check_png(path)
    assert image.shape[1] > image.shape[0]
    fig = plots.feature_grids_side_by_side_figure(
        [("a", weights(25, n_inputs=64)), ("b", weights(16, n_inputs=64))], image_shape=(8, 8))
    assert [ax.get_title() for ax in fig.axes] == ["a\nall 25 units", "b\nall 16 units"]


@pytest.mark.parametrize("panels", [[], None, [weights(4)], [("a", weights(4), 1)]])
def test_feature_grids_side_by_side_needs_title_w_pairs(panels, tmp_path):
    with pytest.raises(InputError, match=r"\(title, W\) pairs"):
        plots.feature_grids_side_by_side(panels, tmp_path / "x.png")


def test_feature_grid_checks_max_units():
    with pytest.raises(ConfigError, match="max_units must be a positive integer"):
        plots.feature_grid_figure(weights(4), max_units=0)


# ------------------------------------------------------------------------------ reconstructions

def test_reconstructions(tmp_path):
    x = np.random.default_rng(0).random((5, 784))
    check_png(plots.reconstructions(x, 1 - x, tmp_path / "rec.png", n=10), (200, 400))
    with pytest.raises(InputError, match=r"\(batch, 784\)"):
        plots.reconstructions(x, x[:, :10], tmp_path / "bad.png")
    with pytest.raises(InputError, match="empty"):
        plots.reconstructions(x[:0], x[:0], tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="n must be a positive integer"):
        plots.reconstructions(x, x, tmp_path / "bad.png", n=0)


def test_reconstructions_of_8x8_patches():
    """One image per row (a mosaic of its n tiles, NaN between them), not one axes per tile:
    originals above, reconstructions below, each row labelled on its left."""
    x = np.random.default_rng(0).random((12, 64))
    fig = plots.reconstructions_figure(x, 1 - x, n=4, image_shape=(8, 8))
    axes = fig.axes
    assert len(axes) == 2
    for ax, images, label in [(axes[0], x, "original"), (axes[1], 1 - x, "reconstruction")]:
        (image,) = ax.get_images()
        mosaic = np.ma.filled(image.get_array(), np.nan)
        gap = (mosaic.shape[1] - 4 * 8) // 3
        assert gap >= 1 and mosaic.shape == (8, 4 * 8 + 3 * gap)
        for i in range(4):
            left = i * (8 + gap)
            np.testing.assert_array_equal(mosaic[:, left:left + 8], images[i].reshape(8, 8))
            if i < 3:
                assert np.isnan(mosaic[:, left + 8:left + 8 + gap]).all()
        assert [t.get_text() for t in ax.texts] == [label]
    fig.canvas.draw()
    top, bottom = (ax.get_window_extent() for ax in axes)
    assert bottom.y1 < top.y0  # originals above, not overlapping
    for ax in axes:  # each label left of its row, beside it
        label = ax.texts[0].get_window_extent()
        box = ax.get_window_extent()
        assert label.x1 < box.x0 and box.y0 <= (label.y0 + label.y1) / 2 <= box.y1


def test_reconstructions_keep_their_labels_apart_for_wide_images():
    """Rows of short wide images each sit in their half of the figure: labels don't collide."""
    x = np.random.default_rng(0).random((3, 10 * 40))
    fig = plots.reconstructions_figure(x, x, n=3, image_shape=(10, 40))
    fig.canvas.draw()
    original, reconstruction = (ax.texts[0].get_window_extent() for ax in fig.axes)
    assert reconstruction.y1 < original.y0


# ------------------------------------------------------------------------------ activations

def test_activation_histogram_fits_the_axis_to_a_tight_cluster():
    """1000 units all near the target 0.1: the bars show the spread, not one bar of 990."""
    rho_hat = 0.1 + 0.002 * np.random.default_rng(0).standard_normal(1000)
    ax = plots.activation_histogram_figure(rho_hat, 0.1).axes[0]
    lo, hi = ax.get_xlim()
    assert lo < rho_hat.min() and hi > rho_hat.max()
    assert hi - lo < 0.03
    heights = np.array([bar.get_height() for bar in ax.patches])
    assert heights.sum() == 1000 and len(heights) >= 10
    assert heights.max() < 0.25 * 1000
    assert legend_texts(ax) == ["target rho = 0.1", f"mean rho_hat = {rho_hat.mean():.3g}"]
    assert [line.get_xdata()[0] for line in ax.lines] == [0.1, rho_hat.mean()]
    ax.figure.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == ""  # plain tick labels, no "+1e-1"


def test_activation_histogram_keeps_the_target_in_view():
    rho_hat = np.random.default_rng(0).uniform(0.3, 0.35, size=200)
    ax = plots.activation_histogram_figure(rho_hat, 0.05).axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 0.05 and 0.35 < hi < 0.4
    assert min(bar.get_x() for bar in ax.patches) >= rho_hat.min() - 1e-12  # bins: data only
    # every unit alike still gives a bar, the target beside it
    ax = plots.activation_histogram_figure(np.full(25, 0.1), 0.1).axes[0]
    assert sum(bar.get_height() for bar in ax.patches) == 25
    assert ax.get_xlim()[0] < 0.1 < ax.get_xlim()[1]


def test_activation_histogram_counts_far_outliers_instead_of_squeezing_the_rest():
    rng = np.random.default_rng(0)
    rho_hat = np.r_[0.1 + 0.003 * rng.standard_normal(997), 0.0, 0.0001, 0.93]  # 2 dead, 1 stuck
    ax = plots.activation_histogram_figure(rho_hat, 0.1).axes[0]
    heights = np.array([bar.get_height() for bar in ax.patches])
    assert heights.max() < 0.25 * 1000 and heights.sum() == 997
    assert ax.get_title() == ("1000 hidden units, rho_hat from 0 to 0.93\n"
                              f"3 off this axis: 2 below {ax.patches[0].get_x():.3g}, "
                              f"1 above {ax.patches[-1].get_x() + ax.patches[-1].get_width():.3g}")


@pytest.mark.parametrize("rho_hat, target, error, match", [
    ([], 0.1, InputError, "rho_hat"),
    ([0.1, np.nan], 0.1, InputError, "NaN"),
    ([0.1], 0.0, ConfigError, r"target must be a number in \(0, 1\)"),
    ([0.1], "0.1", ConfigError, "target"),
])
def test_activation_histogram_says_what_to_pass(rho_hat, target, error, match):
    with pytest.raises(error, match=match):
        plots.activation_histogram_figure(rho_hat, target)


def test_activation_histogram_writes_png(tmp_path):
    rho_hat = np.random.default_rng(0).beta(1, 9, size=200)
    check_png(plots.activation_histogram(rho_hat, 0.1, tmp_path / "hist.png"))


# ------------------------------------------------------------------------------ training curves

def test_training_curves_name_the_held_out_split():
    fig = plots.training_curves_figure(history(), val_label="test", sparsity_target=0.1)
    ax_loss, ax_act = fig.axes
    assert legend_texts(ax_loss) == [
        "train total", "test total", "train reconstruction", "test reconstruction",
        "train sparsity", "test sparsity", "train weight decay", "test weight decay"]
    assert legend_texts(ax_act) == ["train mean rho_hat", "test mean rho_hat", "target rho = 0.1"]
    assert not any("val" in t for t in texts(fig))
    default = plots.training_curves_figure(history())
    assert "validation total" in legend_texts(default.axes[0])


def test_training_curves_draw_no_diagnostic_as_a_loss():
    h = history()
    h["val_log10_density"] = [-1.5] * 20  # evaluate's median feature density: not a loss
    assert not any("density" in label for label in
                   legend_texts(plots.training_curves_figure(h).axes[0]))


def test_training_curves_plot_weight_decay_on_a_log_axis():
    h = history(weight_decay=0.002)
    ax_loss = plots.training_curves_figure(h).axes[0]
    assert ax_loss.get_yscale() == "log" and ax_loss.get_title() == "loss (log scale)"
    wd = [line for line in ax_loss.lines if line.get_label() == "train weight decay"][0]
    np.testing.assert_allclose(wd.get_ydata(), h["train_weight_decay"])
    np.testing.assert_array_equal(wd.get_xdata(), np.arange(1, 21))
    assert ax_loss.get_ylim()[0] < min(h["train_weight_decay"])  # in view, not clipped


def test_training_curves_leave_out_zero_and_missing_parts():
    h = history(weight_decay=0.0)  # lambda = 0: weight decay 0 at every epoch
    h["val_sparsity"] = [None] * 20
    del h["val_reconstruction"]
    ax_loss = plots.training_curves_figure(h).axes[0]
    assert ax_loss.get_yscale() == "log"
    labels = legend_texts(ax_loss)
    assert labels == ["train total", "validation total", "train reconstruction",
                      "train sparsity", "weight decay = 0 (not drawn)"]
    assert all(np.all(np.asarray(line.get_ydata()) > 0) for line in ax_loss.lines
               if len(line.get_ydata()))
    # a missing key (an old history), and a zero inside a series: linear axis, no crash
    h = history()
    del h["train_weight_decay"], h["val_weight_decay"]
    h["train_sparsity"][3] = 0.0
    ax_loss = plots.training_curves_figure(h).axes[0]
    assert ax_loss.get_yscale() == "linear" and ax_loss.get_title() == "loss"
    assert not any("weight decay" in t for t in legend_texts(ax_loss))
    # zero on one split only: that split is named
    h = history()
    h["train_sparsity"] = [0.0] * 20
    labels = legend_texts(plots.training_curves_figure(h, val_label="test").axes[0])
    assert "test sparsity" in labels and "train sparsity = 0 (not drawn)" in labels


@pytest.mark.parametrize("n_epochs", [1, 7, 20])
def test_training_curves_tick_whole_epochs(n_epochs):
    fig = plots.training_curves_figure(history(n_epochs))
    for ax in fig.axes:
        ticks = visible_ticks(ax)
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    if n_epochs == 1:
        assert visible_ticks(fig.axes[0]) == [1]


def test_training_curves_with_nothing_to_plot_say_so(tmp_path):
    fig = plots.training_curves_figure({"val_total": [None], "train_sparsity": [0.0, 0.0]})
    assert texts(fig).count("no data") == 2
    assert legend_texts(fig.axes[0]) == ["sparsity = 0 (not drawn)"]
    check_png(plots.training_curves({}, tmp_path / "empty.png"))


@pytest.mark.parametrize("history_, kwargs, error, match", [
    ([1, 2], {}, InputError, "History.as_dict"),
    ({"train_total": ["high", "low"]}, {}, InputError, r"history\['train_total'\]"),
    ({"train_total": [1.0]}, {"val_label": ""}, ConfigError, "val_label.*'test'"),
    ({"train_total": [1.0]}, {"sparsity_target": 2}, ConfigError, "sparsity_target"),
])
def test_training_curves_say_what_to_pass(history_, kwargs, error, match):
    with pytest.raises(error, match=match):
        plots.training_curves_figure(history_, **kwargs)


def test_training_curves_take_a_history_object(tmp_path):
    from minisae.training import History
    h = History()
    for epoch in (1, 2, 3):
        h.append(epoch=epoch, train_total=1.0 / epoch, val_total=1.2 / epoch)
    path = plots.training_curves(h, tmp_path / "curves.png", val_label="test")
    check_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


# ------------------------------------------------------------------------------ vectors

def offsets(fig):
    """Every offset text the figure's axes show once drawn ("+7.999" above a constant)."""
    fig.canvas.draw()
    return [t for ax in fig.axes for t in (ax.xaxis.get_offset_text().get_text(),
                                            ax.yaxis.get_offset_text().get_text())
            if t.startswith(("+", "-", "\u2212"))]


@pytest.mark.parametrize("draw", [
    lambda: plots.feature_grid_figure(weights(4, n_inputs=64), image_shape=None),
    lambda: plots.feature_grids_side_by_side_figure([("a", weights(4, n_inputs=64))],
                                                    image_shape=None),
    lambda: plots.tile_images(weights(4, n_inputs=64), image_shape=None),
    lambda: plots.reconstructions_figure(np.zeros((2, 64)), np.zeros((2, 64)),
                                         image_shape=None),
])
def test_image_figures_refuse_vectors(draw):
    """image_shape=None says the rows are vectors: no picture is made of a 64-wide vector,
    and the message says what to draw instead."""
    with pytest.raises(ConfigError, match="vectors, not images.*feature_density"):
        draw()


@pytest.mark.parametrize("image_shape, names", [
    (None, plots.VECTOR_FIGURES), ((8, 8), plots.IMAGE_FIGURES)])
def test_run_figures_draws_images_only_for_images(image_shape, names, tmp_path):
    """A 64-wide model (a square width) gets images only when told its rows are 8x8 images."""
    model = SparseAutoencoder(n_inputs=64, n_hidden=32, sparsity="topk", k=4,
                              hidden_activation="relu", output_activation="linear", seed=0)
    x = np.random.default_rng(0).standard_normal((50, 64))
    h = {"train_total": [1.0, 0.8], "val_total": [1.1, 0.9], "val_l0": [4.0, 4.0],
         "val_dead_fraction": [0.1, 0.05]}
    written = plots.run_figures(model, h, x, tmp_path / "run", image_shape=image_shape)
    assert written == list(names) == list(plots.figure_names(image_shape))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(names)
    for name in names:
        check_png(tmp_path / "run" / name)
    assert ("features.png" in names) == (image_shape is not None)
    assert "density.png" in names  # feature density: every run, images or vectors


def test_run_figures_reads_a_source_in_batches(tmp_path):
    from minisae.data import ArrayFiles
    model = SparseAutoencoder(n_inputs=16, n_hidden=8, sparsity="l1", hidden_activation="relu",
                              output_activation="linear", seed=0)
    x = np.random.default_rng(1).standard_normal((30, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with ArrayFiles(tmp_path / "x.npy") as source:
        assert plots.run_figures(model, {}, source, tmp_path / "a", image_shape=(4, 4),
                                 batch_size=7) == list(plots.IMAGE_FIGURES)


def test_run_figures_checks_what_it_is_given(tmp_path):
    with pytest.raises(ConfigError, match="SparseAutoencoder"):
        plots.run_figures("model", {}, np.zeros((2, 4)), tmp_path)
    model = SparseAutoencoder(n_inputs=4, n_hidden=3, seed=0)
    with pytest.raises(ConfigError, match="image_shape must be"):
        plots.run_figures(model, {}, np.zeros((2, 4)), tmp_path, image_shape=(2,))
    with pytest.raises(InputError, match="History.as_dict"):
        plots.run_figures(model, [1], np.zeros((2, 4)), tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_feature_density_counts_the_dead_apart():
    rng = np.random.default_rng(0)
    frequency = np.r_[10 ** rng.uniform(-4, -0.5, 97), 0.0, 0.0, 0.0]
    fig = plots.feature_density_figure(frequency, n_rows=10_000)
    ax = fig.axes[0]
    live = [b for b in ax.patches if b.get_facecolor()[:3] != ax.patches[-1].get_facecolor()[:3]]
    dead = ax.patches[-1]
    assert sum(b.get_height() for b in live) == 97
    assert dead.get_height() == 3 and dead.get_x() + dead.get_width() < live[0].get_x()
    np.testing.assert_allclose(live[0].get_x(), -4)  # whole decades, from below the rarest
    np.testing.assert_allclose(live[-1].get_x() + live[-1].get_width(), 0)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["dead", "-4", "-3", "-2", "-1", "0"]
    assert "3 dead" in texts(fig)
    assert ax.get_title().startswith("feature density of 100 units over 10,000 rows\n3 dead (3.0%)")
    assert offsets(fig) == []


@pytest.mark.parametrize("frequency, dead", [(np.full(5, 0.25), 0), (np.zeros(4), 4)])
def test_feature_density_with_no_dead_or_all_dead(frequency, dead):
    fig = plots.feature_density_figure(frequency)
    assert fig.axes[0].patches[-1].get_height() == dead
    assert f"{dead} dead" in texts(fig)


@pytest.mark.parametrize("frequency", [[], [0.1, 1.5], [-0.1], [np.nan], "often"])
def test_feature_density_says_what_to_pass(frequency):
    with pytest.raises(InputError, match="frequency must hold one share in \\[0, 1\\]|numeric"):
        plots.feature_density_figure(frequency)


def test_decoder_norms():
    W = np.random.default_rng(0).standard_normal((50, 8))
    fig = plots.decoder_norms_figure(W)
    ax = fig.axes[0]
    assert sum(b.get_height() for b in ax.patches) == 50
    norms = np.linalg.norm(W, axis=1)
    assert ax.get_title() == (f"50 decoder rows, norms from {norms.min():.3g} to "
                              f"{norms.max():.3g}")
    # rows held at norm 1 (to rounding): one bar, plain tick labels, no offset
    unit = W / np.linalg.norm(W, axis=1, keepdims=True)
    fig = plots.decoder_norms_figure(unit)
    assert sum(b.get_height() for b in fig.axes[0].patches) == 50 and offsets(fig) == []
    with pytest.raises(InputError, match=r"shape \(n_hidden, n_inputs\)"):
        plots.decoder_norms_figure(np.ones(5))
    with pytest.raises(InputError, match="NaN"):
        plots.decoder_norms_figure(np.full((2, 2), np.inf))


@pytest.mark.parametrize("l0", [[8.0] * 6, [7.999, 7.9995, 8.0, 8.0, 7.9998, 8.0]])
def test_a_constant_l0_shows_flat_with_no_offset(l0):
    """The report: curves.png put "+7.999" over TopK's L0 of 8, so that it looked like a
    drop. Every axis is plain now, and a curve that barely moves is drawn flat."""
    h = {"train_total": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], "val_l0": l0,
         "val_dead_fraction": [0.1] * 6}
    for fig in (plots.training_curves_figure(h), plots.l0_curves_figure(h, val_label="test")):
        assert offsets(fig) == []
        ax = next(a for a in fig.axes if a.get_ylabel() == "active units per sample (L0)")
        lo, hi = ax.get_ylim()
        assert lo < 7.7 and hi > 8.3  # the change of 0.001 is not blown up to the full height
    fig = plots.l0_curves_figure(h, val_label="test")
    assert legend_texts(fig.axes[0]) == ["test L0 (active units per sample)",
                                         "test dead units (share)"]
    assert fig.axes[0].get_title() == "the codes' L0 over training"


def test_l0_curves_without_l0_say_so(tmp_path):
    fig = plots.l0_curves_figure({"train_total": [1.0]})
    assert "no data" in texts(fig)
    check_png(plots.l0_curves({}, tmp_path / "l0.png"))


@pytest.mark.parametrize("draw", [
    lambda: plots.activation_histogram_figure(0.1 + 1e-6 * np.arange(20), None),
    lambda: plots.training_curves_figure({"train_total": list(1000 + 1e-3 * np.arange(5)),
                                          "train_mean_activation": [0.1000001] * 5}),
    lambda: plots.decoder_norms_figure(1000.0 + 1e-4 * np.arange(12.0).reshape(6, 2)),
    lambda: plots.frontier_figure({"topk": [(8.0, 0.30001, "a"), (8.0001, 0.30002, "b")]}),
])
def test_no_figure_shows_an_offset(draw):
    assert offsets(draw()) == []


# ------------------------------------------------------------------------------ the KL figure

def test_sparsity_loss_curves(tmp_path):
    fig = plots.sparsity_loss_curves_figure(target=0.2)
    assert legend_texts(fig.axes[0]) == ["KL divergence", r"MAE ($\ell_1$)", r"MSE ($\ell_2$)"]
    check_png(plots.sparsity_loss_curves(tmp_path / "kl.png", target=0.2))
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        plots.sparsity_loss_curves(tmp_path / "kl.png", target=1.0)


# ------------------------------------------------------------------------------ writing files

WRITERS = {
    "feature_density": lambda path: plots.feature_density([0.0, 0.1, 0.5], path),
    "decoder_norms": lambda path: plots.decoder_norms(np.ones((3, 2)), path),
    "l0_curves": lambda path: plots.l0_curves({"val_l0": [3.0, 2.0]}, path),
    "feature_grid": lambda path: plots.feature_grid(weights(4), path),
    "side_by_side": lambda path: plots.feature_grids_side_by_side([("a", weights(4))], path),
    "reconstructions": lambda path: plots.reconstructions(np.zeros((2, 784)), np.ones((2, 784)),
                                                          path),
    "activation_histogram": lambda path: plots.activation_histogram([0.1, 0.2], 0.1, path),
    "training_curves": lambda path: plots.training_curves(history(3), path, val_label="test"),
    "sparsity_loss_curves": lambda path: plots.sparsity_loss_curves(path),
}


@pytest.mark.parametrize("name", WRITERS)
def test_crash_mid_write_leaves_old_png_and_no_temp_file(name, tmp_path, monkeypatch):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")

    def half_write(self, f, **kwargs):
        f.write(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr(plots.Figure, "savefig", half_write)
    with pytest.raises(OSError, match="disk full"):
        WRITERS[name](path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


@pytest.mark.parametrize("name", WRITERS)
def test_saving_draws_each_figure_once(name, tmp_path, monkeypatch):
    """fig.tight_layout() leaves a placeholder layout engine on the figure, and savefig, seeing
    one, ran a whole draw to lay out nothing before the real one: twice the time. Not now."""
    draws = []
    draw = plots.Figure.draw

    def counted(self, renderer):
        draws.append(self)
        return draw(self, renderer)

    monkeypatch.setattr(plots.Figure, "draw", counted)
    WRITERS[name](tmp_path / "figure.png")
    assert len(draws) == 1


@pytest.mark.parametrize("path", [None, ""])
def test_bad_path_says_what_to_pass(path):
    with pytest.raises(ConfigError, match="file name such as"):
        plots.sparsity_loss_curves(path)


def test_folder_as_path_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        plots.sparsity_loss_curves(tmp_path)


def test_plots_never_import_pyplot():
    tree = ast.parse((ROOT / "minisae" / "apps" / "plots.py").read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [f"{node.module}.{alias.name}" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) for alias in node.names]
    assert not [name for name in imported if "pyplot" in name]


def test_demo_writes_png(tmp_path):
    out = tmp_path / "demo.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "sparsity_loss_curves.py"), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    check_png(out)
