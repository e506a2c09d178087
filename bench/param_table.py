"""Trainable-parameter table: one row per PEFT method, for the packaged MiniLM (classification,
2 labels) and for a Llama-7B config (causal LM), counted on models built on the `meta`
device (configs only, no weights, no download).

    python bench/param_table.py            # prints the table, rewrites it in docs/methods.md

The counts are exact: they come from the same `build` functions training uses.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "methods.md"
START, END = "<!-- param-table:start -->", "<!-- param-table:end -->"

# (label, method config); target_modules null = the family default (BERT query/value, Llama q_proj/v_proj).
ROWS = [
    ("prompt_tuning", {"name": "prompt_tuning", "num_virtual_tokens": 20, "init": "vocab"}),
    ("p_tuning", {"name": "p_tuning", "num_virtual_tokens": 20}),
    ("prefix_tuning", {"name": "prefix_tuning", "num_virtual_tokens": 20}),
    ("prefix_tuning + projection", {"name": "prefix_tuning", "num_virtual_tokens": 20, "prefix_projection": True}),
    ("lora", {"name": "lora", "r": 8, "lora_alpha": 16}),
    ("ia3", {"name": "ia3"}),
]
LLAMA_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)


def minilm_base():
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from peft_ray.models import resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path("minilm"), num_labels=2)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(cfg)


def llama_base():
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**LLAMA_7B))


def count(make_base, method: dict) -> tuple[int, int, int]:
    """(adapter params, head params, base params) for `method` on a fresh meta base."""
    from peft_ray.methods import get_method
    from peft_ray.methods.common import BuildContext
    from peft_ray.models import head_modules

    base = make_base()
    total = sum(p.numel() for p in base.parameters())
    spec = get_method(method["name"])
    # A tokenizer is only read for prompt_tuning's vocab init (special ids to skip); meta needs none.
    ctx = BuildContext(tokenizer=SimpleNamespace(all_special_ids=[]), head_modules=head_modules(base))
    model = spec.build(base, spec.config_cls(**method), ctx)
    heads = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("base.")
             and getattr(model, "is_head_param", lambda _: True)(n)}
    adapter = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n not in heads)
    head = sum(p.numel() for n, p in model.named_parameters() if n in heads)
    return adapter, head, total


def table() -> tuple[str, list[dict]]:
    rows, lines = [], []
    for label, method in ROWS:
        a1, h1, t1 = count(minilm_base, method)
        a2, _, t2 = count(llama_base, method)
        rows.append({"method": label, "config": method, "minilm_adapter": a1, "minilm_head": h1,
                     "minilm_base": t1, "llama7b_adapter": a2, "llama7b_base": t2})
        lines.append(f"| {label} | {a1:,} (+{h1:,} head) | {100 * a1 / t1:.3f} | {a2:,} | {100 * a2 / t2:.4f} |")
    t1, t2 = rows[0]["minilm_base"], rows[0]["llama7b_base"]
    header = [f"| method | MiniLM-L6 ({t1 / 1e6:.1f}M) trainable | % of base | "
              f"Llama-7B config ({t2 / 1e9:.2f}B) trainable | % of base |", "|---|---:|---:|---:|---:|"]
    return "\n".join(header + lines), rows


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# PEFT methods\n\n{START}\n{END}\n"
    if START not in doc:
        doc += f"\n{START}\n{END}\n"
    block = f"{START}\n{text}\n{END}"
    DOC.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.S))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the counts as JSON here")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/methods.md alone")
    args = ap.parse_args(argv)
    text, rows = table()
    print(text)
    if not args.no_doc:
        write_doc(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
