"""The typed job spec. Raw YAML dicts stop here: everything past this module
sees validated pydantic models. Keys are stable; users and later layers rely on them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

import pydantic
from pydantic import Field, field_validator, model_validator

from peft_ray.config_model import ConfigModel
from peft_ray.storage import PathStr
from peft_ray.spec.tune import TuneSpec  # the `tune:` section (peft-ray tune)


class Section(ConfigModel):
    """A section of the job: unknown keys, booleans for numbers and inf/nan are errors (ConfigModel)."""


class ModelSpec(Section):
    name_or_path: PathStr = Field("minilm", description="HF id, local path, the alias 'minilm', or "
                              "scratch:gpt2|llama|t5 (a small random generator with MiniLM's tokenizer)")
    max_length: int = Field(128, ge=8, le=8192, description="tokens per example, before soft tokens")
    trust_remote_code: bool = Field(False, description="run model code from the checkpoint (off: unsafe)")
    allow_pickle: bool = Field(False, description="allow pickle (.bin) weights; off by default (unsafe)")
    dropout: Optional[float] = Field(None, ge=0.0, lt=1.0, description="the frozen base's dropout probability "
                                     "in training (every dropout layer); default: the model's own config")


class TemplateSpec(Section):
    text: str = Field("{soft} {text}", description="hard text with {column}, {soft[:N]} and {label}")
    verbalizer: Optional[Dict[str, Union[str, List[str]]]] = Field(
        None, description="label -> word or list of words")
    chat: bool = Field(False, description="causal LMs: the rendered prompt becomes the user turn of the "
                       "tokenizer's chat template; the label words or response are the assistant's reply")
    system: Optional[str] = Field(None, description="with chat: the system message (default: the template's own)")

    @field_validator("verbalizer", mode="before")
    @classmethod
    def _integer_label_keys(cls, v):
        """`{0: bad, 1: good}` for `labels: [0, 1]`: keys are label names, so the integers' digits."""
        if isinstance(v, dict):
            return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: w for k, w in v.items()}
        return v


class DataSpec(Section):
    root: Optional[PathStr] = Field(None, description="folder the file names below are relative to; "
                                "'builtin:sentiment' for the data the project makes")
    train: PathStr = Field("train.parquet", description="training file or glob (.parquet/.arrow/.feather/.csv/.jsonl)")
    validation: Optional[PathStr] = Field("validation.parquet", description="validation file, or null")
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0,
                                       description="hold out this fraction of train (validation then defaults to null)")
    train_shots: Optional[int] = Field(None, gt=0, le=100_000,
                                       description="few-shot: train on K rows per class (classification), "
                                       "picked by content hash and data.shots_seed, the same on every worker")
    shots_seed: Optional[int] = Field(None, ge=0, le=2**32 - 1, description="which K rows data.train_shots picks (default: train.seed)")
    holdout_seed: Optional[int] = Field(None, ge=0, le=2**32 - 1,
                                        description="which rows data.validation_fraction holds out (default: "
                                        "train.seed; tune pins it to the job's, so trials share one hold-out)")

    @model_validator(mode="after")
    def _fraction_holds_out(self):
        """`validation_fraction: 0.1` alone means a hold-out: the default validation file is then
        not read (it was, and the fraction was dropped without a word). A job that names both is
        refused (spec/checks.py), since one of them would go unread."""
        if self.validation_fraction > 0 and "validation" not in self.model_fields_set:
            self.validation = None
        return self

    @property
    def holds_out(self) -> bool:
        """Validation is a data.validation_fraction hold-out of the training files."""
        return self.validation is None and self.validation_fraction > 0


class TrainSpec(Section):
    epochs: float = Field(1, gt=0, le=10_000, description="passes over the training data")
    max_steps: Optional[int] = Field(None, gt=0, le=10**9, description="stop after this many optimizer steps")
    batch_size: int = Field(32, gt=0, le=1 << 20, description="GLOBAL batch per optimizer step, split over workers")
    grad_accum: int = Field(1, gt=0, le=65_536, description="micro-batches accumulated per optimizer step")
    lr: float = Field(3e-2, gt=0, le=100, description="peak learning rate for prompt/adapter parameters")
    head_lr: Optional[float] = Field(None, gt=0, le=100, description="learning rate of the head (default: lr)")
    weight_decay: float = Field(0.0, ge=0, le=100)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="HF Trainer's lr schedules: warmup_ratio of the steps from 0, then linear or cosine "
        "decay to 0; constant (no warmup) or constant_with_warmup")
    max_grad_norm: float = Field(1.0, ge=0, le=1e6, description="gradient clipping (0 turns it off)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds torch, numpy and the row order (numpy's range)")
    eval_every: Optional[int] = Field(None, gt=0, le=10**9, description="evaluate every N steps and at the end "
                                      "(default: 4 times per epoch)")
    checkpoint_every: Optional[int] = Field(None, gt=0, le=10**9, description="checkpoint every N steps and at "
                                            "the end (default: at every evaluation)")
    keep_checkpoints: int = Field(2, ge=1, le=10_000, description="keep K checkpoints (the best and the latest always)")
    metric_for_best: Optional[str] = Field(None, description="eval metric that picks adapter/ "
                                           "(default: the task's primary metric, e.g. accuracy)")
    greater_is_better: Optional[bool] = Field(None, description="direction of metric_for_best "
                                              "(default: lower for *loss, else higher)")
    early_stopping_patience: Optional[int] = Field(None, gt=0, le=10**6, description="stop after N evaluations "
                                                   "without a new best (default: never)")
    eval_batch_size: int = Field(64, gt=0, le=1 << 20)
    group_by_length: bool = Field(True, description="batch similar lengths together (less padding)")
    max_failures: int = Field(2, ge=0, le=1000, description="worker-group restarts Ray Train may do")
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="a non-finite loss stops the run (naming the step and batch), or its micro-batch is "
        "skipped and counted: it adds nothing to its step, whose mean still counts it (a step with every "
        "micro-batch skipped is not taken)")


