"""The CLI: --help teaches, validate checks like train, bad input fails before Ray starts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from tests.conftest import job_dict, write_rows


def _job(tmp_path, tiny_bert, tiny_data, **sections):
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out", **sections)))
    return str(p)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["validate", "--help"]])
def test_help(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0
    assert "peft-ray" in r.output or "JOB" in r.output
    if args[0] == "train":
        assert "train.max_steps=20" in r.output and "--resume" in r.output


def test_help_prose_is_wrapped_cleanly():
    """Every command's description re-wraps without a docstring's indent left inside a line."""
    import re

    for name in ["", *main.commands]:
        r = CliRunner().invoke(main, [*([name] if name else []), "--help"], terminal_width=80)
        assert r.exit_code == 0, name
        prose = r.output.split("Options:")[0]
        assert not re.search(r"[\w,.)]   +\w", prose), (name, prose)


def test_validate_ok_with_overrides(tmp_path, tiny_bert, tiny_data):
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data), "train.max_steps=3",
                                  "deepspeed.zero_stage=3"])
    assert r.exit_code == 0, r.output
    assert "ok: tiny" in r.output and "3 steps" in r.output and "ZeRO-3" in r.output


def _bad_cases(tmp_path, tiny_bert, tiny_data):
    empty = write_rows(tmp_path / "empty" / "train.parquet", {"text": [], "label": []})
    one = write_rows(tmp_path / "one" / "train.parquet", {"text": ["a", "b"], "label": [1, 1]})
    badlab = write_rows(tmp_path / "bad" / "train.parquet", {"text": ["a", "b"], "label": [0, 7]})
    return {
        "missing column": ({"template": {"text": "{soft} {sentence}"}}, "column 'sentence'"),
        "missing model": ({"model": {"name_or_path": str(tmp_path / "nope")}}, "does not exist"),
        "empty dataset": ({"data": {"root": str(empty.parent), "validation": None}}, "has no rows"),
        "single class": ({"data": {"root": str(one.parent), "validation": None}}, "two classes"),
        "label outside set": ({"data": {"root": str(badlab.parent), "validation": None}},
                              "label 7 is not in task.labels"),
        "missing file": ({"data": {"train": "nope.parquet"}}, "data.train: no file matches"),
    }


@pytest.mark.parametrize("case", ["missing column", "missing model", "empty dataset", "single class",
                                  "label outside set", "missing file"])
def test_bad_input_fails_before_ray(tmp_path, tiny_bert, tiny_data, case):
    sections, expected = _bad_cases(tmp_path, tiny_bert, tiny_data)[case]
    job = _job(tmp_path, tiny_bert, tiny_data, **sections)
    import ray

    ray_before = ray.is_initialized()  # another test's shared runtime may be up already
    for cmd in ("validate", "train"):
        r = CliRunner().invoke(main, [cmd, job])
        assert r.exit_code == 2, r.output
        assert expected in r.output
    assert ray.is_initialized() == ray_before


@pytest.mark.parametrize("name", ["train.csv", "train.jsonl"])
def test_a_zero_byte_csv_or_json_lines_file_is_said_to_be_empty(tmp_path, tiny_bert, tiny_data, name):
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / name).write_bytes(b"")
    job = _job(tmp_path, tiny_bert, tiny_data, data={"root": str(tmp_path / "zero"), "train": name, "validation": None})
    r = CliRunner().invoke(main, ["validate", job])
    assert r.exit_code == 2
    assert f"data.train: {tmp_path / 'zero' / name}: the file is empty (no rows)" in r.output, r.output


def test_a_missing_data_folder_or_file_is_named_with_what_is_there(tmp_path, tiny_bert, tiny_data):
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data), f"data.root={tmp_path / 'nope'}"])
    assert r.exit_code == 2 and f"data.root: '{tmp_path / 'nope'}' is not a folder here" in r.output, r.output
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data), "data.validation=valid.parquet"])
    assert r.exit_code == 2 and ("data.validation: no file matches 'valid.parquet' under data.root "
                                 f"'{tiny_data}' (did you mean 'validation.parquet'?); the data files in it: ") in r.output
    (tmp_path / "sub" / "train").mkdir(parents=True)
    (tmp_path / "sub" / "train" / "part-0.parquet").write_bytes((tiny_data / "train.parquet").read_bytes())
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data), f"data.root={tmp_path / 'sub'}",
                                  "data.train=train/part-1.parquet"])
    assert "(did you mean 'part-0.parquet'?); the data files in 'train': part-0.parquet" in r.output, r.output


def test_validate_notes_a_dashboard_url_as_ray_address_that_train_would_refuse(tmp_path, tiny_bert, tiny_data,
                                                                               monkeypatch):
    """docs/cluster.md has submit users export the dashboard URL as RAY_ADDRESS: validate checks the
    job all the same, and says that `train` in this shell would refuse it. In the job, it is an error."""
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data)])
    assert r.exit_code == 0 and "note: $RAY_ADDRESS 'http://127.0.0.1:8265' is a Ray dashboard URL" in r.output
    assert "`peft-ray train` in this shell would refuse it" in r.output and "ok: tiny" in r.output
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data), "scaling.address=http://h:8265"])
    assert r.exit_code == 2 and "scaling.address 'http://h:8265' is a Ray dashboard URL" in r.output, r.output


def test_too_many_workers_is_a_message(tmp_path, tiny_bert, tiny_data):
    import os

    n = (os.cpu_count() or 1) * 2
    job = _job(tmp_path, tiny_bert, tiny_data, scaling={"num_workers": n}, train={"batch_size": 8 * n})
    r = subprocess.run([sys.executable, "-m", "peft_ray.cli", "train", job], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert f"scaling.num_workers={n}" in r.stderr


def test_output_dir_of_another_run_is_refused(tmp_path, tiny_bert, tiny_data):
    job = _job(tmp_path, tiny_bert, tiny_data)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "job.yaml").write_text("name: other\n")
    r = CliRunner().invoke(main, ["train", job])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_uncached_hub_id_is_a_clear_error():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "peft_ray.cli", "validate", "jobs/default.yaml",
                        "model.name_or_path=bert-base-uncased"], capture_output=True, text=True,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2
    assert "model.name_or_path: 'bert-base-uncased'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) <= 2


def test_the_commands_submit_prints_reach_the_same_cluster():
    from peft_ray.commands.jobs import _address_arg

    assert _address_arg("http://10.0.0.5:28265") == " --address http://10.0.0.5:28265"
    assert _address_arg(None) == ""                  # the default or RAY_ADDRESS: the same next time


def test_validate_checks_a_tune_section_and_notes_a_held_output_dir(tmp_path):
    """validate said ok for a search `tune` refuses at once, and for a folder `train` refuses."""
    r = CliRunner().invoke(main, ["validate", "jobs/default.yaml", 'tune.template.text=["{soft} {txet}"]'])
    assert r.exit_code == 2 and "tune.template.text[0]: template.text: column 'txet'" in r.output
    r = CliRunner().invoke(main, ["validate", "jobs/default.yaml", "tune.space.train.lrr={grid: [0.01]}"])
    assert r.exit_code == 2 and "tune.space.train.lrr: no field 'lrr' in train" in r.output
    (tmp_path / "job.yaml").write_text("name: default\n")
    r = CliRunner().invoke(main, ["validate", "jobs/default.yaml", f"output.dir={tmp_path}"])
    assert r.exit_code == 0 and "already holds a run: `peft-ray train` needs --resume" in r.output


def test_rays_log_dedup_is_off_for_every_command_unless_the_user_set_it(tmp_path, tiny_bert, tiny_data, monkeypatch):
    """A review finding: Ray folded lines that differ only in digits, so one tune trial's eval line
    stood for another's ("[repeated 2x across cluster]") and steps came out of order."""
    import os

    monkeypatch.delenv("RAY_DEDUP_LOGS", raising=False)
    assert CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data)]).exit_code == 0
    assert os.environ["RAY_DEDUP_LOGS"] == "0"
    monkeypatch.setenv("RAY_DEDUP_LOGS", "1")
    CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data)])
    assert os.environ["RAY_DEDUP_LOGS"] == "1"


