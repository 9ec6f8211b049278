"""The serving package's module edges: no import cycle, no torch or coreg, the CLI imported by nobody."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVING = Path(__file__).resolve().parents[2] / "serving"
MODULES = sorted(p.stem for p in SERVING.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """Top-level names of every module that ``serving/<module>.py`` imports, at any depth of the code."""
    tree = ast.parse((SERVING / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):  # also imports inside functions, which a sys.modules check would miss
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                out.add(f"serving.{node.module}" if node.module else "serving")
            elif node.module:
                out.add(node.module)
                if node.module == "serving":
                    out.update(f"serving.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    return {m: {i.split(".", 1)[1].split(".")[0] for i in _imports(m) if i.startswith("serving.")} for m in MODULES}


def test_graph_is_parsed():
    g = _graph()
    assert {"classifier", "http", "preprocess", "runner"} <= set(g)
    assert g["runner"] >= {"classifier", "http"} and g["http"] >= {"classifier", "preprocess"}


def test_no_import_cycle():
    g = _graph()
    state: dict[str, int] = {}  # 1 on the DFS stack, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g.get(m, ())):
            assert state.get(n) != 1, f"import cycle: {' -> '.join([*path, m, n])}"
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [])


def test_cli_is_a_leaf_and_the_classifier_knows_no_server():
    g = _graph()
    assert all("runner" not in deps for m, deps in g.items() if m != "runner"), g
    assert g["classifier"] <= {"preprocess"}, g["classifier"]
    assert g["preprocess"] == set(), g["preprocess"]


def test_no_torch_or_coreg_anywhere_in_serving():
    for m in [*MODULES, "__init__"]:
        path = SERVING / f"{m}.py"
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = sorted(n for n in names if n.split(".")[0] in ("torch", "torchvision", "coreg", "pipelines"))
        assert not bad, f"serving/{m}.py imports {bad}"


def test_each_module_imports_alone_without_torch_or_coreg():
    """Each module in a fresh interpreter where torch and coreg cannot be imported at all."""
    code = ("import sys, importlib\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'coreg'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {MODULES!r}:\n"
            "    importlib.import_module('serving.' + m)\n"
            "import serving.runner as r\n"
            "assert r.main and r.OnnxClassifier and r.build_parser().prog == 'coreg-serve'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=SERVING.parent, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
