"""Rank 1..n-1 of a `train --local` run: `python -m peft_ray.train.rank_child`, started by
train/local_ranks.Ranks with its rank in the environment and the run as one JSON line on stdin
(the spec as job.yaml holds it, the run facts, the data files: no pickle, nothing to execute).

It runs the same train_func as rank 0 with its own shard of the rows and a LocalReporter, which
hands its checkpoint files to rank 0 (report.LocalReporter.report). It ends when rank 0's stdin
end closes (rank 0 gone, even killed with -9) or at SIGINT from rank 0 (Ctrl-C there)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback


def _exit_when_parent_goes() -> None:
    """stdin stays open while rank 0 lives; its end means rank 0 is gone."""
    def watch():
        sys.stdin.read()
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def main() -> int:
    payload = json.loads(sys.stdin.readline())
    _exit_when_parent_goes()
    stopping = threading.Event()

    def on_sigint(signum, frame):   # rank 0 stops this rank (Ctrl-C there, or its own error)
        stopping.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        run(payload)
    except KeyboardInterrupt:
        return 130
    except Exception as e:   # noqa: BLE001 - reported to rank 0 through the output's last line
        from peft_ray.errors import JobError

        if stopping.is_set():   # the collective it waited in failed as rank 0 ended its group: no noise
            return 130
        if not isinstance(e, JobError):
            traceback.print_exc()
        # the line rank 0's RankFailed quotes
        print(f"stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
        return 1
    return 0


def run(payload) -> None:
    import torch.distributed as dist
    from torch.distributed import TCPStore

    from peft_ray.spec import validate_spec
    from peft_ray.train.local import rank_data
    from peft_ray.train.local_ranks import COLLECTIVE_TIMEOUT
    from peft_ray.train.recipe import train_func
    from peft_ray.train.report import LocalReporter

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                     timeout=COLLECTIVE_TIMEOUT)
    store.set(f"ready{rank}", "1")
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
    spec = validate_spec(payload["spec"])
    data = rank_data(spec, payload["model_path"], payload["train_files"], payload["val_files"])
    reporter = LocalReporter(spec.output.dir, spec.train.keep_checkpoints, payload["run"].get("resume_from"))
    train_func({"spec": payload["spec"], "run": payload["run"]}, reporter=reporter, data=data)


if __name__ == "__main__":
    sys.exit(main())
