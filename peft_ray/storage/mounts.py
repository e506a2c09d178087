"""Whether a local output folder can be made and written, told before any work and without
writing anything: check_output_dir, and the mount-table probing it rests on (/proc/self/mountinfo:
which filesystem a path is on, whether it is a kernel pseudo-filesystem or mounted read-only).
URIs are left to the storage itself (location.py).
"""

from __future__ import annotations

from pathlib import Path

from peft_ray.storage.paths import is_uri

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
