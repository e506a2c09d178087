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


class _Marked(object):
    """Unpickling one of these writes its marker: the proof that reading the file ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    open(path, "w").write("ran")


def _pickled_column_files(tmp_path, marker):
    """train.parquet / train.feather whose `label` column is Ray Data's pickled-object type."""
    import pickle

    import pyarrow as pa
    import pyarrow.feather as pf
    import pyarrow.parquet as pq
    from ray.data._internal.object_extensions.arrow import ArrowPythonObjectType

    rows = _rows()
    label = ArrowPythonObjectType().wrap_array(pa.array([pickle.dumps(_Marked(marker))] * len(rows),
                                                        type=pa.large_binary()))
    table = pa.table({"text": [r["text"] for r in rows], "label": label})
    pq.write_table(table, tmp_path / "train.parquet")
    pf.write_feather(table, tmp_path / "train.feather")


@pytest.mark.parametrize("train", ["train.parquet", "train.feather"])
def test_extension_typed_column_is_refused_unread(tmp_path, tiny_bert, train):
    """A data file is data: Ray Data's pickled-object column would run code when its values are read."""
    marker = tmp_path / "ran"
    _pickled_column_files(tmp_path, marker)
    out = _validate(tmp_path, tiny_bert, tmp_path, train)
    assert "column 'label'" in out and "ray.data.arrow_pickled_object" in out and "Re-save" in out
    assert not marker.exists()


def test_readers_refuse_extension_types_even_when_registered(tmp_path):
    """Once ray.data is imported the type is registered and pyarrow would hand back live objects:
    both readers (pyarrow's for --local and pre-flight, the Ray Data datasource) refuse first."""
    import pyarrow as pa
    import ray.data  # noqa: F401  (registers the type)

    from peft_ray.data.arrow_ipc import ArrowIPCDatasource
    from peft_ray.data.columns import check_plain_columns
    from peft_ray.data.sources import iter_arrow
    from peft_ray.errors import DataError

    marker = tmp_path / "ran"
    _pickled_column_files(tmp_path, marker)
    for name in ("train.parquet", "train.feather"):
        with pytest.raises(DataError, match="extension type"):
            list(iter_arrow([str(tmp_path / name)]))
    reader = object.__new__(ArrowIPCDatasource)    # its __init__ would start Ray: only the read is tested
    reader.columns = None
    with open(tmp_path / "train.feather", "rb") as f, pytest.raises(DataError, match="extension type"):
        list(reader._read_stream(pa.PythonFile(f), "train.feather"))
    reader.columns = ["text"]                       # a column the job never reads is not refused
    with open(tmp_path / "train.feather", "rb") as f:
        assert [t.column_names for t in reader._read_stream(pa.PythonFile(f), "train.feather")] == [["text"]]
    assert sum(b.num_rows for b in iter_arrow([str(tmp_path / "train.parquet")], ["text"])) == len(_rows())
    nested = pa.schema([pa.field("x", pa.list_(pa.field("item", pa.int8(), metadata={
        b"ARROW:extension:name": b"some.ext"})))])
    with pytest.raises(DataError, match="some.ext"):
        check_plain_columns(nested, "f.arrow")
    assert not marker.exists()


def test_an_extension_typed_column_the_job_never_reads_passes(tmp_path, tiny_bert):
    """A Hugging Face `datasets` Array2D (or a pickled) column beside the text: only read columns count."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data._internal.object_extensions.arrow import ArrowPythonObjectType

    marker = tmp_path / "ran"
    rows = _rows(40)
    emb = ArrowPythonObjectType().wrap_array(pa.array([pickle.dumps(_Marked(marker))] * len(rows),
                                                      type=pa.large_binary()))
    pq.write_table(pa.table({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows], "emb": emb}),
                   tmp_path / "train.parquet")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tmp_path, tmp_path / "out",
                                           data={"train": "train.parquet", "validation": None})))
    r = CliRunner().invoke(main, ["validate", str(job)])
    assert r.exit_code == 0, r.output
    assert not marker.exists()


@pytest.mark.parametrize("make", ["fifo", "dev_zero"])
def test_a_data_file_that_is_no_regular_file_is_refused(tmp_path, tiny_bert, make):
    """A FIFO blocked `validate` for ever; a link to /dev/zero filled memory."""
    import os

    target = tmp_path / "train.csv"
    os.mkfifo(target) if make == "fifo" else target.symlink_to("/dev/zero")
    out = _validate(tmp_path, tiny_bert, tmp_path, "train.csv")
    assert "data.train:" in out and "train.csv' is not a regular file" in out


def test_a_glob_through_looping_links_stops_at_its_budget(tmp_path, tiny_bert):
    """Three links back to their own folder: glob.glob's walk of '*/' * 30 grows as 3**30."""
    for name in "abc":
        (tmp_path / name).symlink_to(".")
    out = _validate(tmp_path, tiny_bert, tmp_path, "*/" * 30 + "train.parquet")
    assert "data.train: the pattern" in out and "visits more than 100,000 files and folders" in out


