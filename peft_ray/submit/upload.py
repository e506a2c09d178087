"""What part of the working dir travels with a job, decided (and checked) before upload.

Ray zips the working dir, honouring its ``excludes`` plus every .gitignore/.rayignore
on the way, and refuses packages over ~500 MiB. We walk the tree the way Ray will
(with Ray's own traversal), drop files over ``LARGE_FILE_BYTES`` explicitly, and
check that the job file and any data/model files the job names inside the working
dir really travel: a job whose data sits in a gitignored folder fails here, on the
laptop, instead of on the cluster after the upload.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from peft_ray.errors import JobError
from peft_ray.submit.secret_files import head_bytes, holds_credentials_file, is_secret

# gitignore-style patterns, relative to the working dir. runs/ holds outputs and
# checkpoints (can be GBs); the rest are caches and VCS data no worker needs.
DEFAULT_EXCLUDES: Tuple[str, ...] = (".git", "runs/", "__pycache__/", ".pytest_cache/", "*.egg-info/",
                                     "build/", ".venv/", "venv/", "bench/results/")
# Ray warns about single files above 10 MiB; big models and data belong on shared storage.
LARGE_FILE_BYTES = 10 * 1024 * 1024


@dataclass
class UploadPlan:
    root: Path
    excludes: List[str]                                   # goes into runtime_env["excludes"]
    # Every name Ray zips -> the file whose content it zips (resolved). Keyed by name, not by file:
    # Ray zips a link's target under the link's name AND the target under its own, so one file can
    # travel under several names, and each of them is checked and listed.
    names: Dict[str, Path] = field(default_factory=dict)
    total_bytes: int = 0
    dropped_large: List[Tuple[str, int]] = field(default_factory=list)

    @property
    def files(self) -> List[Path]:
        """One path per name Ray zips (a link's own path, not its target's), sorted by name."""
        return [self.root / name for name in sorted(self.names)]

    def contents(self) -> Set[Path]:
        """The resolved files whose content travels (under one name or more)."""
        return set(self.names.values())

    def listing(self) -> str:
        """Every name Ray zips, with its size, and the total (what --dry-run prints)."""
        rows = [(self.shown(f), f.stat().st_size) for f in self.files]
        lines = [f"  {size:>12,d}  {rel}" for rel, size in rows]
        return "\n".join(["files to upload:", *lines, f"  {self.total_bytes:>12,d}  total ({len(rows)} files)"])

    def shown(self, path: Path) -> str:
        """The name a file travels under, with what it points at where it is a link (or lies below a
        linked folder): Ray zips the target's content under the link's name."""
        name = self.relative(path)
        target = self.names.get(name, path.resolve())
        if target == self.root / name:
            return name
        return f"{name} -> {self.target_name(target)}"

    def target_name(self, target: Path) -> str:
        """A link target's own name: relative inside the working dir, absolute outside it."""
        return Path(os.path.relpath(target, self.root)).as_posix() if self.inside(target) else target.as_posix()

    def runtime_env(self) -> Dict[str, object]:
        return {"working_dir": str(self.root), "excludes": list(self.excludes)}

    def relative(self, path: Path) -> str:
        """The name `path` travels under: its own when Ray zips that name (a link's own name, not its
        target's), else a name under which Ray zips its content, else its path relative to the root."""
        own = Path(os.path.relpath(Path(path).absolute(), self.root)).as_posix()
        if own in self.names:
            return own
        resolved = path.resolve()
        name = Path(os.path.relpath(resolved, self.root)).as_posix()
        if name in self.names:
            return name
        return next((n for n in sorted(self.names) if self.names[n] == resolved), name)

    def inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.root)

    def check_travels(self, path: Path, what: str) -> None:
        """A file (or every file of a folder) under the working dir must be in the upload."""
        p = path.resolve()
        if not self.inside(p):
            return
        travels = self.contents()
        missing = [q for q in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()))
                   if q.resolve() not in travels]
        if missing:
            raise JobError(f"{what}: '{self.relative(missing[0])}' is inside the working dir {self.root} but "
                           "would not be uploaded (excluded by .gitignore/.rayignore, the default excludes "
                           f"{', '.join(DEFAULT_EXCLUDES)}, or larger than {LARGE_FILE_BYTES >> 20} MiB); move "
                           "it to shared storage (s3://, gs://, NFS) or out of the excluded folder")


