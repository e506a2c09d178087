"""Secure defaults: secrets never reach logs or saved job specs."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***REDACTED***"
# Whole words of a key name: `hf_token`, `AWS_SECRET_ACCESS_KEY`, `password` (not `tokenizer`).
_SECRET_KEY = re.compile(r"(?:^|[_.-])(token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|"
                         r"credentials?)(?:$|[_.-])", re.I)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|"
                           r"gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})\b")


def redact(obj: Any, key: str = "") -> Any:
    """A copy of `obj` with secret-looking keys' values and token-shaped strings masked."""
    if isinstance(obj, dict):
        return {k: redact(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, key) for v in obj)
    if isinstance(obj, str):
        if key and _SECRET_KEY.search(key) and obj:
            return REDACTED
        return _SECRET_VALUE.sub(REDACTED, obj)
    return obj


def redact_text(text: str) -> str:
    return _SECRET_VALUE.sub(REDACTED, text)