def test_bounded_glob_matches_glob(tmp_path, monkeypatch):
    import glob

    from peft_ray.data.sources import bounded_glob

    for f in ("d/a.parquet", "d/b.csv", "d/.hidden.parquet", "d/sub/c.parquet", "e/sub/c.parquet"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "e")
    monkeypatch.chdir(tmp_path)
    for pattern in ("d/*.parquet", "d/*/*.parquet", "*/sub/c.parquet", "d/.*", "d/[ab].*", "d/a.parquet",
                    str(tmp_path / "d" / "*"), "x/*", "d/../e/*/*"):
        assert sorted(bounded_glob(pattern, "data.train")) == sorted(glob.glob(pattern)), pattern


def test_a_row_of_more_text_than_any_model_reads_is_refused(tmp_path, tiny_bert):
    """18 KB of zstd Parquet held 200 MB of text in one row, and the tokenizer aborted at 13 GB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows()
    texts = [r["text"] for r in rows]
    texts[7] = "good " * 20_001                                    # 100,005 characters
    pq.write_table(pa.table({"text": texts, "label": [r["label"] for r in rows]}), tmp_path / "train.parquet",
                   compression="zstd")
    pq.write_table(pa.table({"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}),
                   tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"text": texts, "label": [r["label"] for r in rows]}), tmp_path / "part-1.parquet")
    out = _validate(tmp_path, tiny_bert, tmp_path, "train.parquet")
    assert "data.train (" in out and "row 7 holds 100,005 characters in column 'text', more than the 100,000" in out
    out = _validate(tmp_path, tiny_bert, tmp_path, "part-*.parquet")          # the file that holds it, its row
    assert f"data.train ({tmp_path / 'part-1.parquet'}): row 7 holds 100,005 characters" in out


@pytest.mark.parametrize("name", ["train.csv", "train.jsonl"])
def test_a_row_longer_than_the_readers_block_is_named(tmp_path, tiny_bert, name):
    """A security-review finding: a 3,000,000-character CSV row gave pyarrow's "straddling object
    straddles two block boundaries" and "check the file is complete", naming no row."""
    rows = _rows()
    rows[4]["text"] = "x" * 3_000_000
    if name.endswith(".csv"):
        import csv

        with open(tmp_path / name, "w", newline="") as f:
            csv.DictWriter(f, ["text", "label"]).writeheader()
            csv.DictWriter(f, ["text", "label"]).writerows(rows)
    else:
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _validate(tmp_path, tiny_bert, tmp_path, name)
    line = 6 if name.endswith(".csv") else 5
    assert f"{name}: line {line} is longer than 1 MiB, which no row may be" in out and "straddl" not in out


def test_a_list_column_of_more_text_than_any_model_reads_is_refused():
    """NER's tokens are a list of strings: 300,000 tokens in one row passed."""
    import pyarrow as pa

    from peft_ray.data.columns import check_text_lengths
    from peft_ray.errors import DataError

    table = pa.table({"tokens": [["EU", "rejects"], ["x"] * 100_001], "tags": [["B-ORG", "O"], ["O"] * 100_001]})
    with pytest.raises(DataError, match="f.parquet: row 1 holds 100,001 characters in column 'tokens'"):
        check_text_lengths(table, ["tokens"], 64, "f.parquet", 0)
    check_text_lengths(table.slice(0, 1), ["tokens"], 64, "f.parquet", 0)


