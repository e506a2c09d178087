"""bench/loop_floor.py's floor step runs at tiny shapes, so the benchmark does not rot unseen."""
import importlib.util
import pathlib
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", ["prompt_tuning", "lora"])
def test_floor_step_runs_on_a_tiny_batch(method, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))     # the script appends bench/ to the path
    spec = importlib.util.spec_from_file_location("_bench_loop_floor", ROOT / "bench" / "loop_floor.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.floor_step(method)({"input_ids": torch.zeros(2, 5, dtype=torch.long)})
