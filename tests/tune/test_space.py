"""The tune section and search space: typed checks, fail-fast candidate paths, drawn trials.
No Ray here: everything is checked before a cluster starts."""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import JobError, SpecError
from peft_ray.methods import METHODS
from peft_ray.spec import validate_spec
from peft_ray.tune import space as S
from peft_ray.tune.runner import check_search
from tests.tune.conftest import TEMPLATES, tune_job


def _spec(tiny_bert, tiny_data, tmp_path, tune, **sections):
    return validate_spec(tune_job(tiny_bert, tiny_data, tmp_path / "out", tune, **sections))


@pytest.mark.parametrize("tune, expected", [
    ({"sceduler": {}}, "unknown key 'sceduler' (did you mean 'scheduler'?)"),
    ({"space": {"lr": [1]}}, "must be 'section.field'"),
    ({"space": {"train.lr": {"loguniform": [0, 1]}}}, "tune.space.train.lr: loguniform needs low > 0"),
    ({"space": {"train.lr": {"uniform": [1], "choice": [2]}}}, "give exactly one of"),
    ({"space": {"template.text": ["{text}"]}}, "search templates and verbalizers under tune.template"),
    ({"scheduler": {"name": "hyperband"}}, "tune.scheduler.name"),
    ({"search": "optuna", "space": {"train.lr": {"grid": [0.1]}}}, "optuna cannot enumerate grid"),
])
def test_tune_section_is_typed(tiny_bert, tiny_data, tmp_path, tune, expected):
    with pytest.raises(SpecError) as e:
        _spec(tiny_bert, tiny_data, tmp_path, tune)
    assert expected in str(e.value)


def test_mode_follows_metric(tiny_bert, tiny_data, tmp_path):
    assert _spec(tiny_bert, tiny_data, tmp_path, {}).tune.mode == "max"
    assert _spec(tiny_bert, tiny_data, tmp_path, {"metric": "loss"}).tune.mode == "min"


@pytest.mark.parametrize("tune, expected", [
    # a bad candidate template fails with its own path, not a generic error
    ({"template": {"text": TEMPLATES + ["{text} {soft}"]}}, "tune.template.text[2]: template.text: soft tokens"),
    ({"template": {"text": TEMPLATES + ["{soft} {text.__class__}"]}}, "tune.template.text[2]"),
    ({"template": {"verbalizer": [{"negative": "bad", "positive": "good"}, {"negative": "bad"}]}},
     "tune.template.verbalizer[1]: template.verbalizer: label(s) ['positive']"),
    # the first verbalizer's own fault, met while checking the first template (a review finding)
    ({"template": {"verbalizer": [{"negative": "bad"}]}},
     "tune.template.verbalizer[0]: template.verbalizer: label(s) ['positive']"),
    ({"space": {"train.lr": {"choice": [0.1, -1.0]}}}, "tune.space.train.lr[1]: train.lr"),
    ({"space": {"method.num_virtual_tokens": {"uniform": [0, 8]}}}, "tune.space.method.num_virtual_tokens (low)"),
    ({"space": {"train.lrr": [0.1]}}, "tune.space.train.lrr: no field 'lrr' in train (did you mean 'lr'?)"),
    ({"space": {"method.r": [4, 8]}}, "tune.space.method.r: no field 'r' in method"),
    ({"space": {"data.root": ["/x"]}}, "section 'data' cannot be searched"),
    ({"space": {"method.name": ["prompt_tunning"]}}, "did you mean 'prompt_tuning'"),
    ({"space": {"train.schedule": {"uniform": [1, 2]}}}, "needs a numeric field"),
    ({"metric": "acuracy"}, "tune.metric: 'acuracy' is not a classification evaluation metric (did you mean 'accuracy'?)"),
    # cross-field: a template fixing {soft:3} disagrees with the method's num_virtual_tokens
    ({"template": {"text": ["{soft:3} {text}"]}}, "tune.template.text[0]: template.text says {soft:3}"),
])
def test_bad_candidate_names_its_path(tiny_bert, tiny_data, tmp_path, tune, expected):
    with pytest.raises(SpecError) as e:
        check_search(_spec(tiny_bert, tiny_data, tmp_path, tune))
    assert expected in str(e.value)


