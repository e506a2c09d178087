"""peft-ray against HF PEFT + HF Trainer on identical work, runs alternated.

    python bench/vs_hf_peft.py --data ../shared/data/sst2 --out bench/results/vs_hf_peft.json

The two MiniLM SST-2 jobs as shipped (jobs/sst2_prompt_tuning.yaml, jobs/sst2_lora.yaml:
1 epoch, batch 32, max_length 64, seed 0, linear schedule with 6% warmup) against HF PEFT
with the same PEFT config, lr, warmup, schedule and dropout (the prompt-tuning job turns the
base's dropout off; HF then does too). Runners, alternated per method:
  hf_grouped  HF Trainer, one process x 2 threads, dynamic padding + group_by_length
              (the anchor's strongest ordinary setting: every ratio is against this row)
  hf_dynamic  the same with dynamic padding only
  peft_ray    `peft-ray train JOB` as shipped: Ray, 2 workers x 1 thread, ZeRO-2
  peft_ray_local  `peft-ray train JOB --local`: the same recipe in one process x 2 threads
Columns: training-loop samples/s, the whole process's wall time (start to adapter and
metrics on disk, what the user waits for), validation accuracy, peak RSS of the training
process and of the whole process tree. peft-ray's own phase breakdown is printed below.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_process as run  # noqa: E402

JOB = {"prompt_tuning": "jobs/sst2_prompt_tuning.yaml", "lora": "jobs/sst2_lora.yaml"}
LR = {"prompt_tuning": 3e-2, "lora": 1e-3}
DROPOUT = {"prompt_tuning": 0.0, "lora": None}  # None: MiniLM's own 0.1, as the LoRA job keeps it
RUNNERS = ("hf_grouped", "peft_ray", "hf_dynamic", "peft_ray_local")


def hf(method: str, data: str, tmp: Path, grouped: bool) -> dict:
    save = tmp / f"hf-{method}-{grouped}"
    save.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "bench/_hf_peft_run.py", "--method", method, "--data", data, "--lr", str(LR[method]),
           "--threads", "2", "--save", str(save), "--out", str(save / "bench.json")]
    if DROPOUT[method] is not None:
        cmd += ["--dropout", str(DROPOUT[method])]
    return run(cmd if grouped else cmd + ["--no-group-by-length"], save / "bench.json")


def peft_ray(method: str, data: str, tmp: Path, local: bool) -> dict:
    out_dir = tmp / f"pr-{method}-{local}"
    threads = ["scaling.torch_threads=2"] if local else []
    cmd = ["peft-ray", "train", JOB[method], f"data.root={data}", f"output.dir={out_dir}", "--overwrite", "-q",
           "train.eval_every=100000", *threads, *(["--local"] if local else [])]
    return run(cmd, out_dir / "metrics.json")


def run_one(runner: str, method: str, data: str, tmp: Path) -> dict:
    if runner.startswith("hf_"):
        return hf(method, data, tmp, grouped=runner == "hf_grouped")
    return peft_ray(method, data, tmp, local=runner == "peft_ray_local")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--methods", default="prompt_tuning,lora")
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--out", default="bench/results/vs_hf_peft.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for runner in args.runners.split(","):
                r = run_one(runner, method, args.data, Path(tmp))
                rows.append({"method": method, "runner": runner, **r})
                print(f"{method:<14} {runner:<15} {r['samples_per_s']:7.1f} samples/s  wall {r['process_s']:6.1f} s"
                      f"  acc {r['accuracy']:.4f}", flush=True)
    print_table(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


def print_table(rows: list) -> None:
    base = {r["method"]: r for r in rows if r["runner"] == "hf_grouped"}
    print(f"\n{'method':<14}{'runner':<16}{'samples/s':>10}{'x loop':>8}{'wall s':>8}{'x wall':>8}{'val acc':>9}"
          f"{'RSS MB trainer':>16}{'RSS MB all':>12}")
    for r in rows:
        b = base.get(r["method"], r)
        print(f"{r['method']:<14}{r['runner']:<16}{r['samples_per_s']:>10.1f}"
              f"{r['samples_per_s'] / b['samples_per_s']:>8.2f}{r['process_s']:>8.1f}"
              f"{b['process_s'] / r['process_s']:>8.2f}{r['accuracy']:>9.4f}{trainer_mb(r):>16.0f}{r['tree_mb']:>12.0f}")
    print("\npeft-ray time by phase (s):")
    for r in rows:
        if "time_phases" in r:
            print(f"  {r['method']:<14}{r['runner']:<16}{r['time_phases']}")


def trainer_mb(r: dict) -> float:
    """Peak RSS of the process that trains: a Ray Train worker, or the one process otherwise."""
    return r["worker_mb"] if r["runner"] == "peft_ray" else r["driver_mb"]


if __name__ == "__main__":
    main()
