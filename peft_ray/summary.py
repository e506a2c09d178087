"""The end-of-run summary table."""

from __future__ import annotations

from typing import Any, Dict

# (label, metrics key, format); rows whose key a task does not report are left out.
ROWS = [("steps", "step", "{:.0f}"), ("epochs", "epoch", "{:.2f}"), ("train loss (mean)", "train_loss", "{:.4f}"),
        ("best", "best", "{}"), ("samples/s", "samples_per_s", "{:.1f}"),
        ("tokens/s", "tokens_per_s", "{:.0f}"), ("val accuracy", "accuracy", "{:.4f}"),
        ("val macro-F1", "macro_f1", "{:.4f}"), ("val entity F1", "entity_f1", "{:.4f}"),
        ("val entity precision", "entity_precision", "{:.4f}"), ("val entity recall", "entity_recall", "{:.4f}"),
        ("val BLEU", "bleu", "{:.2f}"), ("val chrF", "chrf", "{:.2f}"), ("val exact match", "exact_match", "{:.4f}"),
        ("val token F1", "token_f1", "{:.4f}"), ("val ROUGE-L", "rouge_l", "{:.4f}"), ("val loss", "loss", "{:.4f}"),
        ("trainable params", "trainable_params", "{:,.0f}"), ("skipped rows", "skipped_rows", "{:.0f}"),
        ("truncated rows", "truncated_rows", "{:.0f}"), ("non-finite skips", "skipped_nonfinite", "{:.0f}"),
        ("train time (s)", "train_seconds", "{:.1f}"), ("wall time (s)", "wall_seconds", "{:.1f}"),
        ("adapter (best)", "adapter", "{}"), ("adapter (last)", "adapter_last", "{}"),
        ("checkpoint", "checkpoint", "{}")]


def render_summary(metrics: Dict[str, Any], title: str = "peft-ray run") -> str:
    rows = [(label, fmt.format(metrics[key])) for label, key, fmt in ROWS if key in metrics]
    width = max(len(r[0]) for r in rows)
    lines = [title, "-" * (width + 2 + max(len(r[1]) for r in rows))]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