def test_cli_fails_fast_before_ray(tiny_bert, tiny_data, tmp_path):
    job = tmp_path / "job.yaml"
    tune = {"template": {"text": TEMPLATES + ["{soft} {text}", "{soft} {sentence}"]}}
    job.write_text(yaml.safe_dump(tune_job(tiny_bert, tiny_data, tmp_path / "out", tune)))
    import ray

    ray_before = ray.is_initialized()  # another test's shared runtime may be up already
    r = CliRunner().invoke(main, ["tune", str(job)])
    assert r.exit_code == 2, r.output
    assert "tune.template.text[3]" in r.output and "column 'sentence'" in r.output
    assert ray.is_initialized() == ray_before
    assert not (tmp_path / "out" / "tune").exists()


def test_grid_enumerates_and_samples_ranges(tiny_bert, tiny_data, tmp_path):
    spec = _spec(tiny_bert, tiny_data, tmp_path, {
        "template": {"text": TEMPLATES}, "num_samples": 2,
        "space": {"train.lr": {"loguniform": [1e-3, 1e-1]}, "method.num_virtual_tokens": {"choice": [2, 4]}}})
    space = check_search(spec)
    trials = S.draw_trials(space, spec.tune)
    assert len(trials) == 2 * 2 * 2  # templates x choices x samples
    assert {(a["template"], a["method.num_virtual_tokens"]) for a in trials} == {(0, 2), (0, 4), (1, 2), (1, 4)}
    assert all(1e-3 <= a["train.lr"] <= 1e-1 for a in trials)
    assert trials == S.draw_trials(space, spec.tune)  # seeded: --resume draws the same trials
    specs = S.check_trials(space, trials)
    assert [s.method.num_virtual_tokens for s in specs] == [a["method.num_virtual_tokens"] for a in trials]
    assert specs[1].template.text == TEMPLATES[trials[1]["template"]]


@pytest.mark.parametrize("head, per_template", [("auto", 1), ("verbalizer", 2)])
def test_verbalizers_train_only_when_the_task_reads_them(tiny_bert, tiny_data, tmp_path, head, per_template):
    """A trained head never reads the verbalizer: two verbalizers must not train the same model twice."""
    verbs = [{"negative": "bad", "positive": "good"}, {"negative": "awful", "positive": "great"}]
    spec = _spec(tiny_bert, tiny_data, tmp_path, {"template": {"text": TEMPLATES, "verbalizer": verbs}},
                 task={"head": head})
    trials = S.draw_trials(check_search(spec), spec.tune)
    assert len(trials) == len(TEMPLATES) * per_template
    assert sorted({a["verbalizer"] for a in trials}) == list(range(per_template))


def test_random_samples_choices_but_enumerates_grid(tiny_bert, tiny_data, tmp_path):
    spec = _spec(tiny_bert, tiny_data, tmp_path, {
        "search": "random", "num_samples": 3, "template": {"text": TEMPLATES},
        "space": {"train.lr": {"grid": [0.01, 0.1]}, "method.num_virtual_tokens": {"uniform": [2, 6]}}})
    trials = S.draw_trials(check_search(spec), spec.tune)
    assert len(trials) == 3 * 2
    assert sorted({a["train.lr"] for a in trials}) == [0.01, 0.1]
    assert all(isinstance(a["method.num_virtual_tokens"], int) and 2 <= a["method.num_virtual_tokens"] <= 6
               for a in trials)


def test_method_name_choice_applies_only_each_methods_own_fields(tiny_bert, tiny_data, tmp_path):
    """Methods compete through method.name; a knob reaches only the trials whose method has it."""
    methods = METHODS.names()
    spec = _spec(tiny_bert, tiny_data, tmp_path, {"space": {"method.name": methods, "method.num_virtual_tokens": [3]}})
    space = check_search(spec)
    for m in methods:
        raw = space.trial_raw({"method.name": m, "method.num_virtual_tokens": 3})
        assert raw["method"]["name"] == m
        has_knob = "num_virtual_tokens" in METHODS.get(m).config_cls.model_fields
        assert raw["method"].get("num_virtual_tokens") == (3 if has_knob else None)
    trials = S.draw_trials(space, spec.tune)
    specs = S.check_trials(space, trials)  # each competitor's trial is a valid job, once
    assert sorted(s.method.name for s in specs) == methods
    assert all(("method.num_virtual_tokens" in a) == ("num_virtual_tokens" in METHODS.get(a["method.name"])
                                                      .config_cls.model_fields) for a in trials)


