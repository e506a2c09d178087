"""Loading a model leaves the caller's torch generator alone: the trainer seeds it per rank first,
and dropout masks must differ between data-parallel ranks (a load that re-seeded it made every
rank's masks the same)."""

from __future__ import annotations

import torch

from peft_ray.models import load_auto


def test_load_auto_keeps_the_callers_generator(tiny_bert):
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    load_auto(str(tiny_bert), "AutoModelForSequenceClassification", seed=0, num_labels=2)
    assert torch.equal(torch.rand(4), expected)


def test_new_heads_are_the_same_for_every_caller_seed(tiny_bert):
    heads = []
    for caller in (1, 2):
        torch.manual_seed(caller)
        m = load_auto(str(tiny_bert), "AutoModelForSequenceClassification", seed=0, num_labels=2)
        heads.append(m.classifier.weight.detach().clone())
    assert torch.equal(*heads)


def test_load_auto_leaves_the_gpu_generators_alone(tiny_bert, monkeypatch):
    """torch.manual_seed also (re)seeds every GPU's generator, or queues that for when CUDA starts:
    on GPU ranks the trainer's per-rank seed was replaced by the head's seed."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    load_auto(str(tiny_bert), "AutoModelForSequenceClassification", seed=0, num_labels=2)
    assert calls == []
