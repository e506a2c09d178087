"""P-tuning config. Field names and defaults are HF PEFT's PromptEncoderConfig."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field

from peft_ray.methods.base import MethodConfig
from peft_ray.storage import PathStr


class PTuningConfig(MethodConfig):
    name: Literal["p_tuning"] = "p_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="soft tokens prepended to every input")
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = Field(
        "MLP", description="the prompt encoder: a 3-layer MLP, or a bidirectional LSTM + 2-layer MLP")
    encoder_hidden_size: Optional[int] = Field(None, ge=1, le=65_536, description="its hidden width (null: token_dim)")
    encoder_num_layers: int = Field(2, ge=1, le=8, description="LSTM layers (the MLP always has 3, as in PEFT)")
    encoder_dropout: float = Field(0.0, ge=0, lt=1, description="dropout between LSTM layers")
    modules_to_save: Optional[List[str]] = Field(
        None, description="extra base modules to train and save in full (the head is added for classification)")
    init_from: Optional[PathStr] = Field(
        None, description="an HF PEFT p-tuning adapter folder to start from (its saved prompt is trained "
        "directly: PEFT saves the encoder's output, not the encoder)")

    def input_positions(self) -> int:
        return self.num_virtual_tokens