def test_unknown_method_base_is_refused(tiny_bert, tiny_data, tmp_path):
    with pytest.raises(JobError, match="tune.methods.lorra: unknown method"):
        check_search(_spec(tiny_bert, tiny_data, tmp_path, {"methods": {"lorra": {}}}))


@pytest.mark.parametrize("methods, expected", [
    ({"lora": {"rr": 4}}, "tune.methods.lora.rr: unknown key (did you mean 'r'?)"),
    ({"lora": {"r": 0}}, "tune.methods.lora.r:"),
    ({"lora": {"name": "ia3"}}, "tune.methods.lora.name: ia3 differs from its key"),
    ({"prompt_tuning": {"num_virtual_tokens": 4}}, "tune.methods.prompt_tuning: prompt_tuning is the job's own method"),
])
def test_a_method_base_is_checked_under_its_own_path(tiny_bert, tiny_data, tmp_path, methods, expected):
    space = {"method.name": {"choice": ["prompt_tuning", "lora"]}}
    spec = _spec(tiny_bert, tiny_data, tmp_path, {"methods": methods, "space": space})
    with pytest.raises(JobError) as e:
        check_search(spec)
    assert str(e.value).startswith(expected)
    if "own method" in expected:   # a search started before this rule goes on, as it read its job then
        check_search(spec, resume=True)


def test_tune_metric_must_be_one_the_task_reports(tiny_bert, tiny_data, tmp_path):
    job = tune_job(tiny_bert, tiny_data, tmp_path / "t", {"metric": "bleu", "space": {"train.lr": {"grid": [0.1]}}})
    with pytest.raises(SpecError, match="tune.metric: 'bleu' is not a classification evaluation metric"):
        check_search(validate_spec(job))


def test_tune_metric_defaults_to_the_task_primary_metric_and_prescreen_needs_label_words(tiny_bert, tiny_data,
                                                                                        tmp_path):
    job = tune_job(tiny_bert, tiny_data, tmp_path / "t", {"space": {"train.lr": {"grid": [0.1]}}})
    assert validate_spec(job).tune.metric == "accuracy"
    job["task"] = {"type": "token_classification", "labels": ["PER"]}
    job["template"] = {"text": "{soft} {tokens}", "verbalizer": None}
    spec = validate_spec(job)
    assert (spec.tune.metric, spec.tune.mode) == ("entity_f1", "max")
    job["tune"]["prescreen"] = True
    with pytest.raises(SpecError, match="tune.prescreen: the pre-screen ranks templates"):
        S.check_metric(validate_spec(job))


def test_optuna_search_without_optuna_says_how_to_install(tiny_bert, tiny_data, tmp_path, monkeypatch):
    """optuna is an extra, not a dependency: asking for it without it installed fails in the
    pre-flight check (before Ray starts), naming the field and the install command."""
    monkeypatch.setitem(__import__("sys").modules, "optuna", None)   # `import optuna` raises ImportError
    spec = _spec(tiny_bert, tiny_data, tmp_path, {"search": "optuna", "space": {"train.lr": {"choice": [0.1, 0.2]}}})
    with pytest.raises(SpecError) as e:
        check_search(spec)
    assert "tune.search: optuna is not installed" in str(e.value)
    assert "peft-ray[optuna]" in str(e.value) and "grid or random" in str(e.value)


def test_a_searched_seed_keeps_one_hold_out_and_one_shot_pick(tiny_bert, tiny_data, tmp_path):
    """The hold-out and the few-shot pick follow train.seed by default; trials over train.seed
    were ranked on different validation rows. Tune pins both to the job's seed."""
    from peft_ray.tasks.pipeline import holdout_seed, shots_seed

    raw = tune_job(tiny_bert, tiny_data, tmp_path / "out", {"space": {"train.seed": {"choice": [1, 2]}}},
                   train={"seed": 7})
    raw["data"].update(validation=None, validation_fraction=0.2)
    spec = validate_spec(raw)
    space = S.SearchSpace.from_spec(spec)
    for seed in (1, 2):
        trial = validate_spec(space.trial_raw({"train.seed": seed}))
        assert trial.train.seed == seed and holdout_seed(trial) == shots_seed(trial) == 7
    assert holdout_seed(validate_spec(tune_job(tiny_bert, tiny_data, tmp_path / "o", {}, train={"seed": 3}))) == 3


