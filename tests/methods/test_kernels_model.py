"""Model-level kernel parity: kernels: triton (through the CPU interpreter, in a subprocess
because TRITON_INTERPRET must be set before triton is imported) vs torch, for prompt tuning,
prefix tuning and LoRA on tiny BERT and tiny Llama (GQA), and LoRA's DoRA/PiSSA variants. Logits and every adapter gradient must agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_triton_and_torch_kernels_agree_in_models():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "tests.methods.kernel_parity"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    report = [line for line in proc.stdout.splitlines() if ": ok" in line or "MISMATCH" in line]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from tests.methods.kernel_parity import CASES

    assert len(report) == len(CASES) and all(": ok" in line for line in report), report
