"""User-facing errors.

Every error a user can cause by a bad job file, path or dataset is a
``JobError``. The CLI prints its message (no traceback) and exits 2, before any
cluster work starts wherever the problem can be seen that early.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class JobError(Exception):
    """A problem with the job the user asked for: names what is wrong and what to do."""

    exit_code = 2


class SpecError(JobError):
    """The YAML job spec (or an override) is malformed or invalid."""


class DataError(JobError):
    """A data file, column or row is unusable."""


class CheckpointError(JobError):
    """A checkpoint or output directory cannot be used as asked."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
