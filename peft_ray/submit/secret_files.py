"""Which files of a working dir are credentials: by name (a deny-list, backups of listed names,
archives, whose content cannot be checked) and by content (settings, shell, table, log and XML text
for credential lines; keys and key stores in any file). `upload.refuse_secrets` asks this module."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

# Files that hold credentials: never uploaded unless named with --include. Matched with fnmatch,
# ignoring case (".ENV" is a .env to every tool on macOS and Windows), against every run of path
# components ("a/b/c": a, b, c, a/b, b/c, a/b/c), so a folder name
# matches everything below it and ".cache/huggingface/token" matches at any depth. A link is also
# matched by the name of what it points at (its path in the working dir, or the absolute path
# outside it): Ray uploads the target's content under the link's name. Config files are also read
# (CONFIG_SUFFIXES, below).
SECRET_PATTERNS: Tuple[str, ...] = (".env", ".env.*", "*.env", ".netrc", "_netrc", ".npmrc", ".pypirc", ".pgpass",
                                    ".aws", ".ssh", ".gnupg", ".docker", ".kube", ".azure", ".config/gcloud",
                                    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12",
                                    "*.pfx", "*-key.json", "*_key.json", "credentials", "credentials.json",
                                    "service-account*.json", "*.tfstate", "*.tfstate.*", "*.tfvars",
                                    ".git-credentials", ".htpasswd", "secrets.y*ml", ".secrets*", "*.keytab",
                                    ".huggingface", ".cache/huggingface/token", ".ray/auth_token", "auth_token",
                                    ".kaggle", ".config/gh", ".config/hub", ".boto", ".s3cfg", ".databrickscfg",
                                    ".terraformrc", ".terraform.d", ".dockercfg", ".vault-token",
                                    ".cache/huggingface/stored_tokens", ".envrc", "secrets.toml", "secrets.json",
                                    "client_secret*.json", "rclone.conf", ".my.cnf", ".*history",
                                    "pip.conf", "pip.ini", ".pip", ".config/pip", ".condarc", ".config/wandb",
                                    "wandb/settings", ".yarnrc", ".yarnrc.yml", ".m2", ".gradle", ".config/rclone",
                                    ".config/huggingface",
                                    # key stores and password safes: PuTTY keys, KeePass, Java and PKCS#12
                                    # key stores, GnuPG secret keyrings, `pass`'s store
                                    "*.ppk", "*.kdbx", "*.kdb", "*.jks", "*.keystore", "*.jceks", "*.bks",
                                    "*.pkcs12", "secring.*", "private-keys-v1.d", ".password-store",
                                    # the AWS console's key exports (`<user>_accessKeys.csv`, the old
                                    # `rootkey.csv`, IAM's `credentials.csv`), kubeconfigs by name
                                    "*accesskeys.csv", "credentials.csv", "*_credentials.csv", "rootkey.csv",
                                    "kubeconfig", "kubeconfig.y*ml", "*.kubeconfig")
# A copy someone kept (`credentials.bak`, `secrets.yaml.orig`, `.netrc~`) is judged by the name it was
# copied from: the suffix is taken off before the patterns above are matched and the text rules chosen.
BACKUP_SUFFIXES = (".bak", ".backup", ".old", ".orig", ".save", ".sav", ".swp", ".tmp", ".copy", ".prev", "~")
# Archives travel only when --include names them: peft-ray reads no archive (its data is Parquet,
# Arrow, CSV or JSON Lines, its models folders), and a compressed file's content cannot be checked
# for the credentials above (an `ssh-backup.tgz` of ~/.ssh looks like any other).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".tbz", ".tbz2", ".xz", ".txz", ".7z", ".rar", ".zst",
                    ".zstd", ".lz4", ".lzma", ".z", ".cab", ".iso", ".dmg",
                    ".whl", ".egg", ".jar", ".war", ".apk")   # zip files under their own names


def is_secret(rel: str) -> bool:
    """Whether a path (relative to the working dir, or a link's absolute target) looks like a
    credentials file."""
    parts = [p for p in rel.split("/") if p]
    if parts and unbacked(parts[-1]) != parts[-1]:
        parts = [*parts[:-1], unbacked(parts[-1])]
    runs = ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(r.lower(), pat.lower()) for r in runs for pat in SECRET_PATTERNS)


def unbacked(name: str) -> str:
    """A file name without its backup suffixes (`credentials.bak.1` -> `credentials`); the name itself
    where that would leave nothing (`.bak`)."""
    base = name
    while True:
        low = base.lower()
        cut = next((suf for suf in BACKUP_SUFFIXES if low.endswith(suf) and len(base) > len(suf)), None)
        if cut is None:
            cut_digits = re.fullmatch(r"(.+?)\.\d{1,3}", base)    # `credentials.1`, `.netrc.2` (rotated copies)
            if cut_digits is None:
                return base
            base = cut_digits.group(1)
            continue
        base = base[: -len(cut)]


def is_archive(path: Path) -> bool:
    """Whether a file is an archive or compressed file, by its name (see ARCHIVE_SUFFIXES)."""
    return unbacked(path.name).lower().endswith(ARCHIVE_SUFFIXES)


# Files whose text is read for credentials (a pip index URL with a password, a token, a
# `password: ...` line): config files by suffix, or without one, and shell scripts (`export
# HF_TOKEN=...`), whole, in pieces of CONFIG_FILE_BYTES (a kubeconfig with many clusters passes 64 KiB).
# Source, notebooks and docs (CODE_SUFFIXES) are read for token shapes only (`HF_TOKEN = "hf_..."` in a
# settings.py or a notebook cell is how tokens most often leak; a URL password or a `password:` line
# there is usually an example). A private key (PEM, PGP, PuTTY) and a binary key store are looked
# for in every file that travels, whatever its name and size: no code or doc needs a real key, and
# `deploy_key` or `key.txt` is as good a name as any.
CONFIG_SUFFIXES = {"", ".conf", ".cfg", ".ini", ".toml", ".yaml", ".yml", ".json", ".txt", ".properties",
                   ".netrc", ".rc", ".tf", ".hcl", ".cnf", ".config", ".env", ".npmrc"}
CODE_SUFFIXES = {".py", ".pyw", ".ipynb", ".md", ".rst", ".tex", ".r", ".rmd", ".jl", ".js", ".mjs", ".ts", ".java",
                 ".scala", ".kt", ".go", ".rs", ".rb", ".php", ".pl", ".lua", ".swift", ".c", ".cc", ".cpp", ".h",
                 ".hpp", ".cu", ".sql", ".html", ".htm"}
# Tables (CSV, TSV) are data: their rows are only searched for credentials by shape (a token, a URL
# with a password, a private key), and their header for a key export's columns.
TABLE_SUFFIXES = {".csv", ".tsv"}
# JSON Lines: peft-ray's data format, and run records. By shape, and for an upper-case key holding a
# secret (`"HF_TOKEN": "..."` in a record's env); a spam data set's "your PASSWORD: qwerty123" row
# is text, not a login (security.holds_record_credentials).
RECORD_SUFFIXES = {".jsonl", ".ndjson"}
# Logs and diffs: what a job printed (`nohup.out` after `export HF_TOKEN=...`) or what a change
# added. Read like tables, by shape, and for an environment variable that holds a credential
# (security.holds_log_credentials); their other words ("password reset failed") are prose.
LOG_SUFFIXES = {".log", ".out", ".err", ".diff", ".patch"}
SHELL_SUFFIXES = {".sh", ".bash", ".zsh", ".ksh", ".csh", ".fish", ".ps1", ".psm1", ".bat", ".cmd"}
SHELL_NAMES = {".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc", ".zprofile", ".zshenv", ".kshrc",
               ".cshrc", ".envrc"}
CONFIG_FILE_BYTES = 1024 * 1024
# A file is searched for key markers in chunks, each with the last _KEY_OVERLAP bytes of the one
# before: a key block (header to its first 40 body characters, well under 16 KiB) that straddles a
# chunk boundary is seen whole in the next chunk.
_KEY_CHUNK, _KEY_OVERLAP = 1024 * 1024, 16 * 1024


def _suffix(path: Path) -> str:
    return Path(unbacked(path.name)).suffix.lower()


def is_config(path: Path) -> bool:
    """Whether a file's text is read for credential lines: by its suffix (a backup's by the name it
    was copied from), or a dotfile."""
    return _suffix(path) in CONFIG_SUFFIXES or path.name.startswith(".")


def is_shell(path: Path) -> bool:
    """Whether a file is a shell script (or a shell's startup file), read with the shell's forms."""
    return _suffix(path) in SHELL_SUFFIXES or unbacked(path.name) in SHELL_NAMES


def _text_rules(path: Path) -> Optional[Callable[[str], str]]:
    """How a file's text is read for credential lines, by its name: shell, config, table, log, or not
    at all."""
    from peft_ray.security import (holds_credentials, holds_log_credentials, holds_record_credentials,
                                   holds_shell_credentials, holds_table_credentials, holds_xml_credentials)

    if is_shell(path):
        return holds_shell_credentials
    if _suffix(path) in TABLE_SUFFIXES:
        return holds_table_credentials
    if _suffix(path) in LOG_SUFFIXES:
        return holds_log_credentials
    if _suffix(path) in RECORD_SUFFIXES:
        return holds_record_credentials
    if _suffix(path) in (".xml", ".config"):       # .NET's web.config and app.config are XML
        return holds_xml_credentials
    return holds_credentials if is_config(path) else None


def holds_credentials_file(path: Path) -> str:
    """What makes a file a credential ("" if nothing): a key store's first bytes or a private key in
    any file, or (a config file or shell script, by the name it travels under or the name of the file
    it links to) a credential in its text."""
    from peft_ray.security import secret_container

    head = head_bytes(path)
    container = secret_container(head)
    if container:
        return container
    if is_archive(path) or is_archive(path.resolve()):
        return "an archive, whose content cannot be checked"
    rules = _text_rules(path) or _text_rules(path.resolve())
    wide = _utf16(head)
    if rules is None and not wide:
        if _suffix(path) in CODE_SUFFIXES or _suffix(path.resolve()) in CODE_SUFFIXES:
            from peft_ray.security import holds_token

            if any(holds_token(t) for t in _text_chunks(path)):
                return "a token-shaped value in its text"
        return "a private key" if streams_private_key(path) else ""
    from peft_ray.security import holds_credentials, holds_private_key, holds_table_credentials, is_json_rows

    if rules is None:       # UTF-16 text (PowerShell's and Notepad's default): searched for keys, decoded
        return "a private key" if any(holds_private_key(t) for t in _text_chunks(path, wide)) else ""
    rows = None           # a JSON array of rows is data: judged once, by the file's opening
    for i, text in enumerate(_text_chunks(path, wide)):     # these rules cover private keys too
        if rules is holds_credentials:
            rows = is_json_rows(text, path.name) if rows is None else rows
            found = holds_credentials(text, rows=rows)
        elif rules is holds_table_credentials:   # a table's header opens its first piece only
            found = holds_table_credentials(text, header=i == 0)
        else:
            found = rules(text)
        if found:
            return found
    return ""


def _utf16(head: bytes) -> str:
    """The UTF-16 codec a file's first bytes show (a byte-order mark, or a NUL beside every ASCII
    character), "" otherwise: read as UTF-8, such text has a NUL between letters and no rule matches."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    pairs = head[: len(head) // 2 * 2]
    if len(pairs) >= 8:
        if pairs[1::2].count(0) == len(pairs) // 2 and pairs[0::2].count(0) == 0:
            return "utf-16-le"
        if pairs[0::2].count(0) == len(pairs) // 2 and pairs[1::2].count(0) == 0:
            return "utf-16-be"
    return ""


