"""The Task protocol and its registry. A task is one folder (`tasks/<name>/`), as a method is:

- `config.py`: its `task:` fields (a `TaskConfig`; `task.type` discriminates them);
- `rows.py`: its torch-free row builder and row schema (run inside Ray Data tasks);
- `model.py`: base-model loading, the per-job runtime, loss, evaluation and `predict` output;
- `__init__.py`: a `Task` subclass that says all of that, registered in TASKS.

Everything outside `tasks/` asks the task (never `if task.type == ...`). This module and the
folders' `__init__`/`config`/`rows` never import torch: `peft-ray validate`, spec checks and
Ray Data row building run without it, so a task reaches its `model.py` only when a model
side call comes (`Task.model`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple, Type


from peft_ray.config_model import ConfigModel
from peft_ray.metrics import lower_is_better
from peft_ray.registry import Registry
from peft_ray.rows.tokens import IGNORE
from peft_ray.errors import SpecError, suggest

# (label, metrics key, format) rows of the end-of-run summary a task adds (summary.py).
SummaryRow = Tuple[str, str, str]


class Fields(ConfigModel):
    """A task's typed fields: unknown keys are errors, values are validated (as spec.schema.Section)."""


class TaskConfig(Fields):
    """Base of every task's `task:` section."""

    type: str