class ScalingSpec(Section):
    num_workers: int = Field(2, gt=0, le=10_000, description="Ray Train workers")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0, le=1024)
    torch_threads: Optional[int] = Field(None, gt=0, le=1024,
                                         description="torch threads per worker (default: cpus_per_worker; with "
                                                     "--local: num_workers x cpus_per_worker, up to the cores, "
                                                     "shared by its ranks)")
    local_ranks: int = Field(1, gt=0, le=1024,
                             description="processes `train --local` runs as ranks of one group, up to the cores "
                                         "(1: one process with every thread; num_workers: Ray's layout)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    address: Optional[str] = Field(None, description="Ray address; default starts Ray in-process")


class DeepSpeedSpec(Section):
    zero_stage: Literal[1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    offload: bool = Field(False, description="offload optimizer state (and params at stage 3) to CPU")
    bf16: Optional[bool] = Field(None, description="bf16 training (default: on with GPUs)")

    @field_validator("zero_stage", mode="before")
    @classmethod
    def _stage(cls, v):
        if v not in (1, 2, 3):
            raise ValueError(f"must be 1, 2 or 3, got {v!r}")
        return v


class OutputSpec(Section):
    dir: PathStr = Field("runs/{name}", min_length=1, description="run directory; {name} is the job name")


class JobSpec(Section):
    name: str = Field("peft-ray-job", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSpec = ModelSpec()
    task: Any = Field(None, description="task.type plus the task's own fields")
    template: TemplateSpec = TemplateSpec()
    method: Any = Field(None, description="method.name plus the method's own fields")
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    scaling: ScalingSpec = ScalingSpec()
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    output: OutputSpec = OutputSpec()
    kernels: Literal["auto", "triton", "torch"] = Field("auto", description="Triton kernels backend")
    tune: Optional[TuneSpec] = None

    @model_validator(mode="after")
    def _batch_divides(self):
        per_step = self.scaling.num_workers * self.train.grad_accum
        if self.train.batch_size % per_step:
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be divisible by "
                f"scaling.num_workers x train.grad_accum ({per_step})")
        return self

    @property
    def micro_batch_size(self) -> int:
        return self.train.batch_size // (self.scaling.num_workers * self.train.grad_accum)


def typed_job_model(method_configs: tuple, task_configs: tuple) -> type[JobSpec]:
    """JobSpec with `method` and `task` typed as the discriminated unions (on `method.name`,
    `task.type`) of every registered method's and task's config. JobSpec itself keeps
    `method: Any` and `task: Any`, filled by validate_spec through the registries (defaults,
    `method: lora` shorthand, did-you-mean on unknown names); this model is the same job for
    JSON Schema and editors."""
    from typing import Annotated

    methods = Annotated[Union[method_configs], Field(discriminator="name")]  # type: ignore[valid-type]
    tasks = Annotated[Union[task_configs], Field(discriminator="type")]  # type: ignore[valid-type]
    # `method: lora` (spec/load.SHORTHANDS): the name alone, with the method's defaults
    names = Literal[tuple(c.model_fields["name"].default for c in method_configs)]  # type: ignore[misc]
    return pydantic.create_model(
        "JobSpec", __base__=JobSpec, __doc__=JobSpec.__doc__,
        method=(Optional[Union[methods, names]],
                Field(None, description="method.name picks the method (default prompt_tuning); its own fields "
                                        "follow. The name alone (method: lora) takes that method's defaults")),
        task=(Optional[tasks], Field(None, description="task.type picks the task (default classification); "
                                     "its own fields follow")))


def job_json_schema(method_configs: tuple, task_configs: tuple) -> Dict[str, Any]:
    """JSON Schema (draft 2020-12) of a job file, with each method's fields under its name."""
    schema = typed_job_model(method_configs, task_configs).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "peft-ray job"
    return schema
