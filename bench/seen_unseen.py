"""A generation run's exact match split by whether each validation prompt also appears, word for
word, in the training file: how much of the score is memory.

    peft-ray predict RUN --input DATA/validation.parquet --output PRED.jsonl --local
    python bench/seen_unseen.py DATA PRED.jsonl [--column instruction] [--group skill] [--out JSON]

Prints a table and writes JSON (rows, exact match, as written, token F1 per part; per group where
the data has a `--group` column). The metrics are peft-ray's own (peft_ray.metrics), as `eval`
computes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def split_scores(train_prompts: set, rows: List[dict], column: str, target: str, group: str) -> Dict:
    from peft_ray.metrics import generation_metrics

    def score(sel):
        m = generation_metrics([r.get("prediction") or "" for r in sel], [r[target] for r in sel]) if sel else {}
        return {"rows": len(sel), **{k: m.get(k) for k in ("exact_match", "exact_match_cased", "token_f1")}}   # None: no rows

    seen = [r for r in rows if r[column] in train_prompts]
    unseen = [r for r in rows if r[column] not in train_prompts]
    out = {"all": score(rows), "seen": score(seen), "unseen": score(unseen), "groups": {}}
    for g in sorted({r.get(group) for r in rows if r.get(group) is not None}):
        sel = [r for r in rows if r.get(group) == g]
        out["groups"][g] = {**score(sel), "seen": sum(r[column] in train_prompts for r in sel)}
    return out


def main() -> None:
    import pyarrow.parquet as pq

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="the folder holding train.parquet")
    ap.add_argument("predictions", help="predict's JSON Lines output on the validation file")
    ap.add_argument("--column", default="instruction", help="the prompt column compared with train's")
    ap.add_argument("--target", default="response")
    ap.add_argument("--group", default="skill")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    train = set(pq.read_table(Path(a.data) / "train.parquet", columns=[a.column])[a.column].to_pylist())
    rows = [json.loads(line) for line in Path(a.predictions).read_text().splitlines() if line.strip()]
    res = split_scores(train, rows, a.column, a.target, a.group)
    print(f"{'part':<14} {'rows':>5} {'seen':>5} {'exact':>7} {'cased':>7} {'tokF1':>7}")
    for name, r in [("all", res["all"]), ("seen in train", res["seen"]), ("unseen", res["unseen"]),
                    *res["groups"].items()]:
        seen = r.get("seen", r["rows"] if name == "seen in train" else 0 if name == "unseen" else "")
        figures = " ".join(f"{r[k]:>7.3f}" if r[k] is not None else f"{'-':>7}"   # a part without rows
                           for k in ("exact_match", "exact_match_cased", "token_f1"))
        print(f"{name:<14} {r['rows']:>5} {seen!s:>5} {figures}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
