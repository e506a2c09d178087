"""Rank-aware helpers: who am I, log once, reduce across workers."""

from __future__ import annotations

import sys
from typing import List

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world() -> int:
    return dist.get_world_size() if is_dist() else 1


def log_rank0(msg: str) -> None:
    # sys.stdout.write, not print: Ray Train V2 patches print() in workers to tee into
    # its logger as well, and the driver would show every line twice.
    if rank() == 0:
        sys.stdout.write(f"[peft-ray] {msg}\n")
        sys.stdout.flush()


def all_sum(values: List[float]) -> List[float]:
    """Sum a small list of numbers over all workers (one collective)."""
    t = torch.tensor(values, dtype=torch.float64)
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_sum_tensor(t: torch.Tensor) -> torch.Tensor:
    t = t.to(torch.float64).clone()
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_true(flag: bool) -> bool:
    return all_sum([1.0 if flag else 0.0])[0] > 0


def all_gather_list(items: list) -> list:
    """Concatenate a picklable list from every worker, in rank order (corpus metrics: BLEU)."""
    if not is_dist():
        return list(items)
    parts: List[list] = [None] * world()  # type: ignore[list-item]
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]
