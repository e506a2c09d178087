"""THE test matrix: one row per (method config, model family). Generic tests in
test_interop.py run every row; adding a method means adding rows here.

Rows HF PEFT cannot run are listed in PEFT_UNSUPPORTED with the reason; the PEFT
interop tests skip them, every other test still runs them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict

from peft_ray.methods import METHODS

FAMILIES_ALL = ["bert-cls", "gpt2-cls", "gpt2-lm", "llama-cls", "llama-lm", "t5-s2s"]


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    family: str
    kwargs: Dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.family}"


def _rows(name, method, families, **kwargs):
    return [Row(name, method, f, kwargs) for f in families]


ROWS = (
    _rows("lora", "lora", FAMILIES_ALL, r=4, lora_alpha=8)
    + _rows("lora-rslora-regex", "lora", ["llama-lm"], r=4, lora_alpha=16, use_rslora=True,
            target_modules=r".*\.(q_proj|k_proj|v_proj|o_proj|down_proj)")
    + _rows("lora-conv1d-mlp", "lora", ["gpt2-lm"], r=2, target_modules=["c_attn", "c_fc"])
    + _rows("lora-save-pooler", "lora", ["bert-cls"], r=2, modules_to_save=["pooler"])
    + _rows("lora-dora", "lora", FAMILIES_ALL, r=4, lora_alpha=8, use_dora=True)
    + _rows("lora-dora-rslora-false", "lora", ["bert-cls"], r=4, lora_alpha=8, use_dora=True, use_rslora=True,
            init_lora_weights=False)
    + _rows("lora-pissa", "lora", FAMILIES_ALL, r=4, lora_alpha=8, init_lora_weights="pissa")
    + _rows("lora-pissa-niter-rslora", "lora", ["llama-lm"], r=4, lora_alpha=8, use_rslora=True,
            init_lora_weights="pissa_niter_2")
    + _rows("lora-olora", "lora", FAMILIES_ALL, r=4, lora_alpha=8, init_lora_weights="olora")
    + _rows("lora-dora-pissa", "lora", ["llama-lm"], r=4, lora_alpha=8, use_dora=True, init_lora_weights="pissa")
    + _rows("lora-gaussian-plus", "lora", ["t5-s2s"], r=4, init_lora_weights="gaussian", loraplus_lr_ratio=16)
    + _rows("ia3", "ia3", FAMILIES_ALL)
    + _rows("ia3-custom", "ia3", ["llama-lm"], target_modules=["q_proj", "up_proj", "down_proj"],
            feedforward_modules=["down_proj"])
    + _rows("prefix", "prefix_tuning", FAMILIES_ALL, num_virtual_tokens=3)
    + _rows("prefix-mlp", "prefix_tuning", ["bert-cls", "gpt2-lm", "llama-lm"], num_virtual_tokens=3,
            prefix_projection=True, encoder_hidden_size=16)
    + _rows("prompt", "prompt_tuning", FAMILIES_ALL, num_virtual_tokens=3, init="random", prompt_cache="off")
    + _rows("prompt-cached", "prompt_tuning", ["gpt2-lm", "llama-lm"], num_virtual_tokens=3, init="random")
    + _rows("p_tuning", "p_tuning", FAMILIES_ALL, num_virtual_tokens=3, encoder_hidden_size=16)
    + _rows("p_tuning-lstm", "p_tuning", ["bert-cls", "llama-lm"], num_virtual_tokens=3,
            encoder_reparameterization_type="LSTM", encoder_hidden_size=8)
)

# (method, family) -> why HF PEFT 0.21.2 (with transformers 5) cannot be compared there; family "*":
# every family (a method PEFT has no type for).
PEFT_UNSUPPORTED = {
    ("prefix_tuning", "bert-cls"): "PEFT's prefix tuning needs past_key_values; BertModel under transformers 5 "
                                   "raises 'Model does not support past key values'",
    # transformers 5 renamed the classifiers' `past_key_values` argument to `cache`, and PEFT's SEQ_CLS
    # prefix path checks the signature for the old name: the same error.
    ("prefix_tuning", "gpt2-cls"): "PEFT SEQ_CLS prefix tuning: 'Model does not support past key values'",
    ("prefix_tuning", "llama-cls"): "PEFT SEQ_CLS prefix tuning: 'Model does not support past key values'",
}

# (row name, family) -> why PEFT cannot *create* that row (our adapters still load in PEFT: PiSSA/OLoRA
# ones are saved converted, as plain LoRA).
PEFT_CANNOT_INIT = {
    ("lora-olora", "gpt2-cls"): "PEFT's olora_init takes the QR of Conv1D's (d_in, d_out) weight untransposed: "
                                "lora_B gets d_in rows and the forward fails (mat1 and mat2 shapes)",
    ("lora-olora", "gpt2-lm"): "PEFT's olora_init ignores fan_in_fan_out (the forward fails on shapes)",
    ("lora-pissa-niter-rslora", "llama-lm"): "randomized SVD: an unconverted pissa_niter adapter depends on the "
                                             "RNG at load time, in PEFT too (ours are saved converted)",
}

MERGEABLE = {n for n in METHODS.names() if METHODS.get(n).merge}   # the registry says which methods merge
# Fields PEFT does not take: optimizer settings (PEFT's create_loraplus_optimizer), our prompt
# cache, and prompt tuning's `init` (PEFT's prompt_tuning_init; both rows use the random default).
OURS_ONLY = {"loraplus_lr_ratio", "prompt_cache", "init"}


def mutates_base(row: Row) -> bool:
    """PiSSA/OLoRA rows: PEFT saves them relative to W_res unless converted."""
    init = row.kwargs.get("init_lora_weights", True)
    return isinstance(init, str) and init != "gaussian"


def peft_config(row: Row, task_type: str):
    """The HF PEFT config equal to the row (our field names are PEFT's)."""
    import peft

    cls = {"lora": peft.LoraConfig, "ia3": peft.IA3Config, "prefix_tuning": peft.PrefixTuningConfig,
           "p_tuning": peft.PromptEncoderConfig, "prompt_tuning": peft.PromptTuningConfig}[row.method]
    kwargs = {k: v for k, v in copy.deepcopy(row.kwargs).items() if k not in OURS_ONLY}
    return cls(task_type=task_type, **kwargs)  # PEFT extends modules_to_save in place
