"""Every field a job's method section takes is documented in docs/methods.md's field tables."""

from __future__ import annotations

from pathlib import Path

from peft_ray.methods import METHODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def test_every_method_field_has_a_row_in_docs_methods_md():
    text = DOC.read_text()
    missing = [f"{name}.{field}" for name in METHODS.names()
               for field in METHODS.get(name).config_cls.model_fields
               if field not in ("name", "modules_to_save", "init_from") and f"| `{field}` |" not in text]
    assert not missing, f"docs/methods.md lacks rows for {missing}: regenerate its 'Every method's fields' tables"
    for name in METHODS.names():
        assert f"**`{name}`**" in text, name
