"""Zero-shot pre-screen: the masked-LM verbalizer score and the cosine proxy, checked against
hand computations on one row, and the top-k selection. No Ray (it runs on the driver)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from peft_ray.data.batching import collate
from peft_ray.data.preprocess import preprocess
from peft_ray.tasks.pipeline import make_preprocess_config
from peft_ray.tasks.classification import verbalizer

from peft_ray.spec import validate_spec
from peft_ray.templates import Template
from peft_ray.tune.prescreen import Encoder, LMScorer, cosine_label_scores, lm_scoring, prescreen_templates, sample_rows
from peft_ray.tune.runner import check_search
from tests.tune.conftest import TEMPLATES, tune_job

VERBS = [{"negative": ["bad"], "positive": ["good"]}, {"negative": ["awful", "dull"], "positive": ["great"]}]
THREE = TEMPLATES + ["{soft} {text} All in all, {label}."]


def _spec(model, tiny_data, tmp_path, k=2):
    tune = {"template": {"text": THREE, "verbalizer": VERBS}, "prescreen": True, "prescreen_top_k": k,
            "prescreen_samples": 16}
    return validate_spec(tune_job(model, tiny_data, tmp_path / "out", tune))


@pytest.mark.parametrize("model", ["tiny_mlm", "tiny_gpt2"])
def test_lm_screen_is_the_training_verbalizer_score(model, request, tiny_data, tmp_path):
    """One implementation: the pre-screen's label scores are the ones training's loss and
    evaluation compute (tasks/classification/verbalizer.py), on rows from the job's own preprocessing."""
    path = request.getfixturevalue(model)
    spec = _spec(path, tiny_data, tmp_path)
    assert lm_scoring(spec) == ("mlm" if model == "tiny_mlm" else "causal")
    lm = LMScorer(spec)
    rows = sample_rows(spec, 4)
    scores, gold = lm.scores(THREE[1], VERBS[1], rows)                                       # (4, 2)

    variant = lm.spec.model_copy(deep=True)
    variant.template.text, variant.template.verbalizer = THREE[1], VERBS[1]
    table = preprocess(pa.Table.from_pylist(rows), make_preprocess_config(variant, lm.path, "validation"))
    cands, scoring = verbalizer.spec_candidates(variant)
    with torch.no_grad():
        expected = verbalizer.label_scores(lm.engine, collate(table.to_pylist()[:1], 0), cands, scoring)[0]
    torch.testing.assert_close(scores[0], expected, atol=1e-5, rtol=1e-5)
    assert list(gold) == [r["label"] for r in rows]


def test_cosine_proxy_without_an_lm_head(tiny_bert, tiny_data, tmp_path):
    """The tiny BERT (like MiniLM) has no masked-LM head: cosine of mean-pooled embeddings of the
    rendered template (label slot filled with each word) and of the row's own text."""
    spec = _spec(tiny_bert, tiny_data, tmp_path)
    enc = Encoder(spec)
    assert lm_scoring(spec) is None
    rows = sample_rows(spec, 3)
    template = Template.parse(THREE[2])
    sent = enc.embed([r["text"] for r in rows])
    scores = cosine_label_scores(enc, template, VERBS[1], ["negative", "positive"], rows, sent)

    def emb(text):
        batch = enc.tok([text], return_tensors="pt")
        with torch.no_grad():
            h = enc.model(**batch).last_hidden_state[0]
        return torch.nn.functional.normalize(h.mean(0), dim=-1)

    r = rows[1]
    neg = (emb(template.render(r, "awful")) @ emb(r["text"]) + emb(template.render(r, "dull")) @ emb(r["text"])) / 2
    pos = emb(template.render(r, "great")) @ emb(r["text"])
    torch.testing.assert_close(scores[1], torch.stack([neg, pos]), atol=1e-5, rtol=1e-5)


def test_prescreen_keeps_the_top_k_templates(tiny_bert, tiny_data, tmp_path, capsys):
    spec = _spec(tiny_bert, tiny_data, tmp_path, k=2)
    space = check_search(spec)
    (tmp_path / "out").mkdir()
    kept, best_verb = prescreen_templates(spec, space, tmp_path / "out")
    # "kept" marks what trains: each kept template with its best verbalizer (a trained head reads no
    # label words, so the verbalizer is no trial dimension); it marked every verbalizer of a kept template
    assert not space.verbalizer_trains
    marked = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("kept")]
    assert sorted(marked) == sorted(line for line in marked if any(
        f"template[{i}] verbalizer[{best_verb[i]}]" in line for i in kept)) and len(marked) == len(kept)
    report = json.loads((tmp_path / "out" / "prescreen.json").read_text())
    assert report["scorer"] == "cosine" and report["samples"] == 16 and report["kept"] == kept
    assert len(report["scores"]) == len(THREE) * len(VERBS) and len(kept) == 2
    best = {}
    for s in report["scores"]:
        assert 0.0 <= s["accuracy"] <= 1.0
        best[s["template_id"]] = max(best.get(s["template_id"], (-1, -np.inf)), (s["accuracy"], s["margin"]))
    dropped = set(range(len(THREE))) - set(kept)
    assert all(best[k] >= best[d] for k in kept for d in dropped)
    for i, j in best_verb.items():  # each template's verbalizer is its best-scoring one
        mine = [s for s in report["scores"] if s["template_id"] == i]
        assert max(mine, key=lambda s: (s["accuracy"], s["margin"]))["verbalizer_id"] == j
    assert prescreen_templates(spec, space, tmp_path / "out") == (kept, best_verb)  # deterministic


