"""A checkpoint is data: resuming never unpickles code, and manifests stay inside their folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from peft_ray.errors import CheckpointError
from peft_ray.spec import validate_spec
from peft_ray.train.checkpoint import latest_good_checkpoint, sha256, validate_checkpoint
from peft_ray.train.local import run_local
from tests.conftest import job_dict

TRAIN = {"max_steps": 2, "checkpoint_every": 2, "eval_every": 2}


class _Boom:
    """Unpickling this runs a shell command: what an attacker plants in output.dir."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rehash(ckpt: Path) -> None:
    """What an attacker with write access to the storage does: fix the manifest up."""
    for m in ckpt.glob("MANIFEST.rank*.json"):
        entries = json.loads(m.read_text())
        m.write_text(json.dumps({rel: sha256(ckpt / rel) for rel in entries}))


@pytest.fixture(scope="module")
def trained(tiny_bert, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    spec = validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1}, train=TRAIN))
    run_local(spec)
    return spec, out / "checkpoints" / "checkpoint_00000002"


def test_tampered_checkpoint_is_refused_not_loaded(trained, tmp_path):
    spec, ckpt = trained
    bad = tmp_path / "run"
    shutil.copytree(ckpt.parent.parent, bad)
    target = bad / "checkpoints" / ckpt.name
    marker = tmp_path / "pwned"
    torch.save({"module": _Boom(str(marker))}, target / "ds" / "state" / "mp_rank_00_model_states.pt")
    _rehash(target)
    assert validate_checkpoint(target)[0]            # the manifest matches: integrity is not origin
    spec = spec.model_copy(deep=True)
    spec.output.dir = str(bad)
    spec.train.max_steps = 3                         # a step left: the checkpoint is loaded
    with pytest.raises(CheckpointError, match="refusing to resume.*other than tensors"):
        run_local(spec, resume=True)
    assert not marker.exists()


def test_clean_checkpoint_still_resumes(trained, tmp_path):
    spec, ckpt = trained
    shutil.copytree(ckpt.parent.parent, tmp_path / "run")
    spec = spec.model_copy(deep=True)
    spec.output.dir = str(tmp_path / "run")
    spec.train.max_steps = 3
    assert run_local(spec, resume=True)["step"] == 3


@pytest.mark.parametrize("rel", ["/etc/passwd", "../../../etc/hostname", "adapter/../../x"])
def test_manifest_paths_outside_the_checkpoint_are_refused(trained, tmp_path, rel):
    _, ckpt = trained
    copy = tmp_path / ckpt.name
    shutil.copytree(ckpt, copy)
    m = copy / "MANIFEST.rank0.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), rel: "0" * 64}))
    ok, why = validate_checkpoint(copy)
    assert not ok and "outside the checkpoint" in why


def test_manifest_link_out_of_the_checkpoint_is_refused(trained, tmp_path):
    _, ckpt = trained
    copy = tmp_path / ckpt.name
    shutil.copytree(ckpt, copy)
    (copy / "adapter" / "evil").symlink_to("/etc/hostname")
    m = copy / "MANIFEST.rank0.json"
    m.write_text(json.dumps({**json.loads(m.read_text()), "adapter/evil": sha256(Path("/etc/hostname"))}))
    assert "outside the checkpoint" in validate_checkpoint(copy)[1]


def test_file_planted_in_ds_is_refused(trained, tmp_path):
    _, ckpt = trained
    copy = tmp_path / "root" / ckpt.name
    shutil.copytree(ckpt, copy)
    torch.save({}, copy / "ds" / "state" / "extra.pt")
    ok, why = validate_checkpoint(copy)
    assert not ok and "in no manifest" in why
    assert latest_good_checkpoint(tmp_path / "root", warn=lambda *_: None) is None


@pytest.mark.parametrize("state, why", [
    ([1], "not an object"),
    ({"global_step": 2, "planted": 1}, "unknown field 'planted'"),
    ({"global_step": "2"}, "global_step is '2'"),
    ({"global_step": 2, "world_size": 0}, "world_size is 0"),
])
def test_a_crafted_trainer_state_is_skipped_for_an_earlier_checkpoint(trained, tmp_path, state, why):
    _, ckpt = trained
    root = tmp_path / "root"
    older, newer = root / "checkpoint_00000001", root / "checkpoint_00000003"
    shutil.copytree(ckpt, older)
    shutil.copytree(ckpt, newer)
    (older / "trainer_state.json").write_text(
        json.dumps({**json.loads((older / "trainer_state.json").read_text()), "global_step": 1}))
    (newer / "trainer_state.json").write_text(json.dumps(state))
    _rehash(older)
    _rehash(newer)
    ok, reason = validate_checkpoint(newer)
    assert not ok and why in reason
    assert latest_good_checkpoint(root, warn=lambda *_: None) == older


def test_a_crafted_rng_state_is_a_clear_refusal(trained, tmp_path):
    spec, ckpt = trained
    bad = tmp_path / "run"
    shutil.copytree(ckpt.parent.parent, bad)
    target = bad / "checkpoints" / ckpt.name
    (target / "rng_rank0.safetensors").write_bytes(b"12345")
    _rehash(target)
    spec = spec.model_copy(deep=True)
    spec.output.dir = str(bad)
    spec.train.max_steps = 3
    with pytest.raises(CheckpointError, match="rng_rank0.safetensors is not an RNG state"):
        run_local(spec, resume=True)


