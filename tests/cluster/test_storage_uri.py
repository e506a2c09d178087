"""output.dir as a URI (s3://, gs://, file://) through pyarrow.fs, without any network.

file:// URIs take the same road as s3:// and gs:// (pyarrow.fs.FileSystem.from_uri, then
the filesystem's own calls), so the end-to-end run below uses them. S3/GCS filesystems are
never built here: pyarrow's S3 from_uri looks the bucket's region up over the network, so
only the string handling of those URIs is tested.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import CheckpointError, JobError, SpecError
from peft_ray.spec import validate_spec
from peft_ray.spec.load import absolute_paths
from peft_ray.storage import Location, join, location, location_of   # location: where Location looks its helpers up
from peft_ray.train.checkpoint import _checkpoint_names, checkpoint_step, latest_good_checkpoint
from peft_ray.train.run_dir import prepared_output_dir
from tests.conftest import job_dict

RESUME = dict(train={"max_steps": 6, "checkpoint_every": 3, "eval_every": 6, "max_failures": 0})


def _spec(tiny_bert, tiny_data, out: str, **sections):
    return validate_spec(job_dict(tiny_bert, tiny_data, out, **sections))


@pytest.mark.parametrize("out, message", [
    ("ftp://host/runs", "'ftp://' is not a supported storage scheme"),
    ("hdfs://nn/runs", "'hdfs://' is not a supported storage scheme"),
    ("file://runs/x", "file:// URI needs an absolute path"),
    ("s3:///runs/x", "names no bucket"),
])
def test_unsupported_output_uri_names_the_field(tiny_bert, tiny_data, out, message):
    with pytest.raises(SpecError) as e:
        _spec(tiny_bert, tiny_data, out)
    assert str(e.value).startswith("output.dir: ") and message in str(e.value)
    assert "s3://bucket/prefix" in str(e.value)  # says what to write instead


@pytest.mark.parametrize("out", ["s3://bucket/runs/{name}", "gs://bucket/runs/{name}", "file:///mnt/runs/{name}"])
def test_uri_output_dir_keeps_its_scheme_and_name(tiny_bert, tiny_data, out):
    spec = absolute_paths(_spec(tiny_bert, tiny_data, out))
    assert spec.output.dir == out.replace("{name}", "tiny")


def test_s3_paths_without_a_filesystem():
    """What the driver builds from an s3:// output.dir, checked as strings (no S3 client)."""
    out = "s3://bucket/runs/tiny/"
    assert join(out, "ray") == "s3://bucket/runs/tiny/ray"
    assert join(join(out, "ray"), "tiny-20250101") == "s3://bucket/runs/tiny/ray/tiny-20250101"
    s3 = SimpleNamespace(type_name="s3")  # what Ray's Checkpoint.filesystem would be
    ckpt = location_of(s3, "bucket/runs/tiny/ray/t/checkpoint_1", like=out)
    assert ckpt.uri == "s3://bucket/runs/tiny/ray/t/checkpoint_1"
    assert (ckpt / "adapter").uri == "s3://bucket/runs/tiny/ray/t/checkpoint_1/adapter"
    assert not location.renames_folders(s3)
    # Object stores list files, not folders: checkpoint folders come from the file keys.
    files = ["t/checkpoint_1/trainer_state.json", "t/checkpoint_1/adapter/a.json", "t/checkpoint_2/ds/state/x",
             "t/.validate_storage_marker"]
    assert _checkpoint_names(files) == {"t/checkpoint_1", "t/checkpoint_2"}


@pytest.mark.parametrize("renames", [True, False], ids=["rename", "object-store"])
def test_replace_folder_and_write_file_through_pyarrow(tmp_path, monkeypatch, renames):
    monkeypatch.setattr(location, "renames_folders", lambda fs: renames)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"new")
    out = Location.at(f"file://{tmp_path}/out")
    (out / "adapter" / "stale.bin").write_text("old adapter")
    (out / "adapter").replace_with(Location.at(src), last="adapter_config.json")
    (out / "metrics.json").write_text('{"a": 1}')
    assert out.files() == ["adapter/adapter_config.json", "adapter/sub/w.bin", "metrics.json"]  # nothing else
    assert (out / "metrics.json").read_text() == '{"a": 1}'