def test_ids_read_as_text_count_and_the_stray_value_is_named(tmp_path, tiny_bert):
    """One stray word makes a CSV label column text: every "1" was named as not a label."""
    rows = _rows()
    lines = ["text,label"] + [f'"{r["text"]}",{r["label"]}' for r in rows]
    lines[12] = "a fine film,pos"
    lines[20] = "another,neu"
    (tmp_path / "stray.csv").write_text("\n".join(lines) + "\n")
    out = _validate(tmp_path, tiny_bert, tmp_path, "stray.csv")
    assert "label 'pos' is not in task.labels" in out
    # the file's row (header not counted)
    assert "in row 11 (0-based), and 1 more row with a label not in task.labels among the rows read with it" in out
    joined = lines[:8] + ["text,label"] + lines[8:]
    (tmp_path / "joined.csv").write_text("\n".join(joined) + "\n")
    out = _validate(tmp_path, tiny_bert, tmp_path, "joined.csv")
    assert "label 'label' is not in task.labels" in out and "a repeated header line" in out


def test_label_ids_written_as_text():
    from peft_ray.rows.labels import label_ids

    assert label_ids(["1", "0", "positive", 1], ("negative", "positive"), "label").tolist() == [1, 0, 1, 1]
    assert label_ids(["1", "0"], ("0", "1"), "label").tolist() == [1, 0]       # names come first
    with pytest.raises(Exception, match="label '2' is not in task.labels"):
        label_ids(["2"], ("negative", "positive"), "label")


def test_numbers_are_read_as_numeric_label_names_however_a_file_stores_them():
    """Star ratings ['1', '2', '3', '4'] in a CSV (read as integers): 1 was read as id 1, the name '2',
    so every gold label was shifted by one without a word (an edge-case review)."""
    import numpy as np

    from peft_ray.rows.labels import has_value, label_ids

    stars = ("1", "2", "3", "4")
    assert label_ids([1, "1", 2, 4.0, "4"], stars, "label").tolist() == [0, 0, 1, 3, 3]
    with pytest.raises(Exception, match=r"label 0 is not in task.labels .*read as those names, never as ids"):
        label_ids([0], stars, "label")
    # pandas' float64 label column (one missing value): whole numbers are the ids, NaN is no label
    assert label_ids([0.0, 1.0], ("negative", "positive"), "label").tolist() == [0, 1]
    assert not has_value(float("nan")) and not has_value(np.float32("nan"))


def test_a_nan_label_is_a_row_without_a_label(tmp_path, tiny_bert):
    """numpy and polars write a missing float as NaN, not null: the pre-flight kept such a row and
    then refused the file (`label nan is not in task.labels`); it is skipped and counted, as a null."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peft_ray.preflight import run_preflight
    from peft_ray.spec import validate_spec

    labels = np.array([1.0, 0.0] * 20)
    labels[3] = np.nan
    table = pa.table({"text": ["good film", "bad film"] * 20, "label": pa.array(labels, from_pandas=False)})
    pq.write_table(table, tmp_path / "train.parquet")
    pq.write_table(table, tmp_path / "validation.parquet")
    pre = run_preflight(validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out")))
    assert pre.train.skipped == 1 and pre.train.usable == 39


def test_predict_through_ray_refuses_an_extension_column_in_any_input_file_before_ray(tmp_path, tiny_bert,
                                                                                        tiny_data, monkeypatch):
    """--local refused it as it read; through Ray, Ray Data's read_parquet read every column in its
    workers and a RayTaskError came back. Now every file's stored schema is checked before Ray."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    import peft_ray.inference
    from peft_ray.spec import validate_spec
    from peft_ray.train.local import run_local

    run = tmp_path / "run"
    run_local(validate_spec(job_dict(tiny_bert, tiny_data, run, scaling={"num_workers": 1},
                                     train={"max_steps": 1, "eval_every": 1})))
    marker = tmp_path / "ran"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _pickled_column_files(inputs, marker)
    (inputs / "train.feather").unlink()
    (inputs / "train.parquet").rename(inputs / "b.parquet")             # the second file: the first is clean
    pq.write_table(pa.table({"text": [r["text"] for r in _rows()]}), inputs / "a.parquet")

    def no_ray(*a, **k):
        raise AssertionError("Ray started")
    monkeypatch.setattr(peft_ray.inference, "ray_session", no_ray)
    before = ray.is_initialized()
    r = CliRunner().invoke(main, ["predict", str(run), "--input", str(inputs), "--output", str(tmp_path / "p.jsonl")])
    assert r.exit_code == 2, r.output
    assert "b.parquet: column 'label'" in r.output and "ray.data.arrow_pickled_object" in r.output
    assert "Traceback" not in r.output and ray.is_initialized() == before and not marker.exists()


