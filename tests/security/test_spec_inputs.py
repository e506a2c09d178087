"""Hostile or careless job specs fail in `validate` with a short message naming the field."""

from __future__ import annotations

import pytest

from peft_ray.errors import SpecError
from peft_ray.spec import load_spec
from peft_ray.spec.load import apply_overrides

BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "train:\n  epochs: *i\n"


@pytest.mark.parametrize("override, field", [
    ("train.epochs=1e12", "train.epochs"), ("train.epochs=.inf", "train.epochs"),
    ("train.lr=.nan", "train.lr"), ("scaling.cpus_per_worker=.inf", "scaling.cpus_per_worker"),
    ("train.max_steps=100000000000", "train.max_steps"), ("scaling.num_workers=1000000", "scaling.num_workers"),
    ("train.seed=-5", "train.seed"), ("train.seed=" + "1" * 42, "train.seed"), ("data.shots_seed=-1", "data.shots_seed"),
    ("method={name: lora, lora_alpha: 1.0e+300}", "method.lora_alpha"),
    ("method={name: p_tuning, encoder_hidden_size: 1000000000000}", "method.encoder_hidden_size"),
])
def test_numeric_fields_are_bounded_and_finite(override, field):
    with pytest.raises(SpecError, match=field):
        load_spec(None, [override])


def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    job = tmp_path / "bomb.yaml"
    job.write_text(BOMB)
    with pytest.raises(SpecError, match="aliases") as e:
        load_spec(job)
    assert len(str(e.value)) < 300


def test_few_aliases_in_a_wrong_field_give_a_short_message(tmp_path):
    job = tmp_path / "j.yaml"
    job.write_text("a: &a [" + ",".join(["x" * 50] * 50) + "]\ntrain:\n  epochs: *a\n")
    with pytest.raises(SpecError, match="train.epochs") as e:
        load_spec(job)
    assert len(str(e.value)) < 400


