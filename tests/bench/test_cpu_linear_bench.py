"""bench/cpu_linear.py runs end to end at a small scale: products, and whole steps with oneDNN on and off."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cpu_linear_bench_writes_its_rows_and_steps(tmp_path):
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_linear.py"), "--rounds", "1", "--scale", "0.01",
                          "--shapes", "2", "--threads", "1", "--steps", "1", "--methods", "lora", "--data", "",
                          "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 2 and all(r["onednn_train_ms"] > 0 and r["torch_infer_ms"] > 0
                                            for r in result["rows"])
    [step] = result["steps"]
    assert step["method"] == "lora" and step["layers"] > 0 and step["x_sum"] > 0
    assert "x (sum)" in run.stdout
