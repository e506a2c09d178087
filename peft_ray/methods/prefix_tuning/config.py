"""Prefix tuning config. Field names and defaults are HF PEFT's PrefixTuningConfig."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field, model_validator

from peft_ray.methods.base import MethodConfig
from peft_ray.storage import PathStr


class PrefixTuningConfig(MethodConfig):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="key/value rows prepended in every layer")
    prefix_projection: bool = Field(
        False, description="train the prefix through a 2-layer MLP (reparameterization) instead of directly")
    encoder_hidden_size: Optional[int] = Field(
        None, ge=1, le=65_536, description="hidden width of that MLP (null: the model's token_dim)")
    init: Literal["random", "text"] = Field(
        "random", description="random: PEFT's N(0, 1) rows; text: the keys and values the frozen model computes "
        "for init_text (Li & Liang's real-word init; causal LMs), so training starts from the model reading it")
    init_text: Optional[str] = Field(None, description="the text whose keys and values seed the prefix (init: text)")
    modules_to_save: Optional[List[str]] = Field(
        None, description="extra base modules to train and save in full (the head is added for classification)")
    init_from: Optional[PathStr] = Field(
        None, description="an HF PEFT prefix-tuning adapter folder to start from (its saved prefix is trained "
        "directly: PEFT saves the MLP's output, not the MLP)")

    @model_validator(mode="after")
    def _hidden_needs_projection(self):
        if self.encoder_hidden_size is not None and not self.prefix_projection:
            raise ValueError("method.encoder_hidden_size only applies with method.prefix_projection: true")
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init: text needs method.init_text, e.g. 'Classify the sentiment of this review.'")
        if self.init == "text" and self.prefix_projection:
            raise ValueError("method.init: text seeds the prefix itself; it does not apply with prefix_projection: true")
        return self
