"""Token classification (NER) with IOB2 tags.

Words are tokenized with `is_split_into_words`; each word's label sits on its first sub-token
and the other sub-tokens are ignored (-100), so predictions map back to words one to one. Hard
text in the template (e.g. "{soft} Entities: {tokens}") becomes extra words with no label.
Predicted tag sequences are repaired to valid IOB2 (an I-X that continues nothing becomes B-X)
before entity-level scoring with seqeval's default (conlleval) semantics.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import pyarrow as pa

from peft_ray.errors import SpecError
from peft_ray.tasks.base import Task, register
from peft_ray.tasks.token_classification.config import TokenClassificationConfig
from peft_ray.tasks.token_classification.rows import (TokenClassificationRows, build_rows, check_aligned,
                                                       tag_ids, tag_names)
from peft_ray.templates import check_verbalizer


class TokenClassification(Task):
    name = "token_classification"
    config_cls = TokenClassificationConfig
    peft_task_type = "TOKEN_CLS"
    token_loss = True
    primary_metric = "entity_f1"
    headline = ("entity_f1", "entity_precision", "entity_recall")
    per_class = ("f1",)
    summary_rows = (("val entity F1", "entity_f1", "{:.4f}"), ("val entity precision", "entity_precision", "{:.4f}"),
                    ("val entity recall", "entity_recall", "{:.4f}"))
    model_module = "peft_ray.tasks.token_classification.model"

    def check(self, spec, template) -> None:
        t = spec.task
        check_verbalizer(spec.template.verbalizer, t.labels or [], "auto")
        if not t.labels:
            raise SpecError("task.labels: token_classification needs the entity types, e.g. [PER, ORG, LOC, MISC] "
                            "(tags are IOB2: O, B-PER, I-PER, ...)")
        bad = [lab for lab in t.labels if lab[:2] in ("B-", "I-") or lab == "O"]
        if bad:
            raise SpecError(f"task.labels: give entity types, not IOB2 tags ({bad}); e.g. [PER, ORG] for "
                            "B-PER/I-PER/...")
        if template.has_label_slot:
            raise SpecError("template.text: {label} has no place in a token_classification template: every "
                            f"word of '{{{t.tokens_column}}}' gets its tag; remove {{label}}")
        if template.columns != [t.tokens_column]:
            raise SpecError(f"template.text: token_classification templates hold exactly one column, the word list "
                            f"task.tokens_column ('{{{t.tokens_column}}}'), plus optional soft tokens and hard "
                            f"text; got columns {template.columns}")

    def input_columns(self, cfg) -> Dict[str, str]:
        return {cfg.tokens_column: "task.tokens_column"}

    def supervision_columns(self, cfg) -> Dict[str, str]:
        return {cfg.tags_column: "task.tags_column"}

    def reads_template_columns(self) -> bool:
        return False   # its one template column is task.tokens_column

    def trains_new_head(self, cfg, lm_kind: str) -> bool:
        return True    # a tag classifier over the encoder's states

    def usable(self, cfg, batch, columns: List[str], text_columns: List[str]):
        """Also a sentence with words: the row builder skips one without (an empty tag list beside
        words stays a row, for check_supervision's alignment check to name)."""
        import pyarrow.compute as pc

        from peft_ray.data.columns import non_empty_lists

        ok = super().usable(cfg, batch, columns, text_columns)
        return pc.and_(ok, non_empty_lists(batch.column(cfg.tokens_column))) if cfg.tokens_column in columns else ok

    def check_supervision(self, cfg, rows, row_numbers: List[int]) -> None:
        names = tag_names(cfg.labels or [])
        words = rows.column(cfg.tokens_column).to_pylist()
        for tokens, tags, row_no in zip(words, rows.column(cfg.tags_column).to_pylist(), row_numbers):
            where = f"row {row_no} (0-based)"           # a file's row, as the skipped-row note counts them
            tag_ids(tags if isinstance(tags, list) else [tags], names, where, cfg.tags_column)
            check_aligned(tokens, tags, where, cfg.tokens_column, cfg.tags_column)

    def list_columns(self, cfg) -> Dict[str, str]:
        return {cfg.tokens_column: "task.tokens_column", cfg.tags_column: "task.tags_column"}

    def label_names(self, cfg) -> Optional[List[str]]:
        return tag_names(cfg.labels or [])

    def metrics(self, cfg) -> List[str]:
        return ["entity_f1", "entity_precision", "entity_recall", "token_accuracy", "loss",
                *(f"f1/{t}" for t in cfg.labels or [])]

    def row_builder(self, spec, tokenizer_path: str, lm_kind: str):
        t = spec.task
        return build_rows, TokenClassificationRows(
            tokenizer_path=tokenizer_path, template=spec.template.text, max_length=spec.model.max_length,
            trust_remote_code=spec.model.trust_remote_code, labels=tuple(t.labels or ()),
            tokens_column=t.tokens_column, tags_column=t.tags_column)

    def placeholders(self, row: dict, cfg: TokenClassificationRows) -> dict:
        tokens = row.get(cfg.tokens_column)
        return {cfg.tags_column: ["O"] * len(tokens) if isinstance(tokens, list) else None}

    def predict_fields(self, cfg) -> list:
        return [pa.field("prediction", pa.list_(pa.string()))]


TASK = register(TokenClassification())
