"""Generation (QA, dialogue) and translation: one prompt in, one response out.

The template's {label} slot marks where the response starts; the response is the
`task.target_column` value. Decoder-only models (GPT-2, Llama) train on prompt + response +
eos with the loss on the response only; encoder-decoder models (T5) encode the prompt and
decode the response. Evaluation decodes per `task.decoding` (decoding.py), then scores exact
match / token F1 / ROUGE-L (generation) or BLEU / chrF (translation, sacrebleu).
"""

from __future__ import annotations

from typing import Dict

import pyarrow as pa

from peft_ray.errors import SpecError
from peft_ray.metrics import generation_metrics, translation_metrics
from peft_ray.tasks.base import Task, register
from peft_ray.tasks.generation.config import GenerationConfig
from peft_ray.tasks.generation.rows import GenerationRows, build_rows
from peft_ray.templates import check_verbalizer

PLACEHOLDER_TARGET = "x"   # predict: a target the row builder requires and prediction never reads


def check_lm_head(spec, lm_kind: str) -> None:
    """A response is decoded by an LM head: a causal or encoder-decoder model (models.lm_kind), checked
    in the pre-flight so an encoder fails before any cluster work, not in every Ray worker."""
    if lm_kind not in ("causal", "seq2seq"):
        raise SpecError(f"model.name_or_path: task.type {spec.task.type} needs a model with an LM head "
                        f"(GPT-2/Llama or T5 families); '{spec.model.name_or_path}' is an encoder. "
                        "Use a classification or token_classification task with it")


class Generation(Task):
    name = "generation"
    config_cls = GenerationConfig
    peft_task_type = "CAUSAL_LM"
    token_loss = True
    input_cut = "source_truncated"       # the prompt decoding continues, not the teacher-forcing row
    primary_metric = "exact_match"
    headline = ("exact_match", "token_f1", "rouge_l")
    also_reported = ("exact_match_cased",)
    summary_rows = (("val exact match", "exact_match", "{:.4f}"),
                    ("val exact match (as written)", "exact_match_cased", "{:.4f}"),
                    ("val token F1", "token_f1", "{:.4f}"), ("val ROUGE-L", "rouge_l", "{:.4f}"))
    model_module = "peft_ray.tasks.generation.model"
    scores = staticmethod(generation_metrics)   # (predictions, references) -> metrics

    def generated_tokens(self, cfg) -> int:
        return cfg.decoding.max_new_tokens

    def check(self, spec, template) -> None:
        """The response goes at {label} (or after the template when it has none)."""
        check_verbalizer(spec.template.verbalizer, [], "auto")
        labels = [i for i, p in enumerate(template.parts) if p.kind == "label"]
        if len(labels) > 1:
            raise SpecError("template.text: {label} marks where the response starts; use it once")
        if labels and any(p.kind != "text" or p.value.strip() for p in template.parts[labels[0] + 1:]):
            raise SpecError("template.text: nothing may follow {label} in a generation/translation template: "
                            "the response is the end of the sequence")
        if spec.task.target_column in template.columns:
            raise SpecError(f"template.text: the response column '{spec.task.target_column}' (task.target_column) "
                            "must not appear in the prompt; mark where it goes with {label}")

    def check_model(self, spec, lm_kind: str) -> None:
        check_lm_head(spec, lm_kind)

    def supervision_columns(self, cfg) -> Dict[str, str]:
        return {cfg.target_column: "task.target_column"}

    def row_builder(self, spec, tokenizer_path: str, lm_kind: str):
        t = spec.task
        return build_rows, GenerationRows(
            tokenizer_path=tokenizer_path, template=spec.template.text, max_length=spec.model.max_length,
            trust_remote_code=spec.model.trust_remote_code, chat=spec.template.chat and lm_kind == "causal",
            system=spec.template.system, target_column=t.target_column, max_target_length=t.max_target_length,
            lm_kind=lm_kind)

    def runtime(self, spec, path: str):
        return self.model.runtime(spec, path, self.scores)

    def peft_task_type_of(self, runtime) -> str:
        # PEFT picks its wrapper by this: a prompt-learning adapter of a causal LM saved as
        # SEQ_2_SEQ_LM (translation on SmolLM2) failed in generate, one of T5 saved as CAUSAL_LM
        # gave other logits. The base's architecture decides, whatever the task.
        return "SEQ_2_SEQ_LM" if runtime.lm_kind == "seq2seq" else "CAUSAL_LM"

    def placeholders(self, row: dict, cfg: GenerationRows) -> dict:
        return {cfg.target_column: PLACEHOLDER_TARGET}

    def predict_fields(self, cfg) -> list:
        return [pa.field("prediction", pa.string())]


class Translation(Generation):
    name = "translation"
    primary_metric = "bleu"
    headline = ("bleu", "chrf", "exact_match")
    summary_rows = (("val BLEU", "bleu", "{:.2f}"), ("val chrF", "chrf", "{:.2f}"),
                    ("val exact match", "exact_match", "{:.4f}"))
    also_reported = ()
    scores = staticmethod(translation_metrics)


GENERATION = register(Generation())
TRANSLATION = register(Translation())
