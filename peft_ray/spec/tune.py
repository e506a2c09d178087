"""The `tune:` section of a job: what to search, how to schedule it, what to rank by.

    tune:
      template:
        text: ["{soft} {text}", "{soft} Review: {text} It was {label}."]   # candidate templates
        verbalizer: [{negative: bad, positive: good}, {negative: awful, positive: great}]
      space:
        train.lr: {loguniform: [1.0e-3, 1.0e-1]}
        method.num_virtual_tokens: {choice: [10, 20]}
      num_samples: 1
      metric: accuracy            # mode: inferred (min for *loss*, else max)
      scheduler: {name: asha, grace_period: 2, reduction_factor: 2}
      search: grid                # grid | random | optuna (if installed)

This module only checks each field on its own. Field paths inside the job (``train.lr``),
method names and every candidate trial spec are checked by ``peft_ray.tune.space`` before Ray
starts, because they need the rest of the job and the method registry.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from peft_ray.config_model import ConfigModel
from peft_ray.errors import suggest

Verbalizer = Dict[str, Union[str, List[str]]]
Scalar = Union[bool, int, float, str]


class _Section(ConfigModel):
    # The rules of peft_ray.spec.schema.Section (not imported: schema imports this module).

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, v):
        """Unknown keys name the allowed ones here (JobSpec.tune is Optional, so the generic
        'did you mean' of peft_ray.spec.load cannot see inside this section)."""
        if isinstance(v, dict):
            allowed = list(cls.model_fields)
            for key in v:
                if key not in allowed:
                    raise ValueError(f"unknown key '{key}'{suggest(str(key), allowed)}. "
                                     f"Allowed here: {', '.join(allowed)}")
        return v


class Domain(_Section):
    """One search dimension: exactly one of uniform, loguniform, choice, grid."""

    uniform: Optional[List[float]] = Field(None, description="[low, high], sampled uniformly")
    loguniform: Optional[List[float]] = Field(None, description="[low, high], sampled log-uniformly (low > 0)")
    choice: Optional[List[Scalar]] = Field(None, description="values sampled at random (grid search: enumerated)")
    grid: Optional[List[Scalar]] = Field(None, description="values always enumerated (every value, every sample)")

    @model_validator(mode="before")
    @classmethod
    def _list_is_choice(cls, v):
        return {"choice": v} if isinstance(v, list) else v

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("uniform", "loguniform", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, choice, grid (got {given or 'none'}), "
                             "e.g. {loguniform: [1.0e-3, 1.0e-1]}")
        if self.kind in ("uniform", "loguniform"):
            low_high = self.bounds
            if len(low_high) != 2 or not low_high[0] < low_high[1]:
                raise ValueError(f"{self.kind} needs [low, high] with low < high, got {low_high}")
            if self.kind == "loguniform" and low_high[0] <= 0:
                raise ValueError(f"loguniform needs low > 0, got {low_high[0]}")
        elif not self.values:
            raise ValueError(f"{self.kind} needs at least one value")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "choice", "grid") if getattr(self, k) is not None)

    @property
    def bounds(self) -> List[float]:
        return list(self.uniform or self.loguniform or [])

    @property
    def values(self) -> List[Any]:
        """The values a trial can get: the list, or the two ends of a range (for validation)."""
        return list(self.choice or self.grid or self.bounds)

    @property
    def continuous(self) -> bool:
        return self.kind in ("uniform", "loguniform")


class TemplateSearch(_Section):
    text: Optional[List[str]] = Field(None, min_length=1, description="candidate templates (default: template.text)")
    verbalizer: Optional[List[Verbalizer]] = Field(
        None, min_length=1, description="candidate verbalizers (default: template.verbalizer)")


class SchedulerSpec(_Section):
    name: Literal["asha", "fifo"] = Field("asha", description="asha stops weak trials early; fifo runs all to the end")
    grace_period: int = Field(1, ge=1, description="ASHA: training steps every trial runs before it can be stopped")
    reduction_factor: float = Field(2, gt=1, description="ASHA: keep the top 1/reduction_factor at each rung")


class TuneSpec(_Section):
    template: TemplateSearch = TemplateSearch()
    space: Dict[str, Domain] = Field(default_factory=dict,
                                     description="'section.field' -> domain, e.g. train.lr: {loguniform: [1e-3, 1e-1]}")
    methods: Dict[str, Dict[str, Any]] = Field(
        default_factory=dict, description="base fields of each method that method.name may switch to")
    num_samples: int = Field(1, ge=1, description="samples of the space (grid: repeats of the whole grid)")
    metric: Optional[str] = Field(None, description="validation metric trials are ranked and stopped by "
                                  "(default: the task's primary metric, e.g. accuracy, entity_f1, bleu)")
    mode: Optional[Literal["max", "min"]] = Field(None, description="default: min for a loss, else max")
    scheduler: SchedulerSpec = SchedulerSpec()
    search: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: enumerate templates/verbalizers/choices; random: sample them; optuna: TPE")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the search algorithm's sampling")
    max_concurrent_trials: Optional[int] = Field(
        None, ge=1, description="default: as many trials as the cluster's CPUs (GPUs) hold at once")
    trial_cpus: float = Field(0.0, ge=0, description="CPUs reserved for each trial's driver function "
                              "(it only waits on its TorchTrainer, whose workers hold their own CPUs)")
    prescreen: bool = Field(False, description="score templates zero-shot first; train only the top k")
    prescreen_top_k: int = Field(3, ge=1, description="templates kept by the pre-screen")
    prescreen_samples: int = Field(256, ge=8, description="validation rows the pre-screen scores")

    @field_validator("space")
    @classmethod
    def _keys_are_paths(cls, v: Dict[str, Domain]):
        for key in v:
            if key.count(".") != 1 or not all(key.split(".")):
                raise ValueError(f"key '{key}' must be 'section.field', e.g. train.lr or method.num_virtual_tokens")
            if key.startswith("template."):
                raise ValueError(f"'{key}': search templates and verbalizers under tune.template "
                                 "(text: [...], verbalizer: [...]), not in tune.space")
        return v

    @model_validator(mode="after")
    def _check_search(self):
        # (an unset mode is the task's direction of the metric: spec.load.validate_spec, which has the task)
        if self.search == "optuna" and any(d.kind == "grid" for d in self.space.values()):
            bad = [k for k, d in self.space.items() if d.kind == "grid"]
            raise ValueError(f"search: optuna cannot enumerate grid dimensions {bad}; use choice instead")
        return self