def test_more_workers_than_cpus_is_refused_before_output_dir_is_made(tmp_path, tiny_bert, tiny_data, monkeypatch):
    """A review finding: the CPU check ran in init_ray, after output.dir and train.log were made;
    validate said ok. validate now notes it (the job may be meant for a cluster)."""
    import os

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    workers = (os.cpu_count() or 1) + 1
    too_many = f"scaling.num_workers={workers}"
    job = _job(tmp_path, tiny_bert, tiny_data, train={"batch_size": 4 * workers})
    r = CliRunner().invoke(main, ["train", job, too_many])
    assert r.exit_code == 2 and "CPUs but this machine has" in r.output, r.output
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(main, ["validate", job, too_many])
    assert r.exit_code == 0 and "note: scaling.num_workers=" in r.output, r.output


def test_a_bad_value_is_quoted_once(tmp_path, tiny_bert, tiny_data):
    """A review finding: "must be 1, 2 or 3, got 4 (got 4)"."""
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data), "deepspeed.zero_stage=4"])
    assert r.exit_code == 2 and r.output.count("got 4") == 1, r.output


@pytest.mark.parametrize("name,hint", [("minlm", "did you mean the alias 'minilm'"),
                                       ("smolm2", "did you mean the alias 'smollm2'"),
                                       ("org/not-cached-model", "hf download org/not-cached-model"),
                                       ("llama2", "hf download llama2"),        # not an alias typo
                                       ("SmolLM2-360M", "hf download SmolLM2-360M")])
def test_a_model_name_that_is_nowhere_gets_the_right_hint(tmp_path, tiny_bert, tiny_data, name, hint):
    """A review finding: a typo of an alias was told to download the typo."""
    r = CliRunner().invoke(main, ["validate", _job(tmp_path, tiny_bert, tiny_data), f"model.name_or_path={name}"])
    assert r.exit_code == 2 and hint in r.output, r.output
