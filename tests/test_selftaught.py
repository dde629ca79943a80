"""Self-taught learning (minisae.apps.selftaught) on small synthetic data: the table's structure,
and the wiring (the autoencoder sees only the unlabelled classes, the classifier only the
labelled ones with their own labels, and "codes" are the trained model's codes)."""
import json

import numpy as np
import pytest

from minisae.apps import selftaught
from minisae.errors import ConfigError, InputError
from minisae.apps.selftaught import (INPUTS, AutoencoderTraining, DataSplit, SoftmaxTraining,
                                     build_autoencoder, self_taught, split_by_class,
                                     split_halves)

N_FEATURES = 16
PER_CLASS = 24


def toy_data(seed=0):
    """Ten classes of noisy 16-pixel prototypes in [0, 1]. Pixel 0 holds class / 10 exactly,
    so any row tells which class it came from."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, N_FEATURES))
    y = np.repeat(np.arange(10), PER_CLASS)
    x = np.clip(prototypes[y] + 0.1 * rng.normal(size=(len(y), N_FEATURES)), 0, 1)
    x[:, 0] = y / 10
    order = rng.permutation(len(y))
    return x[order], y[order]


def class_of(rows):
    return np.rint(np.asarray(rows)[:, 0] * 10).astype(int)


QUICK = dict(autoencoder=AutoencoderTraining(n_hidden=6, max_iter=8),
             softmax=SoftmaxTraining(max_iter=15), backend="numpy")


@pytest.fixture(scope="module")
def result():
    return self_taught("toy", data=toy_data(), seeds=(0, 1), split=DataSplit(splits=2), **QUICK)


def test_table_structure(result, tmp_path):
    assert len(result.runs) == 4
    assert [(r["seed"], r["split"]) for r in result.runs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for run in result.runs:
        assert all(0.0 <= run[key] <= 1.0 for key in INPUTS)
    assert (result.n_unlabelled, result.n_labelled) == (5 * PER_CLASS, 5 * PER_CLASS)
    assert (result.n_train, result.n_test) == (60, 60)
    assert result.n_features == {"codes": 6, "raw": N_FEATURES, "untrained": 6}
    summary = result.summary()
    assert list(summary) == ["codes", "raw", "untrained", "codes-raw", "codes-untrained"]
    for key in INPUTS:
        accs = [100 * r[key] for r in result.runs]
        assert summary[key]["mean"] == pytest.approx(np.mean(accs))
        assert summary[key]["std"] == pytest.approx(np.std(accs, ddof=1))
        assert (summary[key]["min"], summary[key]["max"], summary[key]["runs"]) == \
            (min(accs), max(accs), 4)
    diffs = [100 * (r["codes"] - r["raw"]) for r in result.runs]
    assert summary["codes-raw"]["mean"] == pytest.approx(np.mean(diffs))
    assert [a["seed"] for a in result.autoencoders] == [0, 1]
    assert all(a["steps"] == 8 and a["seconds"] > 0 for a in result.autoencoders)
    assert result.settings["sparsity_weight"] == 3.0 and result.settings["reduction"] == "halfsum"

    table = result.format_table()
    first_words = [line.split()[0] for line in table.splitlines() if line.strip()]
    for key in summary:
        assert key in first_words
    path = result.write_json(tmp_path / "out" / "toy.json")
    saved = json.loads(path.read_text())
    assert saved["runs"] == result.runs and saved["settings"]["seeds"] == [0, 1]
    assert saved["summary"]["codes"]["runs"] == 4


def test_wiring(monkeypatch):
    """Spy on the autoencoder's training and on every classifier."""
    trained_on, models, classifier_calls = [], [], []
    real_train, real_softmax = selftaught.train_autoencoder, selftaught.softmax_accuracy

    def spy_train(x, *args, **kw):
        trained_on.append(x.copy())
        model, info = real_train(x, *args, **kw)
        models.append(model)
        return model, info

    def spy_softmax(x_train, y_train, x_test, y_test, *args, **kw):
        classifier_calls.append((x_train.copy(), y_train.copy(), x_test.copy(), y_test.copy()))
        return real_softmax(x_train, y_train, x_test, y_test, *args, **kw)

    monkeypatch.setattr(selftaught, "train_autoencoder", spy_train)
    monkeypatch.setattr(selftaught, "softmax_accuracy", spy_softmax)
    x, y = toy_data()
    self_taught("toy", data=(x, y), seeds=(3,), split=DataSplit(splits=2), **QUICK)

    # the autoencoder: every sample of the classes 5-9, and nothing else
    assert len(trained_on) == 1
    assert sorted(class_of(trained_on[0])) == sorted(y[y >= 5])
    # the classifiers: per split, codes / raw / untrained, in that order, on one halving
    assert len(classifier_calls) == 2 * 3
    untrained = build_autoencoder(N_FEATURES, 6, seed=3)
    for split in range(2):
        codes, raw, fresh = classifier_calls[3 * split:3 * split + 3]
        x_tr, y_tr, x_te, y_te = raw
        # raw pixels of the digits 0-4 only, each with its own label
        np.testing.assert_array_equal(y_tr, class_of(x_tr))
        np.testing.assert_array_equal(y_te, class_of(x_te))
        assert set(y_tr) | set(y_te) <= {0, 1, 2, 3, 4}
        assert len(y_tr) + len(y_te) == (y < 5).sum()
        # the same halving and labels for all three inputs
        for other in (codes, fresh):
            np.testing.assert_array_equal(other[1], y_tr)
            np.testing.assert_array_equal(other[3], y_te)
        # codes come from the trained model, the untrained ones from a fresh twin
        np.testing.assert_allclose(codes[0], models[0].encode(x_tr), rtol=1e-12)
        np.testing.assert_allclose(codes[2], models[0].encode(x_te), rtol=1e-12)
        np.testing.assert_allclose(fresh[0], untrained.encode(x_tr), rtol=1e-12)
        assert not np.allclose(codes[0], fresh[0])
    assert not np.array_equal(classifier_calls[0][0], classifier_calls[3][0])  # two halvings


