"""train_func: the per-worker recipe. Reads top to bottom like the job it runs.

Every input comes from ``config`` (a plain dict: the resolved spec and run
facts computed by the driver); nothing is captured from driver globals.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from peft_ray.adapter import gather_adapter_state, write_adapter
from peft_ray.data.batching import group_batches, micro_batches, permuted
from peft_ray.methods import get_method
from peft_ray import dist as D
from peft_ray.errors import JobError
from peft_ray.spec import saved_spec, validate_spec
from peft_ray.summary import truncation_note
from peft_ray.tasks import get_task
from peft_ray.tasks.evaluate import counted_cuts, eval_scope
from peft_ray.train import telemetry
from peft_ray.train.best import best_fields, best_policy, intervals, retention_score, should_stop, update_best
from peft_ray.train.checkpoint import TrainerState, load_checkpoint, read_state, save_checkpoint
from peft_ray.train.data_iter import InMemoryShard, RayDataIterators
from peft_ray.train.engine import build_model, count_trainable, setup_engine
from peft_ray.train.faults import Faults
from peft_ray.train.report import RayReporter
from peft_ray.train.runlog import RunLog, tagged


class NonFiniteLoss(JobError):
    """train.nan_policy stop met a non-finite loss: the job's own (its lr, data or starting adapter),
    so the CLI says it in one line, and a Ray run ends at it (train/job_error_stop.py) instead of
    restarting its workers into the same batch."""


@dataclass
class RunFacts:
    """Computed by the driver before training (flat, picklable)."""

    total_steps: int
    steps_per_epoch: int
    resume_from: Optional[str] = None     # --resume: the checkpoint folder to start from
    storage_dir: Optional[str] = None     # ray mode: this run's storage folder (local/NFS)
    faults: Optional[Dict[str, int]] = None  # fault injection (peft_ray/train/faults.py)
    log_dir: Optional[str] = None         # absolute output.dir for metrics.jsonl + tensorboard/ (None: off)
    bar: str = "none"                     # progress bar: "tqdm" | "ray" (tqdm_ray, drawn by the driver) | "none"
    split_train_here: bool = False        # ray mode: the train split reaches every worker whole (data_iter.rank_share)
    log_tag: str = ""                     # before every line this run prints ("trial 1a2b_00003": whose line it is)

    def as_config(self) -> Dict[str, Any]:
        """The train_loop_config entry."""
        return asdict(self)


def train_func(config: Dict[str, Any], reporter=None, data=None):
    """The recipe. Ray Train calls it as train_func(config) on every worker: the data are the
    worker's Ray Data shards and the reporter is Ray Train's. A run in this process
    (train/local.run_in_process: --local, a 1-worker tune trial) passes its own pyarrow data and
    reporter. Returns the reporter (it holds the last checkpoint and metrics)."""
    t_setup = time.perf_counter()
    spec = validate_spec(config["spec"])
    run = RunFacts(**config["run"])
    setup_torch(spec)
    model, tokenizer, base_path = build_model(spec)
    engine, scheduler = setup_engine(model, spec, run.total_steps, use_bf16=use_bf16(spec))
    engine.train()  # from_pretrained returns eval mode; dropout is on from step 1, as in HF Trainer
    data = data or RayDataIterators(split_here=run.split_train_here)
    reporter = reporter or RayReporter(run.resume_from, run.storage_dir, run.log_tag)
    state = restore(engine, reporter, run.log_tag)
    state.world_size = D.world()
    ctx = StepContext(spec, run, engine, model, tokenizer, base_path, data, reporter,
                      resumed=state.global_step > 0, log=make_run_log(run, state),
                      setup_seconds=time.perf_counter() - t_setup,
                      carried=carried_clocks(run.resume_from))
    ctx.log.echo(f"training {count_trainable(model):,} parameters ({spec.method.name}) on {D.world()} "
                 f"worker(s), ZeRO-{spec.deepspeed.zero_stage}, {run.total_steps} steps")
    try:
        train_loop(ctx, state)
    finally:   # an error or Ctrl-C too: the bar ends and TensorBoard's writer closes here, not at exit
        finish(ctx, state)
    return reporter


def use_bf16(spec) -> bool:
    """bf16 by default on GPUs (fp32 on the CPU, where bf16 matmuls are slow and less exact)."""
    if spec.deepspeed.bf16 is not None:
        return spec.deepspeed.bf16
    return bool(spec.scaling.use_gpu and torch.cuda.is_available())


def setup_torch(spec) -> None:
    torch.set_num_threads(spec.scaling.torch_threads or max(1, int(spec.scaling.cpus_per_worker)))
    torch.manual_seed(spec.train.seed + D.rank())  # dropout differs per rank; init is seeded in build_model
    torch.use_deterministic_algorithms(False)


def make_run_log(run: RunFacts, state: TrainerState) -> RunLog:
    return RunLog(run.log_dir, run.total_steps, state.global_step, rank0=D.rank() == 0, bar=run.bar,
                  tag=run.log_tag)


# Phase clocks a checkpoint carries across a resume: the run's totals; this attempt's wall time
# holds only what the attempt itself spent (outputs.time_phases subtracts the carried part).
CARRIED = ("train_seconds", "data_seconds", "eval_seconds", "checkpoint_seconds")


def carried_clocks(resume_from: Optional[str]) -> Dict[str, float]:
    """The CARRIED clocks of the --resume starting point: what earlier processes spent. (A restart
    inside this run, after a worker failure, restores a checkpoint of this process's own time.)"""
    state = read_state(resume_from) if resume_from else None
    return {f"carried_{k}": float(getattr(state, k)) for k in CARRIED} if state else {}


def restore(engine, reporter, tag: str = "") -> TrainerState:
    path = reporter.checkpoint_to_resume()
    if path is None:
        return TrainerState()
    state = load_checkpoint(engine, path)
    reporter.release_resumed()
    # epochs counted from 1 and micro-batches done, as the summary counts them (a review: "epoch 1,
    # micro-batch 93" after a 2-epoch run's last step read as halfway through)
    where = (f"{state.micro_in_epoch} micro-batches into epoch {state.epoch + 1}" if state.micro_in_epoch
             else f"{state.epoch} epoch{'s' * (state.epoch != 1)} done")
    D.log_rank0(tagged(tag, f"resumed from {path} after step {state.global_step} ({where})"))
    return state


@dataclass
class StepContext:
    spec: Any
    run: RunFacts
    engine: Any
    model: Any
    tokenizer: Any
    base_path: str
    data: Any
    reporter: Any
    resumed: bool = False
    log: Optional[RunLog] = None
    setup_seconds: float = 0.0               # model load + DeepSpeed engine + restore, this attempt
    carried: Dict[str, float] = field(default_factory=dict)   # CARRIED phases of earlier attempts (resume)
    stop: bool = False                       # early stopping fired
    val_truncated: Optional[int] = None      # validation rows cut at model.max_length (the first evaluation's count)

    @functools.cached_property
    def best(self):
        return best_policy(self.spec.train, self.task)

    @functools.cached_property
    def every(self):
        """(eval_every, checkpoint_every), defaults filled in (best.intervals)."""
        return intervals(self.spec.train, self.run.steps_per_epoch)

    def epoch_progress(self, state) -> float:
        """Fractional epochs done (2.0 at the end of a 2-epoch run)."""
        return state.global_step / max(1, self.run.steps_per_epoch)

    @functools.cached_property
    def faults(self) -> Faults:
        return Faults(**(self.run.faults or {}), resumed=self.resumed)

    @functools.cached_property
    def telemetry(self) -> Optional[telemetry.Telemetry]:
        """Live metrics for the Ray dashboard, looked up once (None outside Ray Train)."""
        return telemetry.for_run(self.spec.name)

    @functools.cached_property
    def task(self):
        return get_task(self.spec.task.type)

    @functools.cached_property
    def runtime(self):
        """What the task's loss and evaluation need, resolved once per job (not per micro-step)."""
        return self.task.runtime(self.spec, self.base_path)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0


ROWS, ORDER, SHARD = 1, 2, 3   # the uses of an epoch's random streams (epoch_batches)


def epoch_batches(ctx: StepContext, epoch: int, skip: int):
    """This worker's micro-batches of `epoch`, the first `skip` dropped (exact resumption)."""
    t, micro = ctx.spec.train, ctx.spec.micro_batch_size
    rows = ctx.run.steps_per_epoch * t.grad_accum * micro            # this worker's rows per epoch (about)
    # One stream per use, epoch and rank; the use first (numpy pads a shorter key with zeros, so a
    # rank-0 key without it would equal the ranks' shared one).
    rows_seed, shard_seed = (ROWS, t.seed, epoch, D.rank()), (SHARD, t.seed, epoch, D.rank())
    order_seed = (ORDER, t.seed, epoch)                              # shared by the ranks
    tables = ctx.data.train_tables(epoch)
    if isinstance(tables, InMemoryShard):                            # a fresh order of the whole shard
        tables = permuted(tables, shard_seed)
    it = micro_batches(tables, micro, pad_id=ctx.pad_id,
                       seed=rows_seed, group_by_length=t.group_by_length,
                       drop_last=True, group=group_batches(rows, micro * t.grad_accum),
                       order_seed=order_seed if D.world() > 1 else None,  # ranks' lengths match
                       per_step=t.grad_accum)                            # a step's rows whatever grad_accum
    for i, batch in enumerate(it):
        if i >= skip:
            yield batch


def train_loop(ctx: StepContext, state: TrainerState) -> None:
    n_epochs = math.ceil(ctx.run.total_steps / max(1, ctx.run.steps_per_epoch))
    while state.global_step < ctx.run.total_steps and state.epoch < max(n_epochs, 1) + 1:
        batches = epoch_batches(ctx, state.epoch, state.micro_in_epoch)
        waited = time.perf_counter()
        for window in step_windows(_lockstep(batches), ctx.spec.train.grad_accum):
            state.data_seconds += time.perf_counter() - waited
            if train_step(ctx, state, window):
                after_optimizer_step(ctx, state)
            if state.global_step >= ctx.run.total_steps or ctx.stop:
                return
            waited = time.perf_counter()
        state.epoch += 1
        state.micro_in_epoch = 0


def _lockstep(batches):
    """Stop every worker as soon as any worker runs out (ZeRO steps are collective)."""
    it = iter(batches)
    while True:
        batch = next(it, None)
        if D.all_sum([batch is None])[0] > 0:
            return
        yield batch


def step_windows(batches, grad_accum: int):
    """The micro-batches of each optimizer step: `grad_accum` of them, and the epoch's rest as a
    shorter last step. As in HF Trainer, an accumulation never reaches into the next epoch (and
    preflight.count_steps counts that last step)."""
    window = []
    for batch in batches:
        window.append(batch)
        if len(window) == grad_accum:
            yield window
            window = []
    if window:
        yield window


def train_step(ctx: StepContext, state: TrainerState, window: list) -> bool:
    """Forward + backward of the step's micro-batches, then the optimizer step. The recipe, not
    DeepSpeed's micro-step counter, marks the accumulation boundary: a step may be shorter than
    grad_accum. True if the optimizer stepped (False: every micro-batch was non-finite, skipped)."""
    weights = loss_weights(ctx, window)
    # the logged loss is the step's (token-weighted for token-level losses, as HF logs it): each
    # micro-batch's mean counts by its weight relative to a step of equal micro-batches
    share = len(window) / ctx.spec.train.grad_accum
    good = None
    for i, (batch, weight) in enumerate(zip(window, weights)):
        last = i == len(window) - 1
        ctx.engine.set_gradient_accumulation_boundary(last)
        if train_micro_step(ctx, state, batch, weight, weight * share):
            good = batch
        elif last and good is not None:
            null_backward(ctx, good)   # the skipped micro-batch carried the boundary: step on the rest
        state.micro_in_epoch += 1
    return good is not None


def loss_weights(ctx: StepContext, window: list) -> list:
    """What each micro-batch's mean loss is multiplied by, so that DeepSpeed's step (every backward
    divided by grad_accum, gradients averaged over ranks) takes HF Trainer's loss: the mean of the
    step's micro-batches (a shorter step too), or for token-level losses the mean over every
    labelled token of the step on every rank (HF's num_items_in_batch; one all-reduce a step)."""
    ga, k = ctx.spec.train.grad_accum, len(window)
    items = [ctx.task.loss_items(b) for b in window]
    if items[0] is None:
        return [ga / k] * k
    total = D.all_sum([float(sum(items))])[0]
    return [n * D.world() * ga / max(total, 1.0) for n in items]


def train_micro_step(ctx: StepContext, state: TrainerState, batch: dict, weight: float = 1.0,
                     logged: float = 1.0) -> bool:
    """Forward + backward (+ the optimizer step at the boundary). False if the loss was non-finite
    (skipped on every rank alike). The loss counts `logged` times in the logged mean."""
    t0 = time.perf_counter()
    engine = ctx.engine
    loss = ctx.faults.poisoned(ctx.task.loss(engine, batch, ctx.runtime), state.global_step + 1)
    value = loss.item()
    finite = math.isfinite(value)
    # One collective a micro-step for the skip decision and the step's counts (ranks stay in step).
    bad, n, tok, cut, loss_sum, micro = D.all_sum([0.0 if finite else 1.0, len(batch["labels"]), batch["n_tokens"],
                                                   batch["n_truncated"], value * logged if finite else 0.0, 1.0])
    if bad > 0:
        handle_nonfinite(ctx, state, batch, loss)
        return False
    engine.backward(loss if weight == 1.0 else loss * weight)
    engine.step()
    state.last_loss = value
    state.samples += n
    state.tokens += tok
    if state.epoch == 0:
        state.truncated += cut
    state.loss_sum += loss_sum
    state.micro_batches += micro
    secs = time.perf_counter() - t0
    state.train_seconds += secs
    ctx.log.window.add(loss_sum, micro, n, tok, secs)
    return True


def null_backward(ctx: StepContext, batch: dict) -> None:
    """A backward that adds nothing (a finite batch's loss times 0), so that the step's gradient
    reduction and update still run when its last micro-batch was skipped as non-finite."""
    ctx.engine.backward(ctx.task.loss(ctx.engine, batch, ctx.runtime) * 0.0)
    ctx.engine.step()


def handle_nonfinite(ctx: StepContext, state: TrainerState, batch: dict, loss) -> None:
    where = (f"step {state.global_step + 1} (epoch {state.epoch}, micro-batch {state.micro_in_epoch}, "
             f"batch of {len(batch['labels'])} rows, max length {batch['input_ids'].shape[1]})")
    if ctx.spec.train.nan_policy == "stop":
        raise NonFiniteLoss(f"loss is {loss.item()} at {where}. Lower train.lr, check the data"
                            f"{init_from_hint(ctx)}, or set train.nan_policy: skip to skip such batches")
    state.skipped_nonfinite += 1
    ctx.log.echo(f"warning: skipped a batch with non-finite loss at {where}")


def init_from_hint(ctx: StepContext) -> str:
    """A started-from adapter is a source of NaN/inf the lr and data are not: it may hold them itself."""
    start = getattr(ctx.spec.method, "init_from", None)
    return f", check the starting adapter method.init_from '{start}' (it may hold non-finite values)" if start else ""


def after_optimizer_step(ctx: StepContext, state: TrainerState) -> None:
    state.global_step += 1
    step = state.global_step
    ctx.faults.kill(step)
    log_progress(ctx, state)
    telemetry.record_step(ctx.telemetry, state, ctx.engine.get_lr()[0])  # the Ray dashboard's live metrics
    ctx.faults.straggle(step)
    eval_every, ckpt_every = ctx.every
    last = step >= ctx.run.total_steps
    want_eval = last or step % eval_every == 0
    if last or want_eval or step % ckpt_every == 0:
        t0 = time.perf_counter()
        metrics = evaluate_now(ctx) if want_eval else {}
        state.eval_seconds += time.perf_counter() - t0
        report(ctx, state, metrics)


def log_progress(ctx: StepContext, state: TrainerState) -> None:
    """The bar every step; at log steps the window's means to metrics.jsonl and TensorBoard."""
    ctx.log.train_step(state.global_step, ctx.epoch_progress(state), ctx.engine.get_lr()[0], grad_norm(ctx.engine))


def grad_norm(engine) -> Optional[float]:
    """DeepSpeed's norm of the last step's gradients (before clipping); None if it has none."""
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


def evaluate_now(ctx: StepContext) -> Dict[str, float]:
    tables, cut = ctx.data.eval_tables(), [0]
    counting = ctx.val_truncated is None and tables is not None   # the first evaluation counts them
    with eval_scope(ctx.engine):  # back in train mode after, training RNG untouched
        metrics = ctx.task.evaluate(ctx.engine, counted_cuts(tables, ctx.task.input_cut, cut) if counting else tables,
                                    ctx.runtime, ctx.pad_id)
    if counting:   # every rank reads every table (the evaluator shards by micro-batch): the whole count
        ctx.val_truncated = cut[0]
        if cut[0]:     # said once, as eval and predict say it: a cut row's answer may be wrong
            ctx.log.echo(truncation_note(cut[0], ctx.spec.model.max_length, "validation row(s)"))
    return metrics


def adapter_writer(ctx: StepContext, metrics: Optional[Dict[str, float]] = None):
    """A function that gathers the adapter (collective) and writes it on rank 0; `metrics` (this
    step's evaluation) go into peft_ray.json and the model card."""
    method = get_method(ctx.spec.method.name)

    def write(out_dir: Path) -> None:
        state = gather_adapter_state(ctx.model)
        if D.rank() != 0:
            return
        cfg = method.peft_config(ctx.model, ctx.spec.method, ctx.base_path, ctx.task.peft_task_type_of(ctx.runtime))
        extra = {"spec": saved_spec(ctx.spec), "labels": ctx.spec.task.model_dump().get("labels"),
                 "template": ctx.spec.template.text, "verbalizer": ctx.spec.template.verbalizer,
                 "method": ctx.spec.method.model_dump(mode="json"),
                 "base_model_class": type(getattr(ctx.model, "base", ctx.model)).__name__,
                 "metrics": metrics or None}
        write_adapter(out_dir, state, cfg, extra)
    return write


def report(ctx: StepContext, state: TrainerState, metrics: Dict[str, float]) -> None:
    """Every rank saves its shard, then every rank reports (Ray merges the folders)."""
    secs = max(state.train_seconds, 1e-9)
    new_best = bool(metrics) and update_best(ctx.best, state, metrics)
    full = {**metrics, "step": state.global_step, "epoch": ctx.epoch_progress(state),
            "samples_per_s": state.samples / secs, "tokens_per_s": state.tokens / secs,
            "train_loss": state.loss_sum / max(state.micro_batches, 1), "lr": ctx.engine.get_lr()[0],
            "skipped_nonfinite": state.skipped_nonfinite, "train_seconds": state.train_seconds,
            "samples": state.samples, "tokens": state.tokens, "truncated_rows": state.truncated,
            **({"val_truncated_rows": ctx.val_truncated} if ctx.val_truncated is not None else {}),
            "data_seconds": state.data_seconds, "eval_seconds": state.eval_seconds,
            "checkpoint_seconds": state.checkpoint_seconds, "setup_seconds": ctx.setup_seconds,
            "trainable_params": count_trainable(ctx.model), **best_fields(ctx.best, state), **ctx.carried,
            "keep_score": retention_score(ctx.best, metrics, new_best)}
    if metrics:
        log_eval(ctx, state, metrics, full, new_best)
    fail = ctx.faults.fails_save(state.global_step)
    t0 = time.perf_counter()
    with ctx.reporter.staging_dir() as tmp:
        save_checkpoint(ctx.engine, state, Path(tmp), adapter_writer(ctx, {**metrics, "step": state.global_step}
                                                                       if metrics else None),
                        fail_midway=fail, report=full)
        ctx.reporter.report(full, tmp)
    # This save's own time reaches the next report (and the run's total through the checkpointed state).
    state.checkpoint_seconds += time.perf_counter() - t0
    telemetry.record_report(ctx.telemetry, full, metrics)


def log_eval(ctx: StepContext, state: TrainerState, metrics: Dict[str, float], full: Dict, new_best: bool) -> None:
    """History, metrics.jsonl/TensorBoard, one terminal line; early stopping is decided here."""
    state.history.append({k: v for k, v in full.items() if isinstance(v, (int, float))})
    ctx.log.evaluation(state.global_step, metrics)
    shown = " | ".join(f"{k} {metrics[k]:.4f}" for k in (*ctx.task.headline, "loss") if k in metrics)
    ctx.log.echo(f"eval @ step {state.global_step}: {shown}{' (best)' if new_best else ''}")
    if should_stop(ctx.best, state) and state.global_step < ctx.run.total_steps:
        ctx.stop = True
        ctx.log.echo(f"early stopping: no better {ctx.best.metric} in {state.evals_since_best} evaluations "
                     f"(best at step {state.best_step})")


def finish(ctx: StepContext, state: TrainerState) -> None:
    ctx.log.close()