# A file this small may be a token file under another name; bigger ones are not read. A token
# shorter than TOKEN_MIN_CHARS (Ray generates 64 hex digits; a hand-set one can be "dev") is
# matched by its files' names only: its text would turn up in ordinary files.
TOKEN_FILE_BYTES, TOKEN_MIN_CHARS = 4096, 16


def refuse_ray_token(plan: "UploadPlan") -> None:
    """The Ray cluster token never travels, not even with --include: whoever holds it controls the
    cluster, and a job's working dir is readable by every job there. Refused: the token file this
    machine uses (RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) and any small file holding the token."""
    from peft_ray.submit.auth import TOKEN_PATH_ENV, default_token_path, find_token

    paths = {default_token_path().resolve()}
    if os.environ.get(TOKEN_PATH_ENV):
        paths.add(Path(os.environ[TOKEN_PATH_ENV]).expanduser().resolve())
    try:
        token = find_token()
    except JobError:           # an unreadable token file: the submission says so when it connects
        token = None
    if token is not None and len(token.value) < TOKEN_MIN_CHARS:
        token = None
    found = sorted(plan.shown(f) for f in plan.files
                   if f.resolve() in paths or (token is not None and _holds(f, token.value)))
    if found:
        raise JobError(f"refusing to upload the Ray cluster token: {', '.join(found[:5])}. Whoever reads it "
                       "controls the cluster, and every job there can read a job's working dir; move it out of "
                       "the working dir, or keep it out with --exclude")


def _holds(path: Path, token: str) -> bool:
    return token in _small_text(path, TOKEN_FILE_BYTES)


def _small_text(path: Path, limit: int) -> str:
    """A file's text if it is at most `limit` bytes ("" otherwise, or if unreadable)."""
    try:
        return path.read_bytes().decode("utf-8", errors="ignore") if path.stat().st_size <= limit else ""
    except OSError:
        return ""


