"""Helpers shared by the benchmarks: process-tree RSS sampling, running the CLI, real batches,
alternated step timing."""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import psutil
import torch

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
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mon = RSSMonitor(proc.pid)
    mon.start()
    rc = proc.wait()
    process_s = time.time() - t0  # what the user waits for: imports to results on disk
    mon.stop = True
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}")
    return {**json.loads(metrics_path.read_text()), **mon.peak, "process_s": process_s}


def run_cli(args: List[str], metrics_path: Path) -> dict:
    """Run `peft-ray ...` as a process; return its metrics.json plus peak RSS figures."""
    return run_process(["peft-ray", *args], metrics_path)


def _encoded_rows(tok, data: str, max_length: int) -> List[dict]:
    """`data`/train.parquet (the builtin sentiment set when it is absent), tokenized once: one
    dict of token lists per row, with its label where the file has one."""
    import pyarrow.parquet as pq

    from peft_ray.data.builtin import make_rows

    if data and Path(data, "train.parquet").exists():
        t = pq.read_table(f"{data}/train.parquet").to_pydict()
    else:
        t = make_rows(3000, seed=0)
    enc = tok(t["text"], truncation=True, max_length=max_length)
    rows = [dict(zip(enc.keys(), values)) for values in zip(*enc.values())]
    if "label" in t:
        for r, y in zip(rows, t["label"]):
            r["labels"] = y
    return rows


def length_grouped_batches(tok, data: str, n: int, size: int = 32, max_length: int = 64):
    """n tokenized batches of `size` real rows of similar length (what length grouping gives),
    centred on the n quantiles of the token-length order of `data`/train.parquet (the builtin
    sentiment set when it is absent)."""
    # sorted by token count, as the trainers group them (a character sort padded these batches
    # about a quarter longer than a real epoch's, which overstated the long-batch ratios)
    rows = sorted(_encoded_rows(tok, data, max_length), key=lambda r: len(r["input_ids"]))
    rows = [{k: v for k, v in r.items() if k != "labels"} for r in rows]   # paired_steps labels them
    step = max(1, len(rows) // n)
    starts = [i * step + max(0, (step - size) // 2) for i in range(n)]     # each centred on its n-quantile
    return [tok.pad(rows[i: i + size], return_tensors="pt") for i in starts]


def epoch_batches(tok, data: str, size: int = 32, max_length: int = 64, seed: int = 0) -> List[dict]:
    """Every batch of one epoch of `data`/train.parquet exactly as HF Trainer forms them with
    `group_by_length` (its LengthGroupedSampler, then DataCollatorWithPadding): timing both
    steps on these gives the training loop's own ratio."""
    from transformers import DataCollatorWithPadding
    from transformers.trainer_pt_utils import LengthGroupedSampler

    rows = _encoded_rows(tok, data, max_length)
    order = list(LengthGroupedSampler(size, lengths=[len(r["input_ids"]) for r in rows],
                                      generator=torch.Generator().manual_seed(seed)))
    collate = DataCollatorWithPadding(tok)
    return [collate([rows[i] for i in order[k:k + size]]) for k in range(0, len(order) - size + 1, size)]


def paired_steps(steps: Dict[str, Callable[[dict], None]], batches: List[dict], warmup: int = 2) -> Dict[str, list]:
    """Run every side's step on each batch, alternating which goes first so machine load hits all
    alike; seconds per step of each side after `warmup` batches. Each batch gets labels 0, 1, 0, ..."""
    times: Dict[str, list] = {name: [] for name in steps}
    order = list(steps.items())
    for i, b in enumerate(batches):
        batch = b if "labels" in b else {**b, "labels": torch.arange(len(b["input_ids"])) % 2}
        for name, step in order if i % 2 else order[::-1]:
            t0 = time.perf_counter()
            step(batch)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def train_step(model, opt) -> Callable[[dict], None]:
    """forward, cross-entropy on the logits, backward, optimizer step."""
    import torch.nn.functional as F

    def step(batch: dict) -> None:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        F.cross_entropy(model(**inputs).logits, batch["labels"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def timed(f, reps: int, grad: bool, g=None) -> float:
    """Seconds per call of f: forward + backward(g) where `grad`, else the forward under inference_mode."""
    t = time.perf_counter()
    for _ in range(reps):
        if grad:
            f().backward(g)
        else:
            with torch.inference_mode():
                f()
    return (time.perf_counter() - t) / reps


def timing_options(ap, shapes: int) -> None:
    """The per-shape benchmarks' options: best of --rounds, --scale repetitions, --threads, --shapes."""
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="repetitions per timing, relative")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", type=int, default=shapes, help="the first N shapes only (tests)")


def paired_ratio(times: Dict[str, list], slow: str, fast: str) -> float:
    """Median over step pairs of slow time / fast time."""
    return statistics.median(s / f for s, f in zip(times[slow], times[fast]))
