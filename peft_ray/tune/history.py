"""Each trial's own record in its folder (``trials/<id>/``), kept by the search's driver: every
report of every attempt (``history.jsonl``, append-only) and its error (``error.txt``).

Why not Tune's ``result.json`` alone: `tune --resume` starts an unfinished trial again (it then
continues from its own checkpoint), and after that restore Tune's ``result.json`` holds only the
new attempt's reports; the earlier evaluations, often the best ones, would be lost to the
leaderboard, the exported adapter and the curves. ASHA's state is not saved by Tune either, so
``ResumableASHA`` replays these histories when a restored search adds its trials.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from peft_ray.errors import JobError
from peft_ray.storage import open_append, write_file
from peft_ray.tune.folder import TRIALS_DIR

HISTORY_FILE = "history.jsonl"   # every report the trial made, all attempts, in arrival order
ERROR_FILE = "error.txt"         # the trial's error, as Tune wrote it
TUNE_RESULT_FILE = "result.json"  # Tune's own: the current attempt's reports only


def trial_folder(out: str, trial_id: str) -> Path:
    return Path(out) / TRIALS_DIR / trial_id


def checkpoint_history(own: Path) -> List[Dict[str, Any]]:
    """The reports the trial kept itself, in its latest good checkpoint's trainer_state.json (every
    attempt's, up to that checkpoint; each report comes with a checkpoint). The driver's
    history.jsonl misses a report the trial made just before an interruption, before the driver took
    it (seen: a best at step 30 lost that way, and the exported best checkpoint then "gone")."""
    from peft_ray.train.checkpoint import checkpoint_dirs, checkpoint_step, latest_good_checkpoint, read_state

    for root in (own / "checkpoints", own):     # a one-worker trial's layout, a Ray Train trial's
        found = latest_good_checkpoint(root, warn=lambda m: None) if root.is_dir() else None
        if found is not None:
            state = read_state(found)
            at_step = {checkpoint_step(d): str(d) for d in checkpoint_dirs(root)}   # what retention kept
            rows = [dict(r) for r in state.history if isinstance(r, dict)] if state else []
            for r in rows:       # as Tune's rows carry it: where the step's adapter is, if still kept
                r["checkpoint_path"] = at_step.get(r.get("step"))
            return rows
    return []


def read_history(tune_dir: Optional[Path], own: Optional[Path] = None) -> List[Dict[str, Any]]:
    """A trial's reports in step order: those its latest checkpoint holds and its own history.jsonl
    in `own` (every attempt), then Tune's result.json in `tune_dir` (the last attempt; all a search
    started before history.jsonl has). A step reported more than once (a resumed trial) keeps its
    last report."""
    by_step: Dict[int, Dict[str, Any]] = {}
    homes = [f for f in (own, tune_dir) if f is not None]
    for row in checkpoint_history(own) if own else []:
        if isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
            by_step[row["step"]] = row
    for path in ([own / HISTORY_FILE] if own else []) + ([tune_dir / TUNE_RESULT_FILE] if tune_dir else []):
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:   # blank, or a line cut short by a kill
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
                by_step[row["step"]] = _own_checkpoint(row, homes)
    return [by_step[s] for s in sorted(by_step)]


def _own_checkpoint(row: Dict[str, Any], homes: List[Path]) -> Dict[str, Any]:
    """`row` with its checkpoint_path kept only where it lies inside the trial's own folders: the
    best row's checkpoint becomes the search's adapter/, and a row written into history.jsonl by
    someone else must not copy an adapter from elsewhere into it."""
    path = row.get("checkpoint_path")
    if path is None:
        return row
    try:
        inside = isinstance(path, str) and any(Path(path).resolve().is_relative_to(h.resolve()) for h in homes)
    except (OSError, RuntimeError, ValueError):     # a link loop, a NUL in the name
        inside = False
    return row if inside else {**row, "checkpoint_path": None}


def read_error(*folders: Optional[Path]) -> Optional[str]:
    """The last line of the first error file found in `folders` (the exception and its message)."""
    for folder in folders:
        path = folder / ERROR_FILE if folder else None
        if path is not None and path.is_file() and not path.is_symlink():   # a planted link's target is not shown
            lines = [s.strip() for s in path.read_text(errors="replace").splitlines() if s.strip()]
            if lines:
                return lines[-1]
    return None


class TrialRecorder(Callback):
    """Appends every result Tune receives to the trial's history.jsonl, and copies its error."""

    def __init__(self, out: str):
        self.out = out
        self._warned: set = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from ray.tune.utils.util import SafeFallbackEncoder

        folder = self._folder(trial)
        if folder is None:
            return
        row = {k: v for k, v in result.items() if k != "config"}
        try:
            with open_append(folder / HISTORY_FILE) as f:   # a link or FIFO planted there is refused
                f.write(json.dumps(row, cls=SafeFallbackEncoder) + "\n")
        except (JobError, OSError) as e:
            self._warn(trial, str(e))

    def on_trial_error(self, iteration, trials, trial, **info):
        try:
            text = Path(trial.error_file).read_text(errors="replace")
        except (OSError, TypeError):     # no error file: the exception itself is gone
            return
        folder = self._folder(trial)
        if folder is not None:
            write_file(folder / ERROR_FILE, text)

    def _folder(self, trial) -> Optional[Path]:
        """trials/<id>, made if missing; None (said once) where it or trials/ is a link: a planted
        link would have the search write outside its folder."""
        folder = trial_folder(self.out, trial.trial_id)
        if folder.is_symlink() or folder.parent.is_symlink():
            self._warn(trial, f"{folder} (or its parent) is a symbolic link; the trial's history is not kept")
            return None
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _warn(self, trial, why: str) -> None:
        if trial.trial_id not in self._warned:
            self._warned.add(trial.trial_id)
            print(f"[peft-ray] warning: trial {trial.trial_id}: {why}")


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs survive `tune --resume`. Tune saves no scheduler state, so a restored
    search would start with empty rungs: a resumed trial would be judged against only the trials
    that report after the restore, and the finished ones would count for nothing. Each trial the
    restored search adds (finished, stopped, errored or resumed) has its earlier reports replayed
    into its bracket, as ASHA recorded them the first time."""

    def __init__(self, out: str, **kwargs):
        super().__init__(**kwargs)
        self.out = out

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        if self._metric is None:
            return
        bracket = self._trial_info[trial.trial_id]
        for h in read_history(None, trial_folder(self.out, trial.trial_id)):
            value = h.get(self._metric)
            if isinstance(value, (int, float)) and math.isfinite(value) and self._time_attr in h:
                bracket.on_result(trial, h[self._time_attr], self._metric_op * value)
