"""Scaling on this machine: workers x threads, a simulated 2-node placement, and the
DeepSpeed ZeRO 1/2/3 overheads, all on the same MiniLM job.

    python bench/scaling.py --out bench/results/scaling.json

Every run is `peft-ray train jobs/default.yaml` for the same number of steps (eval off
until the end), measured by its own samples/s (training time only).
- 2 workers x 1 thread vs 1 worker x 2 threads (goal: >= 0.9x);
- 2 Ray nodes on the loopback (two `ray start` nodes with token auth, stopped by process,
  never by `ray stop`), STRICT_SPREAD placement: one 1-CPU worker per node;
- ZeRO stage 1, 2 and 3 with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, run_cli  # noqa: E402


def train(tmp: Path, tag: str, steps: int, *overrides: str) -> dict:
    out = tmp / tag
    args = ["train", "jobs/default.yaml", f"output.dir={out}", f"train.max_steps={steps}",
            "train.eval_every=100000", "--overwrite", *overrides]
    return run_cli(args, out / "metrics.json")


@contextmanager
def two_node_cluster():
    """A head and a second node on 127.0.0.1, yielding the GCS address, with this process's
    environment holding the cluster's token while it runs (the driver connects like a user).

    tests/cluster's LocalCluster (token auth, free ports, private temp dir), so teardown stops
    only these two nodes: never `ray stop --force`, which stops every Ray runtime on the machine
    (a test run's, another bench's). 4 + 3 logical CPUs leave Ray Data room next to the two
    one-CPU workers (see that fixture)."""
    sys.path.insert(0, str(ROOT))
    from tests.cluster.conftest import LocalCluster

    cluster, saved = LocalCluster(), dict(os.environ)
    try:
        cluster.start_head(num_cpus=4)
        cluster.add_node(num_cpus=3)
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token})
        os.environ.pop("RAY_ADDRESS", None)
        yield f"127.0.0.1:{cluster.head.ports['--port']}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--skip-multinode", action="store_true")
    ap.add_argument("--zero-stages", default="1,3", help="extra ZeRO stages next to 2 ('' for none)")
    ap.add_argument("--out", default="bench/results/scaling.json")
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rows["2 workers x 1 thread"] = train(tmp, "w2", args.steps, "scaling.num_workers=2")
        rows["1 worker x 2 threads"] = train(tmp, "w1", args.steps, "scaling.num_workers=1",
                                             "scaling.cpus_per_worker=2", "scaling.torch_threads=2")
        for stage in (int(x) for x in args.zero_stages.split(",") if x):
            rows[f"ZeRO-{stage}, 2 workers"] = train(tmp, f"z{stage}", args.steps,
                                                      f"deepspeed.zero_stage={stage}")
        rows["ZeRO-2, 2 workers"] = rows["2 workers x 1 thread"]
        if not args.skip_multinode:
            with two_node_cluster() as address:
                rows["2 nodes (loopback), STRICT_SPREAD"] = train(
                    tmp, "nodes", args.steps, f"scaling.address={address}",
                    "scaling.placement_strategy=STRICT_SPREAD")
    base = rows["1 worker x 2 threads"]["samples_per_s"]
    print(f"\n{'configuration':<38}{'samples/s':>10}{'tokens/s':>10}{'x 1w2t':>8}{'worker MB':>11}")
    for name, r in rows.items():
        print(f"{name:<38}{r['samples_per_s']:>10.1f}{r['tokens_per_s']:>10.0f}"
              f"{r['samples_per_s'] / base:>8.2f}{r['worker_mb']:>11.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
