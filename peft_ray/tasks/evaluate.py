"""Evaluation on the full validation set, sharded by micro-batch over workers: what every task's
evaluation shares (classification's own pass is tasks/classification/evaluate.py).

Workers run the same number of forward passes (ZeRO-3 forwards are collective):
a worker that runs out of batches repeats its last batch and discards the result.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Callable, Iterable, Iterator, List, Tuple

import torch
import torch.nn.functional as F

from peft_ray.data.batching import collate, micro_batches
from peft_ray.rows.tokens import IGNORE
from peft_ray.dist import all_sum, rank, world


def _my_batches(batches: Iterator[dict]) -> Iterator[dict]:
    return itertools.islice(batches, rank(), None, world())


def lockstep_batches(batches: Iterator[dict], dummy_row: Callable[[], dict]) -> Iterator[Tuple[dict, bool]]:
    """This worker's share of `batches` as (batch, True), then (filler, False) until every worker
    is done: ZeRO-3 forwards are collective, so all workers run the same number of them. The
    filler is the last real batch, or a batch of `dummy_row()` for a worker that had none."""
    mine, last = _my_batches(batches), None
    while True:
        batch = next(mine, None)
        if all_sum([batch is not None])[0] == 0:
            return
        if batch is not None:
            last = batch
            yield batch, True
        else:
            yield (last or collate([dummy_row()], 0)), False


@contextlib.contextmanager
def eval_scope(engine):
    """Eval mode and a forked RNG for the duration of an evaluation, then the mode it had.

    Evaluating must not change training: dropout comes back on exactly as it was, and
    sampling-based decoding draws from a copy of the RNG, so a run that evaluates every
    N steps trains the same steps as one that never does."""
    module = getattr(engine, "module", engine)
    was_training = bool(getattr(module, "training", False))
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        engine.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            engine.train(was_training)


def forward_logits(engine, batch: dict) -> torch.Tensor:
    out = engine(input_ids=batch["input_ids"].to(engine.device),
                 attention_mask=batch["attention_mask"].to(engine.device))
    return out.logits.float()


def sequence_eval(engine, tables: Iterable, batch_size: int, pad_id: int, dummy_row: Callable[[], dict],
                  step: Callable[[dict], Tuple[torch.Tensor, list]]) -> Tuple[list, float]:
    """The evaluation pass of the per-token tasks (generation, NER, translation).

    step(batch) -> (logits aligned with batch["labels"], this batch's results). Returns the
    results of this worker's real batches and the mean token loss over all workers."""
    results, loss_sum, n_tok = [], 0.0, 0
    batches = micro_batches(tables, batch_size, pad_id=pad_id, seed=0, group_by_length=True, drop_last=False)
    with eval_scope(engine):
        for batch, real in lockstep_batches(batches, dummy_row):
            logits, out = step(batch)
            if not real:
                continue
            labels = batch["labels"].to(logits.device)
            loss_sum += F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                        reduction="sum").item()
            n_tok += int((labels != IGNORE).sum())
            results += out
    loss_sum, n_tok = all_sum([loss_sum, n_tok])
    return results, loss_sum / max(n_tok, 1)


def counted_cuts(tables, column: str, cut: List[int]):
    """The preprocessed tables, passed on, with their rows whose input was cut to model.max_length
    (`column`: the task's input_cut) added to cut[0]."""
    for t in tables:
        if column in t.column_names:
            cut[0] += t[column].to_pylist().count(True)
        yield t
