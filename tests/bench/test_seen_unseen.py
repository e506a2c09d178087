"""bench/seen_unseen.py splits a generation score by whether each prompt is also a train prompt."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from seen_unseen import split_scores  # noqa: E402


def test_split_scores_by_seen_prompts_and_groups():
    rows = [{"instruction": "a", "response": "x", "prediction": "x", "skill": "k"},
            {"instruction": "b", "response": "y", "prediction": "z", "skill": "k"},
            {"instruction": "c", "response": "w", "prediction": "w", "skill": "m"}]
    res = split_scores({"a"}, rows, "instruction", "response", "skill")
    assert res["all"]["rows"] == 3 and abs(res["all"]["exact_match"] - 2 / 3) < 1e-9
    assert (res["seen"]["rows"], res["seen"]["exact_match"]) == (1, 1.0)
    assert (res["unseen"]["rows"], res["unseen"]["exact_match"]) == (2, 0.5)
    assert res["groups"]["k"]["seen"] == 1 and res["groups"]["m"]["exact_match"] == 1.0


def test_a_part_without_rows_prints_a_dash(tmp_path, capsys, monkeypatch):
    """Every builtin:facts validation question is a train question: the unseen part is empty, and
    the table crashed on its None figures before writing the JSON (a diff review)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    import seen_unseen

    pq.write_table(pa.table({"question": ["a", "b"], "answer": ["x", "y"]}), tmp_path / "train.parquet")
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps({"question": q, "answer": a, "prediction": a}) for q, a in (("a", "x"), ("b", "y"))))
    monkeypatch.setattr("sys.argv", ["seen_unseen.py", str(tmp_path), str(pred), "--column", "question", "--target",
                                     "answer", "--out", str(tmp_path / "out.json")])
    seen_unseen.main()
    assert "unseen             0     0       -       -       -" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text())["unseen"] == {"rows": 0, "exact_match": None,
                                                                         "exact_match_cased": None, "token_f1": None}

