"""Imports go down docs/architecture.md's list of layers only: every import of the package, at
module level or inside a function, read from the source (nothing is imported here)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "peft_ray"
CORE = {"errors", "registry", "templates", "models", "scratch", "smollm2", "hf", "dist", "metrics", "summary",
        "storage", "replaced", "security", "fast_dropout", "cpu_attention"}
LAYERS = {"spec": 2, "rows": 3, "data": 4, "tasks": 5, "methods": 5, "adapter": 5, "card": 5, "preflight": 6,
          "train": 7, "zero_shot": 8, "inference": 8, "tune": 9, "submit": 10, "commands": 11, "cli": 11}
# spec/load.validate_spec types `method:` and `task:` through their registries, as PEFT's config loading does.
EXCEPTIONS = {("peft_ray.spec.load", "peft_ray.methods"), ("peft_ray.spec.load", "peft_ray.tasks")}


def layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "peft_ray_kernels":
        return 0
    if parts[0] != "peft_ray":
        return -1                                # third-party and the standard library
    if len(parts) == 1 or parts[1] in CORE:
        return 1
    assert parts[1] in LAYERS, f"peft_ray.{parts[1]} is in no layer: add it to docs/architecture.md and here"
    return LAYERS[parts[1]]


def imports(path: Path, module: str):
    """(imported module, line): `from peft_ray import x` as peft_ray.x, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base in ("peft_ray", "peft_ray_kernels"):   # a submodule by name, else an attribute
                yield from ((f"{base}.{a.name}" if is_submodule(base, a.name) else base, node.lineno)
                            for a in node.names)
            else:
                yield base, node.lineno
        elif isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)


def is_submodule(package: str, name: str) -> bool:
    root = ROOT if package == "peft_ray" else ROOT.parent / "kernels"
    return (root / name).is_dir() or (root / f"{name}.py").is_file()


def module_name(path: Path, root: Path, top: str) -> str:
    return ".".join([top, *path.relative_to(root).with_suffix("").parts]).removesuffix(".__init__")


def test_imports_go_down_the_layers_only():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path, ROOT, "peft_ray")
        for target, line in imports(path, module):
            if layer(target) > layer(module) and (module, target) not in EXCEPTIONS:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not upward, "imports up the layers (docs/architecture.md):\n" + "\n".join(upward)


def test_kernels_import_nothing_of_peft_ray():
    """kernels/ (installed as peft_ray_kernels) is the bottom layer: torch and triton only."""
    kernels = ROOT.parent / "kernels"
    found = [f"{path.relative_to(ROOT.parent)}:{line} imports {target}"
             for path in sorted(kernels.rglob("*.py"))
             for target, line in imports(path, module_name(path, kernels, "peft_ray_kernels"))
             if target.split(".")[0] == "peft_ray"]
    assert not found, "\n".join(found)


def test_no_import_cycles():
    """No two modules import each other, directly or round a circle, even through imports inside
    functions: docs/architecture.md's rule is that a circle means code sits in the wrong module."""
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path, ROOT, "peft_ray")
        graph[module] = {t for t, _ in imports(path, module) if t.startswith("peft_ray.") and t != module}
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def strongly_connected(graph):
    """Tarjan's strongly connected components of {node: successors} (unknown successors ignored)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            out.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return out
