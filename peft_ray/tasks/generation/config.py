"""`task: {type: generation}` and `task: {type: translation}` fields."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from peft_ray.tasks.base import Fields, TaskConfig


class DecodingSpec(Fields):
    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    max_new_tokens: int = Field(32, ge=1, le=2048)
    num_beams: int = Field(4, ge=1, le=64, description="beam: hypotheses kept per row")
    temperature: float = Field(1.0, gt=0, le=100, description="sample: softmax temperature")
    top_k: int = Field(0, ge=0, le=1_000_000, description="sample: keep the k most likely tokens (0: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="sample: nucleus probability mass")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="sample: the sampling seed")


class GenerationConfig(TaskConfig):
    type: Literal["generation", "translation"] = "generation"
    target_column: str = Field("target", description="the response column")
    max_target_length: int = Field(64, ge=1, le=4096, description="response tokens kept")
    decoding: DecodingSpec = Field(default_factory=DecodingSpec, description="decoding at evaluation")
