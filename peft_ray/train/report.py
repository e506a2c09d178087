"""Where checkpoints and metrics go: Ray Train (``ray.train.report``) or, in
--local mode, a checkpoints/ folder managed the same way (atomic, keep last K)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Dict, Optional

from peft_ray.storage import Location, is_uri
from peft_ray import dist as D
from peft_ray.train.runlog import tagged
from peft_ray.train.checkpoint import (checkpoint_dirs, checkpoint_step, latest_good_checkpoint,
                                        validate_checkpoint)


STAGING_PREFIX = "peft-ray-ckpt-"   # + "<pid>-<random>" in the temp folder of a Ray worker's machine
LOCAL_STAGING_PREFIX = ".staging-"  # + "<pid>-<random>" in a --local run's checkpoints/


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    return True


def sweep_dead_staging(tmp_root: Optional[str] = None, prefix: str = STAGING_PREFIX) -> None:
    """Delete this user's checkpoint staging folders whose process is gone. A reused PID only
    keeps a stale folder a while longer; another user's folders are never touched. Assumes one PID
    namespace per temp folder (a container sharing /tmp, same uid, own PIDs, would see a live
    worker's folder as dead: such setups give each container its own TMPDIR)."""
    root = Path(tmp_root or tempfile.gettempdir())
    for path in root.glob(f"{prefix}*-*"):
        pid = path.name[len(prefix):].partition("-")[0]
        try:
            st = path.lstat()   # a link is never followed
            if pid.isdigit() and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


class RayReporter:
    def __init__(self, resume_from: Optional[str] = None, storage_dir: Optional[str] = None, tag: str = ""):
        self.tag = tag                  # RunFacts.log_tag: a tune trial's lines say whose they are
        self.resume_from = resume_from  # driver-level --resume (Train V2 has no resume_from_checkpoint)
        self.storage_dir = storage_dir  # this run's folder (a path or a URI): every checkpoint it persisted
        self._downloads: Optional[tempfile.TemporaryDirectory] = None  # a URI checkpoint, fetched to resume

    def checkpoint_to_resume(self) -> Optional[Path]:
        """The newest good checkpoint among: what Ray registered for this run, what this run
        persisted (a worker that dies right after `report` can beat the controller's
        registration, so Ray may not know the latest one), and the --resume starting point.
        Checkpoints in cloud storage are downloaded (the engine loads local files)."""
        import ray.train

        found = []
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            path = Path(ckpt.path) if Path(ckpt.path).exists() else Path(ckpt.to_directory())
            ok, why = validate_checkpoint(path)
            if ok:
                found.append(path)
            elif D.rank() == 0:   # every rank checks it; one says so
                print(f"[peft-ray] {tagged(self.tag, f'warning: skipping checkpoint {path}: {why}')}")
        if self.storage_dir and (is_uri(self.storage_dir) or Path(self.storage_dir).is_dir()):
            found.append(latest_good_checkpoint(self.storage_dir, warn=lambda m: None))
        if self.resume_from:
            found.append(self.resume_from if is_uri(self.resume_from) else Path(self.resume_from))
        found = [p for p in found if p is not None]
        if not found:
            return None
        best = max(found, key=checkpoint_step)
        if not is_uri(str(best)):
            return best
        self._downloads = tempfile.TemporaryDirectory(prefix="peft-ray-resume-")
        loc = Location.at(best)
        return loc.download(Path(self._downloads.name) / loc.name)

    def release_resumed(self) -> None:
        """Delete the downloaded copy once the engine holds its state: Ray ends workers with a kill,
        which skips TemporaryDirectory's finalizer, so it would stay in /tmp on every worker."""
        if self._downloads is not None:
            self._downloads.cleanup()
            self._downloads = None

    @contextlib.contextmanager
    def staging_dir(self):
        # Named by this process, so the next save on this machine can sweep what a worker that Ray
        # killed mid-save left behind (a kill skips the context manager's cleanup).
        sweep_dead_staging()
        with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as tmp:
            yield tmp

    def report(self, metrics: Dict, local_dir: str) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(local_dir))


