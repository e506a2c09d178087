"""Job-spec loading: overrides, defaults and every bad-input message."""

from __future__ import annotations

import pytest
import yaml

from peft_ray.errors import SpecError
from peft_ray.spec import load_spec, validate_spec


def _write(tmp_path, text: str):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    p = _write(tmp_path, "task: {labels: [a, b]}\n")
    spec = load_spec(p, ["train.max_steps=20", "train.lr=3e-2", "deepspeed.zero_stage=3",
                         "data.root=../shared/data/sst2"])
    assert spec.train.max_steps == 20 and spec.train.lr == 0.03
    assert spec.deepspeed.zero_stage == 3
    assert spec.method.name == "prompt_tuning" and spec.method.num_virtual_tokens == 20
    assert spec.output.dir.endswith("/runs/peft-ray-job") and spec.output.dir.startswith("/")
    assert spec.data.root.endswith("/shared/data/sst2") and spec.data.root.startswith("/")


@pytest.mark.parametrize("text, expected", [
    ("task: [a\n", "malformed YAML at line"),
    ("trian: {epochs: 1}\ntask: {labels: [a, b]}\n", "did you mean 'train'"),
    ("train: {learning_rate: 1}\ntask: {labels: [a, b]}\n", "train.learning_rate: unknown key"),
    ("train: {epochs: many}\ntask: {labels: [a, b]}\n", "train.epochs"),
    ("train: {lr: 0}\ntask: {labels: [a, b]}\n", "train.lr"),
    ("method: {name: prompt_tunning}\ntask: {labels: [a, b]}\n", "did you mean 'prompt_tuning'"),
    ("method: {num_virtual_tokens: 0}\ntask: {labels: [a, b]}\n", "method.num_virtual_tokens"),
    ("method: {num_virtual_tokns: 3}\ntask: {labels: [a, b]}\n", "did you mean 'num_virtual_tokens'"),
    ("deepspeed: {zero_stage: 4}\ntask: {labels: [a, b]}\n", "deepspeed.zero_stage: must be 1, 2 or 3"),
    ("task: {labels: [a, b]}\ntemplate: {text: '{soft} {text}', verbalizer: {a: x}}\n",
     "label(s) ['b'] from task.labels have no words"),
    ("task: {labels: [a, b]}\ntemplate: {text: '{soft} {text.__class__}'}\n", "is not allowed"),
    ("task: {labels: [a, b]}\ntemplate: {text: '{soft} {text'}\n", "unbalanced"),
    ("task: {labels: [a, b]}\nscaling: {num_workers: 3}\ntrain: {batch_size: 32}\n", "divisible"),
    ("task: {type: classification}\n", "task.labels"),
    ("- just\n- a list\n", "top level must be a mapping"),
])
def test_bad_specs_name_the_field(tmp_path, text, expected):
    with pytest.raises(SpecError) as e:
        load_spec(_write(tmp_path, text))
    assert expected in str(e.value)


def test_missing_job_file():
    with pytest.raises(SpecError, match="does not exist"):
        load_spec("no/such/job.yaml")


def test_bad_override_form(tmp_path):
    with pytest.raises(SpecError, match="section.key=value"):
        load_spec(_write(tmp_path, "task: {labels: [a, b]}\n"), ["train.max_steps"])


def test_an_override_given_twice_with_two_values_is_refused(tmp_path):
    job = _write(tmp_path, "task: {labels: [a, b]}\n")
    with pytest.raises(SpecError, match=r"override train.lr is given twice \('train.lr=0.1' and 'train.lr=0.2'\)"):
        load_spec(job, ["train.lr=0.1", "train.max_steps=3", "train.lr=0.2"])
    assert load_spec(job, ["train.lr=0.1", "train.lr=0.1"]).train.lr == 0.1   # the same twice says one thing


@pytest.mark.parametrize("text, reading", [("010", "octal"), ("1:30", "base 60"), ("1:30.5", "base 60")])
def test_yaml_11s_octal_and_base_60_numbers_are_refused_with_the_line(tmp_path, text, reading):
    job = _write(tmp_path, f"task: {{labels: [a, b]}}\ntrain:\n  seed: {text}\n")
    with pytest.raises(SpecError, match=f"'{text}' at line 3 is a number in {reading} to YAML 1.1"):
        load_spec(job)
    with pytest.raises(SpecError, match=f"override 'train.seed={text}': '{text}' is a number in {reading}"):
        load_spec(_write(tmp_path, "task: {labels: [a, b]}\n"), [f"train.seed={text}"])


