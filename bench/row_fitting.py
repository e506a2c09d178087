"""Preprocessing time of classification rows that are too long for model.max_length: the template's
columns cut to fit (rows.tokens.fit_columns_many) against rows that fit as they are, with MiniLM's
tokenizer, for the code on PYTHONPATH.

    python bench/row_fitting.py --out bench/results/row_fitting.json
    PYTHONPATH=/path/to/other/checkout python bench/row_fitting.py     # another version, alternated by hand

Rows are synthetic reviews (a seeded draw of words); each case is timed `--repeats` times after one
warm-up call, and the table gives the median. A long-document set (IMDB-like: 150-300 words at
max_length 128) cuts every row, so this is where fitting costs or saves preprocessing time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import pyarrow as pa

from peft_ray.models import resolve_model_path
from peft_ray.tasks.classification.rows import ClassificationRows, head_rows

WORDS = "the movie was a great and terrible film with actors who played their roles well enough but not quite".split()
CASES = ((2000, 300, 128), (3000, 30, 16), (3000, 30, 64))   # rows, most words a row, max_length


def rows(n: int, words: int, seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    return pa.table({"text": [" ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words)))
                              for _ in range(n)], "label": [rng.choice(["neg", "pos"]) for _ in range(n)]})


def time_case(n: int, words: int, max_length: int, repeats: int, tokenizer: str) -> dict:
    table = rows(n, words)
    cfg = ClassificationRows(tokenizer_path=tokenizer, template="Review: {text} Overall it was {label}.",
                             max_length=max_length, labels=("neg", "pos"))
    head_rows(table.slice(0, 10), cfg)            # the tokenizer loaded and warm
    seconds, cut = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        out = head_rows(table, cfg)
        seconds.append(time.perf_counter() - start)
        cut = sum(out["truncated"].to_pylist())
    return {"rows": n, "words": words, "max_length": max_length, "cut": cut,
            "median_s": statistics.median(seconds), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="rows per case times this (tests use a small one)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    tokenizer = resolve_model_path("minilm")
    results = [time_case(max(1, int(n * args.scale)), w, m, args.repeats, tokenizer) for n, w, m in CASES]
    print(f"{'rows':>6} {'words':>6} {'max_length':>10} {'cut':>6} {'median s':>9}")
    for r in results:
        print(f"{r['rows']:>6} {r['words']:>6} {r['max_length']:>10} {r['cut']:>6} {r['median_s']:>9.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"cases": results}, f, indent=1)


if __name__ == "__main__":
    main()
