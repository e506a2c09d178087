"""TuneReporter: where an in-process (1-worker) trial's checkpoints and metrics go.

The same checkpoint folder as `peft-ray train --local` (``<trial dir>/checkpoints``, atomic,
checksummed), plus one ``ray.tune.report`` per checkpoint so ASHA sees every evaluation. The
report carries ``checkpoint_path`` as Ray's own TuneReportCallback does for TorchTrainer trials,
so the leaderboard reads both kinds of trial the same way.

Retention: the last ``train.keep_checkpoints`` (what a resumed trial continues from) and the one
with the best tune metric so far (what the leaderboard exports as the adapter).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Dict, Optional

from peft_ray.storage import atomic_write
from peft_ray.train.checkpoint import checkpoint_dirs, latest_good_checkpoint
from peft_ray.train.report import LocalReporter

TRIAL_FILE = "trial.json"     # written by the trial before training: metric, mode, assignment
SCORES_FILE = "scores.json"   # checkpoint name -> tune metric (survives a restart of the trial)


class TuneReporter(LocalReporter):
    def __init__(self, output_dir: str, keep: int, resume_from: Optional[str]):
        super().__init__(output_dir, keep, resume_from)
        facts = json.loads((Path(output_dir) / TRIAL_FILE).read_text())
        self.metric, self.mode = facts["metric"], facts["mode"]

    def report(self, metrics: Dict, local_dir: str) -> None:
        import ray.tune

        self._record_score(metrics)
        super().report(metrics, local_dir)  # the checkpoint is in place before Tune hears of it
        ray.tune.report({**metrics, "checkpoint_path": str(self.last_checkpoint)})

    def _record_score(self, metrics: Dict) -> None:
        value = metrics.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            scores = self._scores()
            scores[f"checkpoint_{int(metrics['step']):08d}"] = float(value)
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(self.root / SCORES_FILE, json.dumps(scores).encode())

    def _scores(self) -> Dict[str, float]:
        path = self.root / SCORES_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _prune(self) -> None:
        """Keep the last K, the newest that validates, and the best by the tune metric."""
        dirs = checkpoint_dirs(self.root)
        scores = {k: v for k, v in self._scores().items() if (self.root / k).is_dir()}
        sign = 1 if self.mode == "max" else -1
        best = max(scores, key=lambda k: (sign * scores[k], -int(k.split("_")[-1])), default=None)
        keep = {p.name for p in dirs[-self.keep:]} | {best}
        good = latest_good_checkpoint(self.root, warn=lambda m: None)
        for old in dirs:
            if old.name not in keep and old != good:
                shutil.rmtree(old, ignore_errors=True)