@pytest.mark.parametrize("overrides, first", [
    (["method.r=16", "method.name=lora"], "method.name=lora"),
    (["method.r=16", "method=lora"], "method=lora"),
    (["task.max_target_length=4", "task.type=generation"], "task.type=generation"),
])
def test_a_field_before_the_switch_of_its_sections_kind_is_refused_not_lost(tmp_path, overrides, first):
    """method.r=16 method.name=lora resolved to r 8: the switch starts the section anew, and the field
    typed before it vanished without a word (a review finding)."""
    job = _write(tmp_path, "task: {labels: [a, b]}\nmethod: {name: prompt_tuning}\n")
    with pytest.raises(SpecError, match=f"comes before '{first}', which starts the .* section anew"):
        load_spec(job, overrides)
    assert load_spec(job, ["method.name=lora", "method.r=16"]).method.r == 16
    assert load_spec(job, ["method.num_virtual_tokens=4", "method.name=prompt_tuning"]).method.num_virtual_tokens == 4


def test_soft_count_must_agree():
    with pytest.raises(SpecError, match="make them agree"):
        validate_spec({"task": {"labels": ["a", "b"]}, "template": {"text": "{soft:5} {text}"},
                       "method": {"name": "prompt_tuning", "num_virtual_tokens": 7}})


def test_every_shipped_job_validates_as_a_spec():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    jobs = sorted([*root.joinpath("jobs").glob("*.yaml"), *root.joinpath("docs", "examples").glob("*.yaml")])
    assert len(jobs) > 2
    for job in jobs:
        first = job.read_text().splitlines()[0]
        assert first.startswith("# peft-ray "), f"{job.name} must start with the command that runs it"
        load_spec(job)
        yaml.safe_load(job.read_text())


def test_method_shorthand_takes_field_overrides():
    from peft_ray.spec.load import apply_overrides, validate_spec

    raw = apply_overrides({"method": "lora"}, ["method.r=16"])
    assert raw["method"] == {"name": "lora", "r": 16}
    job = {"task": {"type": "classification", "labels": ["a", "b"]}}
    assert validate_spec(apply_overrides(job, ["method=lora", "method.r=16"])).method.r == 16


def test_overriding_the_method_name_starts_the_section_anew():
    """method.name=lora over a prompt-tuning section: its num_virtual_tokens were "unknown keys" of LoRA."""
    from peft_ray.spec.load import apply_overrides

    pt = {"method": {"name": "prompt_tuning", "num_virtual_tokens": 20, "init": "vocab"}}
    assert apply_overrides(pt, ["method.name=lora", "method.r=4"])["method"] == {"name": "lora", "r": 4}
    assert apply_overrides(pt, ["method.name=prompt_tuning"]) == pt        # the same name keeps its fields
    task = {"task": {"type": "classification", "labels": ["a", "b"]}}
    assert apply_overrides(task, ["task.type=generation"])["task"] == {"type": "generation"}


def test_a_job_level_check_has_no_empty_field_name():
    from peft_ray.spec.load import apply_overrides, validate_spec

    job = {"task": {"type": "classification", "labels": ["a", "b"]}, "train": {"batch_size": 32}}
    with pytest.raises(SpecError) as e:
        validate_spec(apply_overrides(job, ["scaling.num_workers=3"]))
    assert str(e.value).startswith("train.batch_size (32) must be divisible"), str(e.value)


def test_an_override_reaches_a_dotted_search_space_key():
    from peft_ray.spec.load import apply_overrides

    raw = apply_overrides({"tune": {"space": {"train.lr": {"grid": [0.1]}}}},
                          ["tune.space.train.lr={grid: [0.03]}", "tune.space.method.r.grid=[4, 8]"])
    assert raw["tune"]["space"] == {"train.lr": {"grid": [0.03]}, "method.r": {"grid": [4, 8]}}


def test_an_unquoted_backslash_n_in_a_template_override_is_refused(tmp_path):
    """A shell's 'template.text=A\\nB' reaches YAML as plain text, where \\n stays two characters (the
    job file's "A\\nB" is a newline): refused with the quoting that gives a newline, which works."""
    job = _write(tmp_path, "task: {labels: [a, b]}\n")
    with pytest.raises(SpecError, match=r"stay two characters.*template.text=\"Review: \{text\}\\nSentiment: \{label\}\""):
        load_spec(job, ["template.text=Review: {text}\\nSentiment: {label}"])
    spec = load_spec(job, ['template.text="Review: {text}\\nSentiment: {label}"'])
    assert spec.template.text == "Review: {text}\nSentiment: {label}"


