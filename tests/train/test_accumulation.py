"""Gradient accumulation as HF Trainer does it: an epoch's last step takes the micro-batches
left (none reach into the next epoch, none are left untrained), and a step's loss is the mean of
its micro-batches, or for token-level losses the mean over every labelled token of the step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from peft_ray.data import builtin
from peft_ray.preflight import count_steps
from peft_ray.spec import validate_spec
from peft_ray.tasks import get_task
from peft_ray.train.local import run_local
from peft_ray.train.recipe import loss_weights, step_windows
from tests.conftest import job_dict, write_rows


def test_step_windows_end_with_the_epochs_rest():
    assert list(step_windows(iter(range(5)), 2)) == [[0, 1], [2, 3], [4]]
    assert list(step_windows(iter(range(4)), 2)) == [[0, 1], [2, 3]]
    assert list(step_windows(iter(range(3)), 1)) == [[0], [1], [2]]


def test_an_epochs_last_step_trains_the_rest_and_stays_in_its_epoch(tiny_bert, tmp_path):
    """10 rows, micro-batches of 2, grad_accum 2: 5 micro-batches an epoch make 3 steps (2 + 2 + 1).
    Before, the fifth was added into the next epoch's first step and the run ended 2 micro-batches
    short of its last epoch."""
    write_rows(tmp_path / "train.parquet", builtin.make_rows(10, seed=1))
    write_rows(tmp_path / "validation.parquet", builtin.make_rows(6, seed=2))
    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out", scaling={"num_workers": 1},
                                  train={"max_steps": None, "epochs": 2, "batch_size": 4, "grad_accum": 2,
                                         "eval_every": 100}))
    assert count_steps(spec, 10) == (3, 6)
    result = run_local(spec)
    assert result["step"] == 6
    assert result["samples"] == 20                     # every row of both epochs trained
    assert result["epoch"] == pytest.approx(2.0)


def _ctx(task: str, grad_accum: int):
    return SimpleNamespace(spec=SimpleNamespace(train=SimpleNamespace(grad_accum=grad_accum)), task=get_task(task))


def _tokens(n_labelled: int, width: int = 12) -> dict:
    labels = torch.full((2, width), -100)
    labels.view(-1)[:n_labelled] = 1
    return {"labels": labels}


def test_loss_weights_give_hf_trainers_step_loss():
    """DeepSpeed divides each backward by grad_accum (and averages ranks): the weights undo that."""
    rows = _ctx("classification", 4)
    assert loss_weights(rows, [{"labels": torch.zeros(2)}] * 4) == [1.0] * 4
    assert loss_weights(rows, [{"labels": torch.zeros(2)}] * 1) == [4.0]      # a last step of one: its mean
    tokens = _ctx("generation", 2)
    w = loss_weights(tokens, [_tokens(8), _tokens(24)])
    # mean_a * w_a / 2 + mean_b * w_b / 2 = (8 mean_a + 24 mean_b) / 32: every token weighs the same
    assert [x / 2 for x in w] == pytest.approx([8 / 32, 24 / 32])
    assert get_task("token_classification").token_loss and not get_task("classification").token_loss


@pytest.mark.parametrize("bad_call", [1, 2])      # the first / the last micro-batch of step 1
def test_a_skipped_micro_batch_keeps_the_step(tiny_bert, tiny_data, tmp_path, monkeypatch, bad_call):
    """nan_policy skip inside an accumulation: the step still runs on its finite micro-batches (a
    skipped last one hands the boundary to a zero-valued backward), and every step count holds."""
    task = get_task("classification")
    real, calls = task.loss, []

    def loss(model, batch, rt):
        calls.append(1)
        value = real(model, batch, rt)
        return value * float("nan") if len(calls) == bad_call else value

    monkeypatch.setattr(task, "loss", loss)
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "out", scaling={"num_workers": 1},
                                  train={"max_steps": 3, "batch_size": 8, "grad_accum": 2, "eval_every": 3,
                                         "nan_policy": "skip"}))
    result = run_local(spec)
    assert result["step"] == 3 and result["skipped_nonfinite"] == 1
    assert result["samples"] == 8 * 3 - 4                 # every micro-batch trained but the skipped one
    import math
    assert math.isfinite(result["loss"])
