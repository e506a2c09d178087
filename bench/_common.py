"""Helpers shared by the benchmarks: process-tree RSS sampling, running the CLI, real batches."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List

import psutil

ROOT = Path(__file__).resolve().parents[1]


class RSSMonitor(threading.Thread):
    """Samples RSS every 0.5 s: the driver, the Ray Train workers, and the whole tree."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop = pid, False
        self.peak: Dict[str, float] = {"driver_mb": 0, "worker_mb": 0, "tree_mb": 0}

    def run(self) -> None:
        while not self.stop:
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
                rss = {p.pid: p.memory_info().rss / 2**20 for p in procs}
                workers = [rss[p.pid] for p in procs if "RayTrainWorker" in " ".join(p.cmdline() or [])]
                self._bump("driver_mb", rss[self.pid])
                self._bump("worker_mb", max(workers, default=0))
                self._bump("tree_mb", sum(rss.values()))
            except psutil.Error:
                pass
            time.sleep(0.5)

    def _bump(self, key: str, value: float) -> None:
        self.peak[key] = max(self.peak[key], value)


def run_process(cmd: List[str], metrics_path: Path) -> dict:
    """Run a command; return the JSON it wrote to `metrics_path` plus peak RSS figures."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mon = RSSMonitor(proc.pid)
    mon.start()
    rc = proc.wait()
    mon.stop = True
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}")
    return {**json.loads(metrics_path.read_text()), **mon.peak}


def run_cli(args: List[str], metrics_path: Path) -> dict:
    """Run `peft-ray ...` as a process; return its metrics.json plus peak RSS figures."""
    return run_process(["peft-ray", *args], metrics_path)


def length_grouped_batches(tok, data: str, n: int, size: int = 32, max_length: int = 64):
    """n tokenized batches of `size` real rows of similar length (what length grouping gives),
    from spread-out parts of the length order of `data`/train.parquet (the builtin sentiment
    set when it is absent)."""
    import pyarrow.parquet as pq

    from peft_ray.data.builtin import make_rows

    texts = (pq.read_table(f"{data}/train.parquet", columns=["text"]).column("text").to_pylist()
             if data and Path(data, "train.parquet").exists() else make_rows(3000, seed=0)["text"])
    texts = sorted(texts, key=len)
    step = max(1, len(texts) // n)
    return [tok(texts[i * step: i * step + size], truncation=True, max_length=max_length, padding=True,
                return_tensors="pt") for i in range(n)]