def test_other_tools_names_suggest_the_field_they_mean(tmp_path):
    job = _write(tmp_path, "task: {labels: [a, b]}\n")
    for typed, meant in (("train.per_device_train_batch_size=8", "batch_size"), ("train.eval_steps=5", "eval_every"),
                         ("train.learning_rate=1e-3", "'lr'"), ("method.lora_r=4", "'r'"),
                         ("learning_rate=1e-3", "train.lr"), ("base_model=x", "model.name_or_path")):
        with pytest.raises(SpecError, match=f"did you mean '?{meant}"):
            load_spec(job, ["method=lora", typed] if typed.startswith("method.") else [typed])


def test_integer_label_names_are_their_digits():
    """[0, 1] and [1, 2] are the names "0", "1" and "1", "2": numbers in the data are read as those
    names (rows/labels.py), so a value has one meaning whatever the column's type. A verbalizer's
    integer keys are names."""
    spec = validate_spec({"task": {"labels": [0, 1], "head": "verbalizer"},
                          "template": {"text": "{text} {label}", "verbalizer": {0: "bad", 1: "good"}}})
    assert spec.task.labels == ["0", "1"] and spec.template.verbalizer == {"0": "bad", "1": "good"}
    assert validate_spec({"task": {"labels": [1, 2]}}).task.labels == ["1", "2"]
    with pytest.raises(SpecError, match="integer labels must not be negative"):
        validate_spec({"task": {"labels": [-1, 1]}})


def test_errors_of_every_section_come_together(tmp_path):
    job = _write(tmp_path, "task: {labels: [a, b]}\nmethod: {name: lora, rank: 8}\nmodel: {max_lenght: 64}\n"
                           "train: {learning_rate: 0.001}\n")
    with pytest.raises(SpecError) as e:
        load_spec(job)
    for field in ("method.rank", "model.max_lenght", "train.learning_rate"):
        assert field in str(e.value), str(e.value)


@pytest.mark.parametrize("override, field", [
    ("train.lr=true", "train.lr"),                       # was a learning rate of 1.0
    ("train.epochs=yes", "train.epochs"),                # was one epoch
    ("train.batch_size=on", "train.batch_size"),         # was a batch of 1, blamed on divisibility
    ("method.num_virtual_tokens=true", "method.num_virtual_tokens"),
    ("task.max_target_length=true", "task.max_target_length"),
    ("tune.num_samples=true", "tune.num_samples"),
    ("deepspeed.zero_stage=true", "deepspeed.zero_stage"),   # Literal[1, 2, 3], where True == 1
    ("tune.space={train.lr: {uniform: [true, 2]}}", "tune.space.train.lr.uniform"),   # searched over [1, 2]
])
def test_a_boolean_never_stands_in_for_a_number(override, field):
    """YAML reads true/yes/on as booleans and pydantic's lax mode makes them 1: refused, named."""
    job = "jobs/default.yaml" if not override.startswith(("task.", "tune.")) else (
        "jobs/instructions_smollm2_lora.yaml" if override.startswith("task.") else "jobs/sst2_template_search.yaml")
    with pytest.raises(SpecError) as e:
        load_spec(job, [override], resolve_paths=False)
    assert f"{field}: needs " in str(e.value) and "boolean" in str(e.value)


def test_null_for_a_key_without_a_none_names_its_default():
    with pytest.raises(SpecError) as e:
        load_spec("jobs/default.yaml", ["train.epochs=null", "train.max_steps=5"], resolve_paths=False)
    assert "train.epochs: got null" in str(e.value) and "default (1)" in str(e.value)
    # keys whose null means something stay valid
    spec = load_spec("jobs/default.yaml", ["train.max_steps=null", "model.dropout=null"], resolve_paths=False)
    assert spec.train.max_steps is None and spec.model.dropout is None


def test_a_section_left_empty_means_its_defaults(tmp_path):
    """`train:` with every line under it commented out is null in YAML: its defaults, not an error
    that printed the whole default section."""
    spec = load_spec(_write(tmp_path, "task: {labels: [a, b]}\ntrain:\n  # epochs: 3\nmodel:\n"))
    assert spec.train.epochs == 1 and spec.model.name_or_path == "minilm"


def test_a_name_in_other_case_is_suggested():
    """A new-user review: `method.name=LoRA` got no "did you mean 'lora'" (difflib weighs case as spelling)."""
    from peft_ray.errors import suggest

    assert suggest("LoRA", ["prompt_tuning", "lora", "ia3"]) == " (did you mean 'lora'?)"
    assert suggest("IA3", ["lora", "ia3"]) == " (did you mean 'ia3'?)"
    assert suggest("zzz", ["lora", "ia3"]) == ""
