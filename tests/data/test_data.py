"""Data sources, formats, the Ray Data pipeline and bad files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from peft_ray.data import builtin
from peft_ray.tasks.classification.rows import ClassificationRows, head_rows
from peft_ray.errors import DataError, SpecError
from peft_ray.preflight import run_preflight
from peft_ray.spec import validate_spec
from tests.conftest import job_dict, write_rows


def _pp(tiny_bert, **kw):
    return ClassificationRows(tokenizer_path=str(tiny_bert), template=kw.get("template", "{soft} {text}"),
                            label_column="label", labels=("negative", "positive"),
                            max_length=kw.get("max_length", 32))


def test_builtin_is_deterministic_and_not_trivial():
    a, b = builtin.make_rows(200, seed=3), builtin.make_rows(200, seed=3)
    assert a == b
    assert sum(" not " in t for t in a["text"]) > 30 and sum(" but " in t for t in a["text"]) > 10
    assert 0.35 < sum(a["label"]) / 200 < 0.65


def test_preprocess_renders_tokenizes_and_skips_bad_rows(tiny_bert):
    table = pa.table({"text": ["the film was good .", None, "  ", "the plot was dull " * 20],
                      "label": ["positive", "negative", "positive", "negative"]})
    out = head_rows(table, _pp(tiny_bert, max_length=16))
    assert out.num_rows == 2  # null and blank text are skipped
    assert out.column("label").to_pylist() == [1, 0]
    assert out.column("truncated").to_pylist() == [False, True]
    assert max(out.column("length").to_pylist()) == 16


def test_bad_label_value_names_it(tiny_bert):
    with pytest.raises(DataError, match="label 'meh' is not in task.labels"):
        head_rows(pa.table({"text": ["x"], "label": ["meh"]}), _pp(tiny_bert))


@pytest.mark.parametrize("ext", ["parquet", "arrow", "csv", "jsonl"])
def test_formats_by_extension_in_preflight(tiny_bert, tmp_path, ext):
    rows = builtin.make_rows(40, seed=4)
    table = pa.table(rows)
    path = tmp_path / f"train.{ext}"
    if ext == "parquet":
        write_rows(path, rows)
    elif ext == "arrow":
        feather.write_feather(table, path)
    elif ext == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        import json

        path.write_text("\n".join(json.dumps(r) for r in table.to_pylist()) + "\n")
    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out",
                                  data={"train": path.name, "validation": None}))
    pre = run_preflight(spec)
    assert pre.train.usable == 40 and pre.total_steps >= 1


def test_non_utf8_csv_is_a_clear_error(tiny_bert, tmp_path):
    (tmp_path / "train.csv").write_bytes("text,label\ncaf\xe9 ok,1\nbad,0\n".encode("latin-1"))
    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out",
                                  data={"train": "train.csv", "validation": None}))
    with pytest.raises(DataError, match="UTF-8"):
        run_preflight(spec)


def test_pickle_only_model_is_refused(tmp_path, tiny_data):
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04")
    spec = validate_spec(job_dict(model, tiny_data, tmp_path / "out"))
    with pytest.raises(SpecError, match="allow_pickle"):
        run_preflight(spec)


def test_trust_remote_code_is_off_by_default(tiny_bert, tiny_data, tmp_path):
    assert validate_spec(job_dict(tiny_bert, tiny_data, tmp_path)).model.trust_remote_code is False


@pytest.mark.ray
def test_ray_data_pipeline_streams_tokenized_rows(ray_runtime, tiny_bert, tiny_data):
    from peft_ray.preflight import run_preflight
    from peft_ray.train.driver import build_datasets

    spec = validate_spec(job_dict(tiny_bert, tiny_data, "/tmp/unused"))
    ds = build_datasets(spec, run_preflight(spec))
    rows = 0
    for batch in ds["validation"].iter_batches(batch_size=32, batch_format="pyarrow"):
        assert set(batch.column_names) == {"input_ids", "label", "length", "truncated"}
        rows += batch.num_rows
    assert rows == 70


def test_unreachable_cluster_is_a_quick_message():
    from peft_ray.errors import JobError
    from peft_ray.train.ray_start import check_reachable

    with pytest.raises(JobError, match="cannot reach the Ray cluster"):
        check_reachable("127.0.0.1:1", timeout=2)
    # the option the address came from is named, and a malformed one is said to be so, not "within 10s"
    with pytest.raises(JobError, match="^--ray-address: 'bogus' is not a Ray cluster address"):
        check_reachable("bogus", source="--ray-address")


def test_a_split_of_mixed_formats_is_refused_with_its_files(tmp_path):
    """Ray Data reads a split with the reader of its first file; the pre-flight read each file with its own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peft_ray.data.sources import resolve_files
    from peft_ray.errors import DataError

    pq.write_table(pa.table({"text": ["a"], "label": [0]}), tmp_path / "part1.parquet")
    (tmp_path / "part2.jsonl").write_text('{"text": "b", "label": 1}\n')
    with pytest.raises(DataError, match=r"data.train: 'part\*' matches files of 2 formats .*part2.jsonl"):
        resolve_files(str(tmp_path), "part*", "data.train")


