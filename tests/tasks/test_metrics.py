"""Metric functions against hand-computed cases (and seqeval itself where it is installed)."""

from __future__ import annotations

import pytest

from peft_ray.metrics import (entities, entity_counts, entity_metrics, exact_match, generation_metrics,
                              repair_iob2, rouge_l, token_f1, translation_metrics)


def test_squad_normalisation_exact_match_and_token_f1():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("a cat", "dog") == 0.0
    # pred "paris france" vs ref "paris": precision 1/2, recall 1 -> F1 2/3
    assert token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_rouge_l_is_lcs_f1():
    # LCS("a b c d", "a c d e") = "a c d" = 3 -> P 3/4, R 3/4
    assert rouge_l("x b c d", "x c d e") == pytest.approx(0.75)
    m = generation_metrics(["x y", "z"], ["x y", "w"])
    assert m["exact_match"] == 0.5 and m["rouge_l"] == 0.5


def test_rouge_l_tokenizes_as_rouge_score():
    """rouge_score's default tokenizer (HF evaluate's rouge): articles count, punctuation separates,
    nothing matches nothing. SQuAD's normalisation had given 1.0 to the first pair."""
    assert rouge_l("the cat sat on a mat", "a cat sat on the mat") == pytest.approx(2 / 3)
    assert rouge_l("Don't panic!", "don t panic") == 1.0
    assert rouge_l("", "") == 0.0 and rouge_l("x", "") == 0.0
    assert rouge_l("Привет мир", "Привет мир") == 1.0 and rouge_l("Mädchen", "Männer") == 0.0   # any script


def test_exact_match_as_written_keeps_case_and_punctuation():
    """SQuAD's normalised match takes "rocket" for "ROCKET" (the capitalise skill of builtin:instructions)."""
    m = generation_metrics(["Rocket", " HOUSE ", "42."], ["ROCKET", "HOUSE", "42"])
    assert m["exact_match"] == 1.0 and m["exact_match_cased"] == pytest.approx(1 / 3)


def test_translation_metrics_are_sacrebleu():
    m = translation_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert m["bleu"] == pytest.approx(100.0) and m["chrf"] == pytest.approx(100.0) and m["exact_match"] == 1.0
    assert translation_metrics(["a b c d"], ["w x y z"])["bleu"] == 0.0


def test_entities_at_sentence_end_and_adjacent():
    assert entities(["O", "B-PER", "I-PER"]) == [("PER", 1, 3)]                    # entity at the end
    assert entities(["B-PER", "B-PER"]) == [("PER", 0, 1), ("PER", 1, 2)]           # adjacent, same type
    assert entities(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]           # type change starts one


def test_i_without_b_starts_an_entity_like_conlleval():
    assert entities(["O", "I-ORG", "I-ORG", "O"]) == [("ORG", 1, 3)]
    assert repair_iob2(["O", "I-ORG", "I-ORG", "I-LOC"]) == ["O", "B-ORG", "I-ORG", "B-LOC"]


def test_entity_f1_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    m = entity_metrics(entity_counts(gold, pred))
    # gold 3 entities, pred 3, correct 2 -> P = R = F1 = 2/3
    assert m["entity_precision"] == pytest.approx(2 / 3) and m["entity_f1"] == pytest.approx(2 / 3)
    assert m["f1/PER"] == 1.0 and m["f1/LOC"] == 0.0


@pytest.mark.parametrize("gold,pred", [
    ([["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "I-ORG", "B-ORG"]],
     [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]),
    ([["O", "B-MISC", "I-MISC", "I-PER"]], [["O", "I-MISC", "I-MISC", "B-PER"]]),
])
def test_matches_seqeval(gold, pred):
    seqeval = pytest.importorskip("seqeval.metrics")
    m = entity_metrics(entity_counts(gold, pred))
    assert m["entity_f1"] == pytest.approx(seqeval.f1_score(gold, pred))
    assert m["entity_precision"] == pytest.approx(seqeval.precision_score(gold, pred))
    assert m["entity_recall"] == pytest.approx(seqeval.recall_score(gold, pred))


def test_only_a_loss_is_minimised_not_a_class_named_loss():
    from peft_ray.metrics import lower_is_better
    from peft_ray.spec import validate_spec

    assert lower_is_better("loss") and lower_is_better("eval_loss")
    assert not lower_is_better("f1/loss") and not lower_is_better("recall/loss") and not lower_is_better("accuracy")
    spec = validate_spec({"task": {"labels": ["loss", "win"]},
                          "tune": {"metric": "recall/loss", "space": {"train.lr": {"choice": [1e-3]}}}})
    assert spec.tune.mode == "max"


def test_every_labelled_entity_type_is_reported():
    """A per-type metric_for_best (f1/MISC) passes the pre-flight check against task.labels, so the
    evaluation must report it even where no MISC entity is gold or predicted."""
    m = entity_metrics(entity_counts([["B-PER", "O"]], [["B-PER", "O"]]), ["PER", "MISC"])
    assert m["f1/PER"] == 1.0 and m["f1/MISC"] == 0.0


def test_classification_metrics_match_sklearn():
    """Macro F1 over the classes seen in gold or predictions (sklearn's default and HF evaluate's):
    a listed class that a small split never holds does not count as F1 0."""
    import numpy as np
    sk = pytest.importorskip("sklearn.metrics")

    from peft_ray.metrics import classification_metrics

    rng = np.random.default_rng(0)
    for n_classes, rows in [(2, 40), (3, 9), (4, 7), (6, 5)]:
        gold, pred = rng.integers(0, n_classes - 1, rows), rng.integers(0, n_classes, rows)  # the last class rare
        cm = np.zeros((n_classes, n_classes))
        np.add.at(cm, (gold, pred), 1)
        m = classification_metrics(cm, [f"c{i}" for i in range(n_classes)])
        assert m["macro_f1"] == pytest.approx(sk.f1_score(gold, pred, average="macro", zero_division=0))
        assert m["accuracy"] == pytest.approx(sk.accuracy_score(gold, pred))
        per = sk.f1_score(gold, pred, labels=range(n_classes), average=None, zero_division=0)
        assert [m[f"f1/c{i}"] for i in range(n_classes)] == pytest.approx(list(per))
    cm = np.array([[3.0, 0, 0], [1, 2, 0], [0, 0, 0]])           # class 2 in neither: two classes count
    assert classification_metrics(cm, ["a", "b", "c"])["macro_f1"] == pytest.approx((6 / 7 + 0.8) / 2)
