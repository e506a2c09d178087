"""A model folder that runs its own Python when loaded with trust_remote_code, for the trust tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def evil_model(tiny_bert: Path, root: Path, marker: Path) -> Path:
    """A model folder whose config maps to its own Python file: loading it with
    trust_remote_code runs that file, which writes `marker`."""
    model = root / "evil-model"
    shutil.copytree(tiny_bert, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                   "from transformers import BertConfig as EvilConfig\n")
    return model
