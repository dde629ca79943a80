"""Streamed batches (minisae.training.stream) and the normaliser (minisae.normalize).

An epoch is a permutation of the rows minus the dropped tail, drawn from (seed, epoch) and the
chunking; `epoch(e, start=k)` is exactly the tail of `epoch(e)` from step k and reads only the
windows it needs; the buffers do not grow with the data; bad rows are found with their file
and row; the normaliser's statistics are NumPy's on the whole array.
"""
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minisae.backend import get_backend
from minisae.checks import first_bad_value
from minisae.data import ArrayFiles
from minisae.errors import ConfigError, InputError
from minisae.training.batches import ArrayBatches
from minisae.normalize import Normalizer, combine, moments
from minisae.training.stream import ArraySource, StreamBatches

NUMPY = get_backend("numpy", "float32")


def numbered(n, w=3, dtype=np.float32):
    """Rows whose first column is their row number (the rest random), to follow them."""
    x = np.random.default_rng(n).normal(size=(n, w)).astype(dtype)
    x[:, 0] = np.arange(n)
    return x


def stream(x, batch, chunk, buffer, seed=0, **kw):
    return StreamBatches(ArraySource(x), batch, seed, NUMPY, chunk_rows=chunk,
                         buffer_rows=buffer, **kw)


def collect(batches, epoch, start=0):
    """[(step, batch copy)] of an epoch (the batch buffer is reused)."""
    return [(s, b.copy()) for s, b in batches.epoch(epoch, start)]


# ----------------------------------------------------------------------------- the order

@pytest.mark.parametrize("n, batch, chunk, buffer", [(100, 7, 10, 30), (100, 10, 100, 100),
                                                     (97, 5, 9, 40), (50, 64, 8, 16),
                                                     (33, 1, 1, 1), (1000, 32, 64, 256)])