def test_output_dir_rules_hold_on_a_uri(tiny_bert, tiny_data, tmp_path):
    uri = f"file://{tmp_path}/run"
    spec = _spec(tiny_bert, tiny_data, uri)
    with prepared_output_dir(spec, resume=False, overwrite=False) as out:
        assert out.uri == uri and yaml.safe_load((tmp_path / "run" / "job.yaml").read_text())["name"] == "tiny"
    # a run that stopped before its first checkpoint: --resume and a plain start both say --overwrite
    # (they sent the user to each other)
    for resume, what in ((True, "resume"), (False, "keep")):
        with pytest.raises(CheckpointError, match=f"stopped before its first checkpoint, so there is nothing to "
                                                  f"{what}: pass --overwrite"):
            with prepared_output_dir(spec, resume=resume, overwrite=False):
                pass
    (tmp_path / "run" / "metrics.json").write_text("{}")
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        with prepared_output_dir(spec, resume=False, overwrite=False):
            pass
    other = _spec(tiny_bert, tiny_data, uri, name="other")
    lora = validate_spec({**job_dict(tiny_bert, tiny_data, uri), "method": {"name": "lora"}})
    with pytest.raises(CheckpointError, match="differs from the run in output.dir .*: method.name is lora here but "
                                              "the run used prompt_tuning"):
        with prepared_output_dir(lora, resume=True, overwrite=False):
            pass
    (tmp_path / "run" / "ray" / "x").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="the new run failed"):      # a failed overwrite keeps the old run
        with prepared_output_dir(other, resume=False, overwrite=True):
            assert not (tmp_path / "run" / "ray").exists()
            raise RuntimeError("the new run failed")
    assert (tmp_path / "run" / "ray" / "x").is_dir()
    assert yaml.safe_load((tmp_path / "run" / "job.yaml").read_text())["name"] == "tiny"
    with prepared_output_dir(other, resume=False, overwrite=True):
        pass
    assert not (tmp_path / "run" / "ray").exists() and not (tmp_path / "run" / ".replaced").exists()


def _fake_checkpoint(path: Path, step: int, world: int = 1) -> None:
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "world_size": world}))
    (path / "w.bin").write_bytes(b"w")
    for r in range(world):   # as save_checkpoint: every file a rank saw, trainer_state.json included (rank 0)
        own = ["w.bin"] + (["trainer_state.json"] if r == 0 else [])
        (path / f"MANIFEST.rank{r}.json").write_text(json.dumps({f: _sha(path / f) for f in own}))


def _sha(path: Path) -> str:
    from peft_ray.train.checkpoint import sha256

    return sha256(path)


def test_latest_good_checkpoint_on_a_uri_skips_corrupt(tmp_path):
    run = tmp_path / "ray" / "tiny-1"
    _fake_checkpoint(run / "checkpoint_a", 3)
    _fake_checkpoint(run / "checkpoint_b", 6)
    (run / "checkpoint_b" / "w.bin").write_bytes(b"truncated!")
    _fake_checkpoint(run / "checkpoint_c", 9, world=2)
    (run / "checkpoint_c" / "MANIFEST.rank1.json").unlink()  # a rank that never finished
    warnings = []
    found = latest_good_checkpoint(f"file://{tmp_path}/ray", warn=warnings.append)
    assert found == f"file://{run}/checkpoint_a" and checkpoint_step(found) == 3
    assert len(warnings) == 2 and "checksum" in warnings[1]
    assert latest_good_checkpoint(f"file://{tmp_path}/nothing-here", warn=warnings.append) is None


def test_the_best_checkpoint_of_an_earlier_run_is_found_by_its_step(tmp_path):
    """After --resume, Ray's result knows only the new run's checkpoints; the best may be the
    earlier run's, which adapter/ must still be."""
    from peft_ray.train.checkpoint import checkpoint_at_step

    _fake_checkpoint(tmp_path / "ray" / "tiny-1" / "checkpoint_a", 3)
    _fake_checkpoint(tmp_path / "ray" / "tiny-2" / "checkpoint_b", 6)
    assert checkpoint_at_step(str(tmp_path / "ray"), 3) == str(tmp_path / "ray" / "tiny-1" / "checkpoint_a")
    assert checkpoint_at_step(f"file://{tmp_path}/ray", 6) == f"file://{tmp_path}/ray/tiny-2/checkpoint_b"
    assert checkpoint_at_step(str(tmp_path / "ray"), 9) is None
    assert checkpoint_at_step(str(tmp_path / "nothing"), 3) is None


def test_local_mode_refuses_a_uri(tiny_bert, tiny_data, tmp_path):
    from peft_ray.train.local import run_local

    with pytest.raises(JobError, match=r"output.dir 'file://.*--local.*local folder"):
        run_local(_spec(tiny_bert, tiny_data, f"file://{tmp_path}/x", scaling={"num_workers": 1}))
    assert not any(tmp_path.iterdir())


