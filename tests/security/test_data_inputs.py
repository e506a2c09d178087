"""Bad data files fail in `peft-ray validate` (no Ray) with a message naming the file, the line
or link, and what to do."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.data import builtin
from tests.conftest import job_dict


def _validate(tmp_path, tiny_bert, data_root, train: str):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, data_root, tmp_path / "out",
                                           data={"train": train, "validation": None})))
    import ray

    before = ray.is_initialized()
    r = CliRunner().invoke(main, ["validate", str(job)])
    assert ray.is_initialized() == before
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    return r.output


def _rows(n=20):
    rows = builtin.make_rows(n, seed=3)
    return [{"text": t, "label": lab} for t, lab in zip(rows["text"], rows["label"])]


@pytest.mark.parametrize("sep,what", [(";", "semicolon"), ("\t", "tab")])
def test_other_csv_delimiter_is_named(tmp_path, tiny_bert, sep, what):
    lines = [f"text{sep}label"] + [f"{r['text']}{sep}{r['label']}" for r in _rows()]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    out = _validate(tmp_path, tiny_bert, tmp_path, "train.csv")
    assert "train.csv: the CSV header" in out and f"looks {what}-delimited" in out
    assert "comma-separated" in out and f"sep={sep!r}" in out


def test_malformed_json_lines_row_names_file_and_line(tmp_path, tiny_bert):
    lines = [json.dumps(r) for r in _rows()]
    lines[6] = '{"text": "a film", label: 1}'                 # line 7: an unquoted key
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    out = _validate(tmp_path, tiny_bert, tmp_path, "train.jsonl")
    assert "train.jsonl: line 7 is not valid JSON" in out and "double quotes" in out
    assert "label: 1" in out                                  # the line itself, so it can be found


def test_json_lines_row_that_is_not_an_object(tmp_path, tiny_bert):
    lines = [json.dumps(r) for r in _rows()] + ['["a film", 1]']
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    out = _validate(tmp_path, tiny_bert, tmp_path, "train.jsonl")
    assert "train.jsonl: line 21 is a JSON list, not an object" in out


def test_json_lines_column_that_changes_type(tmp_path, tiny_bert):
    rows = _rows()
    rows[4]["label"] = "positive"                             # others are 0/1 numbers
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = _validate(tmp_path, tiny_bert, tmp_path, "train.jsonl")
    assert "train.jsonl: line 5: 'label' is a string" in out and "line 1 has a number" in out


def _link_loop(d, a="train.parquet", b="other.parquet"):
    d.mkdir()
    (d / a).symlink_to(d / b)
    (d / b).symlink_to(d / a)
    return d


@pytest.mark.parametrize("train", ["train.parquet", "*.parquet"])   # named, or found by a glob
def test_symlink_loop_is_named(tmp_path, tiny_bert, train):
    out = _validate(tmp_path, tiny_bert, _link_loop(tmp_path / "data"), train)
    assert "data.train:" in out and "is a symbolic link loop" in out
    assert "train.parquet -> " in out and "other.parquet" in out


def test_symlink_loop_as_data_root(tmp_path, tiny_bert):
    (tmp_path / "root").symlink_to(tmp_path / "root")
    out = _validate(tmp_path, tiny_bert, tmp_path / "root", "train.parquet")
    assert "data.root:" in out and "is a symbolic link loop" in out


def test_dangling_symlink_is_named(tmp_path, tiny_bert):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.parquet").symlink_to(tmp_path / "gone.parquet")
    out = _validate(tmp_path, tiny_bert, d, "train.parquet")
    assert "is a symbolic link to something that does not exist" in out and "gone.parquet" in out
