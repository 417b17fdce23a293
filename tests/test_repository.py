"""The repository stands alone and keeps its structure.

* Nothing tracked reads, imports or links a path outside the repository (a user's clone
  has nothing beside it).
* The packages' imports form no cycle, and dependencies point inwards: ``rooms`` imports
  none of ours, ``storage`` and ``bridges`` only ``rooms``.
* Every module, and every public class, function and method that is not nested in a
  function, of the packages and the benchmarks has a docstring.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rooms", "storage", "bridges", "actors")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [ROOT / line for line in out.splitlines() if line]


def test_nothing_reaches_outside_the_repository():
    shared = "shared"  # spelt in parts, so that this file does not match itself
    outside = ("../" + shared, shared + "/specs", shared + "/DESIGN", "DESIGN" + ".md")
    found = []
    for path in _tracked():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in outside):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the modules of our packages it imports (at any level of the file)."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[:len(base) - node.level + 1]
                    prefix = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            for target in names:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def test_imports_have_no_cycle():
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_dependencies_point_inwards():
    allowed = {"rooms": {"rooms"}, "storage": {"storage", "rooms"},
               "bridges": {"bridges", "rooms"}, "actors": set(PACKAGES)}
    wrong = [f"{module} imports {target}"
             for module, targets in _imports().items()
             for target in targets
             if target.split(".")[0] not in allowed[module.split(".")[0]]]
    assert not wrong, "\n".join(wrong)


def _undocumented(path: Path) -> list[str]:
    """``path``'s module, public classes, functions and methods (not those nested in a
    function) that have no docstring, as ``"<path>:<line> <qualified name>"``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(ROOT)
    missing = [] if ast.get_docstring(tree) else [f"{where}: the module"]

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not child.name.startswith("_") and not ast.get_docstring(child):
                    missing.append(f"{where}:{child.lineno} {prefix}{child.name}")
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return missing


def test_public_classes_functions_and_methods_have_docstrings():
    missing = [entry for package in (*PACKAGES, "benchmarks")
               for path in sorted((ROOT / package).rglob("*.py"))
               for entry in _undocumented(path)]
    assert not missing, "no docstring:\n" + "\n".join(missing)
