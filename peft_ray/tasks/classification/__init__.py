"""Text classification: a trained head (encoders; HF PEFT's SEQ_CLS layout) or verbalizer
scoring by the LM head (masked or causal LMs; see verbalizer.py). `task.head: auto` picks the
head for encoders and the verbalizer for causal LMs."""

from __future__ import annotations

import functools
from typing import Dict, List, Optional, Tuple

import pyarrow as pa

from peft_ray.errors import DataError, SpecError
from peft_ray.tasks.base import Task, register
from peft_ray.tasks.classification.config import ClassificationConfig, scoring_for
from peft_ray.tasks.classification.rows import ClassificationRows, build_rows
from peft_ray.templates import check_verbalizer


def warn_fresh_mlm_head(spec) -> None:
    """Verbalizer scoring through a masked-LM head the weights lack scores label words with a
    random layer: zero-shot figures are noise, and training has to undo it. Said, not refused: a
    test model or a run that trains the head (modules_to_save) may mean it."""
    from peft_ray.models import resolve_model_path

    _warn_fresh_mlm_head(resolve_model_path(spec.model.name_or_path), spec.model.name_or_path,
                         spec.model.trust_remote_code)


@functools.lru_cache(maxsize=8)   # once a process: a search checks every template's job
def _warn_fresh_mlm_head(path: str, name: str, trust: bool) -> None:
    import sys

    from peft_ray.models import fresh_mlm_head

    missing = fresh_mlm_head(path, trust)
    if missing:
        print(f"[peft-ray] warning: task.head: verbalizer scores label words with the masked-LM head of "
              f"'{name}', which its weights do not hold (e.g. {missing}): it starts random, "
              "so zero-shot scores are noise. Use task.head: head, or a model saved with its masked-LM head",
              file=sys.stderr)


def _check_label_ends_template(text: str) -> None:
    """A causal LM scores the label words as the continuation of the text before {label}, so the
    rows render only that part: text after the slot was dropped without a word (`Sentiment:
    {label} Review: {text}` scored every row on "Sentiment:" alone), and nothing before it left an
    empty prompt (a reshape error in the forward). Closing punctuation after the slot (`was
    {label}.`) is allowed: it is not scored, and it changes nothing the model reads before the label."""
    from peft_ray.templates import Template

    parts = Template.parse(text).parts
    cut = next((i for i, p in enumerate(parts) if p.kind == "label"), None)
    if cut is None:
        return                                        # no slot: the label words follow the whole template
    if any(p.kind != "text" or any(ch.isalnum() for ch in p.value) for p in parts[cut + 1:]):
        raise SpecError(f"template.text: a causal LM scores the label words as what follows the text before "
                        f"{{label}}, so nothing may come after {{label}} (got '{text}'); move {{label}} to the "
                        "end, e.g. 'Review: {text} Sentiment: {label}'")
    if not any(p.kind != "text" or p.value.strip() for p in parts[:cut]):
        raise SpecError(f"template.text: a causal LM scores the label words after the text before {{label}}, and "
                        f"there is none (got '{text}'); put the input first, e.g. '{{text}} Sentiment: {{label}}'")


@functools.lru_cache(maxsize=None)   # once a process: each trial and check of a search came to it again
def _note_unread_verbalizer(head: str) -> None:
    import sys

    why = "task.head: auto resolves to a trained head on an encoder" if head == "auto" else "task.head is head"
    print(f"[peft-ray] note: template.verbalizer is not read: {why}, so label words change nothing. "
          "Set task.head: verbalizer to score label words, or leave the verbalizer out", file=sys.stderr)


class Classification(Task):
    name = "classification"
    config_cls = ClassificationConfig
    peft_task_type = "SEQ_CLS"
    primary_metric = "accuracy"
    headline = ("accuracy", "macro_f1")
    per_class = ("precision", "recall", "f1")
    summary_rows = (("val accuracy", "accuracy", "{:.4f}"), ("val macro-F1", "macro_f1", "{:.4f}"))
    model_module = "peft_ray.tasks.classification.model"
    few_shot = True
    prescreens = True
    fits_columns = True

    def check(self, spec, template) -> None:
        t = spec.task
        check_verbalizer(spec.template.verbalizer, t.labels or [], t.head)
        if not t.labels or len(t.labels) < 2:
            raise SpecError("task.labels: classification needs at least two label names, e.g. [negative, positive]")
        if sum(p.kind == "label" for p in template.parts) > 1:
            raise SpecError("template.text: {label} marks the one position that is scored; use it once "
                            f"(got '{spec.template.text}')")

    def check_model(self, spec, lm_kind: str) -> None:
        scoring = scoring_for(spec.task.head, lm_kind)
        prescreened = spec.tune is not None and spec.tune.prescreen   # the pre-screen scores label words
        if scoring == "head" and spec.template.verbalizer and not prescreened:
            _note_unread_verbalizer(spec.task.head)
        if scoring == "causal":
            _check_label_ends_template(spec.template.text)
        if scoring != "head":
            from peft_ray.tasks.classification.verbalizer import check_labels_differ

            check_labels_differ(spec)
        if scoring == "mlm":
            warn_fresh_mlm_head(spec)

    def supervision_columns(self, cfg) -> Dict[str, str]:
        return {cfg.label_column: "task.label_column"}

    def classes(self, cfg) -> Tuple[str, ...]:
        return tuple(cfg.labels or ())

    def reads_verbalizer(self, cfg) -> bool:
        return cfg.head == "verbalizer"

    def trains_new_head(self, cfg, lm_kind: str) -> bool:
        return scoring_for(cfg.head, lm_kind) == "head"

    def label_column(self, cfg) -> Optional[str]:
        return cfg.label_column

    def label_names(self, cfg) -> Optional[List[str]]:
        return list(cfg.labels or [])

    def metrics(self, cfg) -> List[str]:
        return ["accuracy", "macro_f1", "loss"] + [f"{k}/{lab}" for k in ("precision", "recall", "f1")
                                                   for lab in cfg.labels or []]

    def check_train_facts(self, facts) -> None:
        if len(facts.label_counts) < 2:
            raise DataError(f"data.train: every usable row has label {list(facts.label_counts)}; "
                            "classification needs at least two classes in the training data")

    def row_builder(self, spec, tokenizer_path: str, lm_kind: str):
        t, scoring = spec.task, scoring_for(spec.task.head, lm_kind)
        return build_rows, ClassificationRows(
            tokenizer_path=tokenizer_path, template=spec.template.text, max_length=spec.model.max_length,
            trust_remote_code=spec.model.trust_remote_code, chat=spec.template.chat and lm_kind == "causal",
            system=spec.template.system, label_column=t.label_column, labels=tuple(t.labels or ()),
            scoring=scoring)

    def placeholders(self, row: dict, cfg: ClassificationRows) -> dict:
        return {cfg.label_column: cfg.labels[0]}

    def peft_task_type_of(self, runtime) -> str:
        # Causal verbalizer scoring trains no head: the base is the causal LM itself, which
        # PEFT wraps as CAUSAL_LM (SEQ_CLS would build a sequence classifier with a new head).
        return "CAUSAL_LM" if runtime.scoring == "causal" else self.peft_task_type

    def predict_fields(self, cfg) -> list:
        return [pa.field("prediction", pa.string()),
                pa.field("scores", pa.struct([(label, pa.float64()) for label in cfg.labels]))]


TASK = register(Classification())
