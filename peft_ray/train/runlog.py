"""The run's curve on disk and its progress bar (rank 0 only).

    output.dir/
      metrics.jsonl     # one JSON object per log step ("train") and per evaluation ("eval")
      tensorboard/      # the same scalars as TensorBoard events: `tensorboard --logdir runs/`
      curves.png        # drawn from metrics.jsonl at the end (plot_curves)

Train scalars are means over the logging window: every micro-batch of every rank
since the last log step, not one micro-batch of rank 0.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from peft_ray import dist as D
from peft_ray.storage import open_append, write_file
from peft_ray.train.interrupt import deferred_sigint

LOG_POINTS = 50  # log steps per run (at least every step of a short one)


@dataclass
class Window:
    """Sums since the last log step (all ranks: the recipe adds all-reduced values)."""

    loss_sum: float = 0.0
    micro_batches: float = 0.0
    samples: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0

    def add(self, loss_sum: float, micro_batches: float, samples: float, tokens: float, seconds: float) -> None:
        self.loss_sum += loss_sum
        self.micro_batches += micro_batches
        self.samples += samples
        self.tokens += tokens
        self.seconds += seconds

    def scalars(self) -> Dict[str, float]:
        secs = max(self.seconds, 1e-9)
        return {"loss": self.loss_sum / max(self.micro_batches, 1), "samples_per_s": self.samples / secs,
                "tokens_per_s": self.tokens / secs}


class RunLog:
    """metrics.jsonl + TensorBoard + the tqdm bar. On ranks other than 0 every call is a no-op."""

    def __init__(self, log_dir: Optional[str], total_steps: int, start_step: int, rank0: bool,
                 bar: str = "tqdm", tag: str = ""):
        self.on = rank0
        self.tag = tag
        self.total = total_steps
        self.every = max(1, total_steps // LOG_POINTS)
        self.window = Window()
        self.dir = Path(log_dir) if (log_dir and rank0) else None
        if self.dir:
            trim_log(self.dir, start_step)
        self.tb = self._tensorboard() if self.dir else None
        self.bar = make_bar(bar, total_steps, start_step) if rank0 else None

    def _tensorboard(self):
        """The writer, holding every row metrics.jsonl kept (trim_log): after a restart TensorBoard
        then shows each step once. Its events are written by a thread whose flush() leaves queued
        ones behind, so a killed run could lose an evaluation there that metrics.jsonl had."""
        from tensorboardX import SummaryWriter  # ships with ray[train]; a pyproject dependency

        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "metrics.jsonl"
        with deferred_sigint():
            writer = SummaryWriter(str(self.dir / "tensorboard"), flush_secs=10)
            for row in read_log(log) if log.exists() else []:
                for key, value in row.items():
                    if key not in ("kind", "step", "time") and isinstance(value, (int, float)):
                        writer.add_scalar(f"{row['kind']}/{key}", value, row["step"], walltime=row.get("time"))
        return writer

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.total

    def train_step(self, step: int, epoch: float, lr: float, grad_norm: Optional[float]) -> Optional[Dict]:
        """Advance the bar; at a log step, write the window's means and start a new window."""
        if not self.on:
            return None
        row = None
        if self.due(step):
            row = {**self.window.scalars(), "lr": lr, "epoch": epoch}
            if grad_norm is not None and math.isfinite(grad_norm):
                row["grad_norm"] = grad_norm
            self._write("train", step, row)
            self.window = Window()
            if self.bar is not None:
                self.bar.set_description(f"loss {row['loss']:.4f} | epoch {epoch:.2f}")  # tqdm_ray: no refresh=
        if self.bar is not None:
            self.bar.update(1)
        return row

    def evaluation(self, step: int, metrics: Dict[str, float]) -> None:
        if self.on:
            self._write("eval", step, {k: v for k, v in metrics.items()
                                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
            if self.tb is not None:
                with deferred_sigint():
                    self.tb.flush()  # evaluations are rare and precious: on disk now, not in 10 s

    def echo(self, line: str) -> None:
        """One line above the bar (tqdm.write keeps the bar intact)."""
        if not self.on:
            return
        line = tagged(self.tag, line)
        if self.bar is not None and hasattr(self.bar, "write"):
            self.bar.write(f"[peft-ray] {line}")
        else:
            D.log_rank0(line)  # not print(): Ray Train V2 tees print() into its logger (lines twice)

    def _write(self, kind: str, step: int, row: Dict[str, float]) -> None:
        if self.dir is None:
            return
        with open_append(self.dir / "metrics.jsonl") as f:
            f.write(json.dumps({"kind": kind, "step": step, "time": time.time(), **row}) + "\n")
        with deferred_sigint():
            for key, value in row.items():
                self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            with deferred_sigint():
                self.tb.close()
            self.tb = None


def tagged(tag: str, line: str) -> str:
    """A line of the run tagged `tag` (a tune trial's "trial <id>"), as every line it prints is."""
    return f"{tag}: {line}" if tag else line


def make_bar(kind: str, total: int, start: int):
    """'tqdm' in this process (--local); 'ray' in a Ray worker (tqdm_ray draws it on the
    driver, one bar however many workers); 'lines' (plain lines, where the output is not a
    terminal); 'none' (-q)."""
    if kind == "none":
        return None
    if kind == "lines":
        return LineProgress(total, start)
    if kind == "ray":
        from ray.experimental import tqdm_ray

        bar = tqdm_ray.tqdm(total=total, desc="training", unit="step")
        if start:
            bar.update(start)
        return bar
    from tqdm import tqdm

    from peft_ray.train.terminal import bar_stream

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, desc="training", file=bar_stream())


class LineProgress:
    """The progress bar's content as a plain `[peft-ray]` line at about every tenth of the run,
    for output that is not a terminal (CI logs, `ray job submit`, a redirect to a file): a
    redrawing bar there is every redraw kept, each with Ray's prefix (34 KB for 186 steps)."""

    POINTS = 10

    def __init__(self, total: int, start: int):
        self.total, self.n, self.desc = total, start, ""
        self.every = max(1, total // self.POINTS)
        self.n0, self.t0 = start, time.monotonic()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n % self.every and self.n != self.total:
            return
        rate = (self.n - self.n0) / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        parts = [f"step {self.n}/{self.total}", self.desc, f"{rate:.2f} step/s",
                 f"eta {int(eta) // 60}:{int(eta) % 60:02d}"]
        D.log_rank0(" | ".join(p for p in parts if p))

    def close(self) -> None:
        pass


def trim_log(out_dir: Path, start_step: int) -> None:
    """A fresh run starts an empty curve (--overwrite too); a resumed one drops the rows
    past its checkpoint, which it is about to redo. TensorBoard's events start afresh either
    way: RunLog writes the kept rows into them again."""
    log = out_dir / "metrics.jsonl"
    shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
    if start_step == 0:
        log.unlink(missing_ok=True)
    elif log.exists():
        keep = [json.dumps(r) for r in read_log(log) if r.get("step", 0) <= start_step]
        write_file(log, "".join(line + "\n" for line in keep))


def read_log(path: Path):
    """The rows of a metrics.jsonl (skipping a line a killed run left half-written)."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        # a hand-edited line that is not a train or eval row of a step is skipped, not a crash at the end
        if isinstance(row, dict) and row.get("kind") in ("train", "eval") and type(row.get("step")) is int:
            rows.append(row)
    return rows


def plot_curves(out_dir: str, warn=print) -> Optional[Path]:
    """curves.png: train loss, lr and every eval metric against the step."""
    log = Path(out_dir) / "metrics.jsonl"
    if not log.exists():
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        warn("warning: matplotlib is not installed, so curves.png was not drawn (pip install matplotlib); "
             "metrics.jsonl and tensorboard/ hold the curves")
        return None
    try:
        return _draw(Path(out_dir), read_log(log), plt)
    except Exception as e:   # noqa: BLE001 - a picture must not cost the run its metrics.json
        warn(f"warning: curves.png was not drawn ({type(e).__name__}: {str(e)[:200]}); metrics.jsonl and "
             "tensorboard/ hold the curves")
        return None


def _draw(out_dir: Path, rows, plt) -> Path:
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    # summary metrics only: per-class ones (f1/negative) and counts stay in TensorBoard
    eval_keys = sorted(k for k in {k for r in evals for k in r} - {"kind", "step", "time", "n_eval"} if "/" not in k)
    panels = [("train loss (window mean)", train, "loss"), ("lr", train, "lr"), ("grad norm", train, "grad_norm")]
    panels += [(f"eval {k}", evals, k) for k in eval_keys]
    cols = min(3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.5 * cols, 3 * rows_n), squeeze=False)
    for ax, (title, data, key) in zip(axes.flat, panels):
        pts = [(r["step"], r[key]) for r in data if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="." if data is evals else None)
        ax.set_title(title)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path, png = out_dir / "curves.png", io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_file(path, png.getvalue())
    return path
