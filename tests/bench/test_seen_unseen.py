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
