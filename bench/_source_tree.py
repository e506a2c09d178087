"""Import peft-ray from this source tree where it is not pip-installed.

The lent GPU machine runs bench/gpu_check.sh on a copied working tree without installing
anything. kernels/ installs under the name `peft_ray_kernels` (never as a top-level
`kernels`, which is Hugging Face's kernel package; pyproject.toml says why), so here that
name is bound to the folder, and the repository root goes on sys.path for `peft_ray`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bind() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if "peft_ray_kernels" in sys.modules or importlib.util.find_spec("peft_ray_kernels") is not None:
        return
    spec = importlib.machinery.ModuleSpec("peft_ray_kernels", None, is_package=True)
    spec.submodule_search_locations = [str(ROOT / "kernels")]
    sys.modules["peft_ray_kernels"] = importlib.util.module_from_spec(spec)
