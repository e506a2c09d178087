"""Shared fixtures: a tiny BERT from config (with a real WordPiece tokenizer), tiny
data files, and one Ray runtime for the whole session (real Ray, local head)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _triton_interpreter_without_a_gpu() -> None:
    """TRITON_INTERPRET must be set before any kernel is jit-decorated, and test modules of
    other packages (cli, cluster) import peft_ray.methods, hence kernels, during collection,
    before tests/kernels/conftest.py is read: so it is set here, in the first conftest."""
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_triton_interpreter_without_a_gpu()

from peft_ray.data import builtin  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab() -> list[str]:
    words = set(builtin.POS + builtin.NEG + builtin.NOUNS)
    for extra in (builtin.ADVS + builtin.OPENERS + ["was not is felt seemed but although the , . i"]):
        words.update(extra.lower().replace(",", " , ").replace(".", " . ").split())
    return SPECIALS + sorted(words)


def make_tiny_bert(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    tok = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)  # transformers 5: `vocab=`, not `vocab_file=`
    cfg = BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


def write_rows(path: Path, rows: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path)
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """train (256 rows) and validation (70 rows: not a multiple of any batch size)."""
    root = tmp_path_factory.mktemp("data")
    write_rows(root / "train.parquet", builtin.make_rows(256, seed=1))
    write_rows(root / "validation.parquet", builtin.make_rows(70, seed=2))
    return root


def job_dict(model_path: Path, data_root: Path, out_dir: Path, **sections) -> dict:
    base = {
        "name": "tiny",
        # dropout 0: the learning bars and pinned figures of these tests were set when the base's
        # dropout was (by a defect) off; tests/train/test_train_mode.py runs with the model's own.
        "model": {"name_or_path": str(model_path), "max_length": 32, "dropout": 0.0},
        "task": {"type": "classification", "labels": ["negative", "positive"]},
        "template": {"text": "{soft} {text}", "verbalizer": {"negative": "bad", "positive": "good"}},
        "method": {"name": "prompt_tuning", "num_virtual_tokens": 4, "init": "vocab"},
        "data": {"root": str(data_root), "train": "train.parquet", "validation": "validation.parquet"},
        "train": {"max_steps": 4, "batch_size": 8, "lr": 0.05, "eval_every": 2, "seed": 0},
        "scaling": {"num_workers": 2},
        "deepspeed": {"zero_stage": 2},
        "output": {"dir": str(out_dir)},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return base


@pytest.fixture(scope="session")
def ray_runtime():
    """One real Ray head for every test that trains (3 logical CPUs: 2 workers + data)."""
    import ray

    from peft_ray.train.ray_start import start_local_ray

    if not ray.is_initialized():
        start_local_ray(3)   # as peft-ray's own in-process Ray (its dashboard: see start_local_ray)
    yield ray
    ray.shutdown()
