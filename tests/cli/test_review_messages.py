"""Messages a new-user review found wrong or missing (twenty-seventh session): each names the
field and what to do, and says it before any Ray or training work."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import SpecError
from peft_ray.spec import load_spec
from tests.conftest import job_dict


def _validate(tmp_path, tiny_bert, tiny_data, *overrides, **sections):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out", **sections)))
    return CliRunner().invoke(main, ["validate", str(job), *overrides])


def test_a_validators_own_message_is_kept_whole():
    """It was cut to 80 characters (`a data value is re...`) with its value quoted twice."""
    with pytest.raises(SpecError) as e:
        load_spec(None, ["task.labels=[-1, 1]"])
    assert "to use them as names" in str(e.value) and str(e.value).count("(got [-1, 1])") == 1


@pytest.mark.parametrize("override,says", [("template.text=123", "as a number, not text"),
                                           ("template.text=true", "as true/false, not text"),
                                           # config_model: never told to quote itself (a folder "null")
                                           ("output.dir=null", r"got null, .*leave the key out for its default"),
                                           ("template.text=Review: {text}", "as a mapping or list")])
def test_the_quoting_hint_says_what_yaml_read(override, says):
    """`output.dir=null` was told to quote itself, which would make a folder named "null"."""
    with pytest.raises(SpecError, match=says):
        load_spec(None, [override])


def test_an_empty_hold_out_is_named_as_such(tmp_path, tiny_bert, tiny_data):
    """It said the training file `has no rows` (it has 256)."""
    r = _validate(tmp_path, tiny_bert, tiny_data, "data.validation=null", "data.validation_fraction=0.0001")
    assert r.exit_code == 2 and "held out none of them; raise data.validation_fraction" in r.output, r.output


def test_a_train_pattern_that_reads_the_validation_file_is_noted(tmp_path, tiny_bert, tiny_data):
    r = _validate(tmp_path, tiny_bert, tiny_data, "data.train=*.parquet")
    assert r.exit_code == 0 and "both read" in r.output and "scores rows the model trains on" in r.output


def test_gpu_workers_on_a_machine_without_them_are_refused_before_ray(tmp_path, tiny_bert, tiny_data):
    """`train` failed after Ray had started; `validate` said ok without a word."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out")))
    r = CliRunner().invoke(main, ["validate", str(job), "scaling.use_gpu=true"])
    assert r.exit_code == 0 and "note: scaling.use_gpu" in r.output and "has 0" in r.output
    r = CliRunner().invoke(main, ["train", str(job), "scaling.use_gpu=true"])
    assert r.exit_code == 2 and "need as many GPUs but this machine has 0" in r.output
    assert not (tmp_path / "out").exists()


def test_a_csv_saved_as_parquet_is_named_by_what_it_holds(tmp_path):
    from peft_ray.data.sources import read_schema
    from peft_ray.errors import DataError

    fake = tmp_path / "train.parquet"
    fake.write_text("text,label\na good film,1\n")
    with pytest.raises(DataError, match=r"its bytes look like text \(CSV or JSON Lines\), not parquet"):
        read_schema([str(fake)])


def test_evals_data_folder_hint_names_no_override_it_cannot_take(tmp_path):
    from peft_ray.data.sources import resolve_files
    from peft_ray.errors import DataError

    with pytest.raises(DataError, match="--data must hold the run's file 'validation.parquet'") as e:
        resolve_files(str(tmp_path), "validation.parquet", "--data", root_field="--data")
    assert "data.root=FOLDER" not in str(e.value)


def test_validate_says_how_many_rows_max_length_cuts(tmp_path, tiny_bert, tiny_data):
    """A new-user review: a max_length that cut every row passed `validate` without a word (only the
    run's summary counted them)."""
    r = _validate(tmp_path, tiny_bert, tiny_data, "model.max_length=8")
    assert r.exit_code == 0, r.output
    import re

    assert re.search(r"note: model.max_length 8 cuts 2\d\d of the first 256 training rows \(\d+%\)", r.output), r.output
    assert "cuts" not in _validate(tmp_path, tiny_bert, tiny_data, "model.max_length=64").output


def test_a_train_refused_by_its_pre_flight_says_why_in_the_log_it_points_to(tmp_path, tiny_bert, tiny_data):
    """A new-user review (thirty-fourth session): `train` with a data.root that is not there said
    "the run's full output is in .../train.log", and that log held only its header line."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, tmp_path / "out")))
    r = CliRunner().invoke(main, ["train", str(job), f"data.root={tmp_path / 'nowhere'}", "--local"])
    assert r.exit_code != 0 and "error: data.root" in r.output, r.output
    log = (tmp_path / "out" / "train.log").read_text()
    assert log.startswith("==== ") and "error: data.root:" in log and str(tmp_path / "nowhere") in log
