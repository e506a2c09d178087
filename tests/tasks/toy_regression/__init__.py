"""A toy task that lives only in tests/: text regression (one float per row, mean squared error).

It shows that a task is one folder behind the Task protocol plus one registration line
(`register(Regression())`, done by the test that uses it): nothing under peft_ray/ names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal

import pyarrow as pa
from pydantic import Field

from peft_ray.errors import SpecError
from peft_ray.rows import RowConfig
from peft_ray.rows.tokens import tokenizer
from peft_ray.tasks import Task, TaskConfig
from peft_ray.templates import Template


class RegressionConfig(TaskConfig):
    type: Literal["regression"] = "regression"
    target_column: str = Field("score", description="the column holding each row's float target")


@dataclass(frozen=True)
class RegressionRows(RowConfig):
    target_column: str = "score"


SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("label", pa.float32()), ("length", pa.int32()),
                    ("truncated", pa.bool_())])
DUMMY = {"input_ids": [0], "label": 0.0, "length": 1, "truncated": False}


def build_rows(batch: pa.Table, cfg: RegressionRows) -> pa.Table:
    tok = tokenizer(cfg.tokenizer_path, cfg.trust_remote_code)
    template = Template.parse(cfg.template)
    rows = []
    for row in batch.to_pylist():
        text, y = template.render(row, ""), row.get(cfg.target_column)
        if text is None or y is None:
            continue
        ids = tok(text, truncation=True, max_length=cfg.max_length)["input_ids"]
        rows.append({"input_ids": ids, "label": float(y), "length": len(ids), "truncated": False})
    return pa.Table.from_pylist(rows, schema=SCHEMA)


class Regression(Task):
    name = "regression"
    config_cls = RegressionConfig
    peft_task_type = "SEQ_CLS"
    primary_metric = "mse"
    minimized = ("mse",)                 # lower is better, which its name does not say
    headline = ("mse",)
    summary_rows = (("val MSE", "mse", "{:.4f}"),)
    model_module = "tests.tasks.toy_regression.model"

    def check(self, spec, template) -> None:
        if spec.task.target_column in template.columns:
            raise SpecError("template.text: the target column must not appear in the template")

    def supervision_columns(self, cfg) -> Dict[str, str]:
        return {cfg.target_column: "task.target_column"}

    def row_builder(self, spec, tokenizer_path: str, lm_kind: str):
        return build_rows, RegressionRows(tokenizer_path=tokenizer_path, template=spec.template.text,
                                          max_length=spec.model.max_length,
                                          trust_remote_code=spec.model.trust_remote_code,
                                          target_column=spec.task.target_column)

    def placeholders(self, row: dict, cfg: RegressionRows) -> dict:
        return {cfg.target_column: 0.0}

    def predict_fields(self, cfg) -> list:
        return [pa.field("prediction", pa.float64())]
