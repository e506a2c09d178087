"""Zero-shot evaluation: the job's template and label words on the frozen base model, no training.

The baseline that shows what the prompt alone does (`peft-ray eval --zero-shot JOB.yaml`):
the same preprocessing, the same verbalizer scoring and the same metrics as the evaluation
inside `peft-ray train`, in this process (no Ray: a forward pass over a validation split
needs no cluster). Soft-token slots ({soft}) contribute nothing: there is no prompt yet.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from peft_ray.errors import SpecError


def zero_shot_eval(spec, batch_size: Optional[int] = None, device: Optional[str] = None) -> Dict[str, Any]:
    import torch

    from peft_ray.inference import InferenceEngine
    from peft_ray.models import lm_kind, load_tokenizer
    from peft_ray.preflight import run_preflight
    from peft_ray.tasks import get_task
    from peft_ray.train.local import local_data

    pre = run_preflight(spec, training=False)     # the training files are never read here
    task = get_task(spec.task.type)
    if task.trains_new_head(spec.task, lm_kind(pre.model_path, spec.model.trust_remote_code)):
        raise SpecError(f"task: zero-shot evaluation scores what the frozen model answers by itself, and this "
                        f"{spec.task.type} job scores through a new head that only training gives weights "
                        "(random until then). For classification set task.head: verbalizer with a template "
                        "holding {label} (a masked or causal LM scores the label words); otherwise train first "
                        "and use `peft-ray eval`")
    if pre.validation is None:
        raise SpecError("data.validation: zero-shot evaluation scores the validation split; set "
                        "data.validation or data.validation_fraction")
    if batch_size:
        spec.train.eval_batch_size = batch_size
    data = local_data(spec, pre, train=False)
    tok = load_tokenizer(pre.model_path, spec.model.trust_remote_code)
    torch.manual_seed(spec.train.seed)
    engine = InferenceEngine(task.load_base(spec, pre.model_path),
                             torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    metrics = task.evaluate(engine, data.eval_tables(), task.runtime(spec, pre.model_path), tok.pad_token_id or 0)
    return {**metrics, "task": spec.task.type, "zero_shot": True, **scored_what(spec)}


def scored_what(spec) -> Dict[str, Any]:
    """What a zero-shot score is of: the template, the label words, the model, the validation data and
    the task's own fields (its columns; a generation task's decoding and response length): two
    verbalizers of one template, or greedy and beam decoding, are two results, and the default file is
    replaced only by the same."""
    d, t = spec.data, spec.template
    held_out = not d.validation
    return {"template": t.text, "verbalizer": t.verbalizer, "chat": t.chat, "system": t.system,
            "labels": getattr(spec.task, "labels", None), "model": spec.model.name_or_path,
            "max_length": spec.model.max_length,
            "task_fields": spec.task.model_dump(mode="json", exclude={"type"}),
            "data": {"root": d.root, "validation": d.validation or d.train,
                     "validation_fraction": d.validation_fraction if held_out else None,
                     "holdout_seed": (d.holdout_seed if d.holdout_seed is not None else spec.train.seed)
                     if held_out else None}}