@pytest.mark.parametrize("ext", ["csv", "parquet", "categorical"])
def test_an_empty_label_cell_is_a_row_without_a_label_in_every_format(tiny_bert, tmp_path, ext):
    """Left undone before: a CSV's empty label cell (read as "") stopped pre-flight with "label ''
    is not in task.labels", where Parquet's null label was skipped, and few-shot sampling skipped
    both. Blank and null are now one thing to every reader: a skipped row."""
    import pyarrow.csv as pcsv

    rows = builtin.make_rows(40, seed=4)
    rows["label"] = [None if i in (3, 9) else ["negative", "positive"][y] for i, y in enumerate(rows["label"])]
    path = tmp_path / ("train.parquet" if ext == "categorical" else f"train.{ext}")
    if ext == "csv":
        pcsv.write_csv(pa.table(rows), path)          # a null cell is written empty and read back as ""
        assert pcsv.read_csv(path).column("label")[3].as_py() == ""
    elif ext == "categorical":                        # pandas' category dtype: a dictionary column, blanks as ""
        import pyarrow.parquet as pq

        labels = pa.array(["" if v is None else v for v in rows["label"]]).dictionary_encode()
        pq.write_table(pa.table({"text": rows["text"], "label": labels}), path)
    else:
        write_rows(path, rows)
    spec = validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "run", data={"train": path.name,
                                                                                 "validation": None}))
    facts = run_preflight(spec).train
    assert (facts.rows, facts.skipped) == (40, 2)
    table = pcsv.read_csv(path) if ext == "csv" else pa.table(rows)
    assert head_rows(table, _pp(tiny_bert)).num_rows == 38


def test_dictionary_columns_of_lists_are_read_by_their_values():
    """A second diff-review finding: pyarrow casts a dictionary of strings to strings but not one of
    lists, so pre-flight and predict's CSV failed on a dictionary-encoded NER tags column."""
    from peft_ray.data.sinks import flat_for_csv
    from peft_ray.data.columns import present

    tags = pa.DictionaryArray.from_arrays(pa.array([0, 1, None]), pa.array([["B-PER"], []]))
    assert present(pa.chunked_array([tags])).to_pylist() == [True, True, False]
    table = pa.table({"tags": pa.chunked_array([tags]), "s": pa.array(["a", "b", "c"]).dictionary_encode()})
    assert flat_for_csv(table).to_pylist() == [{"tags": '["B-PER"]', "s": "a"}, {"tags": "[]", "s": "b"},
                                               {"tags": None, "s": "c"}]