class Task:
    """What every task provides. Subclasses set the class attributes and override what differs."""

    name: str = ""
    config_cls: Type[TaskConfig] = TaskConfig
    peft_task_type: str = ""             # HF PEFT's TaskType: SEQ_CLS, CAUSAL_LM, TOKEN_CLS, SEQ_2_SEQ_LM
    primary_metric: str = "loss"         # default train.metric_for_best and tune.metric
    headline: Tuple[str, ...] = ()       # metrics the progress log and summaries show first
    also_reported: Tuple[str, ...] = ()  # further metrics evaluation reports (train.metric_for_best may name them)
    minimized: Tuple[str, ...] = ()      # metrics where lower is better besides losses (mse, wer): lower_is_better
    summary_rows: Tuple[SummaryRow, ...] = ()
    model_module: str = ""               # the folder's torch side, imported on the first model call
    few_shot: bool = False               # rows have classes, so data.train_shots (K rows per class) applies
    prescreens: bool = False             # tune.prescreen can rank its templates zero-shot (label-word scores)
    per_class: Tuple[str, ...] = ()      # metrics also reported per label as "<metric>/<label>" (f1/negative)
    token_loss: bool = False             # the loss averages over labelled tokens (batch["labels"] != IGNORE)
    input_cut: str = "truncated"         # the row column saying the input the model answers from was cut
    fits_columns: bool = False           # a row too long loses its input columns' ends, not the template's words
                                         # (rows.tokens.fit_columns_many): resume.data_changes says so

    # --- spec ---------------------------------------------------------------------------------
    def check(self, spec, template) -> None:
        """Cross-field checks of a validated job (template columns, labels, verbalizer)."""

    def check_model(self, spec, lm_kind: str) -> None:
        """Preflight: the base model (models.lm_kind: encoder, causal, seq2seq) suits the job."""

    def generated_tokens(self, cfg) -> int:
        """Positions decoding adds after a prompt of up to model.max_length tokens (0: none)."""
        return 0

    def input_columns(self, cfg) -> Dict[str, str]:
        """Input columns the task reads besides the template's {column}s -> the field naming each."""
        return {}

    def supervision_columns(self, cfg) -> Dict[str, str]:
        """The columns training and evaluation need but `predict` never reads (label, target, tags)."""
        return {}

    def reads_template_columns(self) -> bool:
        """Whether the template's {column}s are the input columns."""
        return True

    def classes(self, cfg) -> Tuple[str, ...]:
        """Per-row class labels (few-shot sampling, label counts in preflight); () when rows have none."""
        return ()

    def reads_verbalizer(self, cfg) -> bool:
        """Whether training reads template.verbalizer (tune skips trials that differ only in it otherwise)."""
        return False

    def usable(self, cfg, batch, columns: List[str], text_columns: List[str]):
        """Preflight: per row of `batch` (the needed `columns`, the supervision column last), whether
        the row builder keeps it: the rows `validate` and the run summary count as usable and the
        steps an epoch has are counted from. Default: the supervision column holds a value and every
        text column non-blank text. A builder that skips more rows says so here, so the counts agree."""
        import pyarrow.compute as pc

        from peft_ray.data.columns import present

        ok = present(batch.column(columns[-1]))
        for c in text_columns:
            ok = pc.and_(ok, present(batch.column(c)))
        return ok

    def check_supervision(self, cfg, rows, row_numbers: List[int]) -> None:
        """Preflight: each usable row (`rows`, a pyarrow Table of the needed columns) holds
        supervision training can read (tags aligned with their words, a target); raise DataError
        naming the row. It must refuse every value the row builder cannot read, or a bad value
        passes `validate` and fails in a worker. Classification's labels are counted (and checked)
        by the scan itself."""

    def list_columns(self, cfg) -> Dict[str, str]:
        """Columns whose cells are lists (NER's words and tags) -> the field naming each: a CSV
        file, whose cells are text, cannot hold them."""
        return {}

    def trains_new_head(self, cfg, lm_kind: str) -> bool:
        """Whether the model scores through a head that training creates (random before it): then the
        frozen base alone answers nothing, and zero-shot evaluation has nothing to measure."""
        return False

    def label_column(self, cfg) -> Optional[str]:
        return None

    def label_names(self, cfg) -> Optional[List[str]]:
        """The head's label-id order (id2label), or None for tasks without a classifier head."""
        return None

    def metrics(self, cfg) -> List[str]:
        """Every metric name `evaluate` reports (for train.metric_for_best and tune.metric)."""
        return list(dict.fromkeys([*self.headline, self.primary_metric, *self.also_reported, "loss"]))

    def lower_is_better(self, metric: str) -> bool:
        """The direction of one of its metrics, for the best checkpoint, early stopping and tune's
        mode when the job does not say: a loss or a name in `minimized` is minimised, everything else
        maximised. The task says it, as a name alone cannot (`mse`, `hamming`, `wer`)."""
        return metric.split("/", 1)[0] in self.minimized or lower_is_better(metric)

    def check_metric(self, cfg, name: str, field: str) -> None:
        """`name` (train.metric_for_best, tune.metric) is one evaluation reports: a name it never
        reports would leave adapter/ the last step's, or rank every trial alike, without a word.
        A per-class name is checked against task.labels where the job lists them (otherwise the
        labels come from the data, and only the metric's kind is checked here)."""
        known = self.metrics(cfg)
        kind, _, label = name.partition("/")
        if name in known or (label and kind in self.per_class and not getattr(cfg, "labels", None)):
            return
        plain = [m for m in known if "/" not in m]
        per = ""
        if self.per_class:
            labels = getattr(cfg, "labels", None)
            per = (f", or {' / '.join(f'{k}/<label>' for k in self.per_class)} for a label of "
                   f"{'task.labels (' + ', '.join(labels) + ')' if labels else 'task.labels'}")
        raise SpecError(f"{field}: '{name}' is not a {self.name} evaluation metric{suggest(name, known)}; "
                        f"choose one of {', '.join(plain)}{per}")

    def check_train_facts(self, facts) -> None:
        """Preflight, after the training split is scanned (SplitFacts)."""

    # --- rows (torch-free) --------------------------------------------------------------------
    def row_builder(self, spec, tokenizer_path: str, lm_kind: str) -> Tuple[Callable, Any]:
        """(builder, its frozen config): builder(pa.Table, config) -> pa.Table of the task's rows."""
        raise NotImplementedError

    def placeholders(self, row: dict, cfg) -> dict:
        """Values for the supervision columns the row builder requires but `predict` never reads."""
        return {}

    def predict_fields(self, cfg) -> list:
        """pyarrow fields of the `predict` output columns (fixed types)."""
        raise NotImplementedError

    # --- model side (the folder's model.py) ---------------------------------------------------
    @property
    def model(self):
        return importlib.import_module(self.model_module)

    def load_base(self, spec, path: str):
        """The base model with this task's head, seeded."""
        return self.model.load_base(spec, path)

    def runtime(self, spec, path: str):
        """What loss/evaluate/predict need, resolved once per job (scoring kind, token ids, tokenizer)."""
        return self.model.runtime(spec, path)

    def loss(self, model, batch: dict, runtime):
        """The micro-batch's mean loss (over its rows, or its labelled tokens: `loss_items`)."""
        return self.model.loss(model, batch, runtime)

    def loss_items(self, batch: dict) -> Optional[int]:
        """What the micro-batch's loss averages over when a step's loss is the mean over all of the
        step's items on every rank (HF Trainer's `num_items_in_batch`, which it uses for token-level
        losses): its labelled tokens. None: the loss is a mean per micro-batch, and a step averages
        its micro-batches (HF's rule for losses that take no item count)."""
        return int((batch["labels"] != IGNORE).sum()) if self.token_loss else None

    def evaluate(self, model, tables, runtime, pad_id: int) -> Dict[str, float]:
        """Metrics over all of `tables`, identical on every rank."""
        return self.model.evaluate(model, tables, runtime, pad_id)

    def predict(self, model, batch: dict, runtime) -> Dict[str, list]:
        """{column: values}: the `predict` output columns of a micro-batch."""
        return self.model.predict(model, batch, runtime)

    def peft_task_type_of(self, runtime) -> str:
        """The adapter's HF PEFT task_type for this job (the class PEFT wraps the base in)."""
        return self.peft_task_type


TASKS: Registry[Task] = Registry("task", "task.type", group="peft_ray.tasks")


def register(task: Task) -> Task:
    """One line per task in its folder's __init__ (the registry refuses a duplicate name)."""
    return TASKS.register(task.name)(task)
