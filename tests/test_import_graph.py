"""Imports inside sam2_fast run one way: input -> predictors -> modeling -> ops -> kernels
(and the C++ extension, torch). Read from the source with ``ast``, so a cycle hidden behind a
function-level import counts as much as one at the top of a file."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> source folder (setup.py maps kernels/ and zoo/ into the package)
PACKAGES = {"sam2_fast": ROOT / "sam2_fast", "sam2_fast.kernels": ROOT / "kernels", "sam2_fast.zoo": ROOT / "zoo"}
# a module may import from its own layer and the ones after it, never from one before it
LAYERS = ["sam2_fast.export", "sam2_fast.predictors", "sam2_fast.modeling", "sam2_fast.ops", "sam2_fast.kernels"]


def _modules() -> Dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if package == "sam2_fast" and parts and parts[0] in ("kernels", "zoo"):
                continue  # build copies, if any
            modules[".".join([package, *parts])] = path
    return modules


def _lazy_names(modules: Dict[str, Path]) -> Dict[str, str]:
    """``sam2_fast.__init__``'s public name -> defining module (resolved on first use)."""
    tree = ast.parse(modules["sam2_fast"].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("sam2_fast/__init__.py has no _LAZY table")


def _type_checking_only(tree: ast.AST) -> Set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def import_graph() -> Dict[str, Set[str]]:
    """module -> the sam2_fast modules it imports anywhere in its source (not under
    ``if TYPE_CHECKING``); ``from sam2_fast import name`` counts as an import of the module
    that defines ``name``."""
    modules = _modules()
    lazy = _lazy_names(modules)

    def resolve(name: str) -> Optional[str]:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_only(tree)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    if base == "sam2_fast" and alias.name in lazy:
                        targets.append(lazy[alias.name])
                    else:
                        full = f"{base}.{alias.name}"
                        targets.append(full if full in modules else base)
            for target in targets:
                found = resolve(target)
                if found is not None and found != module:
                    graph[module].add(found)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layer(module: str) -> Optional[int]:
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return None


def test_the_checker_sees_cycles_and_function_level_imports() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    # a function-level import (the factory imports the zoo inside a function) is an edge
    assert "sam2_fast.zoo" in graph["sam2_fast.factory"]
    # relative and lazy public-name imports resolve
    assert "sam2_fast.ops._dispatch" in graph["sam2_fast.ops.rle"]
    assert "sam2_fast.zoo.registry" in graph["sam2_fast.zoo"]


def test_no_import_cycle_inside_sam2_fast() -> None:
    graph = import_graph()
    found = cycles(graph)
    lines = [
        f"{' <-> '.join(c)}: " + ", ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a] & set(c)))
        for c in found
    ]
    assert not found, "import cycles:\n" + "\n".join(lines)


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downward(layer: str) -> None:
    graph = import_graph()
    here = LAYERS.index(layer)
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items() if _layer(module) == here
        for target in targets if (_layer(target) is not None and _layer(target) < here)
    )
    assert not upward, f"{layer} imports a layer above it:\n" + "\n".join(upward)


def test_the_architecture_map_names_files_that_exist() -> None:
    """ARCHITECTURE.md stays true: every file or folder it names in backticks exists (paths
    relative to the repository or to the package)."""
    import re

    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = {m for m in re.findall(r"`([\w./-]+)`", text) if "/" in m or m.endswith(".py")}
    named = {m.split(":")[0] for m in named}
    missing = sorted(m for m in named if not any((base / m).exists() for base in (ROOT, ROOT / "sam2_fast")))
    assert len(named) > 30
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"
