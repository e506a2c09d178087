"""Atomic writes cannot be redirected by a planted link."""

from __future__ import annotations

from peft_ray.storage import Location, atomic_write


def test_planted_link_at_the_old_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".job.yaml.tmp").symlink_to(victim)        # the fixed name writes used to go through
    Location.at(out / "job.yaml").write_text("name: x\n")
    assert victim.read_text() == "keep"
    assert (out / "job.yaml").read_text() == "name: x\n"


def test_link_at_the_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "metrics.json").symlink_to(victim)
    atomic_write(tmp_path / "metrics.json", b"{}")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "metrics.json").is_symlink()


def test_temp_files_leave_nothing_behind(tmp_path):
    atomic_write(tmp_path / "a.json", b"{}")
    atomic_write(tmp_path / "a.json", b"[]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert (tmp_path / "a.json").read_bytes() == b"[]"


def test_folder_swap_uses_unpredictable_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "w").write_text("new")
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / ".adapter.tmp").symlink_to(victim)     # the fixed names replace_with used to use
    (tmp_path / ".adapter.old").symlink_to(victim)
    Location.at(tmp_path / "adapter").replace_with(Location.at(src))
    assert (tmp_path / "adapter" / "w").read_text() == "new"
    assert list(victim.iterdir()) == []


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    return victim


def test_builtin_data_ignores_a_link_at_the_old_temp_name(tmp_path):
    from peft_ray.data import builtin

    victim, out = _victim(tmp_path), tmp_path / "data"
    out.mkdir()
    (out / ".train.parquet.tmp").symlink_to(victim)
    builtin.materialize(out, name="sentiment")
    assert victim.read_text() == "keep"
    assert (out / "train.parquet").stat().st_size > 0 and not (out / "train.parquet").is_symlink()


def test_predict_output_ignores_a_link_at_the_old_partial_name(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peft_ray.data.sinks import open_sink

    victim = _victim(tmp_path)
    (tmp_path / ".preds.parquet.partial").symlink_to(victim)
    with open_sink(tmp_path / "preds.parquet") as write:
        write(pa.table({"prediction": ["positive"]}))
    assert victim.read_text() == "keep"
    assert pq.read_table(tmp_path / "preds.parquet").column("prediction").to_pylist() == ["positive"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".preds.parquet.partial", "preds.parquet", "victim.txt"]


def test_tune_scores_ignore_a_link_at_the_old_temp_name(tmp_path):
    import json

    from peft_ray.tune.report import SCORES_FILE, TRIAL_FILE, TuneReporter

    victim = _victim(tmp_path)
    (tmp_path / TRIAL_FILE).write_text(json.dumps({"metric": "accuracy", "mode": "max"}))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / f".{SCORES_FILE}.tmp").symlink_to(victim)
    TuneReporter(str(tmp_path), keep=2, resume_from=None)._record_score({"accuracy": 0.75, "step": 3})
    assert victim.read_text() == "keep"
    assert json.loads((tmp_path / "checkpoints" / SCORES_FILE).read_text()) == {"checkpoint_00000003": 0.75}


def test_staging_dir_is_unpredictable_and_keeps_the_umask_mode(tmp_path):
    import os

    from peft_ray.storage import staging_dir

    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / ".model.tmp").symlink_to(victim)
    with staging_dir(tmp_path / "model") as tmp:
        tmp.mkdir()
        (tmp / "w").write_text("new")
        tmp.rename(tmp_path / "model")
    assert list(victim.iterdir()) == []
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.tmp", "model", "victim"]


def test_adapter_writes_ignore_links_at_the_old_pid_names(tmp_path):
    """write_adapter builds in a random staging folder and moves the old adapter aside under a
    random name: links planted at the old pid-based names are never written through."""
    import os

    import torch
    from safetensors.torch import load_file

    from peft_ray.adapter import write_adapter

    elsewhere, out = tmp_path / "elsewhere", tmp_path / "runs" / "adapter"
    elsewhere.mkdir()
    cfg = {"peft_type": "LORA", "task_type": "SEQ_CLS", "base_model_name_or_path": "x"}
    write_adapter(out, {"w": torch.ones(2)}, cfg, {})
    for name in (f".adapter.tmp-{os.getpid()}", f".adapter.old-{os.getpid()}"):
        (out.parent / name).symlink_to(elsewhere, target_is_directory=True)
    write_adapter(out, {"w": torch.zeros(2)}, cfg, {})
    assert list(elsewhere.iterdir()) == []
    assert load_file(str(out / "adapter_model.safetensors"))["w"].sum() == 0
    assert [p.name for p in out.parent.iterdir() if not p.is_symlink()] == ["adapter"]  # no stage left


def test_data_make_never_writes_over_other_data_and_names_its_set(tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from peft_ray.cli import main

    out = tmp_path / "dm"
    out.mkdir()
    (out / "train.parquet").write_text("the user's own rows")
    r = CliRunner().invoke(main, ["data", "make", "sentiment", str(out)])
    assert r.exit_code == 2 and "already holds train.parquet, which `peft-ray data make` did not write" in r.output
    assert (out / "train.parquet").read_text() == "the user's own rows"

    out = tmp_path / "made"
    assert CliRunner().invoke(main, ["data", "make", "sentiment", str(out)]).exit_code == 0
    assert CliRunner().invoke(main, ["data", "make", "facts", str(out)]).exit_code == 0
    assert pq.read_table(out / "train.parquet").column_names == ["question", "answer"]   # was kept as sentiment
    assert sorted(p.name for p in out.glob(".complete-*")) == [".complete-facts-v1"]


def test_a_built_in_data_make_cut_short_in_the_cache_is_made_again(tmp_path):
    import pyarrow.parquet as pq

    from peft_ray.data import builtin

    out = tmp_path / "cache" / "sentiment-v1"
    out.mkdir(parents=True)
    (out / "train.parquet").write_text("half written")          # a killed make: no marker yet
    builtin.materialize(out, name="sentiment")
    assert pq.read_table(out / "train.parquet").num_rows == 3000