def test_trials_rank_their_own_steps_by_the_tune_metric(tiny_bert, tiny_data, tmp_path):
    """A trial's best step, early stopping and '(best)' lines followed train.metric_for_best while
    the search ranked and exported by tune.metric, so best_job.yaml's re-run could keep another
    checkpoint than the one the search exported (a review finding)."""
    space = S.SearchSpace.from_spec(_spec(tiny_bert, tiny_data, tmp_path, {"metric": "loss"}))
    trial = validate_spec(space.trial_raw({}))
    assert (trial.train.metric_for_best, trial.train.greater_is_better) == ("loss", False)


@pytest.mark.parametrize("train, expected", [
    ({"metric_for_best": "loss"}, "train.metric_for_best loss, but tune.metric is accuracy (max)"),
    ({"greater_is_better": False}, "train.greater_is_better false, but tune.metric is accuracy (max)"),
])
def test_a_trials_best_by_another_metric_than_the_search_is_refused(tiny_bert, tiny_data, tmp_path, train, expected):
    spec = _spec(tiny_bert, tiny_data, tmp_path, {}, train={"max_steps": 2, "eval_every": 1, **train})
    with pytest.raises(SpecError, match=re.escape(expected)):
        check_search(spec)
    check_search(spec, resume=True)   # a search started before the rule resumes (its job may not change)
    check_search(_spec(tiny_bert, tiny_data, tmp_path, {}, train={"metric_for_best": "accuracy"}))


def test_a_searched_method_meets_the_model_checks_before_ray(tiny_bert, tiny_data, tmp_path):
    """Only the job's own method met the model-side checks: a searched LoRA whose target modules
    match nothing failed in its trial, after Ray started, and the search exited 0 (a review finding)."""
    from peft_ray.tune.runner import check_tune

    tune = {"space": {"method.name": {"choice": ["prompt_tuning", "lora"]}},
            "methods": {"lora": {"target_modules": ["q_proj", "v_proj"]}}}
    with pytest.raises(JobError, match=r"tune.space.method.name\[1\] \(lora\): method.target_modules"):
        check_tune(_spec(tiny_bert, tiny_data, tmp_path, tune))
    tune["methods"]["lora"]["target_modules"] = ["query", "value"]
    check_tune(_spec(tiny_bert, tiny_data, tmp_path, tune))


def test_a_trial_larger_than_the_in_process_ray_is_refused_before_anything_starts(tiny_bert, tiny_data, tmp_path,
                                                                                  monkeypatch):
    """Found only after Ray had started and search.json was written (a review finding)."""
    import os

    from peft_ray.tune.fit import check_fits_here as check_tune_here

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    spec = _spec(tiny_bert, tiny_data, tmp_path, {"trial_cpus": 1}, scaling={"num_workers": 2})
    with pytest.raises(JobError, match="one trial needs 3 CPUs .* the cluster has 3, 1 of them kept for Ray Data"):
        check_tune_here(spec)
    with pytest.raises(JobError, match="scaling.use_gpu: 1 worker"):
        check_tune_here(_spec(tiny_bert, tiny_data, tmp_path, {"space": {"scaling.use_gpu": {"choice": [False, True]}}}))
    # one GPU holds a 1-worker GPU trial (the check first counted none: every GPU search was refused)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    check_tune_here(_spec(tiny_bert, tiny_data, tmp_path, {}, scaling={"use_gpu": True}))
    # validate notes it (the job may be meant for a cluster), as it notes a train job too large here
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tune_job(tiny_bert, tiny_data, tmp_path / "o", {"trial_cpus": 1},
                                           scaling={"num_workers": 2})))
    r = CliRunner().invoke(main, ["validate", str(job)])
    assert r.exit_code == 0 and "note: one trial needs 3 CPUs" in r.output, r.output
    # `tune` refuses it before output.dir holds anything
    r = CliRunner().invoke(main, ["tune", str(job)])
    assert r.exit_code == 2 and "one trial needs 3 CPUs" in r.output and not (tmp_path / "o").exists(), r.output
