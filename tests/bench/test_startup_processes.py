"""bench/startup.py's list of the processes Ray starts in the empty fit, read from Ray's own logs."""

import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import startup  # noqa: E402

RAYLET = """\
[2026-12-07 13:05:18,755 I 11644 11644] (raylet) worker_pool.cc:811: Job 01000000 already started in worker pool.
[2026-12-07 13:05:18,863 I 11644 11644] (raylet) worker_pool.cc:564: Started worker process with pid 11756 worker_id=22
[2026-12-07 13:05:21,895 I 11644 11644] (raylet) worker_pool.cc:564: Started worker process with pid 11799 worker_id=03
[2026-12-07 13:05:17,000 I 11644 11644] (raylet) worker_pool.cc:564: Started worker process with pid 11000 worker_id=aa
"""


def test_starts_after_the_fit_began_with_their_actor_names(tmp_path):
    since = datetime(2026, 12, 7, 13, 5, 18, 500000).timestamp()
    rows = startup.parse_starts(RAYLET, since, {"11756": "TrainController"})
    assert rows == [{"pid": 11756, "at_s": 0.36, "actor": "TrainController"},
                    {"pid": 11799, "at_s": 3.39, "actor": ""}]     # 11000 started before the fit: not listed


def test_reads_a_session_folder(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "raylet.out").write_text(RAYLET)
    (logs / "worker-22abc-01000000-11756.out").write_text(":job_id:01000000\n:actor_name:TrainController\n")
    since = datetime(2026, 12, 7, 13, 5, 18).timestamp()
    rows = startup.fit_processes(str(tmp_path), since)
    assert [(r["pid"], r["actor"]) for r in rows] == [(11756, "TrainController"), (11799, "")]
    assert startup.fit_processes(str(tmp_path / "missing"), since) == []