def _text_chunks(path: Path, wide: str = "") -> Iterator[str]:
    """A file's text in pieces of about CONFIG_FILE_BYTES, each cut after a line end and starting
    with the last _KEY_OVERLAP bytes of the one before, so the line rules see every line whole and
    a key block that straddles a cut whole in the next piece. A file over the old 1 MiB limit (a
    big kubeconfig or YAML) was only searched for keys, and a token line in it travelled. UTF-16
    text (`wide`, its codec) is decoded whole: a file that travels is at most LARGE_FILE_BYTES."""
    if wide:
        try:
            yield path.read_bytes().decode(wide, errors="replace")
        except OSError:
            pass
        return
    tail = b""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CONFIG_FILE_BYTES):
                chunk += f.readline()             # to the end of the line the read cut
                window = tail + chunk
                yield window.decode("utf-8", errors="ignore")
                cut = window.rfind(b"\n", 0, max(0, len(window) - _KEY_OVERLAP))
                tail = window[cut + 1:] if cut >= 0 else window[-_KEY_OVERLAP:]
    except OSError:
        return


def streams_private_key(path: Path) -> bool:
    """Whether a file of any size holds a private key, read in chunks. Every file that travels is read
    (it is at most LARGE_FILE_BYTES, and Ray reads it twice anyway, to hash and to zip it); the
    regexes run only on a chunk where a literal marker occurs."""
    from peft_ray.security import KEY_MARKERS, holds_private_key

    tail = b""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_KEY_CHUNK):
                window = tail + chunk
                if any(m in window for m in KEY_MARKERS) and holds_private_key(window.decode("utf-8", "ignore")):
                    return True
                tail = window[-_KEY_OVERLAP:]
    except OSError:
        return False
    return False


def head_bytes(path: Path, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""
