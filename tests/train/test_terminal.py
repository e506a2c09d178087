"""The routed terminal: what each level shows, and that everything reaches the log file."""

from __future__ import annotations

import io

import pytest

from peft_ray.train.terminal import TUNE_PROGRESS, Router, block, shown

RAY_LINE = "\x1b[36m(RayTrainWorker pid=6852)\x1b[0m [peft-ray] eval @ step 30: accuracy 0.5033"
NOISE = ["\x1b[36m(TrainController pid=6542)\x1b[0m Requesting resources: {'CPU': 1} * 2",
         "\x1b[36m(RayTrainWorker pid=6877)\x1b[0m DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully",
         "\x1b[36m(TrainController pid=6542)\x1b[0m [2026-12-01 22:10:38,624 E 6542 6634] core_worker.cc:2465: Actor",
         "/site-packages/ray/data/execution_options.py:436: RayDeprecationWarning: deprecated"]


def test_levels():
    assert shown(RAY_LINE, "default") == "[peft-ray] eval @ step 30: accuracy 0.5033"  # Ray's prefix dropped
    assert shown(RAY_LINE, "quiet") is None
    assert shown("[peft-ray] warning: skipped a batch", "quiet") == "[peft-ray] warning: skipped a batch"
    failure = "\x1b[36m(RayTrainWorker pid=1)\x1b[0m TypeError: set_description() got an unexpected keyword"
    assert shown(failure, "quiet") == failure[len("\x1b[36m"):].replace("\x1b[0m", "")
    assert shown("(TrainController pid=2) [FailurePolicy] RETRY", "default") is not None
    for line in NOISE:
        assert shown(line, "default") is None and shown(line, "verbose") == line


def test_router_logs_everything_and_shows_ours():
    term, log = io.StringIO(), io.StringIO()
    r = Router(term, log, "default", pass_bars=True)
    r.write("\n".join(NOISE) + "\n" + RAY_LINE[:20])  # a line may arrive in pieces
    r.write(RAY_LINE[20:] + "\n")
    r.write("\rtraining:  50%|#####     | 15/30")       # tqdm_ray's bar on the driver
    assert term.getvalue() == "[peft-ray] eval @ step 30: accuracy 0.5033\n\rtraining:  50%|#####     | 15/30"
    assert len(log.getvalue().splitlines()) == len(NOISE) + 1
    assert "\x1b" not in log.getvalue()
    # tqdm_ray draws each redraw with its worker's "(pid=N) ": not on the terminal (a review finding)
    term.truncate(0), term.seek(0)
    r.write("\r\x1b[2m\x1b[36m(pid=26769) \x1b[0mloss 0.69 | epoch 0.06:  83%|########3 | 5.00/6.00")
    assert term.getvalue() == "\rloss 0.69 | epoch 0.06:  83%|########3 | 5.00/6.00"


def test_tune_keeps_its_heartbeat_and_blocks_show_at_their_level():
    """`peft-ray tune`: Tune's status lines at the default level; the leaderboard (a block) at
    every level, the pre-screen ranking (a "default" block) not under -q."""
    heartbeat = "Trial status: 2 RUNNING | 4 PENDING"
    assert shown(heartbeat, "default", TUNE_PROGRESS) == heartbeat
    assert shown(heartbeat, "quiet", TUNE_PROGRESS) is None and shown(heartbeat, "default") is None
    assert shown(NOISE[0], "default", TUNE_PROGRESS) is None
    term, log = io.StringIO(), io.StringIO()
    r = Router(term, log, "quiet", pass_bars=False, keep=TUNE_PROGRESS)
    with block():
        r.write("trial  accuracy\nab12   0.81\n")
    with block("default"):
        r.write("  kept  0.700  template[0]\n")
    r.write("trial  accuracy\n")  # outside a block: an ordinary line again
    assert term.getvalue() == "trial  accuracy\nab12   0.81\n"
    assert len(log.getvalue().splitlines()) == 4


