"""Streaming memory: peak driver and worker RSS while training on 1x, 10x and 50x copies
of a dataset. Ray Data streams, so the figures must stay flat.

    python bench/streaming.py --out bench/results/streaming.json

The built-in sentiment set (3,000 rows) is copied 1x/10x/50x into Parquet files (up to
150,000 rows) and each is trained for the same number of steps with MiniLM, 2 workers,
ZeRO-2. Pre-flight scans every row's label on the driver (streamed), and Ray Data reads
and tokenizes ahead of the trainers, so a pipeline that materialized the data anywhere
would grow with the copies.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_cli  # noqa: E402

from peft_ray.data import builtin  # noqa: E402


def make_copies(root: Path, times: int) -> Path:
    base = pa.table(builtin.make_rows(3000, seed=1234))
    out = root / f"x{times}"
    out.mkdir(parents=True)
    with pq.ParquetWriter(out / "train.parquet", base.schema) as w:
        for _ in range(times):
            w.write_table(base)
    pq.write_table(pa.table(builtin.make_rows(600, seed=5678)), out / "validation.parquet")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", default="1,10,50")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="bench/results/streaming.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for times in map(int, args.copies.split(",")):
            data = make_copies(Path(tmp), times)
            out = Path(tmp) / f"run{times}"
            m = run_cli(["train", "jobs/default.yaml", f"data.root={data}", f"output.dir={out}",
                         f"train.max_steps={args.steps}", "train.eval_every=100000", "--overwrite"],
                        out / "metrics.json")
            rows.append({"copies": times, "rows": 3000 * times, **{k: m[k] for k in
                         ("driver_mb", "worker_mb", "tree_mb", "samples_per_s")}})
            print(rows[-1], flush=True)
    print(f"\n{'copies':>7}{'rows':>9}{'driver MB':>11}{'worker MB':>11}{'tree MB':>10}{'samples/s':>11}")
    for r in rows:
        print(f"{r['copies']:>7}{r['rows']:>9}{r['driver_mb']:>11.0f}{r['worker_mb']:>11.0f}"
              f"{r['tree_mb']:>10.0f}{r['samples_per_s']:>11.1f}")
    first, last = rows[0], rows[-1]
    growth = {k: last[k] / first[k] - 1 for k in ("driver_mb", "worker_mb")}
    print(f"growth {first['copies']}x -> {last['copies']}x: driver {growth['driver_mb']:+.1%}, "
          f"worker {growth['worker_mb']:+.1%} (goal < 10%)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "growth": growth}, indent=2))


if __name__ == "__main__":
    main()
