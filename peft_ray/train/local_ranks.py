"""`train --local` as several ranks without Ray (`scaling.local_ranks`): this process is rank 0
and starts ranks 1..n-1 as child processes (`python -m peft_ray.train.rank_child`), torchrun-style.

Why a choice and not the default: on a 2-core AMD Zen 4 two 1-thread ranks ran the same steps
1.07-1.11x faster than one 2-thread process; on a 2-core Intel Xeon with AVX-512 and AMX the two
layouts trained at the same speed and the second process's start-up cost 2-3 s of the job
(BENCHMARKS.md, "--local as ranks"). Ranks also give a --local checkpoint the Ray run's ZeRO
layout (trainer_state.json's world_size), so with local_ranks = num_workers either path resumes
the other's, and they run multi-rank code paths (shards, collectives) without Ray.

The parent supervises: the ranks meet through a TCPStore it holds (a child that dies while
starting is seen at once, not after the 30-minute collective timeout); each child's output comes
back line by line, prefixed "(rank N) ", through the parent's terminal router into train.log;
a child sits in its own session, so Ctrl-C reaches the parent only, which then stops it; and a
child exits when its stdin closes, so a parent killed with -9 leaves no rank behind.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Dict, List, Optional

from peft_ray.errors import JobError
from peft_ray.train.terminal import FAILURE

HOST = "127.0.0.1"
START_TIMEOUT_S = 300          # every rank at the store, or the run stops with the child's last lines
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)   # torch's default, as in Ray Train


class RankFailed(JobError):
    """A child rank of a --local run stopped before the run ended."""


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def layout(scaling, n_cores: Optional[int] = None) -> tuple:
    """(ranks, torch threads per rank) for --local: scaling.local_ranks processes, up to this
    machine's cores, sharing the CPUs the worker group would have had (num_workers x
    cpus_per_worker, up to the cores) as threads. An explicit scaling.torch_threads stays. A GPU
    job runs one rank (a single-GPU box) with the threads it would have had."""
    n_cores = n_cores or cores()
    if scaling.use_gpu:
        return 1, scaling.torch_threads
    ranks = max(1, min(int(scaling.local_ranks), n_cores))
    cpus = max(1, min(n_cores, int(scaling.num_workers * scaling.cpus_per_worker)))
    return ranks, scaling.torch_threads or max(1, cpus // ranks)


def said(tail) -> str:
    """A stopped child's own error: its closing "stopped: ..." line (rank_child.main), else the last
    line that reads as an error, else that it printed none (a kill, an os._exit)."""
    lines = [x.strip() for x in tail if x.strip()]
    for line in reversed(lines):
        if line.startswith("stopped: "):
            return line[len("stopped: "):]
    for line in reversed(lines):
        if FAILURE.match(line):
            return line
    return "it printed no error (killed, or it exited without one)"


class Ranks:
    """Ranks 1..world-1 of a --local run, started and watched from rank 0 (this process)."""

    def __init__(self, world: int, payload: Dict[str, Any], echo=None):
        self.world, self.payload = world, payload
        self.echo = echo or (lambda line: sys.stdout.write(line + "\n"))
        self.children: List[subprocess.Popen] = []
        self.tails: Dict[int, deque] = {}
        self.readers: List[threading.Thread] = []
        self.store = None

    def start(self) -> None:
        """Start the children and join the process group as rank 0."""
        import torch.distributed as dist
        from torch.distributed import TCPStore

        self.store = TCPStore(HOST, 0, self.world, is_master=True, wait_for_workers=False,
                              timeout=COLLECTIVE_TIMEOUT)
        port = self.store.port
        for rank in range(1, self.world):
            self._spawn(rank, port)
        self._wait_for_children()
        dist.init_process_group("gloo", store=self.store, rank=0, world_size=self.world, timeout=COLLECTIVE_TIMEOUT)

    def _spawn(self, rank: int, port: int) -> None:
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(self.world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": HOST, "MASTER_PORT": str(port), "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen([sys.executable, "-m", "peft_ray.train.rank_child"], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True, text=True, bufsize=1)
        child.stdin.write(json.dumps(self.payload) + "\n")
        child.stdin.flush()     # stdin stays open: its end tells the child that rank 0 is gone
        self.children.append(child)
        self.tails[rank] = deque(maxlen=20)
        reader = threading.Thread(target=self._forward, args=(rank, child), daemon=True)
        reader.start()
        self.readers.append(reader)

    def _forward(self, rank: int, child: subprocess.Popen) -> None:
        for line in child.stdout:
            line = line.rstrip("\n")
            self.tails[rank].append(line)
            self.echo(f"(rank {rank}) {line}")

    def _wait_for_children(self) -> None:
        keys = [f"ready{r}" for r in range(1, self.world)]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.store.check(keys):
            self.raise_if_failed()
            if time.monotonic() > deadline:
                raise RankFailed(f"the --local run's ranks 1..{self.world - 1} did not start within {START_TIMEOUT_S} s"
                                 f"{self._last_lines()}; set scaling.num_workers: 1 to train in this process alone")
            time.sleep(0.05)

    def failed(self, grace: float = 0.0) -> Optional[str]:
        """What a child that stopped with an error said last; None while all run or ended well.
        `grace`: seconds to wait for a child to end (a collective on rank 0 fails as soon as a
        child's sockets close, which can be before the child has fully exited)."""
        deadline = time.monotonic() + grace
        while True:
            for rank, child in enumerate(self.children, start=1):
                code = child.poll()
                if code not in (None, 0):
                    for reader in self.readers:
                        reader.join(timeout=2)     # its last lines
                    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                    return f"rank {rank} of the --local run stopped ({how}): {said(self.tails[rank])}"
            if time.monotonic() >= deadline or all(c.poll() is not None for c in self.children):
                return None
            time.sleep(0.05)

    def failure(self, grace: float = 0.0) -> Optional[RankFailed]:
        """The error that names a child that stopped with one (see `failed`); None if none did."""
        why = self.failed(grace)
        return RankFailed(f"{why}. Its whole output is in train.log (lines starting \"(rank N)\")") if why else None

    def raise_if_failed(self) -> None:
        failed = self.failure()
        if failed:
            raise failed

    def _last_lines(self) -> str:
        lines = [f"(rank {r}) {x}" for r, tail in self.tails.items() for x in list(tail)[-3:]]
        return (": " + " | ".join(lines)) if lines else ""

    def join(self, timeout: float = 120) -> None:
        """After rank 0's train_func returned: the children end on their own (same steps)."""
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self.raise_if_failed()
        self.stop()

    def stop(self, release=None) -> None:
        """Stop the children (Ctrl-C or an error on rank 0). SIGINT first, so that a child removes its
        checkpoint staging folder; `release` (ending rank 0's process group) then fails the
        collective a child waits in, so it sees the signal at once; a kill after 10 s."""
        for child in self.children:
            if child.poll() is None:
                try:
                    child.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass
        if release is not None:
            release()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.stdin and not child.stdin.closed:
                try:
                    child.stdin.close()
                except OSError:
                    pass
        for reader in self.readers:
            reader.join(timeout=2)
