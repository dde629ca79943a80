import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from minisae import plots
from minisae.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_size=(100, 100)):
    path = Path(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1]
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return image


def weights(n_units=196, seed=0):
    return np.random.default_rng(seed).normal(size=(784, n_units))


def test_tile_images_shape():
    assert plots.tile_images(weights(196)).shape == (14 * 29 + 1, 14 * 29 + 1)
    # 10 units -> 4 columns, 3 rows; no padding
    assert plots.tile_images(weights(10), pad=0).shape == (3 * 28, 4 * 28)
    assert plots.tile_images(np.ones((12, 5)), image_shape=(3, 4), n_cols=5).shape == (5, 26)


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


def test_tile_images_rejects_wrong_shape():
    with pytest.raises(InputError, match="784"):
        plots.tile_images(np.zeros((100, 3)))


def test_feature_grid(tmp_path):
    path = plots.feature_grid(weights(300), tmp_path / "sub" / "features.png", title="W1")
    assert path == tmp_path / "sub" / "features.png"
    check_png(path, (500, 500))


def test_feature_grids_side_by_side(tmp_path):
    path = plots.feature_grids_side_by_side(
        [("mean", weights(49)), ("halfsum", weights(25, seed=1))], tmp_path / "both.png")
    image = check_png(path)
    assert image.shape[1] > image.shape[0]


def test_reconstructions(tmp_path):
    x = np.random.default_rng(0).random((5, 784))
    check_png(plots.reconstructions(x, 1 - x, tmp_path / "rec.png", n=10), (200, 400))
    with pytest.raises(InputError):
        plots.reconstructions(x, x[:, :10], tmp_path / "bad.png")


def test_activation_histogram(tmp_path):
    rho_hat = np.random.default_rng(0).beta(1, 9, size=200)
    check_png(plots.activation_histogram(rho_hat, 0.1, tmp_path / "hist.png"))


def test_training_curves(tmp_path):
    history = {
        "train_total": [0.5, 0.3, 0.2], "train_reconstruction": [0.4, 0.25, 0.15],
        "train_sparsity": [0.1, 0.05, 0.05], "val_total": [0.6, None, 0.25],
        "train_mean_activation": [0.3, 0.15, 0.11],
    }
    check_png(plots.training_curves(history, tmp_path / "curves.png"))
    check_png(plots.training_curves({"train_sparsity": [0.0, 0.0]}, tmp_path / "zeros.png"))
    check_png(plots.training_curves({"val_total": [None]}, tmp_path / "empty.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "empty.png", "zeros.png"]


def test_sparsity_loss_curves(tmp_path):
    check_png(plots.sparsity_loss_curves(tmp_path / "kl.png", target=0.2))


def test_crash_mid_write_leaves_old_png_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "kl.png"
    path.write_bytes(b"old")

    def half_write(self, f, **kwargs):
        f.write(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr(plots.Figure, "savefig", half_write)
    with pytest.raises(OSError, match="disk full"):
        plots.sparsity_loss_curves(path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kl.png"]


def test_demo_writes_png(tmp_path):
    out = tmp_path / "demo.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "sparsity_loss_curves.py"), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    check_png(out)
