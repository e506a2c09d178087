"""Fault injection for the tests and bench/soak.py that break things on purpose.

Read from environment variables on the driver and shipped to workers in the run
config (never read inside workers, so a test's env cannot leak into other runs).
Each fault fires once, on the first attempt only (not after a resume/restart).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

from peft_ray.dist import rank

ENV = {"kill_at_step": "PEFT_RAY_FAIL_AT_STEP",          # the worker process dies (os._exit)
       "nan_at_step": "PEFT_RAY_NAN_AT_STEP",            # the loss becomes NaN at this step
       "fail_save_at_step": "PEFT_RAY_FAIL_SAVE_AT_STEP",  # "disk full" midway through a checkpoint
       "kill_rank": "PEFT_RAY_FAIL_RANK",                # only this rank dies at kill_at_step (default: all)
       "slow_first_step_s": "PEFT_RAY_SLOW_FIRST_STEP_S"}  # a straggler: sleep after step 1


@dataclass
class Faults:
    """The run's injected faults; `resumed`: this attempt continues a checkpoint (none fire)."""

    kill_at_step: Optional[int] = None
    nan_at_step: Optional[int] = None
    fail_save_at_step: Optional[int] = None
    kill_rank: Optional[int] = None
    slow_first_step_s: Optional[int] = None
    resumed: bool = False
    fired: set = field(default_factory=set)

    def poisoned(self, loss, step: int):
        """The loss, made NaN once at nan_at_step."""
        if self.nan_at_step == step and not self.resumed and "nan" not in self.fired:
            self.fired.add("nan")
            return loss * float("nan")
        return loss

    def kill(self, step: int) -> None:
        """The worker process dies hard at kill_at_step, before the step is logged or saved."""
        if self.kill_at_step == step and not self.resumed and self.kill_rank in (None, rank()):
            os._exit(17)

    def straggle(self, step: int) -> None:
        """A straggler: this rank sleeps after step 1."""
        if self.slow_first_step_s and step == 1:
            time.sleep(self.slow_first_step_s)

    def fails_save(self, step: int) -> bool:
        """Whether this step's checkpoint fails midway ("disk full")."""
        return self.fail_save_at_step == step and not self.resumed


def faults_from_env() -> dict:
    return {k: int(os.environ[v]) for k, v in ENV.items() if os.environ.get(v)}