def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path):
    job = tmp_path / "deep.yaml"
    job.write_text("train: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(SpecError, match="nested deeper"):
        load_spec(job)


def test_override_without_a_key():
    with pytest.raises(SpecError, match="no key before '='"):
        load_spec(None, ["=5"])


def test_override_read_as_a_mapping_says_so():
    with pytest.raises(SpecError, match="reads '{soft}' as a mapping.*quote"):
        load_spec(None, ["template.text={soft}"])
    assert apply_overrides({}, ['template.text="{soft} {text}"']) == {"template": {"text": "{soft} {text}"}}


def test_label_slot_twice_is_refused():
    with pytest.raises(SpecError, match=r"template.text: \{label\} .* use it once"):
        load_spec(None, ['template.text="{text} {label} or {label}"', 'task.labels=[neg, pos]'])


@pytest.mark.parametrize("field", ["model.name_or_path", "data.root", "data.train", "output.dir"])
def test_a_path_longer_than_the_filesystem_allows_is_a_field_error(field):
    with pytest.raises(SpecError, match=f"{field}: longer than a filesystem allows") as e:
        load_spec(None, [f"{field}=/{'a' * 5000}"])
    assert len(str(e.value)) < 300


def test_zero_shot_refuses_a_head_that_only_training_gives_weights():
    """MiniLM with task.head: head would score a random classifier (its accuracy moved with train.seed)."""
    from peft_ray.zero_shot import zero_shot_eval

    with pytest.raises(SpecError, match="new head that only training gives weights"):
        zero_shot_eval(load_spec("jobs/default.yaml"))


def test_a_text_override_read_as_a_mapping_names_the_quoting():
    with pytest.raises(SpecError, match="override 'template.text=Review: {text}': YAML reads .* quote it") as e:
        load_spec("jobs/default.yaml", ["template.text=Review: {text}"])
    assert "template.text=\"Review: {text}\"" in str(e.value)
    assert load_spec("jobs/default.yaml", ['template.text="{soft} Review: {text}"']).template.text.endswith("{text}")


def test_a_number_of_thousands_of_digits_is_an_error_not_a_traceback(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("train:\n  max_steps: " + "9" * 5000 + "\n")
    with pytest.raises(SpecError, match=r"job.yaml: malformed YAML: a number is too long"):
        load_spec(job)
    job.write_text("train:\n  max_steps: 0x" + "f" * 5000 + "\n")           # hex has no digit limit: its bits do
    with pytest.raises(SpecError, match=r"job.yaml: malformed YAML: an integer of 20,000 bits at line 2"):
        load_spec(job)
    with pytest.raises(SpecError, match=r"train.max_steps: .*valid integer"):
        load_spec(None, ["train.max_steps=0x" + "f" * 5000])
    with pytest.raises(SpecError, match=r"template.text: \{soft:N\} at position 0: N has 5000 digits"):
        load_spec(None, ["template.text={soft:" + "9" * 5000 + "} {text}"])


@pytest.mark.parametrize("text,key,lines", [
    ("name: d\ntrain:\n  epochs: 2\n  seed: 3\ntrain:\n  max_steps: 5\n", "train", "2 and 5"),
    ("task:\n  type: classification\n  labels: [negative, positive]\n  labels: [a, b]\n", "labels", "3 and 4")])
def test_a_key_given_twice_is_named_not_silently_the_last(tmp_path, text, key, lines):
    """A new-user-review finding: YAML keeps the last of two equal keys, so a second `train:` section
    dropped the first one's epochs and seed, and `validate` said ok."""
    job = tmp_path / "j.yaml"
    job.write_text(text)
    with pytest.raises(SpecError, match=f"'{key}' is given twice in one section \\(lines {lines}\\)"):
        load_spec(job)


def test_yaml_merge_keys_still_override():
    import yaml

    from peft_ray.spec.load import _GuardedLoader

    assert yaml.load("a: &x {p: 1, q: 2}\nb:\n  <<: *x\n  q: 3\n", Loader=_GuardedLoader)["b"] == {"p": 1, "q": 3}


def test_settings_that_would_be_ignored_are_refused_or_said(tiny_bert, tiny_data, tmp_path, capsys):
    """A new-user review: a hold-out fraction beside a validation file, early stopping with nothing
    evaluated, and {soft} under LoRA were all taken without a word and did nothing."""
    from peft_ray.spec import validate_spec
    from tests.conftest import job_dict

    def job(**sections):
        return job_dict(tiny_bert, tiny_data, tmp_path / "out", **sections)

    with pytest.raises(SpecError, match="data.validation_fraction: 0.1 holds out training rows only where "
                                        "data.validation is null, and this job names 'validation.parquet'"):
        validate_spec(job(data={"validation": "validation.parquet", "validation_fraction": 0.1}))
    alone = job()
    alone["data"] = {"root": str(tiny_data), "validation_fraction": 0.1}      # the fraction alone: a hold-out
    assert validate_spec(alone).data.holds_out
    with pytest.raises(SpecError, match="train.early_stopping_patience: nothing is evaluated"):
        validate_spec(job(data={"validation": None}, train={"early_stopping_patience": 2}))
    validate_spec(job(data={"validation": None, "validation_fraction": 0.1}, train={"early_stopping_patience": 2}))
    from peft_ray.spec.checks import _note_unread_soft

    _note_unread_soft.cache_clear()      # said once a process: an earlier test may have had it said
    lora = job(template={"text": "{soft:8} {text}", "verbalizer": None})
    lora["method"] = {"name": "lora"}
    validate_spec(lora)
    assert "note: template.text's {soft} is not read: lora adds no virtual tokens" in capsys.readouterr().err


@pytest.mark.parametrize("text, said", [
    ("model:\n\tname_or_path: minilm\n", "found character '\\\\t' .*; YAML indents with spaces, never tabs"),
    ("# nothing here yet\n", "the job file is empty \\(or only comments\\); start from one in jobs/"),
    ("task: {type: classification, labels: [yes, no]}\n", "task.labels: needs text, got \\[true, false\\], where "
                                                           "YAML reads yes/no"),
])
def test_yaml_slips_are_said_as_such(tmp_path, text, said):
    """A new-user review: a tab, an empty file and `[yes, no]` gave YAML's or pydantic's words, or a
    job of defaults that nobody wrote."""
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=said):
        load_spec(str(path))
