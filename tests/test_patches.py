"""Natural-image patches (minisae.data.patches): loading, whitening, sampling, normalising, and
the orientation score, ending with a short training run whose filters must be edges.

The photographs are loaded and whitened once per module (fixtures), which keeps the whole
file to a few seconds.
"""
import sys

import numpy as np
import pytest
import scipy.optimize
from threadpoolctl import threadpool_limits

from minisae import SparseAutoencoder
from minisae.data import patches as P
from minisae.errors import ConfigError, DatasetError, InputError


@pytest.fixture(scope="module")
def photos():
    """The default photographs, grayscale in [0, 1]."""
    return P.load_photographs()


@pytest.fixture(scope="module")
def white(photos):
    """The default photographs, shrunk and whitened as natural_patches does."""
    return [P.whiten(P.shrink(im)) for im in photos]


def gabor_bank(n=24, size=8, freq=0.25, sigma=1.5):
    """n Gabor filters at evenly spaced orientations, as columns: (size*size, n)."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    filters = []
    for theta in np.linspace(0, np.pi, n, endpoint=False):
        u = x * np.cos(theta) + y * np.sin(theta)
        v = -x * np.sin(theta) + y * np.cos(theta)
        filters.append(np.exp(-(u ** 2 + v ** 2) / (2 * sigma ** 2)) * np.cos(2 * np.pi * freq * u))
    return np.stack([f.ravel() for f in filters], axis=1)


def one_over_f_noise(n=256, seed=0):
    """An n x n image with amplitude spectrum 1/f and random phases, like a natural image's."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    f[0, 0] = 1.0
    spectrum = np.exp(2j * np.pi * rng.random((n, n))) / f
    spectrum[0, 0] = 0.0
    return np.fft.ifft2(spectrum).real


def spectral_slope(image, lo=0.02, hi=0.2):
    """Slope of log(radially averaged amplitude) against log(f), for lo <= f <= hi."""
    n = image.shape[0]
    amplitude = np.abs(np.fft.fft2(image))
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    rings = np.round(f * n).astype(int)                   # ring k holds |f| ~ k / n
    keep = (f >= lo) & (f <= hi)
    k = np.unique(rings[keep])
    mean_amp = np.array([amplitude[rings == r].mean() for r in k])
    return np.polyfit(np.log(k / n), np.log(mean_amp), 1)[0]


# ---------------------------------------------------------------------------- photographs

def test_default_photographs_are_gray_and_varied(photos):
    assert len(photos) == len(P.DEFAULT_PHOTOGRAPHS) > 2
    for im in photos:
        assert im.ndim == 2 and im.dtype == np.float64 and min(im.shape) >= 256
        assert 0.0 <= im.min() < im.max() <= 1.0


def test_every_listed_photograph_loads_offline():
    extra = [n for n in P.PHOTOGRAPHS if n not in P.DEFAULT_PHOTOGRAPHS]
    for name, im in zip(extra, P.load_photographs(extra)):
        assert im.ndim == 2, name


def test_unknown_photograph_lists_the_choices():
    with pytest.raises(ConfigError, match="choose from .*'camera'"):
        P.load_photographs(["camera", "mona_lisa"])


@pytest.mark.parametrize("module,name,install", [
    ("sklearn.datasets", "china", "pip install scikit-learn"),
    ("skimage", "camera", "pip install scikit-image"),
])
def test_missing_package_says_what_to_install(monkeypatch, module, name, install):
    monkeypatch.setitem(sys.modules, module, None)     # makes `import module` fail
    with pytest.raises(DatasetError, match=install):
        P.load_photographs([name])


def test_to_gray_uses_luminance_weights():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 1] = 255                                    # pure green
    assert np.allclose(P.to_gray(rgb), 0.7154)
    with pytest.raises(InputError, match="gray or"):
        P.to_gray(np.zeros((2, 2, 5)))


