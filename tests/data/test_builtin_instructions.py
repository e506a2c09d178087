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


def test_validation_asks_nothing_train_showed_in_any_phrasing():
    """Version 2: the splits are drawn apart by each instance's content key, so no validation
    instruction is a train instruction, nor the same sum, word or numbers phrased otherwise (version
    1: 87 of 200 word for word), and every skill is on both sides."""
    train, val = bi.make_rows(3000, 1234), bi.make_rows(bi.N_VALIDATION, 5678, split="validation")
    assert not set(train["instruction"]) & set(val["instruction"])
    assert set(train["skill"]) == set(val["skill"]) == {s.__name__.lstrip("_") for s in bi.SKILLS}

    def keys(rows):   # what an instance asks, phrasing aside, as the skills key it
        out = set()
        for ask, skill in zip(rows["instruction"], rows["skill"]):
            tail = ask.split(": ", 1)[-1] if ": " in ask else ask
            if skill in ("add", "sort"):
                out.add((skill, tuple(sorted(int(t.strip(".?,")) for t in ask.replace("+", " ").split()
                                             if t.strip(".?,").isdigit()))))
            elif skill in ("upper", "first_letter", "opposite"):
                out.add((skill, ask.rstrip("?.").split()[-1].strip("'")))
            else:
                out.add((skill, tuple(tail.split())))
        return out
    assert not keys(train) & keys(val)
    assert len({w for s, w in keys(val) if s == "upper"}) >= 5     # several held-out words, not one


def test_the_split_of_an_instance_is_its_content_hash():
    assert bi.held_out("_add", (3, 4)) == bi.held_out("_add", (3, 4))
    sides = {bi.held_out("_upper", w) for w in bi.WORDS}
    assert sides == {True, False}
