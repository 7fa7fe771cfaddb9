"""The package's import graph flows down the pipeline: no upward import, no cycle.

Every import counts, at module level or inside a function (a lazy import is still a
dependency). The checker reads the sources with `ast`; it is tested on hand-made trees
(an upward import, a sibling import, a cycle, an unplaced module) so that it cannot pass
by finding nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A unit (a subpackage or a top-level module) may import units of lower layers
# and its own modules; never a unit of its own layer or of a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "fileio", "runtime", "stats"),
    ("config",),
    ("data", "models"),
    ("store",),
    ("attacks",),
    ("training",),
    ("distill",),
    ("evaluation", "importing"),
    ("analysis", "manifolds", "theory"),
    ("report",),
    ("plan", "compare"),
    ("cli",),
    ("__init__", "__main__"),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``module`` imports (at module or function level).

    ``from logitscope.plan import dag`` imports the module ``logitscope.plan.dag``, not the
    package's own contents; ``from logitscope.plan import x`` of a name ``x`` imports
    ``logitscope.plan``."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return found & known


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts == ["logitscope"]:
        return "__init__"
    return parts[1] if len(parts) > 1 else None


def check_graph(sources: Mapping[str, tuple[str, bool]], layer_of: Mapping[str, int]) -> list[str]:
    """Problems of the import graph of ``sources`` (module -> (source, is package))."""
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for module, (source, is_package) in sorted(sources.items()):
        unit = unit_of(module)
        if unit not in layer_of:
            problems.append(f"{module}: unit {unit!r} has no layer (add it to LAYERS)")
            continue
        targets = imports_of(module, source, is_package, set(sources)) - {module}
        edges[module] = targets
        for t in sorted(targets):
            tu = unit_of(t)
            if tu == unit or tu not in layer_of:
                continue
            if layer_of[tu] > layer_of[unit]:
                problems.append(f"{module} imports {t}: upward (layer {layer_of[unit]} -> {layer_of[tu]})")
            elif layer_of[tu] == layer_of[unit]:
                problems.append(f"{module} imports {t}: a sibling of the same layer")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return problems


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with a cycle (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
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
                    found.append(sorted(component) + [sorted(component)[0]])
    return found


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(p, SRC): (p.read_text(), p.name == "__init__.py")
        for p in sorted((SRC / "logitscope").rglob("*.py"))
    }


def test_imports_flow_down_the_pipeline_without_cycles():
    sources = package_sources()
    assert len(sources) > 50  # the whole package was read
    assert check_graph(sources, LAYER_OF) == []


def test_every_unit_of_the_package_has_a_layer():
    units = {unit_of(m) for m in package_sources()}
    assert units == set(LAYER_OF), "LAYERS lists a unit that does not exist, or misses one"


TOY_LAYERS = {"config": 0, "store": 1, "training": 2, "analysis": 3, "manifolds": 3}


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        (  # a lazy import inside a function is an import too
            {"logitscope.store.runs": "def f():\n    from logitscope.training.engine import train\n"},
            "logitscope.store.runs imports logitscope.training.engine: upward (layer 1 -> 2)",
        ),
        (
            {"logitscope.analysis.a": "import logitscope.manifolds.m\n"},
            "logitscope.analysis.a imports logitscope.manifolds.m: a sibling of the same layer",
        ),
        (  # `from package import module` names the module
            {"logitscope.config": "from logitscope.training import engine\n"},
            "logitscope.config imports logitscope.training.engine: upward (layer 0 -> 2)",
        ),
        (
            {
                "logitscope.training.a": "from logitscope.training.b import x\n",
                "logitscope.training.b": "from . import a\n",  # relative, inside one package
            },
            "import cycle: logitscope.training.a -> logitscope.training.b -> logitscope.training.a",
        ),
        ({"logitscope.unplaced": ""}, "logitscope.unplaced: unit 'unplaced' has no layer (add it to LAYERS)"),
    ],
)
def test_the_checker_finds_each_kind_of_problem(modules, expected):
    base = {
        "logitscope.config": "",
        "logitscope.store.runs": "from logitscope.config import RunConfig\n",  # downward: fine
        "logitscope.training.engine": "",
        "logitscope.manifolds.m": "",
        "logitscope.analysis.a": "",
    }
    sources = {m: (s, False) for m, s in {**base, **modules}.items()}
    assert check_graph(sources, TOY_LAYERS) == [expected]


def test_the_checker_passes_a_clean_toy_tree():
    sources = {
        "logitscope.config": ("", False),
        "logitscope.store.runs": ("from logitscope.config import RunConfig\n", False),
        "logitscope.training.engine": ("from logitscope.store.runs import Run\nfrom . import objectives\n", False),
        "logitscope.training.objectives": ("from logitscope.config import AttackConfig\n", False),
    }
    assert check_graph(sources, TOY_LAYERS) == []