def test_an_epoch_is_a_permutation_of_the_rows_minus_the_dropped_tail(n, batch, chunk, buffer):
    x = numbered(n)
    b = stream(x, batch, chunk, buffer)
    order = b.order(1)
    assert sorted(order) == list(range(n))
    got = collect(b, 1)
    assert [s for s, _ in got] == list(range(n // batch)) and b.steps_per_epoch == n // batch
    rows = np.concatenate([g for _, g in got]) if got else np.empty((0, 3), np.float32)
    assert np.array_equal(rows, x[order[:n // batch * batch]])
    assert len(set(rows[:, 0].tolist())) == len(rows)            # no row twice


def test_epochs_and_seeds_differ_and_the_same_seed_repeats():
    x = numbered(500)
    first = np.concatenate([g for _, g in collect(stream(x, 10, 20, 100), 1)])
    again = np.concatenate([g for _, g in collect(stream(x, 10, 20, 100), 1)])
    second = np.concatenate([g for _, g in collect(stream(x, 10, 20, 100), 2)])
    other = np.concatenate([g for _, g in collect(stream(x, 10, 20, 100, seed=1), 1)])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, second) and not np.array_equal(first, other)


def test_a_buffer_holding_everything_is_a_full_shuffle():
    b = stream(numbered(200), 10, 10, 1000)
    assert b.window_chunks == 20 and b.buffer_rows == 200
    # every window position can hold any row: the first batch spans many chunks
    first = next(iter(b.epoch(1)))[1][:, 0] // 10
    assert len(set(first.tolist())) > 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), batch=st.integers(1, 40), chunk=st.integers(1, 50),
       extra=st.integers(0, 200), epoch=st.integers(1, 3), data=st.data())
def test_resuming_at_step_k_yields_exactly_the_tail_and_reads_only_what_it_needs(
        n, batch, chunk, extra, epoch, data):
    x = numbered(n, 2)
    b = stream(x, batch, chunk, chunk + extra, seed=n)
    whole = collect(b, epoch)
    k = data.draw(st.integers(0, b.steps_per_epoch + 1))
    resumed = stream(x, batch, chunk, chunk + extra, seed=n)
    tail = collect(resumed, epoch, start=k)
    assert [s for s, _ in tail] == [s for s, _ in whole][k:]
    assert all(np.array_equal(a, c) for (_, a), (_, c) in zip(tail, whole[k:]))
    # what was read: the window holding position k * batch, through the one holding the
    # last row trained on, and no other
    if k < b.steps_per_epoch:
        starts = resumed._chunks(epoch)[2]
        first = np.searchsorted(starts, k * batch, side="right") - 1
        last = np.searchsorted(starts, b.steps_per_epoch * batch - 1, side="right") - 1
        assert resumed.rows_read == starts[last + 1] - starts[first]
    else:
        assert resumed.rows_read == 0


def test_files_and_arrays_give_the_same_batches(tmp_path):
    x = numbered(300, 4)
    for i, (a, c) in enumerate([(0, 70), (70, 71), (71, 300)]):
        (tmp_path / "s").mkdir(exist_ok=True)
        np.save(tmp_path / "s" / f"{i}.npy", x[a:c].astype(np.float16))
    files = StreamBatches(ArrayFiles(tmp_path / "s"), 16, 3, NUMPY, chunk_rows=25,
                          buffer_rows=75)
    memory = stream(x.astype(np.float16).astype(np.float32), 16, 25, 75, seed=3)
    for (s1, a), (s2, c) in zip(collect(files, 2), collect(memory, 2)):
        assert s1 == s2 and a.dtype == np.float32 and np.array_equal(a, c)


def test_settings_and_defaults():
    b = StreamBatches(ArraySource(numbered(10_000, 8)), 100, 0, NUMPY)
    assert b.settings() == {"batch_size": 100, "seed": 0, "chunk_rows": b.chunk_rows,
                            "buffer_rows": b.buffer_rows}
    assert b.buffer_rows == 10_000            # 256 MiB of rows holds all of them
    b = stream(numbered(100), 10, 30, 100)
    assert (b.window_chunks, b.buffer_rows) == (3, 90)   # rounded down to whole chunks
    with pytest.raises(ConfigError):
        stream(numbered(100), 10, 30, 20)                # a buffer smaller than a chunk
    with pytest.raises(ConfigError):
        StreamBatches(ArraySource(numbered(10)), 5, 0, NUMPY, dtype="float16")


def test_the_buffers_do_not_grow_with_the_data(tmp_path):
    sizes = {}
    for n in (2_000, 200_000):
        x = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
        np.save(tmp_path / f"{n}.npy", x)
        del x
        b = StreamBatches(ArrayFiles(tmp_path / f"{n}.npy"), 50, 0, NUMPY, chunk_rows=100,
                          buffer_rows=1000)
        tracemalloc.start()
        try:
            steps = sum(1 for _ in b.epoch(1))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert steps == n // 50
        sizes[n] = peak
    # 200_000 rows of 64 bytes = 12.8 MB streamed through a 64 KB buffer
    assert sizes[200_000] < 1 << 20 and sizes[200_000] < 3 * sizes[2_000] + (100 << 10)


def test_a_nan_late_in_a_file_names_the_file_and_the_row(tmp_path):
    x = numbered(400)
    x[333, 1] = np.inf
    (tmp_path / "s").mkdir()
    np.save(tmp_path / "s" / "a.npy", x[:300])
    np.save(tmp_path / "s" / "b.npy", x[300:])
    b = StreamBatches(ArrayFiles(tmp_path / "s"), 10, 0, NUMPY, chunk_rows=20, buffer_rows=40)
    with pytest.raises(InputError) as e:
        for _ in b.epoch(1):
            pass
    assert str(tmp_path / "s" / "b.npy") in str(e.value)
    assert "row 33 (row 333 of the whole)" in str(e.value)


def test_unit_range_is_checked_as_rows_are_read():
    x = np.random.default_rng(0).uniform(size=(100, 3)).astype(np.float32)
    list(stream(x, 10, 10, 20, unit_range=True).epoch(1))
    x[57, 2] = -0.5
    with pytest.raises(InputError, match="x row 57 holds -0.5, outside"):
        list(stream(x, 10, 10, 20, unit_range=True).epoch(1))
    assert first_bad_value(x) is None and first_bad_value(x, True) == (57, 2, -0.5)


def test_array_batches_keep_their_interface():
    x = numbered(100)
    a, s = ArrayBatches(x, 10, 0, NUMPY), stream(x, 10, 10, 30)
    assert a.steps_per_epoch == s.steps_per_epoch
    assert [k for k, _ in a.epoch(1, start=3)] == [k for k, _ in s.epoch(1, start=3)]


# ----------------------------------------------------------------------------- normaliser

def offset_data(n=1000, w=6, dtype=np.float32):
    """Rows far from the origin next to their spread, features of unequal scales."""
    rng = np.random.default_rng(0)
    return (1e4 + rng.normal(size=(n, w)) * np.arange(1, w + 1)).astype(dtype)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_the_normaliser_statistics_are_numpys_on_the_whole_array(tmp_path, chunk):
    x = offset_data()
    np.save(tmp_path / "x.npy", x)
    x64 = x.astype(np.float64)
    norm = Normalizer.fit(ArrayFiles(tmp_path / "x.npy"), chunk_rows=chunk)
    assert norm.rows == 1000
    np.testing.assert_allclose(norm.mean, x64.mean(axis=0), rtol=1e-13)
    var = x64.var(axis=0)
    np.testing.assert_allclose(norm.scale, np.sqrt(6 / var.sum()), rtol=1e-9)
    y = norm.apply(x64.copy())
    assert abs(np.mean(np.sum(y * y, axis=1)) - 6) < 1e-8
    std = Normalizer.fit(x, mode="standard", chunk_rows=chunk)
    np.testing.assert_allclose(std.scale, 1 / np.sqrt(var), rtol=1e-9)
    np.testing.assert_allclose(std.apply(x64).var(axis=0), 1, rtol=1e-9)
    raw = Normalizer.fit(x, center=False, chunk_rows=chunk)
    assert (raw.mean == 0).all()
    np.testing.assert_allclose(raw.scale, np.sqrt(6 / (x64 * x64).sum(axis=1).mean()),
                               rtol=1e-9)


def test_moments_combine_like_the_whole():
    x = offset_data(301, 4).astype(np.float64)
    parts = [moments(x[a:b]) for a, b in ((0, 1), (1, 150), (150, 150), (150, 301))]
    total = (0, np.zeros(4), np.zeros(4))
    for p in parts:
        total = combine(total, p)
    n, mean, m2 = total
    assert n == 301
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(m2 / n, x.var(0), rtol=1e-10)


def test_apply_and_undo_round_trip_in_the_arrays_dtype():
    x = offset_data()
    norm = Normalizer.fit(x)
    y = norm.apply(x)
    assert y.dtype == np.float32 and abs(float(y.mean())) < 1e-3
    np.testing.assert_allclose(norm.undo(y), x, rtol=1e-6)
    buf = x.copy()
    assert norm.apply(buf, out=buf) is buf and np.array_equal(buf, y)
    with pytest.raises(InputError, match="6 features"):
        norm.apply(np.zeros((2, 5), np.float32))


def test_the_state_is_plain_and_checked():
    norm = Normalizer.fit(offset_data(), mode="standard")
    state = norm.state()
    assert set(state) == {"mode", "center", "rows", "mean", "scale"}
    assert state["mean"].dtype == np.float64 and state["scale"].shape == (6,)
    again = Normalizer.from_state(state)
    assert np.array_equal(again.mean, norm.mean) and np.array_equal(again.scale, norm.scale)
    for bad in ({**state, "scale": -state["scale"]}, {**state, "mean": state["mean"][:3]},
                {**state, "mode": "minmax"}, {**state, "mean": state["mean"] * np.nan},
                {"mode": "norm"}, {**state, "mode": "norm"}):
        with pytest.raises(ConfigError):
            Normalizer.from_state(bad)


def test_a_constant_feature_keeps_scale_one():
    x = np.ones((50, 3), np.float32)
    x[:, 1] = np.arange(50)
    std = Normalizer.fit(x, mode="standard")
    assert std.scale[0] == 1 and std.scale[2] == 1
    assert Normalizer.fit(np.ones((5, 2))).scale_value == 1.0


def test_the_normaliser_pass_finds_bad_rows(tmp_path):
    x = offset_data()
    x[900, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(InputError, match="row 900"):
        Normalizer.fit(ArrayFiles(tmp_path / "x.npy"), chunk_rows=64)


def test_the_stream_normalises_its_buffer():
    x = offset_data()
    norm = Normalizer.fit(x)
    plain, normed = stream(x, 10, 50, 200), stream(x, 10, 50, 200, normalizer=norm)
    for (_, a), (_, b) in zip(collect(plain, 1), collect(normed, 1)):
        np.testing.assert_array_equal(norm.apply(a), b)


# ----------------------------------------------------------------------------- benchmark

def test_the_stream_benchmark_runs_small_and_cleans_up(tmp_path):
    from minisae.apps.streambench import format_stream_result, run_stream_benchmark
    result = run_stream_benchmark(rows=3000, n_inputs=16, n_hidden=8, batch=100, steps=2,
                                  rounds=1, folder=tmp_path, kinds=("speed", "pass"))
    assert [r["kind"] for r in result["results"]] == ["speed", "pass"]
    assert result["results"][1]["rows"] == 3000 and result["results"][1]["peak_rss"] > 0
    assert "stream / memory" in format_stream_result(result)
    assert list(tmp_path.iterdir()) == []                      # the file is removed


def test_the_stream_benchmark_refuses_a_file_larger_than_the_free_disk(tmp_path):
    from minisae.apps.streambench import run_stream_benchmark
    with pytest.raises(ConfigError, match="GB free"):
        run_stream_benchmark(rows=10**12, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []
