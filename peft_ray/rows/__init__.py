"""What every task's row builder shares: its config's common fields, tokenizer conventions
(rows/tokens.py) and label ids (rows/labels.py). Nothing under rows/ imports torch: a Ray Data
task only needs tokenizers. Each task's own builder is `tasks/<name>/rows.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RowConfig:
    """The fields every row builder reads. Flat and picklable: it is shipped to Ray Data tasks."""

    tokenizer_path: str
    template: str
    max_length: int
    trust_remote_code: bool = False
    chat: bool = False                  # template.chat (causal LMs): see rows/tokens.chat_prompt
    system: Optional[str] = None
