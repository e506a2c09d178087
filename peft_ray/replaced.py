"""`--overwrite` that loses nothing when the new run fails.

Before the new run writes anything, everything in output.dir moves into OUTPUT_DIR/.replaced/;
it is deleted once the new run has written its outputs, and moved back when the run fails in any
way (an error, Ctrl-C, a NaN stop, a failed save), so a failed overwrite leaves the folder as it
was. Deleting first, as before, lost a finished run to a typo in an override.

The appended logs (train.log, tune.log) stay where they are: they are the folder's history across
runs, and the CLI has them open before the run starts. A run killed outright (SIGKILL, power
loss) leaves .replaced/ behind: the next --overwrite keeps it as the run to restore (what sits
beside it is the killed attempt), and every other start refuses until the user moves it back or
deletes it, so nothing is decided for them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from typing import Collection, Iterator, List

from peft_ray.errors import CheckpointError
from peft_ray.storage import Location, is_uri, renames_folders

ASIDE = ".replaced"
LOGS = ("train.log", "tune.log")


def check_aside(out: Location) -> None:
    """A .replaced in output.dir is a real folder, never a link or a file: an --overwrite that fails
    moves everything under it into output.dir, and a planted `.replaced -> ~/thesis` in a shared run
    folder had a failed (or Ctrl-C'd) --overwrite move the user's own files into it."""
    import pyarrow.fs as pafs

    aside = out / ASIDE
    linked = not is_uri(out.uri) and os.path.islink(aside.path)
    kind = aside.fs.get_file_info(aside.path).type
    if linked or kind not in (pafs.FileType.NotFound, pafs.FileType.Directory):
        raise CheckpointError(f"output.dir '{out}': '{ASIDE}' is {'a symbolic link' if linked else 'not a folder'}, "
                              "where an interrupted --overwrite keeps the run it replaced; peft-ray never moves "
                              f"files through it. Delete '{aside}' itself (not what it points at), or set "
                              "output.dir to a new folder")


def check_no_leftover(out: Location) -> None:
    """Refuse to start on a folder where an interrupted --overwrite left the previous run aside. An
    empty .replaced/ set nothing aside (the overwrite started on an empty folder, or was killed
    before its first move): it goes, so the killed run itself can be resumed."""
    import pyarrow.fs as pafs

    check_aside(out)
    aside = out / ASIDE
    if aside.fs.get_file_info(aside.path).type == pafs.FileType.Directory and not _entries(aside, ()):
        aside.remove()
    if aside.exists():
        raise CheckpointError(
            f"output.dir '{out}': an interrupted --overwrite left the run it replaced in '{out / ASIDE}', and "
            f"the folder's other files are the interrupted run's. Move the files in {ASIDE}/ back to restore "
            "the previous run, or pass --overwrite again to replace it (it is deleted when that run finishes)")


# What a killed writer leaves (storage.temp_name: ".<name>.<16 hex>.tmp" / ".old" / ".partial";
# storage.staging_dir, through tempfile.mkdtemp: ".<name>.<8 of [a-z0-9_]>.tmp") and OS litter: a
# folder's own, never a reason to refuse it. Only those shapes: ".env.old" is a user's.
LEFTOVERS = (*(f".*.{'[0-9a-f]' * 16}.{suffix}" for suffix in ("tmp", "old", "partial")),
             f".*.{'[a-z0-9_]' * 8}.tmp", ".DS_Store")


def check_only_run_files(out: Location, own: Collection[str], overwrite: bool, what: str,
                         beside: Collection[str] = ()) -> None:
    """output.dir holds only what a `what` ("run", "search") writes, where that matters. With
    --overwrite anything else in it would be moved aside and then deleted, so a folder of other files
    is refused, naming them. Without it, outputs with no job.yaml beside them (the file that says
    whose they are) are refused too: the new run would write over them. `own`: top-level names,
    with shell patterns ("eval_*.json"); `beside`: those of them other commands write next to a run
    (zero-shot, eval), which need no job.yaml."""
    check_aside(out)
    names = _entries(out, ())
    mine = [n for n in names if _matches(n, (*own, *LEFTOVERS))]
    foreign = [n for n in names if n not in mine]
    linked = [n for n in mine if not is_uri(out.uri) and os.path.islink(os.path.join(out.path, n))]
    if linked:   # a planted `tensorboard -> elsewhere` had --resume write events outside output.dir
        raise CheckpointError(f"output.dir '{out}': {_listed(linked)} is a symbolic link; a {what} writes only inside "
                              "its folder. Replace the link with the folder or file itself, or set output.dir to "
                              "a new folder (output.dir may itself be a link, e.g. to a bigger disk)")
    if overwrite and foreign:
        raise CheckpointError(
            f"output.dir '{out}' also holds {_listed(foreign)}, which no peft-ray {what} writes; --overwrite "
            f"replaces only a {what}'s own files. Move those out of the folder, or set output.dir to a new folder")
    outputs = [n for n in mine if not _matches(n, (*beside, *LEFTOVERS, *LOGS, "job.yaml"))]
    if not overwrite and outputs and "job.yaml" not in names:
        raise CheckpointError(
            f"output.dir '{out}' holds {what} outputs ({_listed(outputs)}) but no job.yaml saying which job wrote "
            f"them; pass --overwrite to replace them, or set output.dir to a new folder")


def _matches(name: str, patterns: Collection[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def _listed(names: List[str], most: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


@contextlib.contextmanager
def replacing(out: Location, keep: Collection[str] = LOGS) -> Iterator[None]:
    """The block runs on an emptied `out` (except `keep`); its old content comes back if it fails."""
    check_aside(out)            # the callers checked before anything was written; this move depends on it
    aside = out / ASIDE
    if aside.exists():          # an earlier --overwrite was killed: aside holds the run to keep
        for name in _entries(out, keep):
            (out / name).remove()
    else:
        names = _entries(out, keep)
        if names:               # nothing to set aside: no .replaced/ for a killed run to leave behind
            aside.mkdir()
        for name in names:
            _move(out / name, aside / name)
    try:
        yield
    except BaseException:
        for name in _entries(out, keep):
            (out / name).remove()
        for name in _entries(aside, ()):
            _move(aside / name, out / name)
        aside.remove()          # a no-op where nothing was set aside
        raise
    aside.remove()


def _entries(folder: Location, keep: Collection[str]) -> List[str]:
    import pyarrow.fs as pafs

    infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False, allow_not_found=True))
    names = (i.path.rstrip("/").rsplit("/", 1)[-1] for i in infos)
    return sorted(n for n in names if n != ASIDE and n not in keep)


def _move(src: Location, dst: Location) -> None:
    """One rename where folders rename (local disks, NFS; a link moves as the link); object stores copy."""
    if renames_folders(src.fs):
        src.fs.move(src.path, dst.path)
        return
    dst.copy_from(src)
    src.remove()