class LocalReporter:
    """Single-process stand-in for Ray's checkpoint manager (used by --local)."""

    def __init__(self, output_dir: str, keep: int, resume_from: Optional[str]):
        self.root = Path(output_dir) / "checkpoints"
        self.keep = keep
        self.resume_from = resume_from
        self.last_metrics: Dict = {}
        self.last_checkpoint: Optional[Path] = None
        self.best_checkpoint: Optional[Path] = None  # the one at metrics["best_step"] (never pruned)
        self.refused_best: Optional[Path] = None     # an earlier run's best that failed its check (warned once)

    def checkpoint_to_resume(self) -> Optional[Path]:
        return Path(self.resume_from) if self.resume_from else None

    def release_resumed(self) -> None:
        """Nothing to delete: --local resumes from the checkpoint folder itself."""

    @contextlib.contextmanager
    def staging_dir(self):
        # Named by this process, as the Ray path's are: a kill -9 mid-save skips the cleanup below
        # and left a copy of the optimizer state in checkpoints/ for good (a resume review).
        self.root.mkdir(parents=True, exist_ok=True)
        sweep_dead_staging(str(self.root), LOCAL_STAGING_PREFIX)
        tmp = Path(tempfile.mkdtemp(prefix=f"{LOCAL_STAGING_PREFIX}{os.getpid()}-", dir=self.root))
        try:
            yield str(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def sweep_staging(self) -> None:
        """Remove the staging folders of ranks that are gone (a --local rank stopped mid-save: the
        signal can land inside its own clean-up)."""
        if self.root.is_dir():
            sweep_dead_staging(str(self.root), LOCAL_STAGING_PREFIX)

    def report(self, metrics: Dict, local_dir: str) -> None:
        if D.world() == 1:
            return self._publish(metrics, local_dir)
        # ranks of `train --local` (train/local_ranks.py): one folder, as Ray merges theirs. The
        # barrier after keeps every rank's staging folder until rank 0 has emptied it and no longer
        # walks checkpoints/ (its prune).
        folders = D.all_gather_list([local_dir])
        if D.rank() == 0:
            merge_rank_folders(folders)
            self._publish(metrics, local_dir)
        D.all_sum([0.0])

    def _publish(self, metrics: Dict, local_dir: str) -> None:
        final = self.root / f"checkpoint_{int(metrics['step']):08d}"
        shutil.rmtree(final, ignore_errors=True)
        Path(local_dir).rename(final)  # atomic within one file system
        self.last_metrics, self.last_checkpoint = dict(metrics), final
        if "best_step" in metrics:   # after --resume the best may be a checkpoint of the earlier run
            best = self.root / f"checkpoint_{int(metrics['best_step']):08d}"
            # an earlier run's checkpoint is checked once, as the one resumed from is: it becomes adapter/
            if best != self.best_checkpoint and best != self.refused_best:
                ok, why = (True, "") if best == final else validate_checkpoint(best)
                if ok:
                    self.best_checkpoint = best
                else:   # said once: adapter/ then comes from the last checkpoint, not the step metrics name
                    self.refused_best = best
                    print(f"[peft-ray] warning: the best checkpoint {best.name} (step {int(metrics['best_step'])}) "
                          f"fails its check ({why}); adapter/ will hold the last checkpoint's adapter instead")
        self._prune()

    def _prune(self) -> None:
        """Keep the last K; never delete the newest checkpoint that validates, nor the best."""
        dirs = checkpoint_dirs(self.root)
        good = latest_good_checkpoint(self.root, warn=lambda m: None)
        for old in dirs[:-self.keep]:
            if old not in (good, self.best_checkpoint):
                shutil.rmtree(old, ignore_errors=True)


def merge_rank_folders(folders: list) -> None:
    """Every rank's staging folder of one checkpoint, rank 0's first: the other ranks' files move
    into rank 0's at the same relative paths (each rank writes its own ZeRO shard, RNG state and
    MANIFEST.rank<N>.json; a name already there stays rank 0's)."""
    into = Path(folders[0])
    for folder in map(Path, folders[1:]):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            target = into / path.relative_to(folder)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