def _cli_train(tmp_path, tiny_bert, tiny_data, *flags, tty: bool = False):
    """The CLI in a subprocess; `tty`: its stderr is a pseudo-terminal (returned as r.stderr)."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.conftest import job_dict

    job = tmp_path / f"job{len(flags)}{tty}.yaml"
    out = tmp_path / f"run{len(flags)}{tty}"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, scaling={"num_workers": 1})))
    cmd = [sys.executable, "-m", "peft_ray.cli", "train", str(job), "--local", *flags]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    if tty:
        r = _run_with_tty_stderr(cmd, env)
    else:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r, out


def _run_with_tty_stderr(cmd, env):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # a 0-column terminal draws no bar
    chunks = []

    def read():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:   # EIO once the child's side is closed
                break
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, text=True, env=env, timeout=300)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    r.stderr = b"".join(chunks).decode(errors="replace")
    return r


def test_cli_levels(tmp_path, tiny_bert, tiny_data):
    """Output to pipes (a CI log, `ray job submit`, a file): the bar's content as a few plain lines."""
    r, out = _cli_train(tmp_path, tiny_bert, tiny_data)
    lines = r.stdout.rstrip().splitlines()
    assert lines[-1].startswith("log: ") and any(line.startswith("best ") for line in lines)  # summary last
    assert sum("eval @ step" in line for line in lines) == 2 and "DeepSpeed" not in r.stdout + r.stderr
    progress = [line for line in lines if line.startswith("[peft-ray] step ")]
    assert 1 <= len(progress) <= 11 and progress[-1].startswith("[peft-ray] step 4/4 | loss "), progress
    assert "training:" not in r.stderr and "\r" not in r.stdout + r.stderr   # no redrawing bar
    assert "DeepSpeed" in (out / "train.log").read_text()  # internals kept in the log file
    assert lines[-2] in (out / "train.log").read_text().splitlines()   # the summary too (a review finding)
    q, _ = _cli_train(tmp_path, tiny_bert, tiny_data, "-q")
    assert "eval @ step" not in q.stdout and "[peft-ray] step " not in q.stdout and "peft-ray: tiny" in q.stdout


def test_cli_draws_the_bar_on_a_terminal(tmp_path, tiny_bert, tiny_data):
    r, _ = _cli_train(tmp_path, tiny_bert, tiny_data, tty=True)
    assert "training:" in r.stderr and "[peft-ray] step " not in r.stdout   # the bar, not the lines


@pytest.mark.ray
@pytest.mark.slow
def test_ray_run_ends_with_the_summary(tmp_path, tiny_bert, tiny_data):
    """On Ray (2 workers, the bar drawn by the driver through tqdm_ray), stdout and stderr
    together: the summary is the last thing printed (no bar redraw after it), and Ray's
    and DeepSpeed's internals stay in train.log."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.conftest import job_dict

    job, out = tmp_path / "job.yaml", tmp_path / "run"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, out, train={"max_steps": 4, "eval_every": 2})))
    r = subprocess.run([sys.executable, "-m", "peft_ray.cli", "train", str(job)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    lines = [line for line in r.stdout.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("log: "), lines[-5:]
    assert "DeepSpeed" not in r.stdout and "TrainingReport" not in r.stdout
    assert "DeepSpeed" in (out / "train.log").read_text()


def test_a_note_each_trial_process_repeats_is_shown_once_and_logged_every_time():
    """Every Tune trial validates its job in its own process and says the same note: 13 copies in
    a 114-line search (a review finding). The terminal shows it once; the log keeps each copy."""
    term, log = io.StringIO(), io.StringIO()
    notes: set = set()
    out, err = Router(term, log, "default", True, notes=notes), Router(term, log, "default", True, notes=notes)
    note = "[peft-ray] note: template.verbalizer is not read: task.head is head, so label words change nothing"
    err.write(f"\x1b[36m(_trial pid=1)\x1b[0m {note}\n")
    out.write(f"\x1b[36m(_trial pid=2)\x1b[0m {note}\n[peft-ray] eval @ step 2: accuracy 0.5\n")
    err.write(f"{note}\n[peft-ray] note: another fact\n")
    assert term.getvalue().splitlines() == [note, "[peft-ray] eval @ step 2: accuracy 0.5", "[peft-ray] note: another fact"]
    assert log.getvalue().count("template.verbalizer is not read") == 3
