"""builtin:instructions: deterministic rows whose answers are right by construction."""

from __future__ import annotations

import pyarrow.parquet as pq

from peft_ray.data import builtin, builtin_instructions as bi


def test_rows_are_deterministic_balanced_and_correct():
    rows = bi.make_rows(70, seed=3)
    assert rows == bi.make_rows(70, seed=3) and rows != bi.make_rows(70, seed=4)
    assert {s: rows["skill"].count(s) for s in set(rows["skill"])} == {s.__name__.lstrip("_"): 10 for s in bi.SKILLS}
    for ask, answer, skill in zip(rows["instruction"], rows["response"], rows["skill"]):
        tail = ask.split(": ", 1)[-1]
        if skill == "add":
            a, b = (int(t.strip(".?")) for t in ask.replace("+", " ").split() if t.strip(".?").isdigit())
            assert answer == str(a + b)
        elif skill == "reverse":
            assert answer.split() == tail.split()[::-1]
        elif skill == "upper":
            assert answer == tail.upper()
        elif skill == "count":
            assert answer == str(len(tail.split()))
        elif skill == "sort":
            assert answer == ", ".join(map(str, sorted(int(n) for n in tail.split(", "))))
        elif skill == "opposite":
            assert bi.OPPOSITES[ask.split()[-1].strip("'?.")] == answer


def test_materialized_splits(tmp_path):
    out = builtin.materialize(tmp_path / "d", name="instructions")
    assert pq.read_table(out / "train.parquet").num_rows == 3000
    assert pq.read_table(out / "validation.parquet").num_rows == bi.N_VALIDATION
    assert pq.read_table(out / "validation.parquet").column_names == ["instruction", "response", "skill"]