@pytest.mark.parametrize("scoring", ["head", "mlm"])
def test_a_long_row_loses_the_end_of_its_input_not_the_templates_words(tiny_bert, scoring):
    """An ML review finding: a fixed cut of the rendered text took the template's own words first,
    the cue before the mask ("... it was [MASK]") in masked-LM scoring and a question after the
    text with a head, while the model read all of the input. The end of the input goes now."""
    from transformers import AutoTokenizer

    from peft_ray.tasks.classification.rows import build_rows

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    template = "{text} the film was {label} ." if scoring == "mlm" else "{text} the plot was good ."
    cfg = ClassificationRows(tokenizer_path=str(tiny_bert), template=template, label_column="label",
                             labels=("negative", "positive"), max_length=16, scoring=scoring)
    long = "the plot was dull " * 6
    out = build_rows(pa.table({"text": [long, "the film"], "label": [0, 1]}), cfg)
    cut, short = (tok.convert_ids_to_tokens(ids) for ids in out.column("input_ids").to_pylist())
    tail = ["the", "film", "was", "[MASK]", "."] if scoring == "mlm" else ["the", "plot", "was", "good", "."]
    assert len(cut) == 16 and cut[-len(tail) - 1:-1] == tail and cut[-1] == "[SEP]"
    assert cut[1:5] == ["the", "plot", "was", "dull"]                   # the input's start stays
    assert out.column("truncated").to_pylist() == [True, False] and short[-len(tail) - 1:-1] == tail
    if scoring == "mlm":
        assert out.column("score_pos").to_pylist()[0] == cut.index("[MASK]")


def test_rows_fitted_together_are_fitted_as_each_one_alone(tiny_bert):
    """head_rows fits every long row of a batch in one tokenizer call a pass (a long-document set
    cuts nearly every row: per-row calls had tripled its preprocessing); each row must come out as
    fitting it alone does, a row that fits as the same object."""
    from transformers import AutoTokenizer

    from peft_ray.rows.tokens import fit_columns, fit_columns_many
    from peft_ray.templates import Template

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    template = Template.parse("{a} . {b} . {a} the film was good .")
    words = "the film was good and the plot dull , really !".split()
    rows = [{"a": " ".join(words[:(3 * i) % 11] * (i % 4)), "b": " ".join(words[i % 5:] * (i % 3))} for i in range(40)]

    def length(r):
        return len(tok(template.render(r, "") or "")["input_ids"])

    together = fit_columns_many(tok, template.column_slots, rows, lambda rs: [length(r) for r in rs], 20)
    alone = [fit_columns(tok, template.column_slots, r, length, 20) for r in rows]
    assert together == alone and sum(f is not r for f, r in zip(together, rows)) >= 10
    assert all((f is r) == (length(r) <= 20) for f, r in zip(together, rows))


def test_two_long_columns_are_cut_longest_first_and_a_repeated_one_once_per_use(tiny_bert):
    """A diff review: with two long columns the cut took one column down to nothing and then the
    template's words, and a column used twice gave up its overflow twice over."""
    from transformers import AutoTokenizer

    from peft_ray.tasks.classification.rows import build_rows

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    a, b = "the film was good " * 6, "the plot was dull " * 3
    for template, row in (("{a} . {b} the film was good .", {"a": a, "b": b}),
                          ("{a} . {a} the film was good .", {"a": a})):
        cfg = ClassificationRows(tokenizer_path=str(tiny_bert), template=template, label_column="label",
                                 labels=("negative", "positive"), max_length=24, scoring="head")
        ids = build_rows(pa.table({**{k: [v] for k, v in row.items()}, "label": [1]}), cfg)["input_ids"][0].as_py()
        words = tok.convert_ids_to_tokens(ids)
        assert 22 <= len(words) <= 24 and words[-6:-1] == ["the", "film", "was", "good", "."], words   # kept whole
        cut = " ".join(words[1:-6]).split(" . ")
        assert len(cut) == 2 and abs(len(cut[0].split()) - len(cut[1].split())) <= 1, words   # a common length
