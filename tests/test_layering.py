"""The house: every module imports only from its own floor or below, never in a circle, and
the teaching core imports nothing above it (imports inside functions included).

The floors are listed here, from the bottom; a new module must be placed on one (the test
fails for a module it does not know). A folder is placed whole ("training"), or module by
module where its parts sit on different floors: files/ holds the file primitives that the data
loaders use (atomic writes, the run lock, the .npy header reader) below data/, and the
checkpoint, which knows the model, the optimizers and the history, above training/. The most
precise entry wins: "files.atomic" places files/atomic.py, "files" the rest of files/."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minisae"

FLOORS = [
    # the teaching core
    {"errors", "checks", "presets"},
    {"backend", "comm"},
    {"functional"},
    {"layers", "losses", "normalize"},
    {"config"},
    {"model", "optim"},
    {"gradcheck", "softmax"},
    # above it
    {"distributed"},
    {"files.atomic", "files.lock", "files.npyheader"},
    {"data"},
    {"fast"},
    {"training"},
    {"files"},
    {"apps"},
    {"__init__", "__main__"},
]
CORE = set().union(*FLOORS[:7])


def floor_of(module):
    """The floor of a module given as its dotted path inside the package ("fast.step"): that
    of the longest leading part of the path that FLOORS names ("files.atomic", else "files")."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        for i, names in enumerate(FLOORS):
            if ".".join(parts[:n]) in names:
                return i
    raise AssertionError(f"minisae.{module} is on no floor of tests/test_layering.py; place it")


def modules():
    """{dotted name inside the package: path}; a package's __init__ is named by its folder."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name, path):
    """The package modules that `name` imports, anywhere in the file (functions included)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    if name in ("__init__", "__main__"):
        here = []
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("minisae."):
                    targets.add(alias.name[len("minisae."):])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("minisae"):
                    base = node.module.split(".")[1:]
                else:
                    continue
            else:
                base = here[:len(here) - (node.level - 1)] + (node.module.split(".")
                                                             if node.module else [])
            for alias in node.names:
                full = ".".join(base + [alias.name])
                targets.add(full if full in ALL else ".".join(base))
    return {t for t in targets if t}


ALL = modules()


def graph():
    return {name: {t for t in imports(name, path) if t in ALL or t.split(".")[0] in ALL}
            for name, path in ALL.items()}


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_module_imports_from_a_floor_above_its_own(name):
    mine = floor_of(name)
    for target in imports(name, ALL[name]):
        assert floor_of(target) <= mine, (
            f"minisae.{name} (floor {mine}) imports minisae.{target} (floor "
            f"{floor_of(target)}), a floor above it")


def test_the_teaching_core_imports_nothing_above_it():
    for name, path in ALL.items():
        if name.split(".")[0] in CORE:
            above = {t for t in imports(name, path) if t.split(".")[0] not in CORE}
            assert not above, f"minisae.{name} (teaching core) imports {sorted(above)}"


def test_there_is_no_import_circle():
    edges = graph()
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == "open":
                cycle = trail[trail.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_the_floor_table_knows_every_module():
    for name in ALL:
        floor_of(name)


def test_the_data_loaders_sit_below_training():
    """Loaders give NumPy arrays and know nothing of the loop that trains on them: every module
    of data/ is on a floor below every module of training/ (and the file primitives they use
    below data/)."""
    data = [n for n in ALL if n.split(".")[0] == "data"]
    training = [n for n in ALL if n.split(".")[0] == "training"]
    assert data and training
    assert max(map(floor_of, data)) < min(map(floor_of, training))
    for primitive in ("files.atomic", "files.lock", "files.npyheader"):
        assert floor_of(primitive) < min(map(floor_of, data)), primitive


def test_a_submodule_entry_places_only_that_module():
    assert floor_of("files.atomic") < floor_of("data.arrays") < floor_of("training.fit") \
        < floor_of("files.checkpoint") == floor_of("files") < floor_of("apps.cli")


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = "def f():\n    from ..training import fit\n    from . import kernels\n"
    (tmp_path / "m.py").write_text(source)
    found = imports("fast.m", tmp_path / "m.py")
    assert any(t.split(".")[0] == "training" for t in found) and "fast.kernels" in found
