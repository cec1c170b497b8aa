"""The house's import rules, read from the source (every import, function-level ones included; imports under
`if TYPE_CHECKING:` are for type checkers only and do not count):
- no module of svd_core imports one that imports it back, directly or through others;
- each part imports only the parts below it: app -> video -> weights -> shared modules -> nets -> diffusion;
- svd_core never imports the host (ComfyUI), the test-only oracles, nor the pack's nodes; Ray only in the batch job.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "svd_core"

# The floor of each part: a module may import modules on its own floor or below, never above.
FLOORS: dict[str, int] = {
    "diffusion": 0, "resize": 0, "image_ops": 0,
    "nets": 1,
    "config": 2, "checks": 2, "memory": 2, "speed": 2, "seeds": 2,
    "weights": 3,
    "video": 4,
    "app": 5,
    "__init__": 6, "__main__": 6, "moved": 6,
}
HOST = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "execution", "server", "latent_preview")
ORACLES = ("diffusers", "transformers", "kornia", "hypothesis", "pytest")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import in the file, relative ones resolved, type-only ones left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for child in node.body for n in ast.walk(child))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((module, node.lineno))
            # `from . import x` names a submodule when the file exists
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                path = candidate.replace(".", "/")
                if (REPO / (path + ".py")).exists() or (REPO / path).is_dir():
                    found.append((candidate, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {m for m, _ in _imports(path) if m in modules and m != name}
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _floor(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    return FLOORS[key]


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_floor_and_no_import_climbs() -> None:
    graph = _graph()
    climbing = [(a, b) for a, targets in graph.items() for b in targets
                if _floor(a) < _floor(b) and not b == "svd_core"]
    assert climbing == []


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_svd_core_never_imports_the_host_the_oracles_or_the_nodes(path: Path) -> None:
    for module, line in _imports(path):
        top = module.split(".")[0]
        assert top not in HOST, f"{path.relative_to(REPO)}:{line} imports {module}"
        assert top not in ORACLES, f"{path.relative_to(REPO)}:{line} imports {module}"
        if top == "ray":
            assert path == CORE / "app" / "batch.py", f"{path.relative_to(REPO)}:{line} imports ray"


def test_adapters_never_import_the_host() -> None:
    path = REPO / "nodes" / "adapters.py"
    assert not [m for m, _ in _imports(path) if m.split(".")[0] in HOST]
