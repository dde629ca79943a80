"""The repository's layout: the root holds the project and nothing else, and every test file
says in its first line what it tests."""
import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYOUT = {"minisae", "tests", "demos", "notebooks", ".ci", "README.md", "BENCHMARKS.md",
          "CHANGELOG.md", "LICENSE", "setup.cfg", "pyproject.toml", ".gitignore",
          ".gitattributes"}
"""What the root may hold: the package, its tests, demos and notebooks, CI, the docs and the
packaging files."""


def tracked_at_root():
    """The names of the root's tracked files and folders, or a skip where the tests do not run
    in a git checkout of the project (an unpacked sdist, no git)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    try:
        top = subprocess.run([git, "rev-parse", "--show-toplevel"], cwd=ROOT, text=True,
                             capture_output=True, timeout=60)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT:
            pytest.skip(f"{ROOT} is not the root of a git checkout")
        files = subprocess.run([git, "ls-files", "-z"], cwd=ROOT, capture_output=True,
                               timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"git cannot list the tracked files: {e}")
    return {name.split(b"/")[0].decode() for name in files.split(b"\0") if name}


def test_the_root_holds_only_the_projects_layout():
    stray = sorted(tracked_at_root() - LAYOUT)
    assert not stray, (f"tracked at the repository's root but not part of the project's "
                       f"layout: {stray}; remove them (git rm) or, if they belong, add them to "
                       f"LAYOUT in tests/test_repository.py")


def test_every_test_file_says_what_it_tests():
    for path in sorted((ROOT / "tests").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and doc.splitlines()[0].strip(), \
            f"{path.name} has no module docstring; start it with one line on what it tests"
