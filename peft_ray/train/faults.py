"""Fault injection for the tests and bench/soak.py that break things on purpose.

Read from environment variables on the driver and shipped to workers in the run
config (never read inside workers, so a test's env cannot leak into other runs).
Each fault fires once, on the first attempt only (not after a resume/restart).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

ENV = {"kill_at_step": "PEFT_RAY_FAIL_AT_STEP",          # the worker process dies (os._exit)
       "nan_at_step": "PEFT_RAY_NAN_AT_STEP",            # the loss becomes NaN at this step
       "fail_save_at_step": "PEFT_RAY_FAIL_SAVE_AT_STEP",  # "disk full" midway through a checkpoint
       "slow_first_step_s": "PEFT_RAY_SLOW_FIRST_STEP_S"}  # a straggler: sleep after step 1


@dataclass
class Faults:
    kill_at_step: Optional[int] = None
    nan_at_step: Optional[int] = None
    fail_save_at_step: Optional[int] = None
    slow_first_step_s: Optional[int] = None


def faults_from_env() -> dict:
    return {k: int(os.environ[v]) for k, v in ENV.items() if os.environ.get(v)}
