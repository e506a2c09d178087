"""A run's outputs: adapter/ (the best checkpoint's), adapter_last/, curves.png and metrics.json,
from the run's checkpoints and last report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from peft_ray.preflight import Preflight
from peft_ray.spec import JobSpec
from peft_ray.storage import Location, is_uri, location_of
from peft_ray.train.checkpoint import checkpoint_at_step
from peft_ray.train.resume import Finished


PHASES = (("model + engine", "setup_seconds"), ("data", "data_seconds"), ("training", "train_seconds"),
          ("evaluation", "eval_seconds"), ("checkpoints", "checkpoint_seconds"), ("save", "save_seconds"))


def time_phases(final: Dict[str, Any]) -> str:
    """Where this process's wall time went: the workers' own clocks per phase, less what earlier
    attempts of a resumed run spent (`carried_*`); the rest (Ray and the worker group starting,
    preflight, the last save, outputs) is what remains of the wall time."""
    parts = [(label, float(final.get(key, 0.0)) - float(final.get(f"carried_{key}", 0.0))) for label, key in PHASES]
    rest = max(0.0, float(final.get("wall_seconds", 0.0)) - sum(v for _, v in parts))
    return " | ".join(f"{label} {v:.1f}" for label, v in [*parts, ("start-up + other", rest)])


def write_outputs(out: Location, checkpoint: Location, metrics: Dict[str, Any], wall: Optional[float],
                  pre: Preflight, best: Optional[Location] = None) -> Dict[str, Any]:
    """adapter/ (the best evaluation's; the last when nothing was evaluated), adapter_last/
    (never half-written, see Location.replace_with), curves.png, then metrics.json. `wall` is the
    time before this call; the save is timed here and added (the "save" phase). None: the run's
    wall time is unknown (outputs written by a later --resume)."""
    from peft_ray.adapter import ADAPTER_FILES, CONFIG
    from peft_ray.train.runlog import plot_curves

    t0 = time.time()
    sources = {"adapter_last": checkpoint / "adapter", "adapter": (best or checkpoint) / "adapter"}
    for src in sources.values():     # both checked before either is written: a refusal changes nothing
        src.own_files(ADAPTER_FILES)
    for name, src in sources.items():   # only the adapter's own regular files, as `export` passes on
        (out / name).replace_with(src, last=CONFIG, names=ADAPTER_FILES)
    if not is_uri(out.uri):
        plot_curves(out.uri, warn=lambda m: print(f"[peft-ray] {m}"))
    save = time.time() - t0
    final = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "keep_score"}
    if wall is not None:
        final["wall_seconds"] = wall + save
    final.update(save_seconds=save, skipped_rows=pre.train.skipped + (pre.validation.skipped if pre.validation else 0),
                 checkpoint=checkpoint.uri, adapter=(out / "adapter").uri, adapter_last=(out / "adapter_last").uri)
    # which step's adapter adapter/ holds: the best's, or the last's when nothing was evaluated or
    # the best checkpoint (an earlier run's, after --resume) was missing or failed its check
    final["adapter_step"] = final["best_step"] if best is not None and "best_step" in final else final.get("step")
    if final["adapter_step"] != final.get("step"):
        # the figures of the adapter a user ships: its own evaluation's, which the summary shows (HF's
        # load_best_model_at_end evaluates the best model at the end); the plain keys stay the last's
        final["adapter_metrics"] = recorded_metrics(out / "adapter")
    if "best_step" in final:
        final["best"] = f"step {final['best_step']} ({final['metric_for_best']} {final['best_metric']:.4f})"
        if best is None:
            final["best"] += f"; adapter/ holds step {final['adapter_step']}: that checkpoint was not usable"
    if "train_seconds" in final and wall is not None:
        final["time_phases"] = time_phases(final)
    (out / "metrics.json").write_text(json.dumps(final, indent=2))
    return final


def recorded_metrics(adapter: Location) -> Dict[str, float]:
    """The evaluation an adapter folder peft-ray wrote records in its peft_ray.json (its step's
    metrics); {} where it records none."""
    from peft_ray.adapter import EXTRA

    try:
        recorded = json.loads((adapter / EXTRA).read_small_text(1 << 22) or "{}").get("metrics") or {}
    except (ValueError, AttributeError):
        return {}
    return {k: v for k, v in recorded.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def finish_run(spec: JobSpec, pre, checkpoint: str, done: Finished, local: bool) -> Dict[str, Any]:
    """A --resume with nothing left to train: the recorded metrics.json as it is, or the outputs the
    run was stopped before writing, from its last checkpoint's report."""
    if done.recorded:
        return done.metrics
    out = Location.at(spec.output.dir)
    return write_outputs(out, Location.at(checkpoint), done.metrics, None, pre, best=kept_best(out, done.metrics, local))


def best_checkpoint(result, metrics: Dict[str, Any], out: Location) -> Optional[Location]:
    """The retained checkpoint at metrics["best_step"] (the retention score keeps it): this Ray
    run's, or after --resume one an earlier run of this output dir kept under ray/."""
    if "best_step" not in metrics:
        return None
    for ckpt, m in result.best_checkpoints or []:
        if m.get("step") == metrics["best_step"]:
            return location_of(ckpt.filesystem, ckpt.path, like=out.uri)
    return kept_best(out, metrics, local=False)


def kept_best(out: Location, metrics: Dict[str, Any], local: bool) -> Optional[Location]:
    """The checkpoint at metrics["best_step"] that the run in `out` kept (--local's under
    checkpoints/, Ray's under ray/) and that passes its check; None, said, when there is none."""
    if "best_step" not in metrics:
        return None
    root = (out / "checkpoints") if local else (out / "ray")
    found = checkpoint_at_step(Path(root.path) if local else root.uri, int(metrics["best_step"]))
    if not found:
        print(f"[peft-ray] warning: no checkpoint of step {int(metrics['best_step'])} (the best) is kept under "
              f"{root.uri} that passes its check; adapter/ holds the last checkpoint's adapter instead")
    return Location.at(found) if found else None