def test_every_file_of_a_split_is_checked_not_only_the_first(tmp_path, tiny_bert):
    """Shards with `label` int64 in one and string in the next passed validate and crashed Ray Data's
    read after the cluster started; a later shard without `text` gave predict null predictions; an
    int `text` column was predicted on as digits. All are named before any model or Ray."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peft_ray.errors import DataError
    from peft_ray.inference import check_columns
    from peft_ray.spec import validate_spec

    (tmp_path / "mixed").mkdir()
    (tmp_path / "cut").mkdir()
    good = {"text": ["good film", "bad film"] * 8, "label": [1, 0] * 8}
    pq.write_table(pa.table(good), tmp_path / "mixed" / "a.parquet")
    pq.write_table(pa.table({**good, "label": ["positive", "negative"] * 8}), tmp_path / "mixed" / "b.parquet")
    pq.write_table(pa.table(good), tmp_path / "cut" / "a.parquet")
    pq.write_table(pa.table({"sentence": good["text"], "label": good["label"]}), tmp_path / "cut" / "b.parquet")
    pq.write_table(pa.table({**good, "text": list(range(16))}), tmp_path / "int_text.parquet")
    out = _validate(tmp_path, tiny_bert, tmp_path, "mixed/*.parquet")
    assert "column 'label' holds int64 in" in out and "mixed/a.parquet but string in" in out and "b.parquet" in out
    out = _validate(tmp_path, tiny_bert, tmp_path, "cut/*.parquet")
    assert "column 'text' is not in" in out and "cut/b.parquet" in out
    # widths and encodings merge (Ray Data's reads merge them too): never refused
    (tmp_path / "wide").mkdir()
    pq.write_table(pa.table(good), tmp_path / "wide" / "a.parquet")
    pq.write_table(pa.table({"text": pa.array(good["text"], pa.large_string()), "label": pa.array(good["label"], pa.int32())}),
                   tmp_path / "wide" / "b.parquet")
    from peft_ray.preflight.columns import check_files_agree

    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out"))
    check_files_agree([str(tmp_path / "wide" / f) for f in ("a.parquet", "b.parquet")], spec, "data.train")
    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out"))
    for files, says in (([str(tmp_path / "mixed" / f) for f in ("a.parquet", "b.parquet")], "holds int64 in"),
                        ([str(tmp_path / "int_text.parquet")], "holds int64, not text")):
        with pytest.raises(DataError, match=says):
            check_columns(files, ["text"], "--input", spec, every_column=True)


def test_zero_shot_checks_no_training_data_it_never_reads(tmp_path, tiny_bert, tiny_data):
    """zero-shot refused a job whose train file was missing or under one batch, though it scores only
    the validation split; a hold-out still reads the training files it is drawn from."""
    from peft_ray.errors import DataError
    from peft_ray.preflight import run_preflight
    from peft_ray.spec import validate_spec

    spec = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "out", data={"train": "missing.parquet"}))
    pre = run_preflight(spec, training=False)
    assert pre.train is None and pre.validation.usable == 70 and pre.total_steps == 0
    with pytest.raises(DataError, match="data.train"):
        run_preflight(spec)
    held = validate_spec(job_dict(tiny_bert, tiny_data, tmp_path / "out",
                                  data={"validation": None, "validation_fraction": 0.25}))
    assert run_preflight(held, training=False).validation.usable > 0


def test_labels_given_as_names_in_one_file_and_ids_in_another_are_refused(tiny_bert, tmp_path):
    """A new-user review: train labelled by name and validation by id trained fine, and reordering
    task.labels turned validation's labels over (accuracy 1.0 -> 0.0) with nothing said."""
    from peft_ray.errors import DataError
    from peft_ray.preflight import run_preflight
    from peft_ray.spec import validate_spec
    from tests.conftest import job_dict, write_rows

    texts = [f"{'good' if i % 2 else 'bad'} film {i}" for i in range(64)]
    write_rows(tmp_path / "train.parquet", {"text": texts,
                                            "label": ["positive" if i % 2 else "negative" for i in range(64)]})
    write_rows(tmp_path / "validation.parquet", {"text": texts[:20], "label": [i % 2 for i in range(20)]})
    job = job_dict(tiny_bert, tmp_path, tmp_path / "out", task={"type": "classification",
                                                                 "labels": ["positive", "negative"]})
    with pytest.raises(DataError, match=r"data.validation \(.*validation.parquet\) gives labels as ids \(e.g. 0\) and "
                                        r"data.train \(.*train.parquet\) as names \(e.g. 'negative'\). An id is read "
                                        r"as a position in task.labels \(0 = 'positive', 1 = 'negative'\)"):
        run_preflight(validate_spec(job))
    write_rows(tmp_path / "validation.parquet", {"text": texts[:20], "label": ["negative", "positive"] * 10})
    assert run_preflight(validate_spec(job)).validation.label_kinds.keys() == {"name"}


