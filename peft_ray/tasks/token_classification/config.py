"""`task: {type: token_classification}` fields."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field, field_validator

from peft_ray.tasks.base import TaskConfig
from peft_ray.tasks.classification.config import unique_labels


class TokenClassificationConfig(TaskConfig):
    type: Literal["token_classification"] = "token_classification"
    labels: Optional[List[str]] = Field(None, description="entity types (PER, ORG, ...); tags are their IOB2 tags")
    tokens_column: str = Field("tokens", description="the column of word lists")
    tags_column: str = Field("ner_tags", description="the column of IOB2 tag lists")

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v):
        return unique_labels(v)