@pytest.mark.parametrize("n", [5, 16])
def test_sample_is_seeded_and_labelled(tiny_bert, tiny_data, tmp_path, n):
    spec = _spec(tiny_bert, tiny_data, tmp_path)
    rows = sample_rows(spec, n)
    assert len(rows) == n and rows == sample_rows(spec, n)
    assert all(r["label"] is not None for r in rows)
    other = spec.model_copy(deep=True)
    other.train.seed = spec.train.seed + 1
    assert sample_rows(other, n) != rows        # drawn with train.seed, not a fixed one (a review finding)


def test_sample_without_a_validation_file_is_the_hold_out_never_a_training_row(tiny_bert, tiny_data, tmp_path):
    """A maintainer-review finding: nothing tested that a job with validation: null screens its
    data.validation_fraction hold-out, not the rows its trials then train on."""
    import pyarrow.parquet as pq

    from peft_ray.data.holdout import apply_holdout
    from peft_ray.tasks.pipeline import holdout_seed, needed_columns

    job = tune_job(tiny_bert, tiny_data, tmp_path / "out", {"template": {"text": THREE, "verbalizer": VERBS},
                                                            "prescreen": True, "prescreen_samples": 16})
    job["data"] = {**job["data"], "validation": None, "validation_fraction": 0.3}
    spec = validate_spec(job)
    table = pq.read_table(tiny_data / "train.parquet").select(needed_columns(spec))
    held = apply_holdout(table, needed_columns(spec), 0.3, holdout_seed(spec), "validation").to_pylist()
    screened = sample_rows(spec, 10_000)
    assert 0 < len(screened) == len(held) < table.num_rows
    assert sorted(map(str, screened)) == sorted(map(str, held))


def test_schedule_error_comes_before_the_prescreen(tiny_mlm, tiny_data, tmp_path, monkeypatch):
    """ASHA with no evaluation before a trial's end is a spec error raised before the pre-screen
    loads a model (and before output.dir is written)."""
    from peft_ray.errors import SpecError
    from peft_ray.tune import prescreen, runner

    tune = {"template": {"text": THREE, "verbalizer": VERBS}, "prescreen": True, "prescreen_top_k": 1,
            "scheduler": {"name": "asha", "grace_period": 1}}
    spec = validate_spec(tune_job(tiny_mlm, tiny_data, tmp_path / "out", tune, train={"eval_every": None}))
    monkeypatch.setattr(prescreen, "prescreen_templates", lambda *a: pytest.fail("pre-screen ran"))
    with pytest.raises(SpecError, match="train.eval_every"):
        runner.run_tune(spec)
    assert not (tmp_path / "out").exists()


def test_trials_of_a_prescreened_head_search_carry_no_unread_verbalizer(tiny_bert, tiny_data, tmp_path, capsys):
    """The pre-screen reads the label words, the trials' trained head never does: each trial's
    pre-flight noted "template.verbalizer is not read" beside the search's own note that it trains
    once per template (left undone by the thirtieth session). The trials (and best_job.yaml) now
    carry no verbalizer; without the pre-screen the note stays, as nothing else says it."""
    from peft_ray.tasks.classification import _note_unread_verbalizer
    from peft_ray.tune.runner import check_tune

    _note_unread_verbalizer.cache_clear()
    space, _ = check_tune(_spec(tiny_bert, tiny_data, tmp_path))   # each template's pre-flight too
    assert not space.verbalizer_trains and space.trial_raw({"template": 1})["template"]["verbalizer"] is None
    assert "is not read" not in capsys.readouterr().err
    # tune.prescreen with nothing to screen (no more templates than it keeps, one verbalizer) runs no
    # pre-screen: the trials keep the verbalizer and the note stays (a diff review)
    for name, tune in (("plain", {"prescreen": False}), ("idle", {"prescreen": True, "prescreen_top_k": 3})):
        _note_unread_verbalizer.cache_clear()
        raw = tune_job(tiny_bert, tiny_data, tmp_path / name, {"template": {"text": THREE}, **tune})
        raw["template"]["verbalizer"] = VERBS[0]
        space, _ = check_tune(validate_spec(raw))
        assert not space.prescreen and space.trial_raw({"template": 0})["template"]["verbalizer"] == VERBS[0]
        assert "template.verbalizer is not read" in capsys.readouterr().err, name
