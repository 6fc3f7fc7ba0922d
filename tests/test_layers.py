"""The layers of src/convae import only downward, and no modules import each other in a circle.

core → shapes/data/models → tables/run → training/metrics → applications → report → cli (docs/architecture.md).
Every import in every module counts, those inside functions too, and a package's
``__init__`` is a module like any other: importing ``convae.run`` depends on that face.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "convae"
#: The layer of each top-level part of the package; a module may import its own layer and below.
LAYERS = {
    "convae": 0, "core": 0,
    "data": 1, "models": 1, "shapes": 1, "runtime": 1,
    "run": 2, "tables": 2,
    "training": 3, "metrics": 3,
    "applications": 4, "viz": 4, "bench": 4,
    "report": 5,
    "cli": 6, "__main__": 6,
}


def module_names() -> dict[str, Path]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The convae modules ``name`` imports (a name imported from a package resolves to its
    submodule when there is one, else to the package's face)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else "convae"
    assert key in LAYERS, f"{name}: not in any layer; add it to LAYERS in {__file__}"
    return LAYERS[key]


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
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


def test_every_import_goes_down_or_sideways() -> None:
    upward = [f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
              for source, targets in graph().items() for target in sorted(targets) if layer(target) > layer(source)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between top-level parts (convae.shapes, convae.models, ...)."""
    def part(name: str) -> str:
        return ".".join(name.split(".")[:2])

    found: dict[str, set[str]] = {}
    for source, targets in edges.items():
        found.setdefault(part(source), set()).update(part(t) for t in targets if part(t) != part(source))
    return found


def test_no_two_sibling_packages_import_each_other() -> None:
    """Within a layer, imports go one way: models may use shapes, but then shapes must not use models."""
    found = cycles(packages(graph()))
    assert not found, "packages that import each other (one of them belongs a floor up):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_the_sibling_check_sees_two_packages_upside_down() -> None:
    edges = {"convae.models.blocks": {"convae.shapes.solver"}, "convae.shapes.solver": set(),
             "convae.shapes.table": {"convae.models.blocks"}}
    assert cycles(packages(edges)) == [["convae.models", "convae.shapes"]]


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a core module importing the CLI is reported."""
    fake = tmp_path / "core_mod.py"
    fake.write_text("from convae.cli import main\n", encoding="utf-8")
    modules = {**module_names(), "convae.core.fake": fake}
    targets = imports_of("convae.core.fake", fake, modules)
    assert targets == {"convae.cli"} and layer("convae.cli") > layer("convae.core.fake")


def test_modules_and_functions_stay_small() -> None:
    """One job per file, and a function a reader holds in one screen: no module in src/ over 400
    lines, no function over 80 (docs/architecture.md)."""
    long = {}
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(SRC))
        if (n := len(text.splitlines())) > 400:
            long[name] = n
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long[f"{name}:{node.lineno} {node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, long
