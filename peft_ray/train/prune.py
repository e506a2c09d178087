"""After a `--resume` through Ray has written its outputs: the interrupted runs' folders under ray/.

Ray Train writes a resumed run to a new folder under ray/ (a new run name) and prunes only that
folder to `train.keep_checkpoints`; the interrupted run's folder stayed whole, outside the limit.
Once the resumed run has saved, nothing reads those checkpoints again (a later --resume takes the
newest), except the one adapter/ was copied from when the best evaluation was the interrupted
run's: HF Trainer with `load_best_model_at_end` never deletes the best checkpoint, and this keeps
it too, alone in its folder.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from peft_ray.storage import Location


def prune_interrupted_runs(ray_root: Location, current_path: str,
                           best: Optional[Location]) -> Tuple[List[str], Optional[Location]]:
    """Remove every run folder under `ray_root` but the one at `current_path` (the resumed run's),
    keeping only the checkpoint folder `best` where it lies in one of them. Returns the run folders
    pruned, by name, and `best` where it was kept in one of them. Nothing is removed unless
    `current_path` lies under `ray_root` (so a result from elsewhere never empties it); a removal
    that fails is said and skipped: the outputs are already written, and a folder left over costs
    only disk."""
    import pyarrow.fs as pafs

    root = ray_root.path.rstrip("/") + "/"
    current = current_path.rstrip("/")
    if not current.startswith(root):
        return [], None
    pruned, kept = [], None
    for run in _children(ray_root, pafs.FileType.Directory):
        if run.path.rstrip("/") == current:
            continue
        holds_best = best is not None and best.path.startswith(run.path.rstrip("/") + "/")
        doomed = [c for c in _children(run) if c.path.rstrip("/") != best.path.rstrip("/")] if holds_best else [run]
        try:
            for item in doomed:
                item.remove()
        except OSError as e:
            print(f"[peft-ray] warning: could not remove {item.uri} of an interrupted run: {e}")
            continue
        pruned.append(run.name)
        kept = best if holds_best else kept
    return pruned, kept


def _children(folder: Location, kind=None) -> List[Location]:
    import pyarrow.fs as pafs

    infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False, allow_not_found=True))
    return [folder / i.base_name for i in sorted(infos, key=lambda i: i.path) if kind is None or i.type == kind]


def say_pruned(pruned: List[str], kept_best: Optional[Location]) -> None:
    if pruned:
        kept = f"; kept {kept_best.uri}, the best checkpoint, which adapter/ was copied from" if kept_best else ""
        print(f"[peft-ray] removed the checkpoints of the interrupted run(s) ray/{', ray/'.join(pruned)}: the "
              f"resumed run's folder holds the latest{kept}")
