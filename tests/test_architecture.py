"""The import graph keeps the architecture: wings import downwards only, and no module
imports itself round a loop. Read from the source (every import statement, at the top or
inside a function), not from what happens to be imported at run time.

Type-only imports (under `if TYPE_CHECKING:`) are not edges: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# what each wing may import besides itself (ARCHITECTURE.md); the shared floor
# (texprod, texprod.errors, texprod.files, texprod.host) may be imported by anyone
SHARED = {"texprod", "texprod.errors", "texprod.files", "texprod.host"}
ALLOWED = {
    "texprod.engine": set(),
    "texprod.press": {"texprod.engine"},
    "texprod.storage": set(),
    "texprod.models": {"texprod.engine", "texprod.storage"},
    "texprod.training": {"texprod.engine", "texprod.models", "texprod.storage"},
    "texprod.job": {"texprod.engine", "texprod.press", "texprod.models", "texprod.storage"},
    "texprod.cli": {"texprod.engine", "texprod.press", "texprod.models", "texprod.storage",
                    "texprod.training", "texprod.job", "flows"},
    "flows": {"texprod.engine", "texprod.press", "texprod.models", "texprod.storage",
              "texprod.training", "texprod.job"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every texprod/flows module `path` imports, outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import mod`
    return {m for m in found if m.split(".")[0] in ("texprod", "flows")}


def graph() -> dict[str, set[str]]:
    paths = [*REPO.joinpath("texprod").rglob("*.py"), *REPO.joinpath("flows").rglob("*.py")]
    modules = {_module_name(p): p for p in paths}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def wing(module: str) -> str:
    for name in sorted(ALLOWED, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return module


def test_every_module_belongs_to_a_wing_or_the_shared_floor():
    strays = sorted(m for m in graph() if wing(m) not in ALLOWED and m not in SHARED)
    assert strays == [], f"modules outside the wings: {strays}"


def test_wings_import_downwards_only():
    upward = set()
    for module, imports in graph().items():
        for imported in imports:
            source, target = wing(module), wing(imported)
            if imported in SHARED or source == target or module in SHARED:
                continue
            if target not in ALLOWED.get(source, set()):
                upward.add((module, imported))
    assert upward == set(), "upward imports: " + ", ".join(f"{a} -> {b}"
                                                           for a, b in sorted(upward))


def test_there_is_no_import_cycle():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == [], f"import cycles: {cycles}"


def test_imports_are_at_the_top_unless_a_measured_reason_is_written_beside_them():
    """An import inside a function hides part of the graph; the exceptions say why (start-up
    time measured, an optional dependency) in a `lazy:` comment on or above the line. The
    CLI's handlers import lazily as a rule, said once at the top of cli.py."""
    hidden = []
    for path in [*REPO.joinpath("texprod").rglob("*.py"), *REPO.joinpath("flows").rglob("*.py")]:
        if path.name == "cli.py":
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    around = " ".join(lines[max(0, inner.lineno - 3): inner.lineno])
                    if "lazy:" not in around:
                        hidden.append(f"{path.relative_to(REPO)}:{inner.lineno}")
    assert hidden == [], f"imports inside functions without a reason: {hidden}"
