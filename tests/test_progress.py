"""The progress lines training prints where the output is not a terminal."""
import io

import pytest

from minisae.training.progress import plural, progress_bar


@pytest.mark.parametrize("unit, n, word", [
    ("batch", 2, "batches"), ("batch", 1, "batch"), ("epoch", 3, "epochs"),
    ("it", 400, "iterations"), ("it", 1, "iteration"), ("sample", 5, "samples")])
def test_plural(unit, n, word):
    assert plural(unit, n) == word


def test_a_log_line_says_batches():
    stream = io.StringIO()
    with progress_bar(60, True, unit="batch", stream=stream) as bar:
        bar.update(60)
        bar.line(loss="0.1")
    assert stream.getvalue() == "training: 60/60 batches loss=0.1\n"
