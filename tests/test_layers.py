"""The package's layering, read from the source (every import, TYPE_CHECKING ones too).

Each layer imports only layers below it; zswarm.testing is imported by no production
module; and no two modules import each other, directly or in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "zswarm"

#: lower number = lower layer; a module may import its own layer's package and lower ones
LAYERS = {
    "errors": 0, "core": 1, "config": 2, "asks": 3, "statedir": 3, "cores": 3, "": 3,
    "net": 4, "engines": 4, "runtime": 5, "http": 6, "client": 6,
    "pull": 7,  # a client (it uses client.py) that the node also uses, to fetch its model
    "node": 8, "views": 8, "doctor": 8, "cli": 9, "__main__": 10, "testing": 10,
}
# "": zswarm/__init__.py, the version and the public names (errors, core, config)


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] == "zswarm":
                for alias in node.names:  # "from zswarm.core import codec" imports a module
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "zswarm"}
        graph[name] = deps - {name}
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_each_layer_imports_only_layers_below_it():
    wrong = [f"{m} imports {d}" for m, deps in _imports().items() for d in deps
             if _layer(d) != _layer(m) and LAYERS[_layer(d)] >= LAYERS[_layer(m)]]
    assert wrong == []


def test_production_code_never_imports_test_support():
    graph = _imports()
    wrong = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
             if d.startswith("zswarm.testing") and not m.startswith("zswarm.testing")]
    assert wrong == []


def test_no_import_circles():
    graph = _imports()
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                circles.append(" -> ".join([*path[path.index(dep):], dep]))
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert circles == []


def test_every_layer_is_known():
    assert {_layer(m) for m in _imports()} <= set(LAYERS)
