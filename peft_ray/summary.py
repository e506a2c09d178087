"""The end-of-run summary table."""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

# (label, metrics key, format); rows whose key a run does not report are left out. The task's
# own metric rows (Task.summary_rows) go between these two.
BEFORE = [("steps", "step", "{:.0f}"), ("epochs", "epoch", "{:.2f}"), ("train loss (mean)", "train_loss", "{:.4f}"),
          ("best", "best", "{}"), ("samples/s", "samples_per_s", "{:.1f}"), ("tokens/s", "tokens_per_s", "{:.0f}")]
AFTER = [("val loss", "loss", "{:.4f}"),
         ("trainable params", "trainable_params", "{:,.0f}"), ("skipped rows", "skipped_rows", "{:.0f}"),
         ("truncated rows", "truncated_rows", "{:.0f}"), ("truncated val rows", "val_truncated_rows", "{:.0f}"),
         ("non-finite skips", "skipped_nonfinite", "{:.0f}"),
         ("train time (s)", "train_seconds", "{:.1f}"), ("wall time (s)", "wall_seconds", "{:.1f}"),
         ("time by phase (s)", "time_phases", "{}"),
         ("adapter (best)", "adapter", "{}"), ("adapter (last)", "adapter_last", "{}"),
         ("checkpoint", "checkpoint", "{}")]


# After --resume the training clocks and rates cover every attempt (the run's), the wall time and
# the phases this process only: the labels say which.
RESUMED = {"samples_per_s": "samples/s (all attempts)", "tokens_per_s": "tokens/s (all attempts)",
           "train_seconds": "train time, all attempts (s)", "wall_seconds": "wall time, this attempt (s)",
           "time_phases": "this attempt by phase (s)"}


def render_summary(metrics: Dict[str, Any], title: str = "peft-ray run",
                   task_rows: Sequence[Tuple[str, str, str]] = ()) -> str:
    """The table. Where adapter/ holds an earlier step than the last evaluation (the best one), the
    validation rows are adapter/'s own evaluation (`adapter_metrics`), as the adapter a user ships,
    and one row gives the last evaluation's headline."""
    resumed = float(metrics.get("carried_train_seconds") or 0.0) > 0.0
    own = metrics.get("adapter_metrics") or {}
    val_keys = {key for _, key, _ in task_rows} | {"loss"}
    shown = {**metrics, **{k: v for k, v in own.items() if k in val_keys}}
    rows = [(RESUMED.get(key, label) if resumed else label, fmt.format(shown[key]))
            for label, key, fmt in [*BEFORE, *task_rows, *AFTER] if key in shown]
    if own:
        val_labels = {label for label, _, _ in task_rows} | {"val loss"}
        at = next((i for i, (label, _) in enumerate(rows) if label in val_labels), len(rows))
        last = ", ".join(f"{key} {fmt.format(metrics[key])}" for _, key, fmt in task_rows[:2] if key in metrics)
        rows[at:at] = [("val figures", f"adapter/'s, step {metrics['adapter_step']}"),
                       ("last evaluation", f"step {metrics.get('step')}: {last}")]
    width = max(len(r[0]) for r in rows)
    # at most 79 wide: a long value (a path, the time by phase) wraps on an 80-column terminal anyway,
    # and a rule as wide as it wrapped twice
    lines = [title, "-" * min(79, max(len(title), width + 2 + max(len(r[1]) for r in rows)))]
    lines += [f"{label:<{width}}  {value}" for label, value in rows]
    return "\n".join(lines)


def truncation_note(n: int, max_length: int, rows: str = "row(s)") -> str:
    """What eval, predict and training's evaluation say when rows were longer than the job's
    model.max_length."""
    return (f"warning: {n} {rows} were longer than model.max_length={max_length} tokens and were cut; "
            "their results may be empty or wrong. Retrain with a larger model.max_length if such rows matter")
