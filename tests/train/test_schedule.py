"""The lr schedules are HF Trainer's, step for step (transformers.get_scheduler with
ceil(total x warmup_ratio) warmup steps, as TrainingArguments.get_warmup_steps)."""

from __future__ import annotations

import math

import pytest
import torch

from peft_ray.train.engine import lr_lambda


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant", "constant_with_warmup"])
@pytest.mark.parametrize("total, ratio", [(20, 0.1), (10, 0.06), (186, 0.06), (7, 0.0), (3, 0.5)])
def test_schedules_match_hf(schedule, total, ratio):
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_scheduler(schedule, opt, num_warmup_steps=math.ceil(total * ratio), num_training_steps=total)
    want = []
    for _ in range(total):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        hf.step()
    ours = lr_lambda(total, ratio, schedule)
    assert [ours(s) for s in range(total)] == pytest.approx(want, abs=1e-12)