def test_adam_option():
    r = self_taught("toy", data=toy_data(), seeds=(0,), split=DataSplit(splits=1),
                    **dict(QUICK, autoencoder=AutoencoderTraining(6, "adam", epochs=2,
                                                                  batch_size=40)))
    assert r.autoencoders[0]["steps"] == 2 * 3 and "2 epochs" in r.autoencoders[0]["message"]
    assert "Adam" in r.format_table()


def test_split_by_class_maps_labels_in_order():
    x, y = toy_data()
    x_u, x_l, y_l = split_by_class(x, y, unlabelled_classes=(0, 1), labelled_classes=(7, 3))
    assert sorted(set(class_of(x_u))) == [0, 1]
    np.testing.assert_array_equal(y_l, np.where(class_of(x_l) == 7, 0, 1))
    with pytest.raises(ConfigError, match="both"):
        split_by_class(x, y, (1, 2), (2, 3))
    with pytest.raises(InputError, match="no samples"):
        split_by_class(x, y, (5,), (10, 11))


def test_split_halves():
    a_train, a_test = split_halves(11, seed=0, split=0)
    assert len(a_train) == 6 and len(a_test) == 5   # MATLAB's round(11 / 2), as UFLDL
    assert len(split_halves(9, 0, 0)[0]) == 5       # round(4.5) = 5 there (Python's gives 4)
    assert sorted(np.concatenate([a_train, a_test])) == list(range(11))
    np.testing.assert_array_equal(split_halves(11, 0, 0)[0], a_train)
    assert not np.array_equal(split_halves(11, 0, 1)[0], a_train)


@pytest.mark.parametrize("call,match", [
    (lambda: AutoencoderTraining(optimizer="sgd"), "optimizer"),
    (lambda: DataSplit(splits=0), "splits"),
    (lambda: DataSplit(unlabelled_classes=(1, 2)), "both"),
    (lambda: SoftmaxTraining(weight_decay=-1), "weight_decay"),
    (lambda: self_taught("toy", data=toy_data(), seeds=()), "seed"),
    (lambda: self_taught("toy", data=toy_data(), backend="tpu"), "backend"),
    (lambda: self_taught("toy", data=toy_data(), split=(5, 6)), "split must be a DataSplit")])
def test_bad_settings(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


@pytest.mark.parametrize("old", sorted(selftaught.MOVED))
def test_the_keywords_of_03_are_refused_naming_their_new_home(old):
    with pytest.raises(ConfigError, match=rf"no longer takes {old}="):
        self_taught("toy", data=toy_data(), **{old: 1})


def test_settings_read_as_they_are_made():
    assert repr(AutoencoderTraining()) == ("AutoencoderTraining(n_hidden=196, optimizer='lbfgs', "
                                           "max_iter=400, epochs=400, lr=0.01, batch_size=1000)")
    assert repr(SoftmaxTraining()) == "SoftmaxTraining(weight_decay=0.0001, max_iter=100)"
    assert repr(DataSplit(max_labelled=600)) == (
        "DataSplit(unlabelled_classes=(5, 6, 7, 8, 9), labelled_classes=(0, 1, 2, 3, 4), "
        "splits=5, pool=True, max_unlabelled=None, max_labelled=600)")


def test_bad_data():
    x, y = toy_data()
    with pytest.raises(InputError, match="integers"):
        self_taught("toy", data=(x, y.astype(float)), **QUICK)
    with pytest.raises(InputError, match="shape|n_features"):
        self_taught("toy", data=(x, y[:-1]), **QUICK)
