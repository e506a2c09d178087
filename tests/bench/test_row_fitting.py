"""bench/row_fitting.py runs end to end at a tiny scale and writes its table and JSON (its figures
are for a quiet machine, never for a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_row_fitting_bench_runs_and_writes_json(tmp_path):
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "row_fitting.py"), "--repeats", "1", "--scale", "0.01",
                          "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    cases = json.loads(out.read_text())["cases"]
    assert [c["max_length"] for c in cases] == [128, 16, 64] and cases[0]["cut"] == cases[0]["rows"]
    assert "median s" in run.stdout
