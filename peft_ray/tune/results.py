"""After the search: the leaderboard (terminal, CSV, JSON), learning curves (PNG), the best
trial's adapter and its job as a ready-to-run YAML.

Everything is read back from what each trial reported to Tune, every attempt of it
(``trials/<id>/history.jsonl``, see history.py, and Tune's ``result.json``), so the leaderboard
matches the trials' own results; a trial that was resumed reports some steps twice, and the later
report of a step wins.

A trial that failed (status ``error``) is listed with its error but never chosen as the best: its
job, re-run from best_job.yaml, would fail the same way. Ray Tune's own ``get_best_result`` does not
look at a trial's status; peft-ray does. A search in which every trial failed ends with
``TrialsFailed`` (exit 1), naming the first error.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from peft_ray.errors import JobError
from peft_ray.spec import saved_spec
from peft_ray.storage import Location, atomic_write, staging_dir
from peft_ray.train import terminal
from peft_ray.templates import one_line
from peft_ray.tune.folder import BEST_RUN
from peft_ray.tune.history import read_error, read_history, trial_folder
from peft_ray.tune.space import SearchSpace
from peft_ray.tune.trial import assignment_of

class TuneInterrupted(JobError):
    exit_code = 130  # as a shell reports Ctrl-C


class TrialsFailed(JobError):
    exit_code = 1    # the search ran, and no trial finished


@dataclass
class TrialRow:
    rank: int
    trial_id: str
    template: str
    verbalizer: Optional[Dict[str, Any]]
    params: Dict[str, Any]
    best_metric: Optional[float]
    best_step: Optional[int]
    steps_trained: int
    total_steps: int
    stopped_early: bool
    status: str                                   # ok | stopped | error
    checkpoint: Optional[str] = None              # the best report's checkpoint folder
    curve: List[List[float]] = field(default_factory=list)  # [[step, metric], ...]
    error: Optional[str] = None                   # status error: the error's last line


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def trial_row(trial_id: str, assignment: Dict[str, Any], history: List[Dict[str, Any]], total: int,
              metric: str, mode: str, error: bool, space: SearchSpace) -> TrialRow:
    history = [h for h in history if 0 < h["step"] <= total]   # a report past the trial's last step was never made
    scored = [h for h in history if _finite(h.get(metric))]
    sign = 1 if mode == "max" else -1
    # Ties go to the earliest step whose checkpoint is still there (retention may have dropped
    # some of several equal ones): fewer steps for the same score.
    order = sorted(scored, key=lambda h: (-sign * h[metric], h["step"]))
    kept = [h for h in order if h[metric] == order[0][metric] and Path(str(h.get("checkpoint_path"))).is_dir()]
    best = (kept or order or [None])[0]
    steps = max((int(h["step"]) for h in history), default=0)
    early = not error and steps < total
    view = space.describe(assignment)
    return TrialRow(rank=0, trial_id=trial_id, template=view["template"], verbalizer=view["verbalizer"],
                    params=view["params"], best_metric=best[metric] if best else None,
                    best_step=int(best["step"]) if best else None, steps_trained=steps, total_steps=total,
                    stopped_early=early, status="error" if error else ("stopped" if early else "ok"),
                    checkpoint=best.get("checkpoint_path") if best else None,
                    curve=[[int(h["step"]), float(h[metric])] for h in scored])


def rank_rows(rows: List[TrialRow], mode: str) -> List[TrialRow]:
    """Best metric first, failed trials after every other (never the best), and trials with no
    metric (errors before the first evaluation) last."""
    sign = -1 if mode == "max" else 1
    rows = sorted(rows, key=lambda r: (r.best_metric is None, r.status == "error", sign * (r.best_metric or 0.0),
                                       r.trial_id))
    for i, r in enumerate(rows, 1):
        r.rank = i
    return rows


def verbalizer_text(v: Optional[Dict[str, Any]]) -> str:
    if not v:
        return "-"
    return "; ".join(f"{k}={'/'.join([w] if isinstance(w, str) else w)}" for k, w in v.items())


def params_text(p: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in p.items()) or "-"


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def render_table(rows: List[TrialRow], metric: str, width: int = 38) -> str:
    """One column per searched parameter (named by its field where that is unambiguous), so the
    values that tell trials apart are never cut away; the verbalizer only where trials differ in it."""
    keys = list(dict.fromkeys(k for r in rows for k in r.params))
    fields = [k.partition(".")[2] for k in keys]
    names = ["method" if k == "method.name" else f if fields.count(f) == 1 else k for k, f in zip(keys, fields)]
    verbs = len({verbalizer_text(r.verbalizer) for r in rows}) > 1
    head = ["rank", "trial", "template", *(["verbalizer"] if verbs else []), *names, f"best {metric}", "@step",
            "steps", "early"]
    body = [[str(r.rank), r.trial_id, _cut(r.template, width),
             *([_cut(verbalizer_text(r.verbalizer), 24)] if verbs else []),
             *(_cut(_value(r.params[k]), 24) if k in r.params else "-" for k in keys),
             "-" if r.best_metric is None else f"{r.best_metric:.4f}",
             str(r.best_step or "-"), f"{r.steps_trained}/{r.total_steps}",
             r.status if r.status in ("error", "unfinished") else ("yes" if r.stopped_early else "no")] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    failed = [f"  {r.trial_id}: {r.error or 'no error message was saved'}" for r in rows if r.status == "error"]
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
                     + (["", "failed trials (never ranked first):"] + failed if failed else []))


def _cut(s: str, n: int) -> str:
    """One table cell: line breaks shown as \\n (chat templates have them), cut to n characters."""
    s = one_line(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def write_tables(rows: List[TrialRow], out: Path, metric: str) -> None:
    atomic_write(out / "leaderboard.json", json.dumps({"metric": metric, "trials": [asdict(r) for r in rows]},
                                                       indent=1).encode())
    cols = ["rank", "trial_id", "template", "verbalizer", "params", f"best_{metric}", "best_step",
            "steps_trained", "total_steps", "stopped_early", "status", "error"]
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(cols)
    for r in rows:
        w.writerow([r.rank, r.trial_id, r.template, json.dumps(r.verbalizer), json.dumps(r.params),
                    r.best_metric, r.best_step, r.steps_trained, r.total_steps, r.stopped_early, r.status,
                    r.error or ""])
    atomic_write(out / "leaderboard.csv", f.getvalue().encode("utf-8"))


def plot_curves(rows: List[TrialRow], out: Path, metric: str) -> Optional[Path]:
    """Metric vs step, one line per trial; the best trial thick and labelled. Without
    matplotlib (a dependency, but an install may lack it) the search still ends with its
    leaderboard, best adapter and best_job.yaml: only the picture is skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        print("[peft-ray] warning: matplotlib is not installed, so curves.png was not drawn "
              "(pip install matplotlib); leaderboard.csv holds the numbers")
        return None

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in reversed(rows):  # best drawn last, on top
        if not r.curve:
            continue
        xs, ys = zip(*r.curve)
        best = r.rank == 1
        ax.plot(xs, ys, marker="o", markersize=3 if not best else 5, linewidth=3 if best else 1,
                alpha=1 if best else 0.5, color="C3" if best else None, zorder=3 if best else 2,
                label=f"#{r.rank} {r.trial_id}" + (" (best)" if best else "") + (" stopped" if r.stopped_early else ""))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"peft-ray tune: {metric} per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    path, png = out / "curves.png", io.BytesIO()
    fig.tight_layout()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, png.getvalue())
    return path


