"""Tune fixtures: a tune job over the tiny BERT and tiny data, and a tiny masked-LM BERT."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import job_dict

TEMPLATES = ["{soft} {text}", "{soft} Review: {text} It was {label}."]


def tune_job(model: Path, data: Path, out: Path, tune: dict, **sections) -> dict:
    """1-worker trials with a 2-4 step budget: each trial trains in its Tune actor in seconds."""
    train = {"max_steps": 2, "eval_every": 1, "batch_size": 8, **sections.pop("train", {})}
    scaling = {"num_workers": 1, **sections.pop("scaling", {})}
    return job_dict(model, data, out, scaling=scaling, train=train, tune=tune, **sections)


@pytest.fixture(scope="session")
def tiny_mlm(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT's config and tokenizer with a (random, but present) masked-LM head."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    path = tmp_path_factory.mktemp("models") / "tiny-mlm"
    shutil.copytree(tiny_bert, path)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig.from_pretrained(tiny_bert)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A tiny GPT-2 from config (the tiny BERT's WordPiece tokenizer): a causal LM to score with."""
    from tests.tasks import synthetic

    return synthetic.make_model(tmp_path_factory.mktemp("models") / "tiny-gpt2", "gpt2")
