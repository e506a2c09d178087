"""Every field a job's method section takes is documented in docs/methods.md's table for that
method, and every task's own fields in README.md's `task` row."""

from __future__ import annotations

import re
from pathlib import Path

from peft_ray.methods import METHODS
from peft_ray.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("name", "modules_to_save", "init_from")   # every method's, said once above the tables


def _method_sections(text: str) -> dict:
    """method name -> its part of docs/methods.md: from its **`name`** line to the next heading or
    method (a field another method documents does not count for this one)."""
    parts = re.split(r"^(\*\*`\w+`\*\*|#+ .*)$", text, flags=re.M)
    return {m.group(1): body for head, body in zip(parts[1::2], parts[2::2])
            if (m := re.fullmatch(r"\*\*`(\w+)`\*\*", head))}


def test_every_method_field_has_a_row_in_its_own_table_in_docs_methods_md():
    sections = _method_sections((ROOT / "docs" / "methods.md").read_text())
    names = [n for n in METHODS.names() if METHODS.get(n).config_cls.__module__.startswith("peft_ray.")]
    assert names and not [n for n in names if n not in sections], "docs/methods.md lacks a **`name`** table"
    missing = [f"{name}.{field}" for name in names for field in METHODS.get(name).config_cls.model_fields
               if field not in SHARED and f"| `{field}` |" not in sections[name]]
    assert not missing, (f"docs/methods.md lacks rows for {missing}: add one to the method's table under "
                         "'Every method's fields' (field, type, default, what it does)")


def test_every_task_field_is_named_in_the_readme_task_row():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `task` |"))
    names = [n for n in TASKS.names() if TASKS.get(n).config_cls.__module__.startswith("peft_ray.")]
    missing = [f"{n}.{field}" for n in names for field in TASKS.get(n).config_cls.model_fields
               if field != "type" and f"`{field}`" not in row]
    assert not missing, f"README.md's `task` row lacks {missing}"
    assert not [n for n in names if n not in row], "README.md's `task` row names every task type"