def cluster_override(saved: dict) -> str:
    """The cluster a search joined by a typed address travels in the header's command, not in the file:
    a job file never picks a cluster (spec/load.py, check_file_address), so the file would be refused."""
    from peft_ray.spec.load import ADDRESSES_ON_THIS_MACHINE

    address = (saved.get("scaling") or {}).get("address")
    if not address or address in ADDRESSES_ON_THIS_MACHINE:
        return ""
    saved["scaling"].pop("address")
    return f" scaling.address={address}"      # already redacted by saved_spec


def export_best(best: TrialRow, space: SearchSpace, assignment: Dict[str, Any], spec, out: Path,
                job_path: str) -> Optional[Path]:
    """The best report's adapter -> out/adapter; the best trial's job -> out/best_job.yaml."""
    from peft_ray.adapter import ADAPTER_FILES, replace_dir
    from peft_ray.spec import validate_spec

    raw = space.trial_raw(assignment)
    raw["name"] = f"{spec.name}-best"
    raw["output"]["dir"] = str(Path(spec.output.dir) / BEST_RUN)
    # the re-run keeps the checkpoint the search ranked by (a trial's own best already follows it)
    raw["train"].update(metric_for_best=spec.tune.metric, greater_is_better=spec.tune.mode == "max")
    best_spec = saved_spec(validate_spec(raw))   # secrets redacted, as every job.yaml peft-ray writes
    best_spec.pop("tune", None)
    yaml_path = out / "best_job.yaml"
    shown = f"{Path(spec.output.dir) / 'best_job.yaml'}{cluster_override(best_spec)}"
    score = "-" if best.best_metric is None else f"{best.best_metric:.4g}"
    head = (f"# peft-ray train {shown}\n#\n# The best trial ({best.trial_id}) of `peft-ray tune {job_path}`: "
            f"{spec.tune.metric} {score} at step {best.best_step}.\n")
    atomic_write(yaml_path, (head + yaml.safe_dump(best_spec, sort_keys=False)).encode("utf-8"))
    if not best.checkpoint or not (Path(best.checkpoint) / "adapter").is_dir():
        where = best.checkpoint or "of that report (none in the trial's folder)"
        print(f"[peft-ray] warning: the best checkpoint {where} is gone; no adapter exported")
        return None
    src = Location.at(best.checkpoint) / "adapter"
    with staging_dir(out / "adapter") as tmp:        # random name, made exclusively: no planted link
        tmp.mkdir()
        for name in src.own_files(ADAPTER_FILES):    # the adapter's own regular files, never a link's target
            Location.at(tmp / name).copy_file_from(src / name)
        replace_dir(tmp, out / "adapter")
    return out / "adapter"


