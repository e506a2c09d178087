"""bench/vs_hf_peft.py's rounds: every ratio is against hf_grouped of its own round, and the
medians summarise the rounds (HF's own speed moves between runs, so one round is one draw)."""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _module(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))     # the script puts bench/ on the path
    spec = importlib.util.spec_from_file_location("_bench_vs_hf_peft", ROOT / "bench" / "vs_hf_peft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(k, runner, sps, wall):
    return {"round": k, "method": "prompt_tuning", "runner": runner, "samples_per_s": sps, "process_s": wall,
            "accuracy": 0.8, "driver_mb": 1.0, "worker_mb": 1.0, "tree_mb": 1.0}


def test_ratios_are_per_round_and_medians_summarise_them(monkeypatch, capsys):
    m = _module(monkeypatch)
    rows = [_row(1, "hf_grouped", 60.0, 120.0), _row(1, "peft_ray_local", 90.0, 100.0),
            _row(2, "peft_ray_local", 90.0, 100.0), _row(2, "hf_grouped", 75.0, 110.0),
            _row(3, "hf_grouped", 72.0, 100.0), _row(3, "peft_ray_local", 90.0, 80.0)]
    ours = [r for r in m.ratios(rows) if r["runner"] == "peft_ray_local"]
    assert [round(r["x_loop"], 3) for r in ours] == [1.5, 1.2, 1.25]
    assert [round(r["x_wall"], 3) for r in ours] == [1.2, 1.1, 1.25]
    m.print_medians(rows)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "peft_ray_local" in ln][0]
    assert "1.25 (1.20-1.50)" in line and "1.20 (1.10-1.25)" in line


def test_rows_without_a_round_are_one_round(monkeypatch):
    """Result files written before --rounds existed read as one round."""
    m = _module(monkeypatch)
    rows = [{k: v for k, v in r.items() if k != "round"}
            for r in (_row(1, "hf_grouped", 60.0, 120.0), _row(1, "peft_ray", 66.0, 100.0))]
    assert [round(r["x_loop"], 2) for r in m.ratios(rows)] == [1.0, 1.1]
