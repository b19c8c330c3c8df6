"""The package's layout: no import cycles between its modules, lazy imports included, and the public face intact."""

import ast
from pathlib import Path

import dann

SRC = Path(dann.__file__).parent


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if package else parts), package


def import_graph() -> dict[str, set[str]]:
    """Module → the dann modules it imports anywhere in its body (function-level imports count: they are cycles
    postponed, not removed). A package's ``__init__`` is its own node."""
    modules = {_module_name(p)[0]: p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        _, package = _module_name(path)
        here = name.split(".") if package else name.split(".")[:-1]
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None, " → ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    graph = import_graph()
    assert "dann.evaluation.loading" in graph["dann.reporting.report"]
    graph["dann.evaluation.loading"] = graph["dann.evaluation.loading"] | {"dann.reporting.report"}
    assert find_cycle(graph) is not None


def test_the_top_level_holds_only_the_entry_points_and_shared_foundations():
    top = sorted(p.stem for p in SRC.glob("*.py"))
    assert top == ["__init__", "__main__", "api", "cli", "config", "demo", "errors", "plan", "registry", "runs"]


def test_the_public_face_and_the_documented_import_paths_resolve():
    from dann.sklearn import DANNClassifier, SourceKFold, make_validator_scorer

    assert dann.DANNClassifier is DANNClassifier and callable(make_validator_scorer) and SourceKFold
    for name in dann.__all__:
        assert getattr(dann, name) is not None, name
    assert callable(dann.tune) and callable(dann.evaluate)  # the functions, not modules of the same name
