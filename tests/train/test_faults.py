"""Breaking things on purpose (in --local mode: same recipe, no Ray start-up cost)."""

from __future__ import annotations

import json

import pytest

from peft_ray.spec import validate_spec
from peft_ray.train.checkpoint import latest_good_checkpoint, validate_checkpoint
from peft_ray.train.local import run_local
from peft_ray.train.recipe import NonFiniteLoss
from tests.conftest import job_dict

TRAIN = {"max_steps": 6, "checkpoint_every": 2, "eval_every": 6}


def _spec(tiny_bert, tiny_data, out, **train):
    return validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                  train={**TRAIN, **train}))


def test_nan_loss_stops_with_step(tiny_bert, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_RAY_NAN_AT_STEP", "3")
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 3 .*nan_policy: skip"):
        run_local(_spec(tiny_bert, tiny_data, tmp_path))


def test_nan_loss_skip_policy_counts(tiny_bert, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_RAY_NAN_AT_STEP", "3")
    metrics = run_local(_spec(tiny_bert, tiny_data, tmp_path, nan_policy="skip"))
    assert metrics["skipped_nonfinite"] == 1 and metrics["step"] == 6


def test_disk_full_during_checkpoint_keeps_previous(tiny_bert, tiny_data, tmp_path, monkeypatch):
    spec = _spec(tiny_bert, tiny_data, tmp_path)
    monkeypatch.setenv("PEFT_RAY_FAIL_SAVE_AT_STEP", "4")
    with pytest.raises(OSError, match="No space left"):
        run_local(spec)
    ckpts = tmp_path / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["checkpoint_00000002"]  # no staging debris
    assert validate_checkpoint(ckpts / "checkpoint_00000002")[0]
    monkeypatch.delenv("PEFT_RAY_FAIL_SAVE_AT_STEP")
    assert run_local(spec, resume=True)["step"] == 6


def test_corrupt_checkpoint_is_skipped_for_the_previous(tiny_bert, tiny_data, tmp_path):
    spec = _spec(tiny_bert, tiny_data, tmp_path, keep_checkpoints=3)
    run_local(spec)
    ckpts = sorted((tmp_path / "checkpoints").glob("checkpoint_*"))
    assert [c.name[-2:] for c in ckpts] == ["02", "04", "06"]
    victim = ckpts[-1] / "adapter" / "adapter_model.safetensors"
    victim.write_bytes(victim.read_bytes()[:-7])  # truncated
    ok, why = validate_checkpoint(ckpts[-1])
    assert not ok and "checksum" in why
    warnings = []
    assert latest_good_checkpoint(tmp_path / "checkpoints", warn=warnings.append) == ckpts[-2]
    assert "skipping" in warnings[0]


def test_keep_last_k_never_deletes_only_good_checkpoint(tmp_path):
    from peft_ray.train.report import LocalReporter

    rep = LocalReporter(str(tmp_path), keep=1, resume_from=None)
    good = tmp_path / "checkpoints" / "checkpoint_00000001"
    good.mkdir(parents=True)
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 1, "world_size": 1}))
    from peft_ray.train.checkpoint import sha256

    (good / "MANIFEST.rank0.json").write_text(json.dumps({"trainer_state.json": sha256(good / "trainer_state.json")}))
    with rep.staging_dir() as tmp:  # a newer checkpoint with no manifest: not valid
        from pathlib import Path

        (Path(tmp) / "trainer_state.json").write_text(json.dumps({"global_step": 2, "world_size": 1}))
        rep.report({"step": 2}, tmp)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint_00000001", "checkpoint_00000002"]


def test_saved_spec_redacts_secrets(tiny_bert, tiny_data, tmp_path):
    from peft_ray.security import redact

    raw = job_dict(tiny_bert, tiny_data, tmp_path, name="job-hf_" "abcdefghijklmnopqrstuvwxyz")
    out = redact({**raw, "env": {"HF_TOKEN": "x", "AWS_SECRET_ACCESS_KEY": "y", "tokenizer": "z"}})
    assert out["env"] == {"HF_TOKEN": "***REDACTED***", "AWS_SECRET_ACCESS_KEY": "***REDACTED***",
                          "tokenizer": "z"}
    assert "hf_abc" not in json.dumps(out)


def test_the_written_job_and_adapter_record_hold_no_token(tiny_bert, tiny_data, tmp_path):
    """A maintainer-review finding: the test above only calls redact(); a run that wrote its job.yaml
    or peft_ray.json unredacted would have passed it."""
    from peft_ray.spec import validate_spec
    from peft_ray.train.local import run_local

    token = "hf_" "abcdefghijklmnopqrstuvwxyz"
    out = tmp_path / "run"
    run_local(validate_spec(job_dict(tiny_bert, tiny_data, out, name=f"job-{token}", scaling={"num_workers": 1},
                                     train={"max_steps": 1, "eval_every": 1})), bar="none")
    written = [out / "job.yaml", out / "adapter" / "peft_ray.json", out / "adapter" / "README.md"]
    assert all(f.is_file() for f in written)
    assert not [f.name for f in written if "hf_abc" in f.read_text()]
