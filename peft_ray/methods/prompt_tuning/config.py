"""Prompt tuning config. Field names follow HF PEFT's PromptTuningConfig where one exists."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field, model_validator

from peft_ray.methods.base import MethodConfig
from peft_ray.storage import PathStr

# init -> HF PEFT's PromptTuningInit value, written to adapter_config.json.
PEFT_INIT = {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}


class PromptTuningConfig(MethodConfig):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="soft tokens prepended to every input")
    init: Literal["random", "vocab", "text"] = Field(
        "vocab", description="random normal (scaled to the embeddings), sampled vocabulary rows, or init_text")
    init_text: Optional[str] = Field(None, description="text whose token embeddings seed the prompt (init: text)")
    init_from: Optional[PathStr] = Field(None, description="an HF PEFT prompt-tuning adapter folder to start from")
    modules_to_save: Optional[List[str]] = Field(
        None, description="extra base modules to train and save (the head is added for classification)")
    prompt_cache: Literal["auto", "on", "off"] = Field(
        "auto", description="causal decoders (Llama, GPT-2): run the prompt once per batch and feed its K/V "
                            "as a cache; auto: wherever exact (no active dropout), on: also under dropout")

    def input_positions(self) -> int:
        return self.num_virtual_tokens

    @model_validator(mode="after")
    def _text_needs_words(self):
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init: text needs method.init_text, e.g. 'Classify the sentiment of this text'")
        return self
