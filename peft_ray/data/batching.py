"""Worker-side batching: shuffling, length grouping and dynamic padding.

Padding to the longest row of a micro-batch (not to max_length) is most of
peft-ray's speed edge on short-text classification: SST-2 rows average ~25
tokens against a 64-token cap. Grouping rows of similar length inside a
shuffle window cuts the remaining padding further.

Order: a worker's shard is permuted whole every epoch (`permuted`, as a
RandomSampler or DistributedSampler with set_epoch does), held in memory or, past
train/data_iter.IN_MEMORY_ROWS, memory-mapped from a temporary file
(data/shard_file); it is then shuffled in windows of WINDOW_BATCHES batches.
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import torch

from peft_ray.rows.tokens import IGNORE

WINDOW_BATCHES = 32  # optimizer steps per shuffle window (and per length group on large sets)
Seed = Union[int, Sequence[int]]   # what np.random.default_rng takes: (seed, epoch, rank) never collide

TENSOR_KEYS = ("input_ids", "label", "target_ids", "score_pos", "length", "truncated")


def _rows(tables: Iterable[pa.Table]) -> Iterator[dict]:
    for t in tables:
        yield from t.to_pylist()


def pad_lists(seqs: List[List[int]], value: int) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(rows: List[dict], pad_id: int) -> Dict[str, torch.Tensor]:
    """Right-padded tensors. Rows carry `input_ids` plus one of: `label` (classification: an id),
    `target_ids` (per-token targets, -100 = ignored: generation, NER, translation). Other columns
    (references, word maps) pass through as lists under `meta`."""
    ids = pad_lists([r["input_ids"] for r in rows], pad_id)                  # (B, L)
    mask = pad_lists([[1] * len(r["input_ids"]) for r in rows], 0)
    out = {"input_ids": ids, "attention_mask": mask, "n_tokens": int(mask.sum()),
           "n_truncated": sum(bool(r.get("truncated")) for r in rows)}
    if "label" in rows[0]:
        out["labels"] = torch.tensor([r["label"] for r in rows])            # (B,)
    if "target_ids" in rows[0]:
        out["labels"] = pad_lists([r["target_ids"] for r in rows], IGNORE)      # (B, T)
    if "score_pos" in rows[0]:
        out["score_pos"] = torch.tensor([r["score_pos"] for r in rows])
    out["meta"] = {k: [r[k] for r in rows] for k in rows[0] if k not in TENSOR_KEYS}
    return out


def group_batches(rows: int, batch_size: int) -> int:
    """Micro-batches per length group for `rows` rows an epoch: HF's LengthGroupedSampler rule
    (mega_batch_mult = rows // (4 * batch), at most 50), capped at the shuffle window. On a
    few-shot set (32 rows, batch 8) that is 1: freshly shuffled batches every epoch. Sorting all
    32 rows by length instead made the same 4 batches every epoch, which cost 16-shot runs on
    SmolLM2 2-3 points of accuracy against HF Trainer's (BENCHMARKS.md)."""
    return max(1, min(WINDOW_BATCHES, rows // (4 * batch_size)))


PERMUTED_ROWS = 4096   # rows a permuted shard yields at a time (a memory-mapped one is read as it goes)


def permuted(tables: List[pa.Table], seed: Seed) -> Iterator[pa.Table]:
    """Every row of a shard held whole (in memory, or memory-mapped: data/shard_file), in a fresh
    seeded order (one epoch's), read a few thousand rows at a time."""
    from peft_ray.data.shard_file import RowTaker

    rows = RowTaker(tables)
    if rows.n < 2:
        yield from tables
        return
    order = np.random.default_rng(seed).permutation(rows.n)
    for i in range(0, rows.n, PERMUTED_ROWS):
        yield rows.take(order[i:i + PERMUTED_ROWS])


def micro_batches(tables: Iterable[pa.Table], batch_size: int, *, pad_id: int, seed: Seed,
                  group_by_length: bool, drop_last: bool,
                  group: int = WINDOW_BATCHES,
                  order_seed: Optional[Seed] = None, per_step: int = 1) -> Iterator[Dict[str, torch.Tensor]]:
    """Yield padded micro-batches; deterministic for a deterministic input order and seed. Rows
    are shuffled in windows of WINDOW_BATCHES steps (with or without grouping) and, with
    group_by_length, sorted by length in groups of `group` steps of each window.

    `per_step` (gradient accumulation) micro-batches make one step: the window, the length groups
    and the order are those of steps, each cut into its micro-batches in order. So an optimizer
    step sees the same rows at batch_size 32 x 1 and 16 x 2, as HF Trainer's (its length-grouped
    sampler takes the step's batch size, and micro-batches are consecutive slices of its order).

    `order_seed` (data-parallel ranks pass one shared value) seeds the order of each window's
    batches apart from the row shuffle. Ranks step in lockstep, so a step costs the slowest
    rank's batch: with independent orders rank 0's short batch waits on rank 1's long one
    (SST-2, 16 rows a rank: the longer of the two batches averages 32.7 tokens against a mean
    of 26.1). With one order, each rank's k-th batch is the same length quantile of its own
    window, so the ranks' lengths match."""
    rng = np.random.default_rng(seed)
    order_rng = rng if order_seed is None else np.random.default_rng(order_seed)
    window: List[dict] = []
    step = batch_size * per_step
    size = step * WINDOW_BATCHES
    span = step * min(group, WINDOW_BATCHES) if group_by_length else 0
    for row in _rows(tables):
        window.append(row)
        if len(window) == size:
            yield from _emit(window, step, batch_size, pad_id, rng, span, order_rng)
            window = []
    if window:
        yield from _emit(window, step, batch_size, pad_id, rng, span, order_rng, drop_last)


def _length(row: dict) -> int:
    return row.get("length") or len(row["input_ids"])


def _emit(window: List[dict], step: int, batch_size: int, pad_id: int, rng, span: int, order_rng,
          drop_last: bool = False):
    window = [window[i] for i in rng.permutation(len(window))]  # row-level shuffle
    # Rows short of a whole step (an epoch's last window) are set apart after the shuffle, as the
    # short last step, and only its ragged micro-batch is dropped: the shuffle, the length groups
    # and every full step then depend on the step's size alone, so 30 x 1 and 10 x 3 see the same
    # rows in every full step (a new-user review: the cut by micro-batch size came first, so the
    # window's length and with it the whole shuffle changed with grad_accum).
    whole = len(window) - len(window) % step
    window, short = window[:whole], window[whole:]
    if drop_last:
        short = short[: len(short) - len(short) % batch_size]
    if span:  # stable sort within each group: equal lengths stay shuffled
        window = [r for i in range(0, len(window), span) for r in sorted(window[i:i + span], key=_length)]
    steps = [window[i:i + step] for i in range(0, len(window), step)]
    for j in order_rng.permutation(len(steps)):
        for k in range(0, step, batch_size):
            yield collate(steps[j][k:k + batch_size], pad_id)
    for k in range(0, len(short), batch_size):   # the short step stays last: the trainer cuts steps consecutively
        yield collate(short[k:k + batch_size], pad_id)
