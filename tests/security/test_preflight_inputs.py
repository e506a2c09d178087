"""Bad model files fail in preflight (before Ray starts) with a message naming the file or field."""

from __future__ import annotations

import json
import shutil

import pytest

from peft_ray.errors import SpecError
from peft_ray.preflight import run_preflight
from peft_ray.spec import validate_spec
from tests.conftest import job_dict, write_rows


def _model_copy(tiny_bert, tmp_path):
    m = tmp_path / "model"
    shutil.copytree(tiny_bert, m)
    return m


def _spec(model_path, tiny_data, tmp_path, **sections):
    return validate_spec(job_dict(model_path, tiny_data, tmp_path / "out", **sections))


def test_max_length_past_the_model_positions(tiny_bert, tiny_data, tmp_path):
    limit = json.loads((tiny_bert / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(SpecError, match=f"model.max_length .* exceeds the {limit} positions"):
        run_preflight(_spec(tiny_bert, tiny_data, tmp_path, model={"max_length": limit + 1}))


def test_virtual_tokens_plus_max_length_past_the_positions(tiny_bert, tiny_data, tmp_path):
    limit = json.loads((tiny_bert / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(SpecError, match="method.num_virtual_tokens"):
        run_preflight(_spec(tiny_bert, tiny_data, tmp_path, model={"max_length": limit - 2},
                            method={"num_virtual_tokens": 4}))


def test_invalid_config_json(tiny_bert, tiny_data, tmp_path):
    m = _model_copy(tiny_bert, tmp_path)
    (m / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="config.json is not valid JSON"):
        run_preflight(_spec(m, tiny_data, tmp_path))


def test_corrupt_safetensors(tiny_bert, tiny_data, tmp_path):
    m = _model_copy(tiny_bert, tmp_path)
    for f in m.glob("*.safetensors"):
        f.write_bytes(b"\xff" * 64)
    with pytest.raises(SpecError, match="not a readable safetensors file"):
        run_preflight(_spec(m, tiny_data, tmp_path))


@pytest.mark.parametrize("values, kind", [([b"\xff\xfe", b"ok"], "binary"), ([1, 2], "int64")])
def test_text_column_that_is_not_text(tiny_bert, tmp_path, values, kind):
    """An int or binary column in the template is refused (it would be stringified into
    b'\\xff..' or digits), naming the field, the column, its type and the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peft_ray.errors import DataError

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        pq.write_table(pa.table({"text": pa.array(values * 4), "label": [0, 1] * 4}), data / f"{split}.parquet")
    with pytest.raises(DataError, match=f"template.text: column 'text' of .*train.parquet holds {kind}.*not text"):
        run_preflight(_spec(tiny_bert, data, tmp_path))


def _lora_spec(tiny_bert, tiny_data, out):
    """A LoRA job of `targets`, as a function of them."""
    def lora(targets):
        job = job_dict(tiny_bert, tiny_data, out)
        job["method"] = {"name": "lora", "target_modules": targets}
        return validate_spec(job)
    return lora


def test_target_modules_matching_nothing_fail_before_anything_is_written(tiny_bert, tiny_data, tmp_path):
    """A LoRA target list naming no linear layer is a spec error in preflight (the base built on
    the meta device), naming the field and the real layer names; output.dir stays unwritten."""
    lora = _lora_spec(tiny_bert, tiny_data, tmp_path / "out")

    with pytest.raises(SpecError, match=r"method.target_modules: \['q_proj', 'v_proj'\] matches no linear layer"
                                        r".*query"):
        run_preflight(lora(["q_proj", "v_proj"]))
    assert not (tmp_path / "out").exists()
    run_preflight(lora(["query"]))


def test_each_listed_target_must_match_and_a_string_is_checked_as_a_pattern(tiny_bert, tiny_data, tmp_path):
    """A new-user review: `[querry, value]` trained `value` alone without a word, and `query` (a
    string: a regular expression over whole module paths) passed validate, then failed in the Ray
    workers saying 'query' matched nothing while listing `query` among the layer names."""
    lora = _lora_spec(tiny_bert, tiny_data, tmp_path / "out")

    with pytest.raises(SpecError, match=r"method.target_modules: 'querry' matches no linear layer of this bert "
                                        r"model \(did you mean 'query'\?\), so the adapter would leave it out"):
        run_preflight(lora(["querry", "value"]))
    with pytest.raises(SpecError, match=r"'query' matches no linear layer .* A string is a regular expression that "
                                        r"must match a whole module path \(e.g. 'encoder.layer.0.attention.self.query'\); "
                                        r"to name layers by their own names, give a list, e.g. \[query\]"):
        run_preflight(lora("query"))
    assert not (tmp_path / "out").exists()
    run_preflight(lora(r"bert\.encoder\.layer\.\d+\.attention\.self\.(query|value)"))   # the task class's paths
    run_preflight(lora(r".*\.(query|value)"))
    run_preflight(lora(["query", "value", "classifier"]))                          # a head's name counts


def test_a_listed_head_passes_the_build_too(tiny_bert):
    """A diff review: `[query, value, classifier]` passed preflight and was refused by the build,
    which skips the head (trained in full) and then counted `classifier` as matching nothing."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from peft_ray.methods.targets import find_targets

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(tiny_bert)))
    found = find_targets(model, ["query", "value", "classifier"], "method.target_modules", skip=["classifier"])
    assert found and not any(p.startswith("classifier") for p in found)
    with pytest.raises(SpecError, match="'querry' matches no linear layer"):
        find_targets(model, ["querry", "value"], "method.target_modules", skip=["classifier"])


def test_a_backtracking_target_regex_fails_in_preflight_not_in_the_workers(tiny_bert, tiny_data, tmp_path):
    """`([\\w.]|[\\w.])*q` takes days per module path under `re`; `regex` runs it with a time limit,
    so a shared job file's pattern is a clear error before any cluster work."""
    from peft_ray.methods.targets import find_targets, matches

    job = job_dict(tiny_bert, tiny_data, tmp_path / "out")
    job["method"] = {"name": "lora", "target_modules": r"([\w.]|[\w.])*q"}
    with pytest.raises(SpecError, match="method.target_modules: the regular expression .* took more than"):
        run_preflight(validate_spec(job))
    assert matches("encoder.layer.0.attention.self.query", r".*\.(query|value)")     # re's syntax and semantics
    assert not matches("encoder.layer.0.attention.self.query", r"query")              # fullmatch, as PEFT

    class _Paths:                       # find_targets over many paths shares one budget
        def named_modules(self):
            return ((f"layer.{i}.attention.self.query.x", None) for i in range(200))
    with pytest.raises(SpecError, match="took more than"):
        find_targets(_Paths(), r"(?:[\w.]|[\w.])*?(?:[\w.]|[\w.])*e$x", "method.target_modules")


@pytest.mark.parametrize("pattern", [r".*\.\K(query|value)", r".*\.\p{L}+\.query", r"(?|.*query|.*value)",
                                     r".*[[:alpha:]]ery"])
def test_target_patterns_are_python_re_as_peft_reads_them(pattern):
    """`regex` accepts more than `re` (and reads [[:alpha:]] otherwise): the exported adapter_config.json
    must mean the same to HF PEFT."""
    from peft_ray.spec import load_spec

    with pytest.raises(SpecError, match="method.target_modules"):
        load_spec(None, [f"method={{name: lora, target_modules: '{pattern}'}}"])


@pytest.mark.parametrize("names,ok", [(["foo"], False), (["encoder.lyer.1"], False), (["classifier"], True),
                                      (["pooler"], True), (["encoder.layer.1.output"], True),
                                      (["bert.encoder.layer.1"], True)])
def test_modules_to_save_names_are_checked_before_any_run(tiny_bert, tiny_data, tmp_path, names, ok):
    """A new-user-review finding: an unknown name passed `validate` and failed in the Ray workers,
    after Ray Train had restarted them twice."""
    spec = _spec(tiny_bert, tiny_data, tmp_path, method={"modules_to_save": names})
    if ok:
        run_preflight(spec)
    else:
        with pytest.raises(SpecError, match=r"method.modules_to_save: no module named \["):
            run_preflight(spec)


def test_a_label_no_training_row_has_and_too_few_shots_are_said(tiny_bert, tmp_path, capsys):
    """A new-user review: `task.labels: [negative, neutral, positive]` over data without `neutral`,
    and `data.train_shots: 200` over 150 rows a class, both trained without a word."""
    texts = [f"{'good' if i % 2 else 'bad'} film {i}" for i in range(60)]
    labels = ["positive" if i % 2 else "negative" for i in range(60)]
    write_rows(tmp_path / "train.parquet", {"text": texts, "label": labels})
    write_rows(tmp_path / "validation.parquet", {"text": texts[:10], "label": labels[:10]})
    three = job_dict(tiny_bert, tmp_path, tmp_path / "out",
                     task={"type": "classification", "labels": ["negative", "neutral", "positive"]},
                     template={"text": "{soft} {text}", "verbalizer": None})
    run_preflight(validate_spec(three))
    assert "note: no training row has the label(s) ['neutral'] of task.labels" in capsys.readouterr().err
    shots = job_dict(tiny_bert, tmp_path, tmp_path / "out", data={"train_shots": 40})
    run_preflight(validate_spec(shots))
    err = capsys.readouterr().err
    assert "note: data.train_shots is 40 but some classes have fewer usable rows ('negative' 30, 'positive' 30)" in err
    run_preflight(validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out", data={"train_shots": 8})))
    assert "note" not in capsys.readouterr().err


def test_skipped_rows_are_said_with_the_first_one_and_what_it_lacks(tiny_bert, tmp_path, capsys):
    """A new-user review: a JSON Lines row with a misspelt key ("txet") was counted as skipped, and
    `validate` gave the count alone."""
    import json

    rows = [{"text": f"{'good' if i % 2 else 'bad'} film {i}", "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    rows[7], rows[12] = {"txet": "great film", "label": "positive"}, {"text": "dull film", "lable": "negative"}
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_rows(tmp_path / "validation.parquet", {"text": ["good film", " ", "bad film"],
                                                 "label": ["positive", "negative", "negative"]})
    run_preflight(validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out", data={"train": "train.jsonl"})))
    err = capsys.readouterr().err
    assert (f"note: data.train: 2 of 40 rows are skipped for an empty or missing column, the first: "
            f"{tmp_path / 'train.jsonl'} row 7 (0-based) has nothing in 'text'.") in err
    assert f"note: data.validation: 1 of 3 rows are skipped" in err and "row 1 (0-based) has nothing in 'text'" in err
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:7] + rows[13:]))
    write_rows(tmp_path / "validation.parquet", {"text": ["good film", "bad film"], "label": ["positive", "negative"]})
    run_preflight(validate_spec(job_dict(tiny_bert, tmp_path, tmp_path / "out", data={"train": "train.jsonl"})))
    assert "skipped" not in capsys.readouterr().err


def test_a_column_a_template_cannot_name_is_said_with_how_to_rename_it(tiny_bert, tmp_path):
    from peft_ray.errors import DataError

    rows = {"review text": ["good film", "bad film"] * 10, "label": ["positive", "negative"] * 10}
    write_rows(tmp_path / "train.parquet", rows)
    write_rows(tmp_path / "validation.parquet", rows)
    job = job_dict(tiny_bert, tmp_path, tmp_path / "out", template={"text": "{soft} {review_text}"})
    with pytest.raises(DataError, match=r"column 'review_text' is not in .* \(the file has 'review text', which a "
                                        r"template field cannot name: .* df.rename\(columns=\{'review text': "
                                        r"'review_text'\}\)\)"):
        run_preflight(validate_spec(job))
