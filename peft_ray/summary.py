"""The end-of-run summary table."""

from __future__ import annotations

from typing import Any, Dict

ROWS = [("steps", "step", "{:.0f}"), ("samples/s", "samples_per_s", "{:.1f}"),
        ("tokens/s", "tokens_per_s", "{:.0f}"), ("val accuracy", "accuracy", "{:.4f}"),
        ("val macro-F1", "macro_f1", "{:.4f}"), ("val loss", "loss", "{:.4f}"),
        ("trainable params", "trainable_params", "{:,.0f}"), ("skipped rows", "skipped_rows", "{:.0f}"),
        ("truncated rows", "truncated_rows", "{:.0f}"), ("non-finite skips", "skipped_nonfinite", "{:.0f}"),
        ("train time (s)", "train_seconds", "{:.1f}"), ("wall time (s)", "wall_seconds", "{:.1f}"),
        ("adapter", "adapter", "{}"), ("checkpoint", "checkpoint", "{}")]


def render_summary(metrics: Dict[str, Any], title: str = "peft-ray run") -> str:
    rows = [(label, fmt.format(metrics[key])) for label, key, fmt in ROWS if key in metrics]
    width = max(len(r[0]) for r in rows)
    lines = [title, "-" * (width + 2 + max(len(r[1]) for r in rows))]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)