@pytest.mark.parametrize("planted", ["trainer_state.json", "MANIFEST.rank0.json"])
def test_a_fifo_in_a_checkpoint_is_skipped_not_read(trained, tmp_path, planted):
    """A FIFO planted in shared storage blocked --resume for ever (read_state on the step sort)."""
    import signal

    _, ckpt = trained
    root = tmp_path / "root"
    older, newer = root / "checkpoint_00000001", root / "checkpoint_00000003"
    shutil.copytree(ckpt, older)
    shutil.copytree(ckpt, newer)
    (newer / planted).unlink()
    os.mkfifo(newer / planted)
    warned = []
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a checkpoint's FIFO was opened for reading"))
    signal.alarm(30)
    try:
        assert latest_good_checkpoint(root, warn=warned.append) == older
    finally:
        signal.alarm(0)
    # an unreadable state sorts by its folder's name, so the newer one is skipped and said either way
    assert any("checkpoint_00000003" in w for w in warned)


def _plant_secret_link(ckpt: Path, secret: Path) -> None:
    """The reviewer's attack: a link in the checkpoint's adapter/ (in no manifest), the step made the
    best by far, the manifests fixed up."""
    (ckpt / "adapter" / "notes.md").symlink_to(secret)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    (ckpt / "trainer_state.json").write_text(json.dumps({**state, "best_score": 1e9, "best_step": 2}))
    _rehash(ckpt)


def test_a_link_planted_in_a_checkpoints_adapter_is_never_copied(trained, tmp_path, capsys):
    spec, ckpt = trained
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN")
    bad = tmp_path / "run"
    shutil.copytree(ckpt.parent.parent, bad)
    _plant_secret_link(bad / "checkpoints" / ckpt.name, secret)
    spec = spec.model_copy(deep=True)
    spec.output.dir, spec.train.max_steps = str(bad), 4
    with pytest.raises(CheckpointError, match="no usable checkpoint"):   # (before: adapter/notes.md held it)
        run_local(spec, resume=True)
    assert "adapter/notes.md is a link" in capsys.readouterr().out
    assert not any("SECRET" in p.read_text(errors="replace") for p in bad.rglob("*")
                   if p.is_file() and not p.is_symlink())
    ok, why = validate_checkpoint(bad / "checkpoints" / ckpt.name)
    assert not ok and why == "adapter/notes.md is a link (a checkpoint holds only the files its ranks wrote)"


@pytest.mark.parametrize("plant, why", [
    (lambda a: (a / "notes.md").write_text("x"), "adapter/notes.md is in no manifest"),
    (lambda a: (a / "sub").symlink_to(a.parent / "ds", target_is_directory=True), "adapter/sub is a link"),
    (lambda a: os.mkfifo(a / "pipe"), "adapter/pipe is not a regular file"),
])
def test_anything_planted_anywhere_in_a_checkpoint_is_refused(trained, tmp_path, plant, why):
    _, ckpt = trained
    copy = tmp_path / ckpt.name
    shutil.copytree(ckpt, copy)
    plant(copy / "adapter")
    ok, reason = validate_checkpoint(copy)
    assert not ok and reason.startswith(why)


def test_a_link_listed_in_the_manifest_is_refused_even_inside_the_checkpoint(trained, tmp_path):
    _, ckpt = trained
    copy = tmp_path / ckpt.name
    shutil.copytree(ckpt, copy)
    (copy / "adapter" / "README.md").unlink()
    (copy / "adapter" / "README.md").symlink_to(copy / "trainer_state.json")
    _rehash(copy)
    assert validate_checkpoint(copy)[1].startswith("adapter/README.md is a link")


@pytest.mark.parametrize("renames", [True, False], ids=["rename", "object-store"])
def test_the_runs_adapter_gets_only_the_adapters_own_regular_files(trained, tmp_path, monkeypatch, renames):
    """write_outputs copies a checkpoint's adapter/ into the run's adapter/ by name, never through a
    link, and refuses before anything is written (the best checkpoint of --local is checked too)."""
    from peft_ray.adapter import ADAPTER_FILES, CONFIG
    from peft_ray.storage import Location, location

    monkeypatch.setattr(location, "renames_folders", lambda fs: renames)
    _, ckpt = trained
    src = tmp_path / "adapter-src"
    shutil.copytree(ckpt / "adapter", src)
    (src / "extra.bin").write_text("not an adapter file")
    dst = Location.at(tmp_path / "out") / "adapter"
    dst.replace_with(Location.at(src), last=CONFIG, names=ADAPTER_FILES)
    assert sorted(p.name for p in Path(dst.path).iterdir()) == sorted(ADAPTER_FILES)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN")
    (src / "README.md").unlink()
    (src / "README.md").symlink_to(secret)
    with pytest.raises(CheckpointError, match="README.md is not a regular file"):
        dst.replace_with(Location.at(src), last=CONFIG, names=ADAPTER_FILES)
    assert "SECRET" not in (Path(dst.path) / "README.md").read_text()
    with pytest.raises(CheckpointError, match="cannot open it as a regular file"):   # a link swapped in late
        (dst / "x").copy_file_from(Location.at(src) / "README.md")


def test_local_never_takes_an_earlier_best_that_does_not_validate(trained, tmp_path):
    """After --local --resume the best may be an earlier run's checkpoint: it becomes adapter/ only
    if it validates, as the one resumed from must."""
    from peft_ray.train.report import LocalReporter

    _, ckpt = trained
    rep = LocalReporter(str(tmp_path), keep=5, resume_from=None)
    earlier = tmp_path / "checkpoints" / "checkpoint_00000002"
    shutil.copytree(ckpt, earlier)
    (earlier / "adapter" / "notes.md").symlink_to("/etc/hostname")
    staged = tmp_path / "staged"
    staged.mkdir()
    rep.report({"step": 4, "best_step": 2}, str(staged))
    assert rep.best_checkpoint is None
