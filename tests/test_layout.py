"""The repository's shape: no import circle among its modules, shared utilities below everything else, a short root."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = {"tests", ".venv"}  # the tests import everything; they are not a layer
MAX_ROOT_MODULES = 10


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for the root's modules and every top-level folder's (a package's ``__init__`` by
    its name)."""
    folders = [""] + sorted(folder.name for folder in REPO.iterdir() if folder.is_dir()
                            and folder.name not in NOT_SOURCE and any(folder.glob("*.py")))
    modules = {}
    for folder in folders:
        for path in sorted((REPO / folder).glob("*.py")):
            parts = [*Path(folder).parts, path.stem]
            modules[".".join(parts[:-1] if path.stem == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (function bodies and ``TYPE_CHECKING`` included)."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package (the root for remote-code files)
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" if base else alias.name for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.c`` imports a.b.c, and with it a.b and a
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*trail[trail.index(target):], node, target] if target in trail else [node, target]
            if target not in state:
                cycle = visit(target, [*trail, node])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_the_project_modules():
    graph = import_graph()
    assert {"trainer_d2llm", "distil.head_warmup", "distil.model_card", "common.stages",
            "benchmarks.bench_teacher"} <= set(graph)
    assert "distil.head_warmup" in graph["trainer_d2llm"]  # the graph sees imports inside functions too
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_no_import_circle_among_the_packages():
    """Packages are layers (``common`` below the stages, a stage below the ones that use it): a package imports
    another only where that one imports nothing of it back, through any chain; root modules count on their own."""
    layers: dict[str, set[str]] = {}
    for name, targets in import_graph().items():
        top = name.split(".")[0]
        layers.setdefault(top, set()).update(target.split(".")[0] for target in targets)
        layers[top].discard(top)
    assert find_cycle(layers) is None, f"package circle: {' -> '.join(find_cycle(layers))}"


def test_shared_utilities_import_nothing_above_them():
    above = {name: sorted(target for target in targets if target.split(".")[0] != "common")
             for name, targets in import_graph().items() if name.split(".")[0] == "common"}
    assert above and not any(above.values()), above


def test_the_root_holds_at_most_ten_modules():
    assert len(list(REPO.glob("*.py"))) <= MAX_ROOT_MODULES
