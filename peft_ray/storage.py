"""Where a run's outputs live: a local folder or a cloud URI (s3://, gs://, file://).

Ray Train resolves ``RunConfig.storage_path`` with ``pyarrow.fs.FileSystem.from_uri`` and
uploads checkpoints through it; peft-ray writes job.yaml, adapter/ and metrics.json through
the same pyarrow filesystems, so one ``output.dir`` serves both. Credentials come from the
usual AWS/GCP environment (variables, config files, instance roles), never from the job.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, List, Optional, Sequence

from pydantic import AfterValidator

SCHEMES = ("file", "s3", "gs", "gcs")  # what pyarrow.fs.FileSystem.from_uri resolves without extras
WHAT_TO_USE = "use a local path, s3://bucket/prefix, gs://bucket/prefix or file:///absolute/path"


def fits_filesystem(value: Optional[str]) -> Optional[str]:
    """A path-valued job field whose names the filesystem can hold (255 bytes a name, 4096 in all),
    checked when the job is read: a longer one is an OSError deep in whatever touches it first."""
    if value is not None and (len(value.encode()) > 4096 or any(len(part.encode()) > 255 for part in value.split("/"))):
        raise ValueError("longer than a filesystem allows (255 bytes a name, 4096 in all)")
    return value


PathStr = Annotated[str, AfterValidator(fits_filesystem)]   # the type of path-valued job fields


def cache_dir() -> Path:
    """Where peft-ray keeps what it makes once (built-in data sets, converted and scratch models)."""
    import os

    return Path(os.environ.get("PEFT_RAY_CACHE", Path.home() / ".cache" / "peft_ray"))


def is_uri(location: str) -> bool:
    return "://" in str(location)


def check_location(value: str) -> str:
    """A supported local path or URI, else ValueError saying what to write instead.
    Pure string checks: building an S3 filesystem may call the network (region lookup)."""
    if not is_uri(value):
        return value
    scheme, _, rest = value.partition("://")
    if scheme.lower() not in SCHEMES:
        raise ValueError(f"'{scheme}://' is not a supported storage scheme; {WHAT_TO_USE}")
    if scheme.lower() == "file" and not rest.startswith("/"):
        raise ValueError(f"a file:// URI needs an absolute path (file:///mnt/runs/x); {WHAT_TO_USE}")
    if scheme.lower() != "file" and not rest.split("/", 1)[0]:
        raise ValueError(f"'{value}' names no bucket; {WHAT_TO_USE}")
    return value


PSEUDO_FILESYSTEMS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
                      "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "efivarfs"}


def check_output_dir(location: str, field: str = "output.dir") -> None:
    """A local output folder that can be made and written, checked before any work and without
    writing anything: not an existing file, no file on the way, not on a kernel pseudo-filesystem
    (/proc, /sys, /dev), not read-only or denied. URIs are left to the storage itself."""
    from peft_ray.errors import CheckpointError

    if is_uri(str(location)):
        return
    p = Path(location).expanduser().absolute()
    if p.is_file() or (p.exists() and not p.is_dir()):
        raise CheckpointError(f"{field} '{location}' is an existing file, not a folder; set {field} to a new "
                              "folder (or a previous run's folder)")
    probe = p
    while not probe.exists():
        if probe.is_symlink():
            raise CheckpointError(f"{field} '{location}': '{probe}' is a symbolic link to nothing (or a link "
                                  f"loop); fix the link or set {field} elsewhere")
        probe = probe.parent
    if not probe.is_dir():
        raise CheckpointError(f"{field} '{location}': '{probe}' is a file, so no folder can be made below it; "
                              f"set {field} to a path whose parents are folders")
    fstype = filesystem_type(probe)
    if fstype in PSEUDO_FILESYSTEMS:
        raise CheckpointError(f"{field} '{location}' is on {fstype} ({mount_point(probe)}), a kernel "
                              f"pseudo-filesystem, not storage; set {field} to a folder on a disk or shared "
                              "storage (e.g. runs/NAME)")
    import os

    if not os.access(probe, os.W_OK | os.X_OK):
        why = "read-only" if _read_only(probe) else "not writable by this user"
        where = "is" if probe == p else f"would be made in '{probe}', which is"
        raise CheckpointError(f"{field} '{location}' {where} {why}; set {field} to a folder you can write")


def _mounts():
    """(mount point, filesystem type, options) of this process's mounts, longest mount point first."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) > 5 and rest:
            point = fields[4].replace("\\040", " ")
            out.append((point, rest[0], fields[5]))
    return sorted(out, key=lambda m: len(m[0]), reverse=True)


def _mount_of(path: Path):
    real = str(path.resolve())
    for point, fstype, opts in _mounts():
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return point, fstype, opts
    return None


def filesystem_type(path: Path) -> str:
    m = _mount_of(path)
    if m:
        return m[1]
    return "proc" if str(path.resolve()).split("/")[1:2] == ["proc"] else ""


