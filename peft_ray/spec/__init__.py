"""The job spec: typed sections, YAML loading, overrides and validation."""

from peft_ray.spec.load import dump_spec, load_spec, saved_spec, validate_spec
from peft_ray.spec.schema import JobSpec

__all__ = ["JobSpec", "dump_spec", "load_spec", "saved_spec", "validate_spec"]
