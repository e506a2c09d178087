"""peft-ray against HF PEFT + HF Trainer on identical work, runs alternated.

    python bench/vs_hf_peft.py --data ../shared/data/sst2 --out bench/results/vs_hf_peft.json

Same model (MiniLM), data (SST-2 train, 1 epoch), batch 32, max_length 64, seed 0;
prompt tuning (20 tokens, lr 3e-2) and LoRA (r=8, alpha 16, query/value, lr 1e-3).
Threads: HF runs in one process with torch.set_num_threads(2); peft-ray runs
1 worker x 2 threads and 2 workers x 1 thread (2 cores in both cases).
Both use dynamic padding (HF: DataCollatorWithPadding) and length-grouped batches
(HF: train_sampling_strategy="group_by_length"), HF's strongest ordinary setting;
both train with the base's own dropout (0.1) on from the first step. Each run is its own process; peak RSS is summed
over the process tree (for peft-ray: driver, Ray, every worker).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_process as run  # noqa: E402

LR = {"prompt_tuning": 3e-2, "lora": 1e-3}
JOB = {"prompt_tuning": "jobs/sst2_prompt_tuning.yaml", "lora": "jobs/sst2_lora.yaml"}


def hf(method: str, data: str, tmp: Path) -> dict:
    out = tmp / f"hf-{method}.json"
    return run([sys.executable, "bench/_hf_peft_run.py", "--method", method, "--data", data,
                "--lr", str(LR[method]), "--threads", "2", "--out", str(out)], out)


def peft_ray(method: str, data: str, workers: int, tmp: Path) -> dict:
    out_dir = tmp / f"pr-{method}-{workers}"
    cmd = ["peft-ray", "train", JOB[method], f"data.root={data}", f"output.dir={out_dir}", "--overwrite",
           f"scaling.num_workers={workers}", f"scaling.cpus_per_worker={2 // workers}",
           f"scaling.torch_threads={2 // workers}", "train.eval_every=100000"]
    return run(cmd, out_dir / "metrics.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--methods", default="prompt_tuning,lora")
    ap.add_argument("--out", default="bench/results/vs_hf_peft.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for name, fn in (("hf_peft", lambda: hf(method, args.data, Path(tmp))),
                             ("peft_ray_1x2", lambda: peft_ray(method, args.data, 1, Path(tmp))),
                             ("peft_ray_2x1", lambda: peft_ray(method, args.data, 2, Path(tmp)))):
                r = fn()
                rows.append({"method": method, "runner": name, **r})
                print(f"{method:<14} {name:<13} {r['samples_per_s']:7.1f} samples/s  acc {r['accuracy']:.4f}",
                      flush=True)
    print_table(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


def print_table(rows: list) -> None:
    base = {r["method"]: r for r in rows if r["runner"] == "hf_peft"}
    print(f"\n{'method':<14}{'runner':<14}{'samples/s':>10}{'tokens/s':>10}{'val acc':>9}"
          f"{'RSS MB (all)':>14}{'RSS MB (trainer)':>18}{'x HF':>7}")
    for r in rows:
        ratio = r["samples_per_s"] / base[r["method"]]["samples_per_s"]
        print(f"{r['method']:<14}{r['runner']:<14}{r['samples_per_s']:>10.1f}{r['tokens_per_s']:>10.0f}"
              f"{r['accuracy']:>9.4f}{r['tree_mb']:>14.0f}{trainer_mb(r):>18.0f}{ratio:>7.2f}")


def trainer_mb(r: dict) -> float:
    """Peak RSS of the process that trains: HF's one process, or a Ray Train worker."""
    return r["worker_mb"] if r["runner"] != "hf_peft" else r["driver_mb"]


if __name__ == "__main__":
    main()
