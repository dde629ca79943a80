"""minisae inspect: the rows that make a feature fire, its density, its decoder neighbours.

Every test makes its own small data: a model whose unit j fires only on rows that carry a
pattern j, so the rows each feature must list are known in advance."""
import argparse
import json
import tracemalloc

import numpy as np
import pytest

from minisae import SparseAutoencoder
from minisae.apps import inspect as I
from minisae.data import ArrayFiles
from minisae.errors import CheckpointError, ConfigError, InputError
from minisae.files import checkpoint

N_IN, N_HID = 8, 4


def planted(seed=0, n=300):
    """(model, x, amplitude, carrier): row i carries pattern carrier[i] (a unit 0..2, or -1
    for none) with amplitude[i]; unit j (j < 3) computes relu(x . p_j - 0.5), so it fires
    on exactly the rows carrying p_j, with h = amplitude - 0.5 there. Unit 3 never fires.
    Decoder rows: unit 1's is unit 0's turned slightly, unit 2's orthogonal to both."""
    rng = np.random.default_rng(seed)
    model = SparseAutoencoder(n_inputs=N_IN, n_hidden=N_HID, sparsity="l1",
                              hidden_activation="relu", output_activation="linear",
                              dtype="float64", seed=0)
    patterns = np.zeros((3, N_IN))
    for j in range(3):
        patterns[j, 2 * j:2 * j + 2] = 1 / np.sqrt(2)
    W1 = np.zeros((N_IN, N_HID))
    W1[:, :3] = patterns.T
    model.params["encoder.W"][...] = W1
    model.params["encoder.b"][...] = [-0.5, -0.5, -0.5, -100.0]
    W2 = np.zeros((N_HID, N_IN))
    W2[0, 0], W2[1, :2], W2[2, 5], W2[3, 7] = 1.0, (1.0, 0.1), 2.0, 1.0
    model.params["decoder.W"][...] = W2
    carrier = rng.integers(-1, 3, n)
    amplitude = rng.uniform(0.6, 3.0, n)
    x = 0.01 * rng.random((n, N_IN))
    x[:, 6:] = 0.0  # no pattern lives there: the noise stays off every unit
    for j in range(3):
        x[np.ix_(carrier == j, [2 * j, 2 * j + 1])] = 0.0
        x[carrier == j] += amplitude[carrier == j, None] * patterns[j]
    return model, x, amplitude, carrier


def expected_top(x, model, j, top):
    h = np.maximum(x @ model.params["encoder.W"][:, j] + model.params["encoder.b"][j], 0)
    rows = [i for i in np.lexsort((np.arange(len(h)), -h)) if h[i] > 0]
    return rows[:top], h


def test_the_planted_features_top_rows_are_found():
    model, x, amplitude, carrier = planted()
    report = I.inspect_features(model, x, features=[2, 0, 3], top=5)
    assert [f.index for f in report.features] == [2, 0, 3]
    for f in report.features[:2]:
        rows, h = expected_top(x, model, f.index, 5)
        assert [t.row for t in f.top] == rows
        assert all(carrier[t.row] == f.index for t in f.top)  # its pattern, and only it
        np.testing.assert_allclose([t.value for t in f.top], h[rows])
        np.testing.assert_allclose([t.value for t in f.top], amplitude[rows] - 0.5, atol=0.05)
        assert f.n_active == int((carrier == f.index).sum())
        assert f.density == pytest.approx(f.n_active / len(x))
        assert all(t.label is None for t in f.top)
    dead = report.features[2]
    assert dead.dead and dead.density == 0 and dead.top == ()
    assert report.dead_units == 1 and report.n_rows == 300 and report.fires == "h > 0"


def test_the_decoder_neighbours_are_the_nearest_directions():
    model, x, _, _ = planted()
    report = I.inspect_features(model, x, features=[0, 2], top=1, neighbours=3)
    near0 = report.features[0].neighbours
    assert [n.feature for n in near0] == [1, 2, 3]
    assert near0[0].cosine == pytest.approx(1 / np.sqrt(1.01))
    assert near0[1].cosine == near0[2].cosine == 0.0  # orthogonal: ties go to the lower index
    assert [n.feature for n in I.inspect_features(model, x, features=[0], top=1,
                                                    neighbours=0).features[0].neighbours] == []


def test_a_unit_with_a_zero_decoder_row_has_no_neighbours_and_is_no_neighbour():
    model, x, _, _ = planted()
    model.params["decoder.W"][3] = 0.0
    report = I.inspect_features(model, x, features=[3, 0], top=1, neighbours=5)
    assert report.features[0].neighbours == ()
    assert [n.feature for n in report.features[1].neighbours] == [1, 2]


def test_labels_from_a_file_are_shown(tmp_path):
    model, x, _, carrier = planted()
    words = [f"tok{i} {'x' if c < 0 else 'ABC'[c]}" for i, c in enumerate(carrier)]
    path = tmp_path / "tokens.txt"
    path.write_bytes(("\r\n".join(words)).encode())  # CRLF, and no newline at the end
    report = I.inspect_features(model, x, features=[1], top=4, labels=path)
    assert [t.label for t in report.features[0].top] == [words[t.row] for t in
                                                         report.features[0].top]
    assert all(t.label.endswith(" B") for t in report.features[0].top)
    assert report.labels == str(path)
    text = I.format_report(report)
    assert f'"{words[report.features[0].top[0].row]}"' in text and "label" in text
    # a list does the same
    listed = I.inspect_features(model, x, features=[1], top=4, labels=words)
    assert listed.features == report.features


@pytest.mark.parametrize("n_lines", [299, 301])
def test_a_labels_file_of_another_length_is_refused_naming_both_counts(tmp_path, n_lines):
    model, x, _, _ = planted()
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"w{i}\n" for i in range(n_lines)))
    with pytest.raises(InputError, match=rf"labels file {path} has {n_lines} lines, but the data "
                                         rf"have 300 rows"):
        I.inspect_features(model, x, labels=path)
    with pytest.raises(InputError, match=rf"labels has {n_lines} entries, but the data have 300"):
        I.inspect_features(model, x, labels=[f"w{i}" for i in range(n_lines)])


def test_labels_that_are_not_text_or_a_list_are_refused(tmp_path):
    model, x, _, _ = planted()
    with pytest.raises(InputError, match="labels file .*nope.txt: no such file"):
        I.inspect_features(model, x, labels=tmp_path / "nope.txt")
    with pytest.raises(InputError, match="labels must be a text file's path"):
        I.inspect_features(model, x, labels=3)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\n" * 300)  # not UTF-8: shown escaped
    report = I.inspect_features(model, x, features=[0], top=1, labels=tmp_path / "bad.txt")
    assert report.features[0].top[0].label == "\\xff\\xfe"


@pytest.mark.parametrize("batch_size", [1, 7, 64, None])
def test_streaming_an_array_files_source_gives_the_in_memory_answer(tmp_path, batch_size):
    model, x, _, _ = planted(seed=1, n=500)
    x[400:450] = x[100:150]  # repeated rows: equal activations, the earlier row first
    np.save(tmp_path / "x.npy", x)
    whole = I.inspect_features(model, x, features=[0, 1, 2, 3], top=20, batch_size=500)
    with ArrayFiles(tmp_path / "x.npy") as source:
        streamed = I.inspect_features(model, source, features=[0, 1, 2, 3], top=20,
                                      batch_size=batch_size)
    assert streamed.features == whole.features
    assert streamed.data.startswith(str(tmp_path / "x.npy"))
    for f in whole.features[:3]:
        rows = [t.row for t in f.top]
        for a, b in zip(f.top, f.top[1:]):
            assert a.value > b.value or (a.value == b.value and a.row < b.row)
        assert not any(100 <= r < 150 and r + 300 in rows and rows.index(r + 300) <
                       rows.index(r) for r in rows)


def test_a_large_source_is_read_with_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    model, _, _, _ = planted()
    x = (0.5 * rng.random((60_000, N_IN))).astype(np.float32)  # 1.9 MB on disk
    np.save(tmp_path / "big.npy", x)
    del x
    with ArrayFiles(tmp_path / "big.npy") as source:
        tracemalloc.start()
        report = I.inspect_features(model, source, features=[0, 1, 2], top=10, batch_size=500)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert report.n_rows == 60_000 and all(len(f.top) == 10 for f in report.features)
    assert peak < 600_000, peak  # a batch's rows and codes, never all the rows


def test_unit_activity_is_the_firing_frequency_and_mean_activation(tmp_path):
    model, x, amplitude, carrier = planted()
    activity = I.unit_activity(model, x, batch_size=13)
    for j in range(3):
        assert activity.frequency[j] == pytest.approx(np.mean(carrier == j))
        assert activity.mean_activation[j] == pytest.approx(
            np.sum((amplitude - 0.5)[carrier == j]) / len(x), rel=0.02)
    assert activity.frequency[3] == 0 and activity.n_rows == 300


def test_random_features_come_from_the_seed():
    model, x, _, _ = planted()
    a = I.inspect_features(model, x, n_features=2, seed=5, top=1)
    b = I.inspect_features(model, x, n_features=2, seed=5, top=1)
    picks = [f.index for f in a.features]
    assert picks == [f.index for f in b.features] and picks == sorted(set(picks))
    assert {tuple(f.index for f in I.inspect_features(model, x, n_features=2, seed=s, top=1)
                  .features) for s in range(10)} != {tuple(picks)}
    assert len(I.inspect_features(model, x, n_features=50, top=1).features) == N_HID


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(features=[4]), ConfigError, r"features must be unit numbers from 0 to 3"),
    (dict(features=[-1]), ConfigError, r"features must be unit numbers"),
    (dict(features=[]), ConfigError, r"features must be a non-empty list"),
    (dict(features="3"), ConfigError, r"features must be a non-empty list"),
    (dict(top=0), ConfigError, r"top"),
    (dict(n_features=0), ConfigError, r"n_features"),
    (dict(batch_size=0), ConfigError, r"batch_size"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    model, x, _, _ = planted()
    with pytest.raises(error, match=match):
        I.inspect_features(model, x, **kwargs)


def test_bad_data_are_refused_naming_the_row(tmp_path):
    model, x, _, _ = planted()
    with pytest.raises(InputError, match=r"data has 3 features but the model has n_inputs=8"):
        I.inspect_features(model, x[:, :3])
    x[123, 4] = np.nan
    with pytest.raises(InputError, match=r"data row 123 holds NaN or inf in column 4"):
        I.inspect_features(model, x, batch_size=50)
    np.save(tmp_path / "x.npy", x)
    with ArrayFiles(tmp_path / "x.npy") as source, pytest.raises(InputError, match=r"row 123"):
        I.inspect_features(model, source, batch_size=50)
    np.save(tmp_path / "narrow.npy", x[:, :3])
    with ArrayFiles(tmp_path / "narrow.npy") as source, \
            pytest.raises(InputError, match=r"rows of 3 features, but the model takes "
                                            r"n_inputs=8"):
        I.inspect_features(model, source)
    with pytest.raises(ConfigError, match="SparseAutoencoder"):
        I.inspect_features("model", x)
    with pytest.raises(InputError, match="report must be what inspect_features returns"):
        I.format_report({})


def test_the_json_form_parses_and_says_everything():
    model, x, _, _ = planted()
    report = I.inspect_features(model, x, features=[0, 3], top=3, labels=[str(i) for i in
                                                                           range(300)])
    data = json.loads(json.dumps(report.as_dict()))
    assert data["n_rows"] == 300 and data["dead_units"] == 1 and data["fires"] == "h > 0"
    first = data["features"][0]
    assert first["index"] == 0 and not first["dead"] and len(first["top"]) == 3
    assert first["top"][0] == {"row": report.features[0].top[0].row,
                               "value": report.features[0].top[0].value,
                               "label": str(report.features[0].top[0].row)}
    assert first["neighbours"][0] == {"feature": 1, "cosine": report.features[0].neighbours[0]
                                      .cosine}
    assert data["features"][1]["dead"] and data["features"][1]["top"] == []


def test_the_text_report_reads():
    model, x, _, _ = planted()
    text = I.format_report(I.inspect_features(model, x, features=[0, 3], top=2))
    lines = text.splitlines()
    assert lines[0] == "data: an array of 300 rows in memory"
    assert lines[1] == "a feature fires where h > 0; 1 of 4 features fire on no row"
    assert any(line.startswith("feature 0: density ") for line in lines)
    assert "feature 3: density 0 (fires on 0 of 300 rows): dead on these rows" in lines
    assert any(line.startswith("  nearest by decoder direction (cosine): 1 (0.995)")
               for line in lines)


# ----------------------------------------------------------------------------- the command

def parse(argv):
    parser = argparse.ArgumentParser(prog="minisae")
    I.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["inspect", *argv])


def own_data_run(tmp_path, n=300):
    model, x, _, carrier = planted(n=n)
    np.save(tmp_path / "acts.npy", x)
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save(run / "checkpoint.npz", model, extra={"settings": {
        "dataset": "files", "data": str(tmp_path / "acts.npy"), "data_key": None}})
    return run, model, x, carrier


def test_the_command_finds_the_runs_data_and_prints_json(tmp_path, capsys):
    run, model, x, carrier = own_data_run(tmp_path)
    (tmp_path / "tokens.txt").write_text("".join(f"t{i}\n" for i in range(300)))
    args = parse([str(run), "--features", "2,0", "--top", "3", "--labels",
                  str(tmp_path / "tokens.txt"), "--json"])
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert [f["index"] for f in data["features"]] == [2, 0]
    rows, _ = expected_top(x, model, 2, 3)
    assert [t["row"] for t in data["features"][0]["top"]] == rows
    assert [t["label"] for t in data["features"][0]["top"]] == [f"t{r}" for r in rows]
    # text, on other rows given with --data
    np.save(tmp_path / "other.npy", x[:100])
    args = parse([str(run / "checkpoint.npz"), "--data", str(tmp_path / "other.npy"),
                  "--n-features", "2", "--seed", "3"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"data: {tmp_path / 'other.npy'}") and out.count("\nfeature ") == 2


def test_the_command_says_what_is_wrong(tmp_path):
    run, model, x, _ = own_data_run(tmp_path)
    args = parse([str(run), "--features", "1", "--seed", "3"])
    with pytest.raises(ConfigError, match="--seed choose random features; with --features, "
                                          "leave it out"):
        args.func(args)
    (tmp_path / "short.txt").write_text("a\nb\n")
    args = parse([str(run), "--labels", str(tmp_path / "short.txt")])
    with pytest.raises(InputError, match="has 2 lines, but the data have 300 rows"):
        args.func(args)
    args = parse([str(run), "--features", "9"])
    with pytest.raises(ConfigError, match=r"^--features must be unit numbers from 0 to 3"):
        args.func(args)
    (tmp_path / "acts.npy").unlink()
    args = parse([str(run)])
    with pytest.raises(Exception, match=r"the run's data .*acts.npy cannot be opened now .*give "
                                        r"--data FILE"):
        args.func(args)
    checkpoint.save(tmp_path / "bare.npz", model)  # saved from Python: no settings
    args = parse([str(tmp_path / "bare.npz")])
    with pytest.raises(ConfigError, match="give --data FILE"):
        args.func(args)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        args = parse([str(tmp_path / "nowhere")])
        args.func(args)


@pytest.mark.parametrize("argv", [["--features", "a,b"], ["--features", "-1"], ["--top", "0"],
                                  ["--n-features", "x"]])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(["run", *argv])
    assert e.value.code == 2
    assert "minisae inspect: error: argument" in capsys.readouterr().err


def test_an_mnist_run_reads_its_training_set_with_the_digits_as_labels(tmp_path, monkeypatch,
                                                                       capsys):
    from minisae.data import datasets
    model, x, _, carrier = planted(n=40)
    checkpoint.save(tmp_path / "run.npz", model, extra={"settings": {"dataset": "mnist"}})
    digits = np.arange(40) % 10
    asked = {}

    def load(name, data_dir=None, download=True, progress=True):
        asked.update(name=name, data_dir=data_dir, download=download)
        return datasets.Dataset(x, digits, x[:4], digits[:4], name, "a test stand-in")

    monkeypatch.setattr(datasets, "load", load)
    args = parse([str(tmp_path / "run.npz"), "--features", "0", "--top", "3", "--no-download",
                  "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert asked == dict(name="mnist", data_dir=str(tmp_path), download=False)
    assert out.startswith("data: mnist's training set, 40 images (a test stand-in); labels "
                          "from mnist's classes (the digits)")
    rows, _ = expected_top(x, model, 0, 3)
    for r in rows:
        assert f'  "{digits[r]}"' in out.splitlines()[5 + rows.index(r)]


def test_a_patches_run_makes_its_patches_again(tmp_path, monkeypatch, capsys):
    from minisae.data import patches
    model, x, _, _ = planted(n=30)
    checkpoint.save(tmp_path / "run.npz", model, extra={"settings": {
        "dataset": "patches", "n_patches": 30, "patch_size": 8, "seed": 7}})
    monkeypatch.setattr(patches, "natural_patches",
                        lambda n, size, seed, dtype: x if (n, size, seed) == (30, 8, 7) else None)
    args = parse([str(tmp_path / "run.npz"), "--features", "1", "--json"])
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_rows"] == 30 and data["data"].startswith("the run's 30 training patches")
