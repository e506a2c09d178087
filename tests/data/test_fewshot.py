"""data.train_shots: K rows per class, seeded, the same whatever the read order or worker."""

from __future__ import annotations

import pyarrow as pa
import pytest

from peft_ray.data import builtin
from peft_ray.data.fewshot import keep_shots, shot_thresholds
from peft_ray.errors import SpecError
from peft_ray.preflight import run_preflight
from peft_ray.spec import validate_spec
from tests.conftest import job_dict, write_rows

COLS, LABELS = ("text", "label"), ("negative", "positive")


def _picked(path, k, seed):
    th = shot_thresholds((str(path),), COLS, "label", LABELS, k, seed, (0.0, 0))
    table = pa.Table.from_pylist(_rows(path))
    return keep_shots(table, COLS, "label", LABELS, th, seed)


def _rows(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_k_per_class_seeded_and_order_free(tmp_path):
    path = write_rows(tmp_path / "train.parquet", builtin.make_rows(300, seed=5))
    a = _picked(path, 8, seed=0)
    assert sorted(a.column("label").to_pylist()) == [0] * 8 + [1] * 8
    th = shot_thresholds((str(path),), COLS, "label", LABELS, 8, 0, (0.0, 0))
    shuffled = pa.Table.from_pylist(list(reversed(_rows(path))))
    halves = [keep_shots(shuffled.slice(i, 150), COLS, "label", LABELS, th, 0) for i in (0, 150)]
    assert set(pa.concat_tables(halves).column("text").to_pylist()) == set(a.column("text").to_pylist())
    b = _picked(path, 8, seed=1)
    assert set(b.column("text").to_pylist()) != set(a.column("text").to_pylist())


def test_preflight_counts_the_few_shot_set(tiny_bert, tiny_data, tmp_path):
    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path, data={"train_shots": 8},
                                  train={"batch_size": 4, "epochs": 2, "max_steps": None},
                                  scaling={"num_workers": 1}))
    pre = run_preflight(spec)
    assert pre.train.usable == 16 and pre.train.label_counts == {"negative": 8, "positive": 8}
    assert pre.total_steps == 8


def test_train_shots_needs_classification(tiny_bert, tiny_data, tmp_path):
    d = job_dict(tiny_bert, tiny_data, tmp_path, data={"train_shots": 4})
    d["task"] = {"type": "generation"}
    d["template"] = {"text": "Q: {text} A: {label}"}
    with pytest.raises(SpecError, match="data.train_shots"):
        validate_spec(d)
