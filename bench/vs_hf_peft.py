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
  peft_ray_local_ranks  --local with scaling.local_ranks=2: 2 processes x 1 thread, ranks of
              one gloo group (train/local_ranks.py); named in --runners only
Columns: training-loop samples/s, the whole process's wall time (start to adapter and
metrics on disk, what the user waits for), validation accuracy, peak RSS of the training
process and of the whole process tree. peft-ray's own phase breakdown is printed below.

`--rounds N` repeats the whole alternation N times (the runners' order reversed every other
round, so no runner always goes first) and ends with each runner's median ratio against the
same round's hf_grouped: HF's own speed moves by up to 17% between runs on this machine, so one
round's ratio is one draw from that spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_process as run  # noqa: E402

JOB = {"prompt_tuning": "jobs/sst2_prompt_tuning.yaml", "lora": "jobs/sst2_lora.yaml"}
LR = {"prompt_tuning": 3e-2, "lora": 1e-3}
DROPOUT = {"prompt_tuning": 0.0, "lora": None}  # None: MiniLM's own 0.1, as the LoRA job keeps it
RUNNERS = ("hf_grouped", "peft_ray", "hf_dynamic", "peft_ray_local")
EXTRA_RUNNERS = ("peft_ray_local_ranks",)   # only when named in --runners


def hf(method: str, data: str, tmp: Path, grouped: bool) -> dict:
    save = tmp / f"hf-{method}-{grouped}"
    save.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "bench/_hf_peft_run.py", "--method", method, "--data", data, "--lr", str(LR[method]),
           "--threads", "2", "--save", str(save), "--out", str(save / "bench.json")]
    if DROPOUT[method] is not None:
        cmd += ["--dropout", str(DROPOUT[method])]
    return run(cmd if grouped else cmd + ["--no-group-by-length"], save / "bench.json")


def peft_ray(method: str, data: str, tmp: Path, local: bool, extra: tuple = ()) -> dict:
    out_dir = tmp / f"pr-{method}-{local}-{len(extra)}"
    cmd = ["peft-ray", "train", JOB[method], f"data.root={data}", f"output.dir={out_dir}", "--overwrite", "-q",
           "train.eval_every=100000", *extra, *(["--local"] if local else [])]
    return run(cmd, out_dir / "metrics.json")


def run_one(runner: str, method: str, data: str, tmp: Path) -> dict:
    if runner.startswith("hf_"):
        return hf(method, data, tmp, grouped=runner == "hf_grouped")
    if runner == "peft_ray_local_ranks":
        return peft_ray(method, data, tmp, local=True, extra=("scaling.local_ranks=2",))
    return peft_ray(method, data, tmp, local=runner == "peft_ray_local")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--methods", default="prompt_tuning,lora")
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--rounds", type=int, default=1, help="whole alternations, each ratio against its own round")
    ap.add_argument("--out", default="bench/results/vs_hf_peft.json")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    runners = args.runners.split(",")
    if set(runners) - set(RUNNERS + EXTRA_RUNNERS):
        ap.error(f"--runners: unknown {sorted(set(runners) - set(RUNNERS + EXTRA_RUNNERS))}; "
                 f"choose from {', '.join(RUNNERS + EXTRA_RUNNERS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for method in args.methods.split(","):
                for runner in runners if k % 2 == 0 else runners[::-1]:
                    r = run_one(runner, method, args.data, Path(tmp))
                    rows.append({"round": k + 1, "method": method, "runner": runner, **r})
                    print(f"round {k + 1} {method:<14} {runner:<20} {r['samples_per_s']:7.1f} samples/s"
                          f"  wall {r['process_s']:6.1f} s  acc {r['accuracy']:.4f}", flush=True)
    print_table(rows)
    if args.rounds > 1:
        print_medians(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


def ratios(rows: list) -> list:
    """Each row with its loop and wall ratios against hf_grouped of the same round and method."""
    base = {(r.get("round", 1), r["method"]): r for r in rows if r["runner"] == "hf_grouped"}
    out = []
    for r in rows:
        b = base.get((r.get("round", 1), r["method"]), r)
        out.append({**r, "x_loop": r["samples_per_s"] / b["samples_per_s"], "x_wall": b["process_s"] / r["process_s"]})
    return out


def print_table(rows: list) -> None:
    print(f"\n{'round':<6}{'method':<14}{'runner':<21}{'samples/s':>10}{'x loop':>8}{'wall s':>8}{'x wall':>8}"
          f"{'val acc':>9}{'RSS MB trainer':>16}{'RSS MB all':>12}")
    for r in ratios(rows):
        print(f"{r.get('round', 1):<6}{r['method']:<14}{r['runner']:<21}{r['samples_per_s']:>10.1f}"
              f"{r['x_loop']:>8.2f}{r['process_s']:>8.1f}{r['x_wall']:>8.2f}{r['accuracy']:>9.4f}"
              f"{trainer_mb(r):>16.0f}{r['tree_mb']:>12.0f}")
    print("\npeft-ray time by phase (s):")
    for r in rows:
        if "time_phases" in r:
            print(f"  {r.get('round', 1):<4}{r['method']:<14}{r['runner']:<21}{r['time_phases']}")


def print_medians(rows: list) -> None:
    """Per method and runner: the median of the rounds' ratios, and their range."""
    print(f"\n{'method':<14}{'runner':<21}{'rounds':>7}{'x loop median (range)':>26}{'x wall median (range)':>26}")
    groups: dict = {}
    for r in ratios(rows):
        groups.setdefault((r["method"], r["runner"]), []).append(r)
    for (method, runner), rs in groups.items():
        cells = []
        for key in ("x_loop", "x_wall"):
            xs = [r[key] for r in rs]
            cells.append(f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")
        print(f"{method:<14}{runner:<21}{len(rs):>7}{cells[0]:>26}{cells[1]:>26}")


def trainer_mb(r: dict) -> float:
    """Peak RSS of the process that trains: a Ray Train worker, or the one process otherwise."""
    return r["worker_mb"] if r["runner"] == "peft_ray" else r["driver_mb"]


if __name__ == "__main__":
    main()
