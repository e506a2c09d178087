"""Adapters in HF PEFT's own layout, written atomically.

    adapter/
      adapter_config.json          # what peft.PeftModel.from_pretrained reads
      adapter_model.safetensors    # PEFT's key names (prompt_embeddings, base_model.<head>...)
      peft_ray.json                # what PEFT has no place for: template, verbalizer, labels

Under ZeRO-3 every parameter is a partition; the values are read inside
``GatheredParameters`` so the file holds full tensors (the PEFT #453/#2450 bug).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

from peft_ray import __version__

if TYPE_CHECKING:  # torch only where tensors are handled: the CLI imports this module for its names
    import torch

TASK_TYPES = {"classification": "SEQ_CLS", "generation": "CAUSAL_LM",
              "token_classification": "TOKEN_CLS", "translation": "SEQ_2_SEQ_LM"}
CONFIG, WEIGHTS, EXTRA = "adapter_config.json", "adapter_model.safetensors", "peft_ray.json"


def gathered(params):
    """Context in which ZeRO-3-partitioned params hold their full values (no-op otherwise)."""
    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def gather_adapter_state(model) -> Dict[str, torch.Tensor]:
    """Full CPU copies of the adapter tensors. Collective under ZeRO-3: call on every rank."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    with gathered(trainable):
        return {k: v.detach().to("cpu", torch.float32).clone().contiguous()
                for k, v in model.adapter_state().items()}


def write_adapter(out_dir: str | Path, state: Dict[str, torch.Tensor], peft_cfg: Dict[str, Any],
                  extra: Dict[str, Any]) -> Path:
    """Write into a temporary sibling, then rename: a reader never sees a half-written adapter."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    empty = [k for k, v in state.items() if v.numel() == 0]
    if empty:
        raise RuntimeError(f"refusing to save empty adapter tensors {empty} (ZeRO-3 gather missing?)")
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
    (tmp / CONFIG).write_text(json.dumps({**peft_cfg, "peft_version": _peft_version()}, indent=2))
    (tmp / EXTRA).write_text(json.dumps({"peft_ray_version": __version__, **extra}, indent=2))
    replace_dir(tmp, out)
    return out


def replace_dir(src: Path, dst: Path) -> None:
    """Swap `src` into `dst`; the old `dst` is removed only after the new one is in place."""
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def read_adapter(path: str | Path):
    """(state, adapter_config, peft_ray extra) from an adapter folder."""
    from safetensors.torch import load_file

    p = Path(path)
    cfg = json.loads((p / CONFIG).read_text())
    extra = json.loads((p / EXTRA).read_text()) if (p / EXTRA).exists() else {}
    return load_file(str(p / WEIGHTS)), cfg, extra


def _peft_version() -> str:
    try:
        from importlib.metadata import version

        return version("peft")
    except Exception:  # peft is optional at run time
        return "0.21.2"
