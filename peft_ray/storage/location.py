"""Where a run's outputs live: a local folder or a cloud URI (s3://, gs://, file://), as a Location.

Ray Train resolves ``RunConfig.storage_path`` with ``pyarrow.fs.FileSystem.from_uri`` and
uploads checkpoints through it; peft-ray writes job.yaml, adapter/ and metrics.json through
the same pyarrow filesystems, so one ``output.dir`` serves both. Credentials come from the
usual AWS/GCP environment (variables, config files, instance roles), never from the job.
Opening a URI's filesystem is bounded in time (open_filesystem); pyarrow is imported only when
a Location is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from peft_ray.storage.atomic import atomic_write, temp_name
from peft_ray.storage.paths import check_location, is_uri, join

OPEN_TIMEOUT_S = 30   # an unreachable GCS endpoint retried for minutes without a word


def open_filesystem(uri: str):
    """pyarrow's (filesystem, path) for a URI, once one look at the path has answered, or a
    JobError naming it. Opening an S3 filesystem asks for the bucket's region, and GCS retries a
    failing call for 15 minutes, so without the network (or with wrong credentials) a user got
    pyarrow's traceback from `validate`, or for gs:// a silent hang: the open and the first look
    run in a thread that is given up after OPEN_TIMEOUT_S."""
    import threading

    from peft_ray.errors import StorageUnreachable

    done: dict = {}

    def open_it() -> None:
        try:
            done["value"] = _open_and_look(uri)
        except Exception as e:     # OSError (network, credentials), ArrowInvalid (a malformed URI)
            done["error"] = e
    worker = threading.Thread(target=open_it, daemon=True, name="peft-ray-open-storage")
    worker.start()
    worker.join(OPEN_TIMEOUT_S)
    if "value" in done:
        return done["value"]
    why = (f"no answer in {OPEN_TIMEOUT_S} s" if "error" not in done else
           str(done["error"]).strip().splitlines()[0][:300])
    raise StorageUnreachable(f"'{uri}': its storage could not be opened ({why}); check the bucket name, the "
                   "credentials and the network from this machine, or use a local folder")


def _open_and_look(uri: str):
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    fs.get_file_info(path.rstrip("/") or path)      # the first call that needs the network
    return fs, path


@dataclass(frozen=True)
class Location:
    """A file or folder in a pyarrow filesystem. `uri` is what users see (a local path or a URI)."""

    fs: Any          # pyarrow.fs.FileSystem
    path: str        # the path inside `fs` (from_uri strips the scheme: 'bucket/prefix')
    uri: str

    @classmethod
    def at(cls, location: str | Path) -> "Location":
        import pyarrow.fs as pafs

        if is_uri(str(location)):
            fs, path = open_filesystem(check_location(str(location)))
            return cls(fs, path.rstrip("/"), str(location).rstrip("/"))
        p = str(Path(location).expanduser().resolve())
        return cls(pafs.LocalFileSystem(), p, p)

    @classmethod
    def of_output(cls, output_dir: str) -> "Location":
        """Location.at(output.dir), its storage errors named by the field (train, tune, validate)."""
        from peft_ray.errors import JobError

        try:
            return cls.at(output_dir)
        except JobError as e:
            raise JobError(f"output.dir {e}") from None

    def __truediv__(self, name: str) -> "Location":
        return Location(self.fs, join(self.path, name), join(self.uri, name))

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent_path(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[0] or "/"

    def sibling(self, name: str) -> "Location":
        return Location(self.fs, join(self.path.rsplit("/", 1)[0], name), join(self.uri.rsplit("/", 1)[0], name))

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def files(self) -> List[str]:
        """Every file below this folder, relative to it ([] when it does not exist)."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        return sorted(i.path[len(self.path):].lstrip("/") for i in infos if i.type == pafs.FileType.File)

    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as f:
            return f.read().decode("utf-8")

    def read_small_text(self, limit: int) -> Optional[str]:
        """The text of a regular file of at most `limit` bytes, else None: for files peft-ray reads
        back from a folder others may have written (a FIFO would block, /dev/zero never end)."""
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path)
        if info.type != pafs.FileType.File or (info.size or 0) > limit:
            return None
        try:
            return self.read_text()
        except UnicodeDecodeError:
            return None

    def write_text(self, text: str) -> None:
        """Write under a temporary name, then move over: readers never see half a file."""
        self.fs.create_dir(self.parent_path, recursive=True)
        if renames_folders(self.fs):
            atomic_write(Path(self.path), text.encode("utf-8"))
            return
        tmp = self.sibling(temp_name(self.name))   # object stores have no links to follow
        with self.fs.open_output_stream(tmp.path) as f:
            f.write(text.encode("utf-8"))
        self.fs.move(tmp.path, self.path)

    def remove(self) -> None:
        import pyarrow.fs as pafs

        kind = self.fs.get_file_info(self.path).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif kind == pafs.FileType.File:
            self.fs.delete_file(self.path)

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def copy_from(self, src: "Location") -> None:
        import pyarrow.fs as pafs

        is_dir = src.fs.get_file_info(src.path).type == pafs.FileType.Directory
        self.fs.create_dir(self.path if is_dir else self.parent_path, recursive=True)  # copy_files does not
        pafs.copy_files(src.path, self.path, source_filesystem=src.fs, destination_filesystem=self.fs)

    def download(self, into: Path) -> Path:
        """This folder, copied to a local folder."""
        Location.at(into).copy_from(self)
        return into

    def replace_with(self, src: "Location", last: Optional[str] = None,
                     names: Optional[Sequence[str]] = None) -> None:
        """Make this folder a copy of `src` without ever showing a half-written one.

        Where folders rename (local disks, NFS) the copy goes to a temporary name first and is
        swapped in. Object stores (S3, GCS) cannot rename a folder, so the old one is removed and
        the files are copied with `last` (e.g. adapter_config.json) last: until the copy is
        complete the folder lacks that file and does not load. With `names`, only those files of
        `src` (the ones present) are copied, each a regular file read without following a link:
        `src` may be a folder someone else wrote (a shared run's checkpoint)."""
        rels = src.files() if names is None else src.own_files(names)
        copy = (lambda dst, rel: dst.copy_from(src / rel)) if names is None else \
            (lambda dst, rel: dst.copy_file_from(src / rel))
        if not renames_folders(self.fs):
            self.remove()
            for rel in sorted(rels, key=lambda r: r == last):
                copy(self / rel, rel)
            return
        tmp, old = self.sibling(temp_name(self.name)), self.sibling(temp_name(self.name, ".old"))
        if names is None:
            tmp.copy_from(src)
        else:
            tmp.mkdir()
            for rel in rels:
                copy(tmp / rel, rel)
        if self.exists():
            self.fs.move(self.path, old.path)
        self.fs.move(tmp.path, self.path)
        old.remove()

    def type_no_follow(self):
        """pyarrow's FileType of this path; on a local disk a link is FileType.Unknown, never its
        target's type (pyarrow's get_file_info follows links). Object stores have no links."""
        import os
        import stat

        import pyarrow.fs as pafs

        if not isinstance(self.fs, pafs.LocalFileSystem):
            return self.fs.get_file_info(self.path).type
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return pafs.FileType.NotFound
        return (pafs.FileType.File if stat.S_ISREG(mode) else pafs.FileType.Directory if stat.S_ISDIR(mode)
                else pafs.FileType.Unknown)

    def own_files(self, names: Sequence[str]) -> List[str]:
        """Those of `names` present in this folder, or a CheckpointError when the folder or one of
        them is a link (or a FIFO, a device): a folder others may write passes on its own files only."""
        import pyarrow.fs as pafs

        from peft_ray.errors import CheckpointError

        if self.type_no_follow() != pafs.FileType.Directory:
            raise CheckpointError(f"{self.uri} is not a folder (a link, or missing); refusing to copy from it")
        present = [n for n in names if (self / n).type_no_follow() != pafs.FileType.NotFound]
        bad = [n for n in present if (self / n).type_no_follow() != pafs.FileType.File]
        if bad:
            raise CheckpointError(f"{(self / bad[0]).uri} is not a regular file (a link, a FIFO or a folder); "
                                  "refusing to copy it: it would pass on whatever it points at")
        return present

    def copy_file_from(self, src: "Location") -> None:
        """One regular file copied from `src`. On a local disk `src` is opened with O_NOFOLLOW and
        checked on the open file, so a link swapped in after own_files looked is not followed."""
        import os
        import shutil
        import stat

        import pyarrow.fs as pafs

        from peft_ray.errors import CheckpointError

        if not isinstance(src.fs, pafs.LocalFileSystem):
            self.copy_from(src)
            return
        try:
            fd = os.open(src.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)   # a FIFO opens, unread
        except OSError as e:                                                     # ELOOP: a link
            raise CheckpointError(f"{src.uri}: cannot open it as a regular file ({e.strerror})") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise CheckpointError(f"{src.uri} is not a regular file; refusing to copy it")
            self.fs.create_dir(self.parent_path, recursive=True)
            with self.fs.open_output_stream(self.path) as out:
                shutil.copyfileobj(f, out, 1 << 20)


def renames_folders(fs) -> bool:
    """Only the local filesystem (disks, NFS mounts) renames a folder in one step."""
    return fs.type_name == "local"


def location_of(fs, path: str, like: str) -> Location:
    """A Location for a path Ray returned (Checkpoint.filesystem/.path), shown in `like`'s scheme."""
    if renames_folders(fs) or not is_uri(like):
        return Location(fs, path, path)
    return Location(fs, path, f"{like.split('://', 1)[0]}://{path}")


def own_json(path: Path, limit: int = 1 << 20) -> Any:
    """What a JSON file a command wrote earlier holds, to judge whether replacing it loses anything:
    None where it is a link (never followed: the command's own file is never one), not a regular file
    of at most `limit` bytes, or not JSON."""
    import json

    if path.is_symlink():
        return None
    try:
        return json.loads(Location.at(path).read_small_text(limit) or "null")
    except ValueError:
        return None
