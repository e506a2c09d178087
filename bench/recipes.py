"""The quality table: every shipped training job, run exactly as its header says.

    python bench/recipes.py                                   # every job (hours on a 2-core CPU)
    python bench/recipes.py --jobs 'sst2_*' --seeds 0,1,2    # mean +- std over seeds
    python bench/recipes.py --jobs default --extra train.max_steps=2   # a smoke pass
    python bench/recipes.py --jobs 'sst2_ia3,trec_*' --local         # several globs, comma-separated

Each job's first line is its command (`# peft-ray train jobs/X.yaml data.root=...`); it runs
as written, with `../shared/data` replaced by --data, its own output folder, and `--local`
when --local is given. The table gives the task's primary validation metric (the job's
metric_for_best at its best evaluation), wall time and trainable parameters; --out writes
the rows as JSON. Jobs whose data are absent are listed as skipped, never silently dropped.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def header_command(job: Path) -> list | None:
    """The job's `peft-ray train ...` header line as argv (None for tune/zero-shot jobs)."""
    first = job.read_text().splitlines()[0].lstrip("# ").split("  #")[0]
    argv = shlex.split(first)
    return argv if argv[:2] == ["peft-ray", "train"] else None


def run_job(job: Path, argv: list, data: str, seed: int, extra: list, local: bool, tmp: Path) -> dict:
    out = tmp / f"{job.stem}-{seed}"
    argv = [a.replace("../shared/data", data) for a in argv]
    cmd = [*argv, "--overwrite", f"output.dir={out}", f"train.seed={seed}", *extra] + (["--local"] if local else [])
    m = run_process(cmd, out / "metrics.json")
    metric = m.get("metric_for_best") or next(k for k in ("accuracy", "entity_f1", "bleu", "exact_match") if k in m)
    return {"job": job.stem, "seed": seed, "metric": metric, "value": m.get("best_metric", m.get(metric)),
            "last_value": m.get(metric), "wall_seconds": m.get("wall_seconds"),
            "trainable_params": m.get("trainable_params"), "steps": m.get("step"), "command": " ".join(cmd)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default="*", help="globs over jobs/*.yaml stems, comma-separated")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--extra", action="append", default=[], help="an override added to every job")
    ap.add_argument("--local", action="store_true", help="run each job in one process (no Ray)")
    ap.add_argument("--out", default="bench/results/recipes.json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for job in sorted((ROOT / "jobs").glob("*.yaml")):
            argv = header_command(job)
            if argv is None or not any(fnmatch.fnmatch(job.stem, g) for g in a.jobs.split(",")):
                continue
            needs = [x.split("=", 1)[1] for x in argv if x.startswith("data.root=") and "shared/data" in x]
            if needs and not Path(needs[0].replace("../shared/data", a.data)).exists():
                rows.append({"job": job.stem, "skipped": f"no data at {needs[0]}"})
                continue
            for seed in [int(s) for s in a.seeds.split(",")]:
                try:
                    r = run_job(job, argv, a.data, seed, a.extra, a.local, Path(tmp))
                except RuntimeError as e:
                    r = {"job": job.stem, "seed": seed, "error": str(e)[:300]}
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"\n{'job':<32} {'metric':<12} {'val (best eval)':>18} {'wall s':>8} {'trainable':>11}")
    for stem in dict.fromkeys(r["job"] for r in rows):
        rs = [r for r in rows if r["job"] == stem and "value" in r]
        if not rs:
            why = next((r.get("skipped") or r.get("error") for r in rows if r["job"] == stem), "")
            print(f"{stem:<32} {'-':<12} {why[:60]}")
            continue
        vals = [r["value"] for r in rs]
        val = f"{statistics.mean(vals):.4f}" + (f" +- {statistics.stdev(vals):.4f}" if len(vals) > 1 else "")
        wall = statistics.mean(r["wall_seconds"] or 0 for r in rs)
        print(f"{stem:<32} {rs[0]['metric']:<12} {val:>18} {wall:>8.0f} {rs[0]['trainable_params'] or 0:>11,}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
