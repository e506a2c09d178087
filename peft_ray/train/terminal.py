"""What `peft-ray train` shows on the terminal, and the run's log file for the rest.

Ray forwards every worker's stdout/stderr to the driver (execution plans, worker-group
start-up, TrainingReport dicts, DeepSpeed's and torch's warnings), from every worker.
Of 92 lines in a 30-step default run, 33 were peft-ray's. While a run is on, the
driver's sys.stdout/sys.stderr are a router: every line goes to OUTPUT_DIR/train.log,
and the terminal gets, by level:

    quiet    peft-ray warnings, errors, the summary
    default  + peft-ray's own lines (one per evaluation) and the progress bar
    verbose  everything (as before)

Worker lines keep flowing to the driver (tqdm_ray's bar travels that way), so nothing
on the workers changes with the level. Ray's own worker log files stay where Ray puts them.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Optional, TextIO

from peft_ray.errors import JobError
from peft_ray.storage import open_append
from peft_ray.security import redact_command, redact_text

LEVELS = ("quiet", "default", "verbose")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAY_PREFIX = re.compile(r"^\([^)]*\) ")                 # "(RayTrainWorker pid=6852) " after ANSI removal
OURS = "[peft-ray]"
PROBLEM = re.compile(r"\b(warning|error)\b|Traceback|Error\b|Exception\b", re.IGNORECASE)
# A worker failure, even at the default level: Ray Train's retry notice and the exception's last line.
FAILURE = re.compile(r"^(Error in training function|\[FailurePolicy\]|[\w.]+(Error|Exception): )")
NOTE = re.compile(r"\[peft-ray\] note: .*")     # a fact about the job: said once, though each trial process says it
BAR_CONTROL = ("\r", "\x1b[A")  # tqdm's redraws start so; a forwarded worker line never does
BAR_ORIGIN = re.compile(r"(?:\x1b\[[0-9;]*m)*\([^)\n]*pid=\d+\) (?:\x1b\[0m)?")   # tqdm_ray's "(pid=26769) " on each redraw
# Ray Tune's own progress on the driver (its heartbeat and a trial's error notice), which
# `peft-ray tune` keeps on the terminal at the default level.
# Not Tune's "Current best trial:" line: it ranks trials by their last result, not their best (tune.log keeps it).
TUNE_PROGRESS = re.compile(r"^(Trial status:|Current time:|Logical resource usage:|"
                           r"Trial \S+ errored after|Error file:)")
_blocks: list = []  # levels of the open `block`s, innermost last


def level_of(verbose: bool, quiet: bool) -> str:
    """The CLI refuses both flags at once."""
    return "verbose" if verbose else "quiet" if quiet else "default"


def shown(line: str, level: str, keep: Optional[re.Pattern] = None) -> Optional[str]:
    """The line as the terminal should show it at `level`, or None to keep it to the log file.
    `keep`: further lines (not peft-ray's) that the default level shows."""
    plain = ANSI.sub("", line)
    if level == "verbose" or (_blocks and LEVELS.index(level) >= LEVELS.index(_blocks[-1])):
        return line
    if keep is not None and level == "default" and keep.match(plain):
        return plain
    ours = OURS in plain
    text = RAY_PREFIX.sub("", plain) if ours else plain
    if ours and (level == "default" or PROBLEM.search(text)):
        return text
    if not ours and FAILURE.match(RAY_PREFIX.sub("", plain)):
        return text
    return None


class Router(io.TextIOBase):
    """A text stream that writes each line to the log file and, filtered, to `terminal`."""

    def __init__(self, terminal: TextIO, log: TextIO, level: str, pass_bars: bool,
                 keep: Optional[re.Pattern] = None, notes: Optional[set] = None):
        self.terminal, self.log, self.level, self.pass_bars, self.keep = terminal, log, level, pass_bars, keep
        self.partial = ""
        self.notes = set() if notes is None else notes   # the notes shown (shared by a run's two routers)
        self.lock = threading.RLock()   # a --local run's rank output arrives from reader threads (local_ranks)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def write(self, s: str) -> int:
        with self.lock:
            return self._write(s)

    def _write(self, s: str) -> int:
        if self.log is None:  # the run is over; a handler that kept this stream still prints
            return self.terminal.write(s)
        if self.pass_bars and s.startswith(BAR_CONTROL) and self.level != "quiet":
            self.terminal.write(BAR_ORIGIN.sub("", s))  # a progress bar redrawing itself (tqdm_ray on the driver)
            return len(s)
        self.partial += s
        *lines, self.partial = self.partial.split("\n")
        for line in lines:   # the log sits in output.dir, which others may read: no credentials in it
            self.log.write(redact_text(ANSI.sub("", line).split("\r")[-1]) + "\n")
            out = shown(line, self.level, self.keep)
            if out is not None and not self._shown_before(out):
                self.terminal.write(out + "\n")
        return len(s)

    def _shown_before(self, text: str) -> bool:
        """A note the terminal already showed (the log file keeps every copy)."""
        note = NOTE.search(text) if self.level != "verbose" else None
        if note is None:
            return False
        seen = note.group(0) in self.notes
        self.notes.add(note.group(0))
        return seen

    def flush(self) -> None:
        if self.log is not None:
            self.log.flush()
        self.terminal.flush()

    def detach(self) -> None:
        if self.partial:
            self.write("\n")
        self.flush()
        self.log = None


@contextlib.contextmanager
def block(level: str = "quiet"):
    """Lines printed inside are shown at `level` and above (a leaderboard, a ranking),
    whatever their prefix; they still go to the log file."""
    _blocks.append(level)
    try:
        yield
    finally:
        sys.stdout.flush()
        _blocks.pop()


def ray_routed(log_file: Optional[Path]):
    """`eval` and `predict` through Ray: Ray's and Ray Data's driver lines (the auth notice,
    execution plans, actor-pool warnings) go to `log_file`, the terminal keeps peft-ray's lines,
    problems and the row bar. None (the in-process path, no Ray): nothing is routed."""
    return contextlib.nullcontext() if log_file is None else routed(log_file, "default")


def close_ray_bars() -> None:
    """Close the driver-side tqdm_ray bars still open, so nothing redraws after the summary.
    A worker's last bar state can reach the driver twice (Ray Train V2 tees worker prints
    into its logger too); the copy after the close re-creates the bar, which would print
    itself once more at exit."""
    tqdm_ray = sys.modules.get("ray.experimental.tqdm_ray")
    manager = getattr(tqdm_ray, "_manager", None)
    if manager is None:
        return
    with manager.lock:
        for group in manager.bar_groups.values():
            for bar in group.bars_by_uuid.values():
                bar.close()
            group.bars_by_uuid.clear()


def bar_stream() -> TextIO:
    """Where an in-process progress bar draws: the real terminal under a Router."""
    return getattr(sys.stderr, "terminal", sys.stderr)


class Terminal:
    """The routed terminal of one run (see routed)."""

    def __init__(self, level: str, out: TextIO, log: Optional[TextIO] = None):
        self.level, self.out, self.log = level, out, log

    def show(self, text: str) -> None:
        """Always shown, whatever the level (the summary), and kept in the log file with the rest."""
        self.out.write(text + "\n")
        self.out.flush()
        if self.log is not None and not self.log.closed:
            self.log.write(redact_text(text) + "\n")
            self.log.flush()


@contextlib.contextmanager
def routed(log_file: Optional[Path], level: str, pass_bars: bool = True, keep: Optional[re.Pattern] = None):
    """Route sys.stdout/sys.stderr for the block; the log file is appended to."""
    if log_file is None:  # output.dir is a URI: only the terminal filter applies
        log = open(os.devnull, "a")
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open_append(log_file)  # never truncated (a refused run must not clobber a log), never a link
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {redact_command(sys.argv)}\n")
    old = sys.stdout, sys.stderr
    notes: set = set()
    sys.stdout = Router(old[0], log, level, pass_bars, keep, notes)
    sys.stderr = Router(old[1], log, level, pass_bars, keep, notes)
    try:
        yield Terminal(level, old[0], log)
    except BaseException as e:
        if log_file is not None:
            # the error itself too: the command prints it after the log has closed, and a refusal
            # before training (a pre-flight check) left a log of its header alone (a new-user review)
            if isinstance(e, Exception):
                log.write(redact_text("error: " + (str(e) if isinstance(e, JobError) else traceback.format_exc())) + "\n")
            old[1].write(f"[peft-ray] the run's full output is in {log_file}\n")
        raise
    finally:
        routers = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = old
        for router in routers:
            if isinstance(router, Router):
                router.detach()
        log.close()
