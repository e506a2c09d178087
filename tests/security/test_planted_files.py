"""Run and adapter folders may come from someone else: a link planted in one redirects no write
and passes on no outside file, and a crafted JSON file gets an error that names it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from peft_ray.adapter import read_adapter
from peft_ray.cli import main
from peft_ray.errors import JobError, SpecError
from peft_ray.spec import validate_spec
from peft_ray.storage import open_append, write_file
from peft_ray.train.local import run_local
from tests.conftest import job_dict


@pytest.fixture(scope="module")
def adapter(tiny_bert, tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_local(validate_spec(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1},
                                     train={"max_steps": 1, "eval_every": 1})), bar="none")
    return out / "adapter"


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    return victim


def test_writes_replace_a_planted_link_instead_of_writing_through_it(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "eval_validation.json").symlink_to(victim)
    write_file(tmp_path / "run" / "eval_validation.json", "{}")
    assert victim.read_text() == "the user's own file\n"
    assert not (tmp_path / "run" / "eval_validation.json").is_symlink()


def test_logs_refuse_a_planted_link(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "train.log").symlink_to(victim)
    with pytest.raises(JobError, match="train.log is a symbolic link"):
        open_append(tmp_path / "train.log")
    assert victim.read_text() == "the user's own file\n"


def test_train_refuses_a_log_link_planted_in_output_dir(tiny_bert, tiny_data, tmp_path):
    victim, out = _victim(tmp_path), tmp_path / "run"
    out.mkdir()
    (out / "train.log").symlink_to(victim)
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1})))
    r = CliRunner().invoke(main, ["train", str(job), "--local", "-q"])
    assert r.exit_code == 2 and "'train.log' is a symbolic link" in r.output
    assert victim.read_text() == "the user's own file\n"


def test_export_passes_on_no_file_from_outside_the_adapter(adapter, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(adapter, src)
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    (src / "README.md").unlink()
    (src / "README.md").symlink_to(secret)
    r = CliRunner().invoke(main, ["export", str(src), str(tmp_path / "out")])
    assert r.exit_code == 2 and "outside the adapter folder" in r.output
    assert not (tmp_path / "out").exists()


def test_export_follows_hf_cache_links_only_into_the_adapters_own_repo(adapter, tmp_path, monkeypatch):
    """A snapshot's files link into its repo's blobs; a link into another cached repo (a private
    model's files) would pass those on."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    private = cache / "models--acme--private" / "snapshots" / "0123" / "notes.txt"
    private.parent.mkdir(parents=True)
    private.write_text("PRIVATE")
    shared = tmp_path / "shared"
    shutil.copytree(adapter, shared)
    (shared / "README.md").unlink()
    (shared / "README.md").symlink_to(private)
    r = CliRunner().invoke(main, ["export", str(shared), str(tmp_path / "out")])
    assert r.exit_code == 2 and "outside the adapter folder" in r.output

    repo = cache / "models--someone--adapter"          # a downloaded adapter: snapshots -> its own blobs
    snap, blobs = repo / "snapshots" / "abcd", repo / "blobs"
    blobs.mkdir(parents=True)
    shutil.copytree(adapter, snap)
    for f in sorted(snap.iterdir()):
        blob = blobs / f.name
        shutil.move(f, blob)
        f.symlink_to(blob)
    r = CliRunner().invoke(main, ["export", str(snap), str(tmp_path / "out2")])
    assert r.exit_code == 0, r.output


def test_export_replaces_an_earlier_export_whole_and_refuses_other_folders(adapter, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["export", str(adapter), str(out)]).exit_code == 0
    assert (out / "peft_ray.json").is_file()
    foreign = tmp_path / "foreign"                 # an HF PEFT adapter without peft-ray's record
    shutil.copytree(adapter, foreign)
    (foreign / "peft_ray.json").unlink()
    r = CliRunner().invoke(main, ["export", str(foreign), str(out)])   # an earlier export is replaced only when asked
    assert r.exit_code == 2 and "holds an earlier export; pass --overwrite" in r.output
    assert (out / "peft_ray.json").is_file()
    assert CliRunner().invoke(main, ["export", str(foreign), str(out), "--overwrite"]).exit_code == 0
    assert not (out / "peft_ray.json").exists()    # nothing of the first adapter is left to mix in

    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(main, ["export", str(adapter), str(home)])
    assert r.exit_code == 2 and "no `peft-ray export` wrote" in r.output
    assert (home / "notes.txt").read_text() == "keep me"
    (home / "config.json").write_text("{}")        # a project or base-model folder is not an export either
    r = CliRunner().invoke(main, ["export", str(adapter), str(home)])
    assert r.exit_code == 2 and "no `peft-ray export` wrote" in r.output
    assert sorted(p.name for p in home.iterdir()) == ["config.json", "notes.txt"]
    old = tmp_path / "old_export"                      # an adapter folder without the mark (older export, a run's)
    shutil.copytree(adapter, old)
    r = CliRunner().invoke(main, ["export", str(adapter), str(old)])
    assert r.exit_code == 2 and "without the .peft_ray_export mark" in r.output
    r = CliRunner().invoke(main, ["export", str(adapter), str(adapter)])
    assert r.exit_code == 2 and "is the adapter folder" in r.output
    assert (adapter / "adapter_config.json").is_file()


@pytest.mark.parametrize("record, message", [
    ('"spec"', "holds a JSON str, not an object"),
    ('{"spec": [1, 2]}', "'spec' is a list"),
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
])
def test_crafted_adapter_records_get_a_clear_error(adapter, tmp_path, record, message):
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    (bad / "peft_ray.json").write_text(record)
    with pytest.raises(SpecError, match=message):
        read_adapter(bad)


def test_an_adapter_file_that_is_a_device_is_refused(adapter, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(adapter, bad)
    (bad / "peft_ray.json").unlink()
    os.symlink("/dev/zero", bad / "peft_ray.json")
    with pytest.raises(SpecError, match="peft_ray.json is not a regular file"):
        read_adapter(bad)


def test_output_paths_that_cannot_be_made_are_named_before_any_model_loads(adapter, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "good", "label": "positive"}\n{"text": "", "label": "negative"}\n')
    cases = {("export", str(adapter), str(afile / "sub")): "OUT_DIR '.*afile/sub': '.*afile' is a file",
             ("export", str(adapter), "/proc/peft-ray-x"): "OUT_DIR '/proc/peft-ray-x' is on proc",
             ("predict", str(adapter), "--input", str(data), "--output", str(afile / "p.jsonl"), "--local"):
                 "--output's folder '.*afile' is an existing file",
             ("eval", str(adapter), "--data", str(data), "--output", str(afile / "m.json"), "--local"):
                 "--output's folder '.*afile' is an existing file"}
    for args, message in cases.items():
        r = CliRunner().invoke(main, list(args))
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert __import__("re").search(message, r.output), r.output


def test_swapped_in_folders_get_the_umask_modes_not_safetensors_0600(tmp_path):
    """safetensors' save_file makes 0600 files, and a copy keeps the mode: tune's best adapter and
    `export --merge` were unreadable to the rest of a team whose umask says otherwise."""
    import torch
    from safetensors.torch import save_file

    from peft_ray.adapter import replace_dir

    src = tmp_path / "stage"
    src.mkdir()
    save_file({"w": torch.zeros(2)}, str(src / "model.safetensors"))
    assert (src / "model.safetensors").stat().st_mode & 0o777 == 0o600
    mask = os.umask(0o022)
    try:
        replace_dir(src, tmp_path / "out")
    finally:
        os.umask(mask)
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_export_refuses_to_replace_an_export_holding_the_users_own_files(adapter, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["export", str(adapter), str(out)]).exit_code == 0
    (out / "mine.txt").write_text("notes")
    r = CliRunner().invoke(main, ["export", str(adapter), str(out), "--overwrite"])
    assert r.exit_code == 2 and "holds files it did not write: mine.txt" in r.output
    assert (out / "mine.txt").read_text() == "notes"
    (out / "mine.txt").unlink()
    assert CliRunner().invoke(main, ["export", str(adapter), str(out), "--overwrite"]).exit_code == 0   # its own files
