"""The installed packages: every peft_ray package ships, and the fused ops never take the
top-level name `kernels` (Hugging Face's kernel package, which transformers >= 5.25 requires
and imports: shadowing it broke every transformers model import)."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(d.relative_to(ROOT).parts) for d in (ROOT / "peft_ray").rglob("*")
             if d.is_dir() and (d / "__init__.py").exists()} | {"peft_ray"}
    assert set(tool["packages"]) == found | {"peft_ray_kernels"}
    assert tool["package-dir"] == {"peft_ray_kernels": "kernels"}


def test_kernels_folder_is_not_a_regular_package():
    # with an __init__.py, a repository root on sys.path (python -m pytest, a Ray job's working
    # dir) would shadow Hugging Face's `kernels` for transformers
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert importlib.util.find_spec("peft_ray_kernels.ops").origin == str(ROOT / "kernels" / "ops.py")


def test_transformers_imports_with_the_repository_root_first_on_sys_path():
    code = ("import sys, importlib.util; sys.path.insert(0, %r)\n"
            "from transformers.models.bert import modeling_bert\n"
            "spec = importlib.util.find_spec('kernels')   # Hugging Face's, or a harmless namespace\n"
            "assert spec is None or spec.origin is None or not spec.origin.startswith(%r), spec\n"
            "from peft_ray.methods.lora import layer\n") % (str(ROOT), str(ROOT / "kernels"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
