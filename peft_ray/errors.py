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
    # Met again by every retry (a bad row, a spec fault), so a Ray run ends at it without restarting
    # its workers (train/job_error_stop.py); an error that may pass (storage not answering) says True.
    retryable = False


class StorageUnreachable(JobError):
    """A storage URI that did not answer: perhaps only for now, so a worker meeting it is restarted."""

    retryable = True


class SpecError(JobError):
    """The YAML job spec (or an override) is malformed or invalid."""


class DataError(JobError):
    """A data file, column or row is unusable."""


class CheckpointError(JobError):
    """A checkpoint or output directory cannot be used as asked."""


# The names HF Trainer, PEFT, LLaMA-Factory and axolotl give these settings: spelling alone would
# point `per_device_train_batch_size` at eval_batch_size and `eval_steps` at max_steps.
ALIASES = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size", "micro_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size", "gradient_accumulation_steps": "grad_accum",
    "eval_steps": "eval_every", "save_steps": "checkpoint_every", "save_total_limit": "keep_checkpoints",
    "warmup_steps": "warmup_ratio", "lr_scheduler_type": "schedule", "metric_for_best_model": "metric_for_best",
    "max_seq_length": "max_length", "sequence_len": "max_length", "cutoff_len": "max_length",
    "lora_r": "r", "rank": "r", "lora_rank": "r", "lora_target_modules": "target_modules", "lora_target": "target_modules",
    "model_name_or_path": "name_or_path", "base_model": "name_or_path", "output_dir": "dir",
}
NOTES = {"warmup_ratio": " (a fraction of the run's steps)", "batch_size": " (the global batch, over all workers)"}
# axolotl's and LLaMA-Factory's files are flat: at the top level, the field's section too.
SECTION = {"lr": "train", "epochs": "train", "batch_size": "train", "eval_batch_size": "train", "grad_accum": "train",
           "eval_every": "train", "checkpoint_every": "train", "keep_checkpoints": "train", "warmup_ratio": "train",
           "schedule": "train", "metric_for_best": "train", "max_length": "model", "name_or_path": "model",
           "r": "method", "target_modules": "method", "dir": "output"}


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the field another tool calls `word`, else for the closest
    spelling, or ''."""
    choices = list(choices)
    alias = ALIASES.get(word)
    if alias in choices:
        return f" (did you mean '{alias}'{NOTES.get(alias, '')}?)"
    if alias and SECTION.get(alias) in choices:      # a flat file's key at the top level
        return f" (did you mean '{SECTION[alias]}.{alias}'{NOTES.get(alias, '')}?)"
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not match and isinstance(word, str):   # `LoRA` for `lora`: difflib weighs case as spelling
        match = [c for c in choices if isinstance(c, str) and c.lower() == word.lower()]
    return f" (did you mean '{match[0]}'?)" if match else ""