def test_submit_accepts_a_bucket_output_dir(tmp_path, tiny_bert, tiny_data):
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "tiny.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out")))
    r = CliRunner().invoke(main, ["submit", str(job), "output.dir=s3://bucket/runs/{name}",
                                  "--working-dir", str(tmp_path), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "is relative" not in r.output


@pytest.mark.ray
@pytest.mark.slow
def test_train_and_resume_into_a_uri(ray_runtime, tiny_bert, tiny_data, tmp_path, monkeypatch):
    """2 Ray Train workers, output.dir a file:// URI: Ray stores checkpoints through pyarrow,
    peft-ray writes job.yaml/adapter/metrics.json through pyarrow, and --resume finds the
    step-3 checkpoint by listing the URI."""
    from safetensors.torch import load_file

    from peft_ray.train.driver import run_train

    uri = f"file://{tmp_path}/uri-run"
    spec = _spec(tiny_bert, tiny_data, uri, **RESUME)
    monkeypatch.setenv("PEFT_RAY_FAIL_AT_STEP", "4")
    with pytest.raises(Exception):
        run_train(spec)
    monkeypatch.delenv("PEFT_RAY_FAIL_AT_STEP")
    assert checkpoint_step(latest_good_checkpoint(f"{uri}/ray", warn=print)) == 3
    downloads = set(Path(tempfile.gettempdir()).glob("peft-ray-resume-*"))
    metrics = run_train(spec, resume=True)
    # each worker fetched the checkpoint to resume, and deleted its copy once loaded
    assert set(Path(tempfile.gettempdir()).glob("peft-ray-resume-*")) == downloads
    assert metrics["step"] == 6 and metrics["adapter"] == f"{uri}/adapter"
    out = tmp_path / "uri-run"
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "adapter_last", "data_files.json", "job.yaml",
                                                      "metrics.json", "ray"]  # no temp names
    assert load_file(str(out / "adapter" / "adapter_model.safetensors"))["prompt_embeddings"].shape == (4, 32)
    assert checkpoint_step(latest_good_checkpoint(f"{uri}/ray", warn=print)) == 6
    assert len([d for d in (out / "ray").iterdir() if d.is_dir()]) == 1   # the interrupted run pruned, via pyarrow
    assert not Path("file:").exists()  # the URI never became a local folder


def test_submit_notes_a_relative_output_dir(tmp_path, tiny_bert, tiny_data):
    """The note was checked after the paths were made absolute, so it never showed."""
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "tiny.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out")))
    r = CliRunner().invoke(main, ["submit", str(job), "output.dir=runs/x", "--working-dir", str(tmp_path),
                                  "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "output.dir 'runs/x' is relative" in r.output


def _unreachable(monkeypatch, how: str):
    """pyarrow's from_uri as it behaves without the network: S3 raises, GCS hangs (no filesystem is built)."""
    import threading

    release = threading.Event()

    def from_uri(uri):
        if how == "raise":
            raise OSError("When resolving region for bucket 'bucket': AWS Error NETWORK_CONNECTION")
        release.wait(60)
        raise OSError("gave up")
    monkeypatch.setattr(location, "_open_and_look", from_uri)
    monkeypatch.setattr(location, "OPEN_TIMEOUT_S", 1)
    return release


@pytest.mark.parametrize("how, why", [("raise", "When resolving region for bucket 'bucket'"), ("hang", "no answer in 1 s")])
def test_unreachable_storage_is_a_named_error_not_a_traceback_or_a_hang(tiny_bert, tiny_data, monkeypatch, how, why):
    """A docs review finding: `validate` and `train` with output.dir=s3://... on a machine without
    the network ended in pyarrow's traceback, and gs://... hung with no output (GCS retries for
    minutes). Opening the storage is bounded and named; validate notes it, train refuses."""
    release = _unreachable(monkeypatch, how)
    with pytest.raises(JobError, match=rf"'s3://bucket/x': its storage could not be opened \({why}"):
        Location.at("s3://bucket/x")
    job = Path(tiny_data) / f"job-{how}.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, "gs://bucket/runs/x")))
    r = CliRunner().invoke(main, ["validate", str(job)])
    assert r.exit_code == 0, r.output
    assert f"note: output.dir 'gs://bucket/runs/x': its storage could not be opened ({why}" in r.output
    assert "whether it already holds a run was not checked" in r.output and "ok: tiny" in r.output
    r = CliRunner().invoke(main, ["train", str(job)])
    assert r.exit_code == 2 and f"error: output.dir 'gs://bucket/runs/x': its storage could not be opened ({why}" in r.output
    release.set()


def test_local_refuses_a_uri_output_dir_before_opening_it(tiny_bert, tiny_data, monkeypatch):
    """--local writes through local paths: the URI is refused before anything touches the network."""
    def from_uri(uri):
        raise AssertionError("opened")
    monkeypatch.setattr(location, "_open_and_look", from_uri)
    job = Path(tiny_data) / "job-local-uri.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, "s3://bucket/runs/x")))
    r = CliRunner().invoke(main, ["train", str(job), "--local"])
    assert r.exit_code == 2 and "--local writes its checkpoints through local paths" in r.output
