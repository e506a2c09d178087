"""The Ray cluster token (Ray >= 2.52 token auth), found in Ray's own order.

Ray looks in RAY_AUTH_TOKEN, then the file named by RAY_AUTH_TOKEN_PATH, then
~/.ray/auth_token (`ray get-auth-token --generate` writes it; whitespace is stripped).
We send it as ``Authorization: Bearer ...`` on every Jobs API call. The token's value
is never printed, logged or put into a job's runtime_env (the dashboard shows those);
messages name only where it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from peft_ray.errors import JobError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
MODE_ENV = "RAY_AUTH_MODE"


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class Token:
    source: str                               # where it came from, safe to print
    value: str = field(repr=False)            # never shown, not even in tracebacks' reprs

    def headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


def find_token() -> Optional[Token]:
    """The token in Ray's precedence, or None when there is none anywhere."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return Token(f"${TOKEN_ENV}", env)
    path_env = os.environ.get(TOKEN_PATH_ENV)
    if path_env:
        # Like Ray: a named file that is missing or empty is an error, not a silent fallback.
        return Token(f"${TOKEN_PATH_ENV} ({path_env})", _read_token_file(Path(path_env), f"${TOKEN_PATH_ENV}"))
    path = default_token_path()
    if path.is_file():
        return Token(str(path), _read_token_file(path, str(path)))
    return None


def require_token_if_token_mode(token: Optional[Token]) -> None:
    """RAY_AUTH_MODE=token with no token anywhere is a local mistake: say so before any request."""
    if token is None and os.environ.get(MODE_ENV, "").lower() == "token":
        raise JobError(f"{MODE_ENV}=token but no token was found: set {TOKEN_ENV} or {TOKEN_PATH_ENV}, or "
                       f"write it to {default_token_path()} (`ray get-auth-token` on the head prints it)")


def _read_token_file(path: Path, name: str) -> str:
    try:
        value = path.expanduser().read_text(encoding="utf-8").strip()
    except OSError as e:
        raise JobError(f"{name}: cannot read the Ray token file {path}: {e.strerror}") from None
    if not value:
        raise JobError(f"{name}: the Ray token file {path} is empty")
    return value
