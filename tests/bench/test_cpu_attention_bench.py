"""bench/cpu_attention.py runs end to end at a small scale and writes its table's rows."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cpu_attention_bench_writes_its_rows(tmp_path):
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_attention.py"), "--rounds", "1", "--scale", "0.01",
                          "--shapes", "2", "--threads", "1", "--out", str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["runs"] in ("math", "sdpa") and r["math_train_ms"] > 0 for r in rows)
    assert "runs" in run.stdout