@pytest.mark.parametrize("name, writes, said", [
    ("rows.jsonl", "parquet", "look like parquet, not json"),
    ("rows.csv", "parquet", "look like parquet, not csv"),
    ("rows.csv", "jsonl", "look like JSON Lines, not csv"),
    ("rows.jsonl", "csv", "look like CSV, not json"),
])
def test_a_file_holding_another_format_is_named_as_such(tmp_path, name, writes, said):
    """A new-user review: Parquet saved as .jsonl was 'not UTF-8 text ... iconv' (which would corrupt
    it), and JSON Lines saved as .csv read as columns named '{"text": ...'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peft_ray.data.sources import iter_arrow
    from peft_ray.errors import DataError

    rows = pa.table({"text": ["good film", "bad film"], "label": [1, 0]})
    path = tmp_path / name
    if writes == "parquet":
        pq.write_table(rows, path)
    else:
        path.write_text('{"text": "good film", "label": 1}\n' if writes == "jsonl" else "text,label\ngood film,1\n")
    with pytest.raises(DataError, match=f"{name}: cannot read as .*; its bytes {said}: give the file the extension"):
        list(iter_arrow([str(path)]))


def test_a_split_named_none_says_to_write_null(tmp_path):
    from peft_ray.data.sources import resolve_files
    from peft_ray.errors import DataError

    (tmp_path / "train.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="no file matches 'None' under data.root .*; for no file, write null"):
        resolve_files(str(tmp_path), "None", "data.validation")


def test_a_label_in_another_case_gets_the_name_it_likely_means():
    from peft_ray.errors import DataError
    from peft_ray.rows.labels import label_ids

    with pytest.raises(DataError, match=r"label 'Positive ' is not in task.labels \['negative', 'positive'\] \(did you "
                                        r"mean 'positive'\? names match exactly, case and spaces included\) in row 1 \(0-based\)"):
        label_ids(["negative", "Positive ", "NEGATIVE"], ("negative", "positive"), "label", rows=[0, 1, 2])


@pytest.mark.parametrize("values, says", [
    ([["great", "movie"]], r"a list of words: df\['text'\] = df\['text'\].str.join\(' '\)"),
    ([{"body": "great"}], r"a struct: pick its text field, df\['text'\] = df\['text'\].str\['FIELD'\]"),
    ([b"great"], r"bytes: df\['text'\] = df\['text'\].str.decode\('utf-8'\)"),
    ([3], r"df\['text'\] = df\['text'\].astype\(str\)"),
])
def test_a_text_column_of_another_type_gets_the_conversion_for_its_type(tiny_bert, tmp_path, values, says):
    """astype(str), the one advice given, turns a list into the text "['great', 'movie']" (a new-user
    review): each type gets its own conversion."""
    import pyarrow as pa

    from peft_ray.errors import DataError
    from peft_ray.preflight.columns import check_columns
    from peft_ray.spec import validate_spec

    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out"))
    with pytest.raises(DataError, match=says):
        check_columns(pa.table({"text": values, "label": [0]}).schema, spec, "f.parquet")
