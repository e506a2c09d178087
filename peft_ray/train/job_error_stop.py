"""End a Ray Train run at a worker's JobError instead of restarting its worker group.

A JobError is the job's fault (a row the pre-flight could not see, a checkpoint that cannot be
resumed): the restarted group meets it again, so `train.max_failures` restarts only repeat the model
load and the error. Ray 2.60's FailureConfig retries every worker error alike; its failure policy
raises at once only for a controller error that is not a worker-group start-up failure, and an
exception raised by a UserCallback's `after_exception` is one. So the callback raises the worker's
own error there, and `worker_job_error` finds it inside the ControllerError that fit() raises.

Imports Ray at load: imported only where a TorchTrainer is built (train/driver.py).
"""

from __future__ import annotations

from typing import Dict, Optional

import ray.train

from peft_ray.errors import JobError


def first_job_error(errors: Dict[int, BaseException]) -> Optional[JobError]:
    """The lowest rank's JobError among the workers' errors that a retry would meet again, if any
    (not StorageUnreachable: storage that did not answer may answer the restarted workers)."""
    return next((e for _, e in sorted(errors.items()) if isinstance(e, JobError) and not e.retryable), None)


class StopOnJobError(ray.train.UserCallback):
    """Runs in the Train controller after a poll found worker errors."""

    def after_exception(self, run_context, worker_exceptions: Dict[int, Exception]) -> None:
        own = first_job_error(worker_exceptions)
        if own is not None:
            raise own     # -> ControllerError(own): not retryable, so the run ends with it