def test_shrink_averages_blocks():
    image = np.arange(5 * 7, dtype=np.float64).reshape(5, 7)
    small = P.shrink(image, 2)
    assert small.shape == (2, 3)                         # the odd last row and column go
    assert small[1, 2] == image[2:4, 4:6].mean()
    assert np.array_equal(P.shrink(image, 1), image)


@pytest.mark.parametrize("image,factor,error,match", [
    (np.ones((4, 4)), 0, ConfigError, "downsampling factor"),
    (np.ones((4, 4)), 5, InputError, "at least 5 x 5"),
    (np.ones(4), 2, InputError, "2-D"),
])
def test_shrink_rejects_bad_arguments(image, factor, error, match):
    with pytest.raises(error, match=match):
        P.shrink(image, factor)


# ---------------------------------------------------------------------------- whitening

def test_whitening_filter_formula():
    R = P.whitening_filter((64, 64), f0=0.4)
    assert R[0, 0] == 0.0                                # DC is removed
    # fftfreq(64)[16] = 0.25 cycles per pixel
    assert np.isclose(R[0, 16], 0.25 * np.exp(-(0.25 / 0.4) ** 4))
    assert np.isclose(R[16, 0], R[0, 16])                # the same in every direction


def test_whitening_flattens_a_one_over_f_spectrum():
    image = one_over_f_noise()
    assert spectral_slope(image) == pytest.approx(-1.0, abs=0.1)
    white = P.whiten(image)
    assert abs(spectral_slope(white)) < 0.15
    assert white.mean() == pytest.approx(0.0, abs=1e-12)
    assert white.var() == pytest.approx(P.WHITE_VARIANCE)


def test_whitened_photographs_have_no_border_artifacts(white):
    # the mirrored tile has no false edges: the border rows look like the inside ones
    for im in white:
        inside = im[8:-8, 8:-8].std()
        for edge in (im[0], im[-1], im[:, 0], im[:, -1]):
            assert edge.std() < 1.5 * inside        # without the mirror: up to 2.7


@pytest.mark.parametrize("image,kw,error,match", [
    (np.ones((16, 16)), {}, InputError, "constant"),
    (np.zeros(16), {}, InputError, "2-D"),
    (np.full((16, 16), np.nan), {}, InputError, "NaN"),
    (np.eye(16), {"f0": 0.0}, ConfigError, "f0"),
    (np.eye(16), {"variance": -1}, ConfigError, "variance"),
])
def test_whiten_rejects_bad_input(image, kw, error, match):
    with pytest.raises(error, match=match):
        P.whiten(image, **kw)


# ---------------------------------------------------------------------------- sampling

def test_patches_are_image_windows_read_row_by_row():
    image = np.arange(20 * 30, dtype=np.float64).reshape(20, 30)
    x = P.sample_patches([image], n=50, size=3, seed=1, dtype="float64")
    assert x.shape == (50, 9)
    for patch in x:
        top, left = divmod(int(patch[0]), 30)
        assert np.array_equal(patch.reshape(3, 3), image[top:top + 3, left:left + 3])


def test_sampling_is_determined_by_the_seed(white):
    a = P.sample_patches(white, 500, seed=3)
    assert np.array_equal(a, P.sample_patches(white, 500, seed=3))
    assert not np.array_equal(a, P.sample_patches(white, 500, seed=4))


def test_sampling_draws_from_every_image():
    images = [np.full((10, 10), float(k)) + np.eye(10) for k in range(4)]
    x = P.sample_patches(images, 400, size=2, seed=0, dtype="float64")
    assert set(x.min(axis=1)) == {0.0, 1.0, 2.0, 3.0}     # a 2x2 window is never all diagonal


