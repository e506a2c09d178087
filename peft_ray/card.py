"""The README.md model card of an adapter folder, in the shape PEFT's save_pretrained gives
it (YAML front matter with base_model / library_name: peft / tags, then text), saying how
to load the adapter with peft and with peft-ray. Plain text: no huggingface_hub needed."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import yaml

# PEFT task_type -> (transformers Auto class, Hub pipeline tag)
TASK_CLASSES = {"SEQ_CLS": ("AutoModelForSequenceClassification", "text-classification"),
                "TOKEN_CLS": ("AutoModelForTokenClassification", "token-classification"),
                "CAUSAL_LM": ("AutoModelForCausalLM", "text-generation"),
                "SEQ_2_SEQ_LM": ("AutoModelForSeq2SeqLM", "text2text-generation")}


def auto_class(cfg: Dict[str, Any], extra: Dict[str, Any]) -> str:
    """The Auto class of the base the adapter was trained on (a verbalizer classifier is a
    causal or masked LM, not a sequence classifier)."""
    cls = extra.get("base_model_class") or ""
    for suffix, auto in (("ForSequenceClassification", "AutoModelForSequenceClassification"),
                         ("ForTokenClassification", "AutoModelForTokenClassification"),
                         ("ForMaskedLM", "AutoModelForMaskedLM"), ("ForCausalLM", "AutoModelForCausalLM"),
                         ("LMHeadModel", "AutoModelForCausalLM"), ("ForConditionalGeneration", "AutoModelForSeq2SeqLM")):
        if cls.endswith(suffix):
            return auto
    return TASK_CLASSES.get(cfg.get("task_type"), ("AutoModel", None))[0]


def front_matter(cfg: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    base, method = cfg.get("base_model_name_or_path"), str(cfg.get("peft_type", "")).lower()
    tags = ["peft-ray", method, "transformers"] + ([f"base_model:adapter:{base}"] if base else [])
    meta = {"base_model": base, "library_name": "peft", "tags": [t for t in tags if t]}
    pipeline = TASK_CLASSES.get(cfg.get("task_type"), (None, None))[1]
    if pipeline:
        meta["pipeline_tag"] = pipeline
    return {k: v for k, v in meta.items() if v is not None}


def load_snippet(cfg: Dict[str, Any], extra: Dict[str, Any]) -> str:
    auto, base = auto_class(cfg, extra), cfg.get("base_model_name_or_path")
    args = [json.dumps(base)]
    if auto in ("AutoModelForSequenceClassification", "AutoModelForTokenClassification") and "id2label" in extra:
        id2label = {int(k): v for k, v in extra["id2label"].items()}
        args += [f"num_labels={len(id2label)}", f"id2label={id2label!r}", f"label2id={extra['label2id']!r}"]
    return "\n".join([
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        "from peft import PeftModel",
        "",
        f"base = {auto}.from_pretrained({', '.join(args)})",
        f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(base)})",
        'model = PeftModel.from_pretrained(base, "path/to/this/adapter").eval()',
        "```"])


def metrics_table(metrics: Optional[Dict[str, Any]]) -> List[str]:
    rows = [(k, v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not rows:
        return ["No evaluation was recorded with this adapter."]
    step = (metrics or {}).get("step")
    head = [f"Validation metrics at step {step}:" if step is not None else "Validation metrics:", "",
            "| metric | value |", "|---|---|"]
    return head + [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows if k != "step"]


def peft_cannot_run(cfg: Dict[str, Any]) -> List[str]:
    """A warning above the HF PEFT snippet where PEFT 0.21 cannot run the adapter (docs/methods.md),
    by its adapter_config.json (what PEFT reads, so a foreign adapter's card says it too):
    prefix tuning outside CAUSAL_LM / SEQ_2_SEQ_LM needs `past_key_values` that BERT's forward does
    not take and that transformers 5's classifiers renamed, so PEFT raises "Model does not support
    past key values". peft-ray injects the prefix in attention, so it runs it."""
    if cfg.get("peft_type") != "PREFIX_TUNING" or cfg.get("task_type") in ("CAUSAL_LM", "SEQ_2_SEQ_LM"):
        return []
    return [f"Note: HF PEFT 0.21 cannot run prefix tuning with task_type `{cfg.get('task_type')}` on this "
            "model under transformers 5 (its forward raises \"Model does not support past key values\"); "
            "the snippet loads the adapter, but use peft-ray (below) to run it.", ""]


def model_card(cfg: Dict[str, Any], extra: Dict[str, Any]) -> str:
    spec = extra.get("spec") or {}
    task = (spec.get("task") or {}).get("type", cfg.get("task_type"))
    method = (extra.get("method") or {}).get("name") or str(cfg.get("peft_type", "")).lower()
    labels = extra.get("labels") or (spec.get("task") or {}).get("labels")
    lines = ["---", yaml.safe_dump(front_matter(cfg, extra), sort_keys=False).rstrip(), "---", "",
             f"# {spec.get('name', 'peft-ray adapter')}", "",
             f"A {cfg.get('peft_type')} adapter ({method}) for {task}, trained with "
             f"peft-ray on `{cfg.get('base_model_name_or_path')}`.", "",
             "## Model details", "",
             f"- **Base model:** `{cfg.get('base_model_name_or_path')}`",
             f"- **Method:** {method} (PEFT `{cfg.get('peft_type')}`, task_type `{cfg.get('task_type')}`)",
             f"- **Task:** {task}"]
    if labels:
        lines.append(f"- **Labels** (in label-id order): {', '.join(map(str, labels))}")
    if extra.get("template"):
        lines.append(f"- **Template:** `{extra['template']}`")
    if extra.get("verbalizer"):
        lines.append(f"- **Verbalizer:** `{json.dumps(extra['verbalizer'])}`")
    lines += ["", "## Evaluation", "", *metrics_table(extra.get("metrics")), "",
              "## How to use", "", "With HF PEFT:", "", *peft_cannot_run(cfg), load_snippet(cfg, extra), "",
              "With peft-ray (uses the template, verbalizer and labels recorded in peft_ray.json):", "",
              "```bash", "peft-ray predict path/to/this/adapter --input rows.jsonl --output preds.jsonl --local",
              "peft-ray eval path/to/this/adapter --data labelled.parquet --local", "```", "",
              "### Framework versions", ""]
    if cfg.get("peft_version"):
        lines.append(f"- PEFT {cfg['peft_version']}")
    lines.append(f"- peft-ray {extra.get('peft_ray_version', '')}".rstrip())
    return "\n".join(lines) + "\n"


def merged_card(cfg: Dict[str, Any], extra: Dict[str, Any], max_length: int) -> str:
    """The README.md of `export --merge`: a plain transformers model, the adapter folded in. Says what
    it was merged from and how it reads its input: the job's template and model.max_length (the
    tokenizer saved beside it carries that length), as peft-ray's predict does."""
    spec = extra.get("spec") or {}
    method = (extra.get("method") or {}).get("name") or (spec.get("method") or {}).get("name") or "adapter"
    base = cfg.get("base_model_name_or_path")
    task = (spec.get("task") or {}).get("type", cfg.get("task_type"))
    auto = auto_class(cfg, extra)
    meta = {"base_model": base, "library_name": "transformers",
            "tags": ["peft-ray", f"merged-{method}"] + ([f"base_model:merge:{base}"] if base else [])}
    pipeline = TASK_CLASSES.get(cfg.get("task_type"), (None, None))[1]
    if pipeline:
        meta["pipeline_tag"] = pipeline
    lines = ["---", yaml.safe_dump({k: v for k, v in meta.items() if v is not None}, sort_keys=False).rstrip(),
             "---", "", f"# {spec.get('name', 'peft-ray model')} (merged)", "",
             f"`{base}` with a {method} adapter for {task} folded into its weights by `peft-ray export --merge`: "
             "a plain transformers model, no PEFT needed.", "", "## Model details", "",
             f"- **Base model:** `{base}`", f"- **Merged adapter:** {method} (PEFT `{cfg.get('peft_type')}`)",
             f"- **Task:** {task}", f"- **Input length:** {max_length} tokens (the job's model.max_length)"]
    if extra.get("labels"):
        lines.append(f"- **Labels** (in label-id order): {', '.join(map(str, extra['labels']))}")
    if extra.get("template"):
        lines.append(f"- **Template:** `{extra['template']}`: the model was trained on rows written this way; "
                     "write inputs the same way")
    lines += ["", "## Evaluation", "", *metrics_table(extra.get("metrics")), "", "## How to use", "",
              "```python", f"from transformers import {auto}, AutoTokenizer", "",
              f'model = {auto}.from_pretrained("path/to/this/folder").eval()',
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
              f'batch = tokenizer(texts, truncation=True, max_length={max_length}, padding=True, return_tensors="pt")',
              "```", ""]
    return "\n".join(lines) + "\n"
