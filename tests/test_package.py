"""The package as a whole: its layers follow the data flow, and the README's examples run."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import torch

import tailscope as ts

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "tailscope"

#: The data flow, bottom to top: a module may import only from its own layer or below.
LAYERS = [
    {"errors", "_checks"},
    {"data", "datasets", "models"},
    {"plan"},
    {"engine"},
    {"execute"},
    {"spec", "store"},
    {"estimate", "scores"},
    {"stopping"},
    {"run"},
    {"experiments"},
    {"report"},
    {"cli", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    """The ``tailscope`` submodules (first component below the package) a file imports,
    at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tailscope" and len(parts) > 1 and parts[1] in RANK:
                found.add(parts[1])
    return found


def _layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def test_every_module_belongs_to_a_layer():
    layers = {_layer_of(p) for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    assert layers <= set(RANK), sorted(layers - set(RANK))


def test_imports_follow_the_data_flow():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":  # the public surface re-exports every layer
            continue
        layer = _layer_of(path)
        for imported in _imports(path):
            if RANK[imported] > RANK[layer]:
                wrong.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_cycles_between_modules():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        graph[module] = set()
        for node in ast.parse(path.read_text()).body:  # lazy imports cannot cycle at import
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tailscope."):
                for alias in node.names:  # "from pkg import submodule" imports the submodule
                    submodule = f"{node.module}.{alias.name}"
                    file = PACKAGE.parent / (submodule.replace(".", "/") + ".py")
                    graph[module].add(submodule if file.exists() else node.module)

    def visit(module, stack):
        if module in stack:
            return [*stack[stack.index(module) :], module]
        for target in graph.get(module, ()):
            cycle = visit(target, [*stack, module])
            if cycle:
                return cycle
        return None

    for module in graph:
        if module != "tailscope":
            assert visit(module, []) is None, visit(module, [])


# ---- the README's examples ----------------------------------------------------------------
#: Small stand-ins, so that the examples run in seconds: digits instead of MNIST, 8 models.
STAND_INS = [
    (r'"mnist"', '"digits"'),
    (r"n_models=\d+", "n_models=8"),
    (r"max_models\(\d+\)", "max_models(8)"),
    (r'"runs/', '"{tmp}/'),
]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    namespace = {
        "MyNet": lambda shape, n_classes: torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, n_classes)
        )
    }
    torch.set_num_threads(1)
    for block in blocks:
        for pattern, replacement in STAND_INS:
            block = re.sub(pattern, replacement.format(tmp=tmp_path), block)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ts.estimate.UndefinedEstimateWarning)
            exec(compile(block, "README.md", "exec"), namespace)
    run = namespace["run"]
    assert isinstance(run, ts.Run) and run.n_finished == 8
    assert run.stopping["reason"] == "all_models"  # 8 models never reach the SE target


def test_the_design_document_names_only_modules_that_exist():
    text = (ROOT / "docs" / "design.md").read_text()
    named = re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", text)
    assert len(named) > 10
    for module in named:
        found = [PACKAGE / module, ROOT / module, *PACKAGE.rglob(module)]
        assert any(path.exists() for path in found), module
