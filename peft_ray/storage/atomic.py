"""Writing local files so that no reader sees half a file and no link planted in a run folder
redirects a write: atomic replacement through a random exclusive temporary name (atomic_write,
atomic_writer, write_file, exclusive_temp), log files opened without following a link
(open_append), folders built aside and renamed into place (staging_dir), and the umask's modes.

A run folder may have come from someone else (a shared run, an unpacked archive), so every file
peft-ray writes there goes through here; location.py uses it for local Locations too.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


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