def link_pattern(plan: "UploadPlan", rel: str) -> str:
    """The --include pattern for a file reached through a link: the link itself, or everything below
    a linked folder (data/sst2/*), never a wider folder whose other files might be secrets."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        if (plan.root / "/".join(parts[:i])).is_symlink():
            return "/".join(parts[:i]) + "/*"
    return rel


def _some(items: List[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def refuse_secrets(plan: "UploadPlan", include: Iterable[str]) -> None:
    """Every secret-looking file that would travel is refused unless --include names it: by any name
    it travels under, by the name of the file a link points at (in or out of the working dir: Ray
    zips the target's content under the link's name, so `notes.txt -> .env` is the .env), or by a
    credential in its text. Any link out of the working dir needs --include too: Ray uploads what
    it points at, which the user may never have meant to share."""
    allowed = list(include)
    named = [f for f in plan.files if not any(fnmatch.fnmatch(plan.relative(f), pat) for pat in allowed)]
    outside = [f for f in named if not plan.inside(f)]
    found = []
    for f in named:
        by_name = is_secret(plan.relative(f)) or is_secret(plan.target_name(f.resolve()))
        why = "" if by_name else holds_credentials_file(f)      # what in it, never its value
        if by_name or why:
            found.append(plan.shown(f) + (f" ({why})" if why else ""))
    found += _large_secrets(plan, allowed)
    found.sort()
    if outside and not found:
        raise JobError(f"refusing to upload files from outside the working dir through links: "
                       f"{_some([plan.shown(f) for f in outside])}. Ray uploads what a link points at; to send "
                       f"them, name them with --include PATTERN (e.g. --include "
                       f"{shlex.quote(link_pattern(plan, plan.relative(outside[0])))}), or put the data on shared "
                       "storage (s3://, gs://, NFS)")
    if found:
        raise JobError(f"refusing to upload what looks like credentials: {_some(found)}. Keep them out (.gitignore, "
                       "--exclude) and give the cluster its secrets through the node environment or a secret "
                       "manager; to send a file anyway, name it (and a link to it, by the link's name) with "
                       "--include PATTERN")


def _large_secrets(plan: "UploadPlan", allowed: List[str]) -> List[str]:
    """Files left out as large that look like credentials (by name, a link's target's name, or a key
    store's first bytes): refused all the same, so that a secret's safety never rests on an exclude
    pattern alone, and the user learns it sits in the working dir."""
    from peft_ray.security import secret_container

    found = []
    for rel, _ in plan.dropped_large:
        f = plan.root / rel
        if any(fnmatch.fnmatch(rel, pat) for pat in allowed):
            continue
        if is_secret(rel) or is_secret(plan.target_name(f.resolve())) or secret_container(head_bytes(f)):
            found.append(f"{rel} (left out as large, but named or made like credentials)")
    return found


# gitwildmatch's special characters: Ray reads runtime_env excludes as gitwildmatch patterns
# (ray._private.thirdparty.pathspec 0.8.1), where a backslash makes the next character literal.
_GLOB_SPECIAL = frozenset("[]!*?#\\")


def exclude_pattern(rel: str) -> str:
    """An anchored gitwildmatch pattern for exactly the file `rel` (relative, '/'-separated), so that
    `prod[1].tfstate` is not read as `prod1.tfstate`. pathspec strips a pattern's trailing whitespace
    before it reads escapes, so trailing whitespace goes in bracket expressions ("[ ]"), which survive."""
    body = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in rel)
    kept = body.rstrip()
    return "/" + kept + "".join(f"[{c}]" for c in body[len(kept):])


def _check_excluded(root: Path, rel: str, pattern: str) -> None:
    """The pattern must keep the file out by Ray's own matcher: a name no pattern can express (or a
    change in Ray's pattern syntax) fails here, not by uploading the file."""
    from ray._private.runtime_env.packaging import _get_excludes

    if not _get_excludes(root, [pattern])(root / rel):
        raise JobError(f"cannot keep the large file '{rel}' out of the upload (no exclude pattern matches its "
                       "name); rename it, or move it out of the working dir")


def plan_upload(root: str | Path, extra_excludes: Iterable[str] = (),
                large_file_bytes: int = LARGE_FILE_BYTES, include: Iterable[str] = ()) -> UploadPlan:
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        raise JobError(f"--working-dir: '{root}' is not a folder")
    excludes = list(DEFAULT_EXCLUDES) + list(extra_excludes)
    plan = UploadPlan(root_path, excludes)
    for f in _files_ray_would_upload(root_path, excludes):
        size = f.stat().st_size
        if size > large_file_bytes:
            plan.dropped_large.append((Path(os.path.relpath(f, root_path)).as_posix(), size))
            continue
        # The name Ray zips it under: its path below the root as traversed, links not followed.
        plan.names[Path(os.path.relpath(f, root_path)).as_posix()] = f.resolve()
        plan.total_bytes += size
    # Anchored, escaped patterns ("/path") match exactly these files, nothing else of the same name.
    for rel, _ in plan.dropped_large:
        plan.excludes.append(exclude_pattern(rel))
        _check_excluded(root_path, rel, plan.excludes[-1])
    refuse_ray_token(plan)
    refuse_secrets(plan, include)
    return plan


def _files_ray_would_upload(root: Path, excludes: List[str]) -> List[Path]:
    """Ray's own traversal (excludes + nested .gitignore/.rayignore), so the check matches the upload.
    Ray follows folder links and remembers no folder it has been in, so a link back to a folder it
    lies in (`sub/up -> ..`) is noted where the walk meets it (loop_link) and not gone into; the
    walk goes on, and every such link is refused at once, so one run names them all."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    # Ray logs every ignore file at INFO, and our own refusal (raised in the handler) at ERROR
    # before it passes it on: the refusal is said once, by the command.
    quiet = logging.getLogger("peft_ray.submit.upload")
    quiet.setLevel(logging.CRITICAL)
    out: List[Path] = []
    # Ray extends this list with a folder's ignore files before it calls the handler on the folder
    # and pops them after, so in the handler it holds exactly what judges the folder's entries.
    active = [_get_excludes(root, excludes)]
    real: Dict[Path, Path] = {}          # every folder walked (its path as traversed) -> its real path
    loops: List[Tuple[str, Optional[str]]] = []    # every looping link met: (as named, its --exclude)

    def visit(path: Path) -> None:
        if path.is_dir():
            loop = loop_link(root, path, real, active)
            if loop:
                loops.append(loop)
                # Not gone into: Ray pops its own ignore rules off the end, so ours goes first.
                active.insert(0, lambda p, top=path: p.is_relative_to(top) and p != top)
            real[path] = path.resolve()
        elif path.is_file():
            out.append(path)

    _dir_travel(root, active, visit, include_gitignore=include_gitignore, logger=quiet)
    if loops:
        raise JobError(_loops_message(root, sorted(loops, key=lambda loop: loop[0])))   # not the walk's order
    return out


def _loops_message(root: Path, loops: List[Tuple[str, Optional[str]]]) -> str:
    one = len(loops) == 1
    links = "the folder link" if one else f"{len(loops)} folder links"
    excludes = [e for _, e in loops if e]
    if len(excludes) == len(loops):
        do = (f"Remove the link{'' if one else 's'}, or keep {'it' if one else 'them'} out with "
              + " ".join(f"--exclude {shlex.quote(e)}" for e in excludes))
    else:            # reached through other links (`a/x -> ../b`, `b/y -> ../a`): an exclude of one name is not enough
        do = f"Remove {'the' if one else 'each'} link, or a link it is reached through"
    return (f"--working-dir: {links} {'; '.join(what for what, _ in loops)} lead{'s' if one else ''} back to a "
            f"folder {'it lies' if one else 'they lie'} in (the working dir {root}, or a folder above it or above "
            "the link): Ray follows folder links, so it would upload the same files again and again under ever "
            f"longer names and never finish. {do}")


def loop_link(root: Path, folder: Path, real: Dict[Path, Path], active: List) -> Optional[Tuple[str, Optional[str]]]:
    """A folder the walk enters must not be (or hold) one it is already in: through a link to the
    working dir, to a folder above it, or to a folder the link lies in, Ray would zip the same files
    again under ever longer names (41 times per loop link, exponentially with two), and to `/` it
    would zip the whole disk. Such a link passes only when every entry below it is excluded (Ray
    then goes no further); an exclude that names the link itself keeps Ray from calling this.
    None where `folder` is fine, else (the link as the message names it, the --exclude that keeps it out,
    None where the link is reached through others)."""
    target = folder.resolve()
    inside: List[Path] = []
    above = folder.parent
    while above in real:                 # the real paths of the folders `folder` lies in, root included
        inside.append(real[above])
        if above == root:
            break
        above = above.parent
    if not any(f.is_relative_to(target) for f in inside):
        return None
    if all(any(excluded(entry) for excluded in active) for entry in folder.iterdir()):
        return None
    rel = _shown_from(root, folder)
    own = _shown_from(root, real[folder.parent] / folder.name)     # where the link itself lies
    to = f"(-> {_shown_from(root, target)})"
    if own == rel:
        return f"'{rel}' {to}", exclude_pattern(rel)
    return f"'{own}' (reached as '{rel}') {to}", None


def _shown_from(root: Path, path: Path) -> str:
    """A path as a message shows it: relative inside the working dir, absolute outside it."""
    return Path(os.path.relpath(path, root)).as_posix() if path.is_relative_to(root) else path.as_posix()
