"""The shape of src/reptiledistil, measured with `ast`: every module lives in a stage package, each package is one
floor, imports go from a higher floor to a lower one and never round a circle, no two modules share a name, no
function or class is longer than 150 lines, no call has more than 5 positional arguments (src/ and bench/).

Every import counts: module level, inside a function (a lazy import is still an import) and under
`if TYPE_CHECKING:` (a type names what a module depends on as much as a call does).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "reptiledistil"
NAME = "reptiledistil"
MAX_LINES = 150
MAX_POSITIONAL = 5

# The stage packages, bottom to top: a module may import its own package or a lower one, never a higher one.
FLOORS = ["core", "data", "models", "methods", "config", "training", "inference", "report", "pipelines"]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)  # "" is the package itself


def _with_parents(name: str) -> list[str]:
    """Importing a.b runs a's __init__ first: both are imported."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The package modules an import node imports (names relative to the package; "" is the package)."""
    out: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == NAME or alias.name.startswith(NAME + "."):
                out.append(alias.name[len(NAME) + 1:])
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if module else []
            if not is_package:
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            parent = ".".join(base + ([node.module] if node.module else []))
        elif node.module and (node.module == NAME or node.module.startswith(NAME + ".")):
            parent = node.module[len(NAME) + 1:]
        else:
            return out
        out.append(parent)
        for alias in node.names:  # `from . import x` / `from .methods import base` import submodules
            sub = f"{parent}.{alias.name}" if parent else alias.name
            if sub in known:
                out.append(sub)
    result = []
    for t in out:
        result += [p for p in _with_parents(t) if p in known] if t else []
    return result


def modules() -> dict[str, Path]:
    return {name: p for p in PKG.rglob("*.py") if (name := _module_name(p))}


def import_graph() -> dict[str, set[str]]:
    files = modules()
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(_targets(node, name, path.name == "__init__.py", known))
        deps.discard(name)
        # A package's own submodules importing each other through the package is not a cycle of modules:
        # methods/__init__ imports methods.base, methods.base never needs methods/__init__ to be finished.
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        state[n] = 2
        path.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _floor(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def test_every_module_lives_in_a_stage_package_with_a_floor():
    stray = [m for m in modules() if m.split(".")[0] not in FLOORS]
    assert not stray, f"modules outside the stage packages {FLOORS}: {stray}"
    assert {m.split(".")[0] for m in modules()} == set(FLOORS), "a floor without a package"


def test_no_two_modules_share_a_name():
    names = Counter(m.rsplit(".", 1)[-1] for m, p in modules().items() if p.stem not in ("__init__", "__main__"))
    assert not [n for n, k in names.items() if k > 1], sorted(n for n, k in names.items() if k > 1)


def test_no_import_cycle_even_for_types():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_from_a_lower_floor_up():
    up = [f"{m} ({FLOORS[_floor(m)]}) imports {d} ({FLOORS[_floor(d)]})"
          for m, deps in import_graph().items() for d in deps if _floor(d) > _floor(m)]
    assert not up, "\n".join(sorted(up))


def test_the_bottom_of_each_stage_stays_light():
    graph = import_graph()
    assert graph["core.errors"] == set()
    assert graph["data.tasks"] <= {"core", "core.errors"}  # looking a task up reads no file and loads no model
    assert graph["methods.base"] <= {"core", "core.errors", "core.rules", "core.hardware", "models", "models.layer_map"}


def _python_files(*dirs: Path):
    for d in dirs:
        yield from sorted(d.rglob("*.py"))


def test_no_function_or_class_longer_than_150_lines():
    long = []
    for path in _python_files(PKG):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("folder", ["src", "bench"])
def test_files_are_renamed_into_place_by_core_files_alone(folder):
    """One atomic-write helper (core/files.py: atomic_file, write_atomic, atomic_dir): no other module renames."""
    renames = []
    for path in _python_files(ROOT / folder):
        if path == PKG / "core" / "files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            f = node.func if isinstance(node, ast.Call) else None
            # os.replace/os.rename, or Path.replace/rename (one argument; str.replace takes two)
            if isinstance(f, ast.Attribute) and f.attr in ("replace", "rename") and (
                    (isinstance(f.value, ast.Name) and f.value.id == "os") or len(node.args) + len(node.keywords) == 1):
                renames.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not renames, "\n".join(renames)


@pytest.mark.parametrize("folder", ["src", "bench"])
def test_no_call_with_more_than_5_positional_arguments(folder):
    calls = []
    for path in _python_files(ROOT / folder):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and len(node.args) > MAX_POSITIONAL:
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node.func)}(...) with "
                             f"{len(node.args)} positional arguments")
    assert not calls, "\n".join(calls)