def mount_point(path: Path) -> str:
    m = _mount_of(path)
    return m[0] if m else "/"


def _read_only(path: Path) -> bool:
    m = _mount_of(path)
    return bool(m) and "ro" in m[2].split(",")


def join(base: str, *names: str) -> str:
    """`base/name/...` for local paths and URIs alike (never pathlib: it folds 's3://' to 's3:/')."""
    return "/".join([str(base).rstrip("/"), *names])


OPEN_TIMEOUT_S = 30   # an unreachable GCS endpoint retried for minutes without a word


def open_filesystem(uri: str):
    """pyarrow's (filesystem, path) for a URI, once one look at the path has answered, or a
    JobError naming it. Opening an S3 filesystem asks for the bucket's region, and GCS retries a
    failing call for 15 minutes, so without the network (or with wrong credentials) a user got
    pyarrow's traceback from `validate`, or for gs:// a silent hang: the open and the first look
    run in a thread that is given up after OPEN_TIMEOUT_S."""
    import threading

    from peft_ray.errors import JobError

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
    raise JobError(f"'{uri}': its storage could not be opened ({why}); check the bucket name, the "
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


def temp_name(name: str, suffix: str = ".tmp") -> str:
    """A hidden sibling name nobody can guess ahead of time (so nobody can plant a link there)."""
    import secrets

    return f".{name}.{secrets.token_hex(8)}{suffix}"


def atomic_write(path: Path, data: bytes) -> None:
    """`path` replaced by `data` in one rename (see atomic_writer)."""
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: Path):
    """A binary file that replaces `path` in one rename when the block ends (removed if it fails).
    The temporary file is created exclusively (O_EXCL|O_NOFOLLOW, random name; the umask sets its
    mode as for any file) in the target's folder, so a link planted next to the target cannot
    redirect the write; os.replace swaps a link at `path` itself for the new file rather than
    writing through it."""
    import os

    tmp, fd = _create_exclusive(Path(path), ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file(path: Path, data) -> None:
    """`path` replaced by `data` (str as UTF-8, or bytes) in one rename, never through a link
    planted at or next to it: for every file peft-ray writes into a run folder, which may have
    come from someone else (a shared run, an unpacked archive)."""
    atomic_write(Path(path), data.encode("utf-8") if isinstance(data, str) else data)


def open_append(path: Path):
    """`path` opened to append text, line-buffered, created if missing. A link at `path` is
    refused (O_NOFOLLOW), so a planted link cannot point a log at another file."""
    import errno
    import os
    import stat

    from peft_ray.errors import JobError

    # O_NONBLOCK: a FIFO planted there (no reader) fails at once instead of blocking the open for ever
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    not_plain = (f"{path} is not a plain file; peft-ray appends its logs to plain files only. Remove it, or use "
                 "another folder")
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise JobError(f"{path} is a symbolic link; peft-ray appends its logs to plain files only. Remove the "
                           "link, or use another folder") from None
        if e.errno == errno.ENXIO:     # a FIFO nobody reads
            raise JobError(not_plain) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):   # a FIFO with a reader, a device
        os.close(fd)
        raise JobError(not_plain)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8")


def exclusive_temp(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty hidden file next to `path` under a random name, created exclusively and
    never through a link (O_CREAT|O_EXCL|O_NOFOLLOW), for writers that open by name."""
    import os

    tmp, fd = _create_exclusive(Path(path), suffix)
    os.close(fd)
    return tmp


def _create_exclusive(path: Path, suffix: str):
    import os

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    tmp = path.with_name(temp_name(path.name, suffix))
    return tmp, os.open(tmp, flags, 0o666)


@contextlib.contextmanager
def staging_dir(path: Path):
    """A path to build a folder at, to be renamed onto `path` by the caller: `<stage>/<name>`,
    inside a hidden folder next to `path` made exclusively under a random name (mkdtemp), so no
    planted link can redirect it; the folder built keeps the umask's mode. The stage (and
    whatever was not renamed out of it) is removed when the block ends."""
    import shutil
    import tempfile

    path = Path(path)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield stage / path.name
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def umask_modes(folder: Path) -> None:
    """Every file below `folder` 0o666 and every folder 0o777, less the process's umask."""
    import os

    mask = current_umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def current_umask() -> int:
    """The process's umask, read from /proc where it can be: os.umask can only be read by setting
    it, and for that instant any other thread (a Ray worker's) would create files with umask 0."""
    import os

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def renames_folders(fs) -> bool:
    """Only the local filesystem (disks, NFS mounts) renames a folder in one step."""
    return fs.type_name == "local"


def location_of(fs, path: str, like: str) -> Location:
    """A Location for a path Ray returned (Checkpoint.filesystem/.path), shown in `like`'s scheme."""
    if renames_folders(fs) or not is_uri(like):
        return Location(fs, path, path)
    return Location(fs, path, f"{like.split('://', 1)[0]}://{path}")