@pytest.mark.parametrize("kw,error,match", [
    ({"n": 0}, ConfigError, "n must be a positive integer"),
    ({"n": 2.5}, ConfigError, "n must be a positive integer"),
    ({"size": 40}, InputError, "at least 40 x 40"),
    ({"dtype": "int8"}, ConfigError, "float32"),
])
def test_sampling_rejects_bad_arguments(kw, error, match):
    args = {"images": [np.eye(32)], "n": 10, **kw}
    with pytest.raises(error, match=match):
        P.sample_patches(**args)


def test_sampling_needs_an_image():
    with pytest.raises(InputError, match="at least one image"):
        P.sample_patches([], 10)


# ---------------------------------------------------------------------------- normalising

def test_normalisation_formula_without_clipping():
    x = np.array([[0.0, 2.0], [1.0, -1.0]])
    # rows minus their means: [[-1, 1], [1, -1]]; std of all = 1, so s = 3
    expected = 0.1 + 0.4 * (np.array([[-1.0, 1.0], [1.0, -1.0]]) / 3 + 1)
    assert np.allclose(P.normalize_patches(x), expected)


def test_normalisation_clips_at_three_std():
    x = np.zeros((100, 2))
    x[0] = [-100.0, 100.0]              # std of all = sqrt(2 * 100^2 / 200) = 10, s = 30
    out = P.normalize_patches(x)
    assert out[0].tolist() == pytest.approx([0.1, 0.9])
    assert np.all(out[1:] == 0.5)       # a flat patch lands in the middle


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normalisation_keeps_the_dtype(white, dtype):
    x = P.normalize_patches(P.sample_patches(white, 1000, dtype=dtype))
    assert x.dtype == dtype
    assert x.min() >= 0.1 and x.max() <= 0.9


@pytest.mark.parametrize("x,kw,error,match", [
    (np.ones(4), {}, InputError, "n_patches, n_pixels"),
    (np.ones((3, 4)), {}, InputError, "flat"),
    (np.array([[0.0, np.inf]]), {}, InputError, "NaN or inf"),
    (np.eye(3), {"clip_std": 0}, ConfigError, "clip_std"),
])
def test_normalisation_rejects_bad_input(x, kw, error, match):
    with pytest.raises(error, match=match):
        P.normalize_patches(x, **kw)


# ---------------------------------------------------------------------------- all together

def test_natural_patches_shape_dtype_and_range(monkeypatch, photos):
    monkeypatch.setattr(P, "load_photographs", lambda names=None: photos)  # loaded once above
    x = P.natural_patches(2000, size=8, seed=0)
    assert x.shape == (2000, 64) and x.dtype == np.float32
    assert x.min() >= 0.1 and x.max() <= np.float32(0.9)
    assert abs(x.mean() - 0.5) < 0.01


def test_natural_patches_from_arrays_is_deterministic(photos):
    crops = [im[:128, :128] for im in photos[:3]]
    a = P.natural_patches(300, size=6, seed=1, images=crops, dtype="float64", downsample=1)
    assert a.shape == (300, 36) and a.dtype == np.float64
    assert np.array_equal(a, P.natural_patches(300, size=6, seed=1, images=crops,
                                               dtype="float64", downsample=1))
    assert not np.array_equal(a, P.natural_patches(300, size=6, seed=1, images=crops,
                                                   dtype="float64"))    # shrunk by 2


# ---------------------------------------------------------------------------- the score

def test_score_is_high_for_gabor_filters():
    s = P.orientation_score(gabor_bank())
    assert s.orientation > 0.45 and s.orientation_ratio > 2.0
    assert s.coherence > 0.75 and s.coherence_ratio > 4.0
    assert s.localization > 0.8 and s.localization_ratio > 1.7
    assert s.per_filter["orientation"].shape == (24,)


def test_score_is_near_the_baseline_for_noise():
    W = np.random.default_rng(0).normal(size=(64, 200))
    s = P.orientation_score(W)
    for ratio in (s.orientation_ratio, s.coherence_ratio, s.localization_ratio):
        assert ratio == pytest.approx(1.0, abs=0.06)


