"""Module edges: no import cycles inside coreg, the student knows nothing of MLflow, one module per command."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    mods = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imported(module: str, path: Path, known: dict[str, Path], *, lazy: bool) -> set[str]:
    """Modules of ``known`` that ``module`` imports (module level only, or also inside functions)."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = ast.walk(tree) if lazy else iter(tree.body)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            # `from a import b` imports a.b when b is a module, else a
            names = [f"{base}.{a.name}" for a in node.names]
        out.update(t for t in map(resolve, names) if t and t != module)
    return out


def _graph(*, lazy: bool) -> dict[str, set[str]]:
    known = _modules("coreg")
    return {m: _imported(m, p, known, lazy=lazy) for m, p in known.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_relative_and_from_imports() -> None:
    graph = _graph(lazy=True)
    assert "coreg.engine.trainer" in graph["coreg.engine"]  # from coreg.engine.trainer import ...
    assert "coreg.student" in graph["coreg.engine.trainer"]
    assert "coreg.student" in graph["coreg.tracking.mlflow"]  # a lazy import


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-function-level"])
def test_no_import_cycles_in_coreg(lazy: bool) -> None:
    cycle = _find_cycle(_graph(lazy=lazy))
    assert cycle is None, " -> ".join(cycle or [])


def test_student_does_not_depend_on_mlflow() -> None:
    tree = ast.parse((ROOT / "coreg" / "student.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] == "mlflow" or n.startswith("coreg.tracking")}, names


def test_every_command_lives_in_its_own_module() -> None:
    from coreg.cli import main

    modules = {name: cmd.callback.__module__ for name, cmd in main.commands.items()}
    assert set(modules) >= {"annotate", "import", "simulate", "report", "train", "methods", "tune", "register",
                            "export"}
    assert all(m.startswith("coreg._cli.") for m in modules.values()), modules
    assert len(set(modules.values())) == len(modules), modules  # one module per command
    cli_tree = ast.parse((ROOT / "coreg" / "cli.py").read_text())
    decorators = [ast.unparse(d) for n in ast.walk(cli_tree) if isinstance(n, ast.FunctionDef) for d in n.decorator_list]
    assert not [d for d in decorators if "command" in d], decorators  # cli.py holds only the group
