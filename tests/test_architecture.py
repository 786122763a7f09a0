"""The shape of src/reptiledistil, measured with `ast`: no import cycles, no import from a lower floor up,
no function or class longer than 200 lines, no call with more than 5 positional arguments (src/ and bench/).

Every import counts, module level or inside a function (a lazy import is still an import); only the
`if TYPE_CHECKING:` blocks, which never run, are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "reptiledistil"
NAME = "reptiledistil"
MAX_LINES = 200
MAX_POSITIONAL = 5

# Bottom to top: a module may import its own floor or a lower one, never a higher one.
FLOORS = [
    {"errors", "tasks", "rules", "install_mpnet"},
    {"metrics", "layer_map", "losses", "reptile"},
    {"data", "custom_data", "models"},
    {"methods", "module", "callbacks"},
    {"run"},
    {"cli"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)  # "" is the package itself


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


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


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files) - {""}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        if not name:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        deps: set[str] = set()
        for node in _runtime_nodes(tree):
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


def _floor(module: str) -> int | None:
    top = module.split(".")[0]
    for i, floor in enumerate(FLOORS):
        if top in floor:
            return i
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert {"tasks", "data", "custom_data", "models", "run"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_from_a_lower_floor_up():
    up = []
    for module, deps in import_graph().items():
        f = _floor(module)
        for d in deps:
            g = _floor(d)
            if f is not None and g is not None and g > f and d.split(".")[0] != module.split(".")[0]:
                up.append(f"{module} (floor {f}) imports {d} (floor {g})")
    assert not up, "\n".join(sorted(up))


def test_tasks_import_nothing_but_errors():
    assert import_graph()["tasks"] <= {"errors"}


def _python_files(*dirs: Path):
    for d in dirs:
        yield from sorted(d.rglob("*.py"))


def test_no_function_or_class_longer_than_200_lines():
    long = []
    for path in _python_files(PKG):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("folder", ["src", "bench"])
def test_no_call_with_more_than_5_positional_arguments(folder):
    calls = []
    for path in _python_files(ROOT / folder):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and len(node.args) > MAX_POSITIONAL:
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node.func)}(...) with "
                             f"{len(node.args)} positional arguments")
    assert not calls, "\n".join(calls)