def test_a_grating_fills_one_band_and_a_dot_one_window():
    y, x = np.mgrid[:8, :8]
    grating = np.cos(2 * np.pi * 0.25 * x)               # vertical stripes
    dot = np.zeros((8, 8))
    dot[2:4, 5:7] = 1.0
    s = P.orientation_score(np.stack([grating.ravel(), dot.ravel()], axis=1))
    assert s.per_filter["coherence"][0] == pytest.approx(1.0)
    assert s.per_filter["orientation"][0] > 0.6          # the 8x8 border leaks some energy
    assert s.per_filter["localization"][1] > 0.85


def test_score_summary_and_dict():
    s = P.orientation_score(gabor_bank())
    d = s.as_dict()
    assert d["orientation_ratio"] == pytest.approx(s.orientation / s.orientation_random)
    assert all(isinstance(v, (int, float)) for v in d.values())
    assert "orientation" in str(s) and "localization" in str(s)


def test_score_reads_weights_from_any_backend(backend):
    model = SparseAutoencoder(n_inputs=64, n_hidden=5, backend=backend, seed=0)
    s = P.orientation_score(model.params["encoder.W"])      # CuPy arrays are copied over
    reference = P.orientation_score(SparseAutoencoder(n_inputs=64, n_hidden=5, seed=0)
                                    .params["encoder.W"])
    assert s.orientation == pytest.approx(reference.orientation, rel=1e-6)


def test_constant_filters_score_zero_and_nan_ratios():
    s = P.orientation_score(np.zeros((64, 3)))
    assert s.orientation == s.coherence == s.localization == 0.0
    assert np.isnan(s.orientation_ratio) and np.isnan(s.localization_ratio)


@pytest.mark.parametrize("W,kw,error,match", [
    (np.ones((63, 5)), {}, InputError, r"\(64, n\)"),
    (np.full((64, 5), np.nan), {}, InputError, "NaN"),
    (np.eye(64), {"n_bins": 1}, ConfigError, "n_bins"),
    (np.eye(64), {"window": 9}, ConfigError, "window"),
    (np.eye(64), {"image_shape": 8}, ConfigError, "image_shape"),
    (np.eye(64), {"n_random": 0}, ConfigError, "n_random"),
])
def test_score_rejects_bad_arguments(W, kw, error, match):
    with pytest.raises(error, match=match):
        P.orientation_score(W, **kw)


# ---------------------------------------------------------------------------- learning

def test_a_short_training_run_learns_oriented_filters(white):
    """UFLDL's exercise, cut down: 2,000 patches, 200 L-BFGS iterations (under a second).
    Over seeds 0-4 this measured orientation x1.42-1.66 and coherence x3.8-4.7 above
    random; the full exercise (10,000 patches, 400 iterations) about x1.85 and x5.6."""
    x = P.normalize_patches(P.sample_patches(white, 2000, seed=0, dtype="float64"))
    model = SparseAutoencoder(n_inputs=64, n_hidden=25, sparsity_target=0.01,
                              sparsity_weight=3.0, weight_decay=1e-4, reduction="halfsum",
                              dtype="float64", seed=0)
    before = P.orientation_score(model.params["encoder.W"])

    def loss_and_grad(theta):
        model.flat_params[:] = theta
        return model.loss_and_grads(x).total, model.flat_grads.copy()

    # One BLAS thread: these matrices are tiny, and on a busy 2-core machine two OpenBLAS
    # threads made each step 25 times slower (190 ms instead of 7 ms).
    with threadpool_limits(1):
        result = scipy.optimize.minimize(loss_and_grad, model.flat_params.copy(), jac=True,
                                         method="L-BFGS-B", options={"maxiter": 200})
    model.flat_params[:] = result.x
    after = P.orientation_score(model.params["encoder.W"])
    assert before.orientation_ratio < 1.1 and before.coherence_ratio < 1.2
    assert after.orientation_ratio > 1.3 and after.coherence_ratio > 3.0
