"""Model + optimizer + DeepSpeed engine setup for one worker."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Tuple

import torch

from peft_ray.cpu_attention import use_cpu_attention
from peft_ray.methods.cpu_linear import use_cpu_linear
from peft_ray.fast_dropout import use_fast_dropout
from peft_ray.methods import get_method
from peft_ray.methods.adapter_model import AdapterModel
from peft_ray.methods.common import BuildContext
from peft_ray.models import head_modules, load_tokenizer, resolve_model_path, set_dropout
from peft_ray.tasks import get_task
from peft_ray.train.deepspeed_compile import defer_deepspeed_compile


def build_model(spec) -> Tuple[AdapterModel, Any, str]:
    """Load the frozen base model (on the CPU; DeepSpeed's engine or the caller moves it), wrap it
    with the job's PEFT method. Same init on every rank."""
    path = resolve_model_path(spec.model.name_or_path)
    tokenizer = load_tokenizer(path, spec.model.trust_remote_code)
    base = get_task(spec.task.type).load_base(spec, path)
    set_dropout(base, spec.model.dropout)
    method = get_method(spec.method.name)
    ctx = BuildContext(tokenizer=tokenizer, seed=spec.train.seed, head_modules=head_modules(base),
                       kernels=spec.kernels)
    model = method.build(base, spec.method, ctx)
    # torch's CPU dropout masks, its SDPA at short lengths and its frozen products are slow (fast_dropout.py,
    # cpu_attention.py, cpu_linear.py); each replacement hands a tensor off the CPU (a GPU job, once the
    # engine moved it) to torch's own op. After the method: only what stays frozen takes oneDNN's product.
    use_fast_dropout(model)
    use_cpu_attention(model)
    use_cpu_linear(model)
    return model, tokenizer, path


def param_groups(model: AdapterModel, lr: float, head_lr: float, weight_decay: float) -> List[Dict]:
    """The adapter's groups (the method's own split, e.g. LoRA+'s lora_B at lr * ratio), then the
    head's (modules_to_save) at head_lr."""
    head = [p for name, p in model.named_parameters() if p.requires_grad and model.is_head_param(name)]
    groups = model.adapter_param_groups(lr, weight_decay)
    if head:
        groups.append({"params": head, "lr": head_lr, "weight_decay": weight_decay})
    return split_decay(groups, model) if weight_decay else groups


# HF Trainer's get_decay_parameter_names (transformers 5): biases and norm weights never decay.
NO_DECAY = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


def split_decay(groups: List[Dict], model: torch.nn.Module) -> List[Dict]:
    """Each group as two: its decayed parameters, and its biases and norm weights at weight_decay 0
    (names matching NO_DECAY, or parameters of a LayerNorm module), as HF Trainer groups them."""
    plain = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    plain |= {id(p) for name, p in model.named_parameters() if NO_DECAY.search(name.lower())}
    out = []
    for g in groups:
        for params, decay in (([p for p in g["params"] if id(p) not in plain], g["weight_decay"]),
                              ([p for p in g["params"] if id(p) in plain], 0.0)):
            if params:
                out.append({**g, "params": params, "weight_decay": decay})
    return out


def lr_lambda(total_steps: int, warmup_ratio: float, schedule: str):
    """The lr multiplier at optimizer step `step` (0-based), HF Trainer's schedules exactly
    (transformers.get_scheduler; its formulas here, since importing transformers.optimization costs
    seconds in every worker): ceil(total x warmup_ratio) warmup steps ramping from 0, then linear
    or cosine decay to 0; "constant" ignores warmup, "constant_with_warmup" does not."""
    warmup = 0 if schedule == "constant" else math.ceil(total_steps * warmup_ratio)

    def f(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        if schedule in ("constant", "constant_with_warmup"):
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if schedule == "cosine":
            return max(0.0, 0.5 * (1 + math.cos(math.pi * progress)))
        return max(0.0, 1.0 - progress)
    return f


def deepspeed_config(spec, use_bf16: bool) -> Dict[str, Any]:
    zero: Dict[str, Any] = {"stage": spec.deepspeed.zero_stage}
    if spec.deepspeed.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if spec.deepspeed.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    return {
        "train_batch_size": spec.train.batch_size,
        "train_micro_batch_size_per_gpu": spec.micro_batch_size,
        "gradient_accumulation_steps": spec.train.grad_accum,
        "zero_optimization": zero,
        # We pass torch's AdamW: it works on CPU and GPU without building DeepSpeed's C++ ops.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "gradient_clipping": spec.train.max_grad_norm,
        "bf16": {"enabled": use_bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def setup_engine(model: torch.nn.Module, spec, total_steps: int, use_bf16: bool):
    """Wrap the model in a DeepSpeed ZeRO engine that trains only the trainable parameters."""
    import deepspeed

    defer_deepspeed_compile()  # before deepspeed.initialize imports its Muon module

    t = spec.train
    groups = param_groups(model, t.lr, t.head_lr or t.lr, t.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, t.warmup_ratio, t.schedule))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=deepspeed_config(spec, use_bf16))
    return engine, scheduler


def trainable_parameters(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def count_trainable(model: torch.nn.Module) -> int:
    """Full (not ZeRO-partitioned) element counts."""
    return sum(getattr(p, "ds_numel", p.numel()) for _, p in trainable_parameters(model))
