"""DeepSpeed's Muon functions are compiled on first call, not when the engine imports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from peft_ray.train.deepspeed_compile import is_deferred, lazy_compile


def test_lazy_compile_waits_for_the_first_call(monkeypatch):
    calls = []
    real_compile = torch.compile

    def spy(fn, **options):  # records, then runs the real torch.compile
        calls.append(options)
        return real_compile(fn, **options)

    monkeypatch.setattr(torch, "compile", spy)

    def f(x, k: int):
        return x * k + 1

    bare = lazy_compile()(f)
    with_options = lazy_compile()(backend="eager")(f)
    assert calls == [] and is_deferred(bare) and is_deferred(with_options)
    assert with_options.__name__ == "f" and with_options.__wrapped__ is f

    x = torch.arange(5.0)
    assert torch.equal(with_options(x, 3), f(x, 3))
    assert torch.equal(with_options(x, 2), f(x, 2))
    assert calls == [{"backend": "eager"}]   # compiled once, with the decorator's options


_ENGINE = r"""
import json, sys
from peft_ray.spec import validate_spec
from peft_ray.train.engine import build_model, setup_engine
from peft_ray.train.local import init_single_rank
from tests.conftest import job_dict

spec = validate_spec(job_dict(sys.argv[1], sys.argv[2], sys.argv[3], scaling={"num_workers": 1}))
init_single_rank(False)
model, _, _ = build_model(spec)
setup_engine(model, spec, total_steps=4, use_bf16=False)
from deepspeed.runtime.zero.muon import original_muon
from peft_ray.train.deepspeed_compile import is_deferred
names = ["zeropower_via_newtonschulz5", "zeropower_via_gram_newtonschulz", "muon_update"]
print(json.dumps({n: is_deferred(getattr(original_muon, n)) for n in names if hasattr(original_muon, n)}))
"""


def test_engine_set_up_leaves_muon_uncompiled(tiny_bert, tiny_data, tmp_path):
    # A fresh interpreter: in this one another test may have imported DeepSpeed's Muon already.
    out = subprocess.run([sys.executable, "-c", _ENGINE, str(tiny_bert), str(tiny_data), str(tmp_path)],
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    deferred = json.loads(out.stdout.strip().splitlines()[-1])
    assert deferred and all(deferred.values()), deferred
