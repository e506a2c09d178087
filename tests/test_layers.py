"""Imports go down docs/architecture.md's list of layers only: every import of the package, at
module level or inside a function, read from the source (nothing is imported here)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "peft_ray"
CORE = {"errors", "registry", "templates", "models", "scratch", "smollm2", "hf", "dist", "metrics", "summary",
        "storage", "replaced", "security", "fast_dropout", "cpu_attention", "config_model", "weights_checked"}
LAYERS = {"spec": 2, "rows": 3, "data": 4, "tasks": 5, "methods": 5, "adapter": 5, "card": 5, "preflight": 6,
          "train": 7, "zero_shot": 8, "inference": 8, "prediction": 8, "evaluation": 8, "tune": 9, "submit": 10, "commands": 11, "cli": 11}
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


def string_modules(path: Path):
    """(module, line) of every string constant naming a module of the package: what
    importlib.import_module reaches (a task's model_module, the CLI's command list)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("peft_ray."):
            parts = node.value.split(".")[1:]
            if parts and all(p.isidentifier() for p in parts) and (
                    ROOT.joinpath(*parts).with_suffix(".py").is_file() or ROOT.joinpath(*parts).is_dir()):
                yield node.value, node.lineno


def test_modules_named_by_string_go_down_the_layers_too():
    """An import_module("peft_ray.x") is an import the AST walk above does not see."""
    upward = [f"{path.relative_to(ROOT.parent)}:{line} names {target}"
              for path in sorted(ROOT.rglob("*.py"))
              for target, line in string_modules(path)
              if layer(target) > layer(module_name(path, ROOT, "peft_ray"))]
    assert not upward, "\n".join(upward)


def test_kernels_are_imported_by_methods_only_and_tasks_and_methods_not_by_each_other():
    """docs/architecture.md: kernels/ is imported by methods only; tasks/ and methods/ share layer 5
    but neither reaches into the other (a task asks for no method, a method serves every task)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path, ROOT, "peft_ray")
        area = module.split(".")[1] if "." in module else ""
        for target, line in imports(path, module):
            top = target.split(".")
            if top[0] == "peft_ray_kernels" and area != "methods":
                found.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target} (kernels: methods only)")
            if top[0] == "peft_ray" and len(top) > 1 and {area, top[1]} == {"tasks", "methods"}:
                found.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target} (tasks <-> methods)")
    assert not found, "\n".join(found)


def _names_compared(tree):
    """(string, line) of every string constant on either side of a comparison (==, in, ...)."""
    def strings(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for element in node.elts:
                yield from strings(element)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                yield from ((s, node.lineno) for s in strings(side))
        elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List, ast.Set)):
            yield from ((s, node.lineno) for s in strings(node.value))   # a tuple of names compared later


def test_no_task_or_method_is_named_outside_its_own_folder():
    """docs/architecture.md: nothing outside tasks/<name>/ compares task.type with a name, and
    nothing outside methods/<name>/ a method's name: code elsewhere asks the Task or the method's
    config (a review found `task.type != "classification"` in train/resume.py and a tuple of
    prompt methods in preflight.py)."""
    folders = {area: {p.name for p in (ROOT / area).iterdir() if (p / "__init__.py").is_file()}
               for area in ("tasks", "methods")}
    names = folders["tasks"] | folders["methods"] | {"translation"}    # Translation lives in generation/
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if len(parts) > 2 and parts[0] in folders and parts[1] in folders[parts[0]]:
            continue                                                    # a task's or method's own folder
        found += [f"{path.relative_to(ROOT.parent)}:{line} compares {name!r}"
                  for name, line in _names_compared(ast.parse(path.read_text())) if name in names]
    assert not found, "\n".join(found)


def test_the_task_registry_and_row_builders_load_without_torch():
    """tasks/base.py's rule: the registry, each task's `__init__`, `config` and `rows` import no torch
    (directly or through what they import), so `validate`, spec checks and Ray Data row building run
    without it. A fresh interpreter, as nothing here may have imported torch first."""
    import subprocess
    import sys

    folders = sorted(p.name for p in (ROOT / "tasks").iterdir() if (p / "__init__.py").is_file())
    mods = ["peft_ray.tasks"] + [f"peft_ray.tasks.{f}.{part}" for f in folders for part in ("config", "rows")
                                 if (ROOT / "tasks" / f / f"{part}.py").is_file()]
    code = (f"import importlib, sys\nfor m in {mods!r}:\n    importlib.import_module(m)\n"
            "    assert 'torch' not in sys.modules, m + ' imported torch'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent)
    assert r.returncode == 0, r.stderr[-2000:]