def tune_trials(experiment: Path) -> List[Any]:
    """Tune's trials as saved in the experiment state (config, status, path). Read back from disk
    rather than from fit()'s ResultGrid: after a Ctrl-C Tune's cleanup rewrites the live trials'
    status, and a trial that never started has no config there."""
    from ray.tune import ExperimentAnalysis

    return list(ExperimentAnalysis(str(experiment)).trials)


def collect_rows(experiment: Path, spec, space: SearchSpace, trials, totals_of) -> Dict[str, Any]:
    """(rows ranked, assignment by trial id, unfinished trial ids)."""
    t = spec.tune
    rows, assignments, unfinished = [], {}, set()
    for trial in tune_trials(experiment):
        a = assignment_of(trial.config or {}, trials)
        assignments[trial.trial_id] = a
        own = trial_folder(str(experiment.parent), trial.trial_id)
        row = trial_row(trial.trial_id, a, read_history(Path(trial.path), own), totals_of(a), t.metric, t.mode,
                        trial.status == "ERROR", space)
        if row.status == "error":
            row.error = read_error(own, Path(trial.path))
        if trial.status not in ("TERMINATED", "ERROR"):  # PENDING/RUNNING/PAUSED: interrupted
            row.status, row.stopped_early = "unfinished", False
            unfinished.add(trial.trial_id)
        rows.append(row)
    return {"rows": rank_rows(rows, t.mode), "assignments": assignments, "unfinished": unfinished}


def write_results(experiment: Path, spec, space: SearchSpace, trials, totals_of, out: Path, job_path: str,
                  wall: float) -> List[TrialRow]:
    got = collect_rows(experiment, spec, space, trials, totals_of)
    rows = got["rows"]
    write_tables(rows, out, spec.tune.metric)
    plot_curves(rows, out, spec.tune.metric)
    with terminal.block():  # the leaderboard shows at every terminal level
        print("\n" + render_table(rows, spec.tune.metric))
    if got["unfinished"]:
        planned = len(trials) if trials is not None else spec.tune.num_samples
        waiting = f" and {planned - len(rows)} not started" if planned > len(rows) else ""
        raise TuneInterrupted(f"the search was interrupted with {len(got['unfinished'])} trial(s) unfinished"
                              f"{waiting} (leaderboard so far in {out}); continue it with --resume")
    failed = sorted((r for r in rows if r.status == "error"), key=lambda r: r.trial_id)
    if failed and len(failed) == len(rows):
        first = failed[0]
        raise TrialsFailed(f"all {len(rows)} trial(s) failed, so the search has no best trial (leaderboard in "
                           f"{out}). The first error, trial {first.trial_id}: "
                           f"{first.error or 'not saved; see ' + str(out / 'tune.log')}. Fix its cause and start "
                           "the search again with --overwrite (--resume does not rerun failed trials)")
    if failed:
        print(f"[peft-ray] warning: {len(failed)} of {len(rows)} trial(s) failed (errors under the leaderboard); "
              "the best is chosen among the others")
    best = next((r for r in rows if r.best_metric is not None and r.status != "error"), None)
    if best is None:
        print("[peft-ray] no trial reported a metric; see the errors above and under " + str(out / "tune"))
        return rows
    adapter = export_best(best, space, got["assignments"][best.trial_id], spec, out, job_path)
    with terminal.block():
        print(f"\nbest: {best.trial_id} {spec.tune.metric}={best.best_metric:.4f} at step {best.best_step}; "
              f"adapter: {adapter or '-'}; job: {out / 'best_job.yaml'}; wall {wall:.0f}s")
    return rows
