"""Secure defaults: secrets never reach logs or saved job specs."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Optional, Tuple

REDACTED = "***REDACTED***"
# Whole words of a key name: `hf_token`, `AWS_SECRET_ACCESS_KEY`, `password` (not `tokenizer`).
_SECRET_KEY = re.compile(r"(?:^|[_.-])(token|secret|passw(?:or)?d|api[_-]?key|access[_-]?key|"
                         r"credentials?)(?:$|[_.-])", re.I)
# Token-shaped strings: Hugging Face, AWS key ids, GitHub (classic and fine-grained), OpenAI-style
# `sk-`, Stripe secret and restricted keys, npm, GitLab, Slack tokens (`xoxb-<digits>-...`, the
# rotating `xoxe.xoxb-1-...`, app-level `xapp-1-...`), each a
# whole word (`ASIAPACIFIC...2024` and `hf_models..._cache` are not), a JWT, a Slack webhook, and a
# bearer token (an Authorization header's value).
_SECRET_VALUE = re.compile(r"\b(?:hf_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}|"
                           r"github_pat_[A-Za-z0-9_]{22,}|sk-[A-Za-z0-9_-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|"
                           r"npm_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_-]{20,}|xox[bpaers]-(?:[0-9]+-)+[A-Za-z0-9-]{8,}|"
                           r"xapp-[0-9]+-[A-Za-z0-9-]{8,}|"
                           r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})\b|"
                           r"hooks\.slack\.com/services/[A-Za-z0-9/]{20,}|\bBearer\s+[A-Za-z0-9._~+/-]{20,}=*")
# user:password@ (or token@) in any URL: s3 gateways, http(s) proxies, git remotes, pip indexes.
# Up to the last @ before the host: a password may itself hold an @ ("p@ss" unescaped).
# The lookbehind anchors the scheme at its first letter: without it a long line without "://" cost
# quadratic time (the scheme retried from every position), and every routed log line is redacted.
_URL_CREDENTIALS = re.compile(r"(?<![A-Za-z0-9+.-])(?P<scheme>[0-9+.-]*[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]+@")


def redact(obj: Any, key: str = "") -> Any:
    """A copy of `obj` with secret-looking keys' values and token-shaped strings masked."""
    if isinstance(obj, dict):
        return {k: redact(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, key) for v in obj)
    if isinstance(obj, str):
        if key and _SECRET_KEY.search(key) and obj:
            return REDACTED
        return redact_text(obj)
    return obj


def redact_text(text: str) -> str:
    """`text` with token-shaped strings and URL credentials masked (for logs, entrypoints)."""
    return _URL_CREDENTIALS.sub(rf"\g<scheme>{REDACTED}@", _SECRET_VALUE.sub(REDACTED, text))


def redact_command(args) -> str:
    """A command line for a log: KEY=VALUE overrides with a secret-looking key masked, and
    token-shaped strings and URL credentials in any argument."""
    def one(a: str) -> str:
        key, eq, _ = a.partition("=")
        if eq and _SECRET_KEY.search(key.rsplit(".", 1)[-1].lstrip("-")):
            return f"{key}={REDACTED}"
        return redact_text(a)
    return " ".join(one(str(a)) for a in args)


# user:password@ in a URL's authority, with a password (a bare `git@` is a login name, not a secret).
# A password of stars only is a mask (pip logs `https://user:****@index`), not a password.
_URL_PASSWORD = re.compile(r"://[^/\s:@]+:(?!\*+@)[^/\s]+@")
# A PEM private key (RSA, EC, OpenSSH, PKCS#8, encrypted) or an ASCII-armoured PGP secret key
# ("PGP PRIVATE KEY BLOCK"): literal, as JSON holds it ("...KEY-----\n"), or base64-encoded as
# kubeconfig's client-key-data holds it ("LS0tLS1CRUdJTi..." is "-----BEGIN").
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----")
# ...with a key body after it (optional `Proc-Type:`/`Version:` header lines; JSON writes newlines
# as \n): a README that quotes the header alone holds no key.
_PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----(?:\s|\\n)*"
                                r"(?:[A-Za-z-]+:[^\n\\]*(?:\s|\\n)+)*[A-Za-z0-9+/=]{40,}")
_BASE64_PEM = re.compile(r"LS0tLS1CRUdJT[A-Za-z0-9+/]{20,}")
# A PuTTY private key (.ppk, any version) under any name: its header, then the key's lines.
_PUTTY_KEY = re.compile(r"^PuTTY-User-Key-File-\d+:.{0,8000}?^Private-Lines: *\d+\s+[A-Za-z0-9+/=]{40,}",
                        re.M | re.S)
# An age secret key (`age-keygen`'s `keys.txt`): its prefix, then 58 characters of bech32 in upper case.
_AGE_KEY = re.compile(r"\bAGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}\b")
# Cheap literal markers: a file is run through the regexes above only where one of them occurs
# (a bytes search runs at memory speed, so every file that travels can be read in full).
KEY_MARKERS = (b"-----BEGIN ", b"LS0tLS1CRUdJT", b"PuTTY-User-Key-File-", b"AGE-SECRET-KEY-1")
# Binary secret containers by their first bytes, whatever their names: KeePass 1.x/2.x databases,
# Java keystores (JKS, JCEKS), PKCS#12 (.p12/.pfx: DER version 3 then a pkcs7-data/signedData
# ContentInfo), an exported OpenPGP secret key (`gpg --export-secret-keys`: a secret-key packet,
# tag 5, version 4-6, then a creation time and a public-key algorithm id).
_DER_LEN = rb"(?:[\x00-\x80]|\x81.|\x82..|\x83...|\x84....)"
_CONTAINERS = (
    (re.compile(rb"\A\x03\xd9\xa2\x9a[\x65-\x67]\xfb\x4b\xb5"), "a KeePass database"),
    (re.compile(rb"\A(?:\xfe\xed\xfe\xed|\xce\xce\xce\xce)\x00\x00\x00[\x01\x02]"), "a Java keystore"),
    (re.compile(rb"\A\x30" + _DER_LEN + rb"\x02\x01\x03\x30" + _DER_LEN +
                rb"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07[\x01\x02]", re.S), "a PKCS#12 key store"),
    (re.compile(rb"\A(?:\x94.|\x95..|\x96....|\xc5(?:[\x00-\xbf]|[\xc0-\xdf].|\xff....))[\x04-\x06]"
                rb"....[\x01-\x03\x10-\x16\x19-\x1c]", re.S), "an OpenPGP secret key"),
)
# Google credential files (a service-account key, `gcloud auth application-default login`'s file)
# under any name: their "type" says what they are.
_GOOGLE_CREDENTIALS = re.compile(r'"type"\s*:\s*"(?:service_account|authorized_user)"')
# `KEY: value` (YAML), `KEY = value` (INI, TOML, properties), `KEY=value` (.env, `export KEY=...`), a
# YAML list item `- KEY: value`; and "key": "value" anywhere in JSON, one line or many.
_ASSIGNMENT = re.compile(r"^[ \t]*(?:export[ \t]+|-[ \t]+)?[\"']?([A-Za-z0-9_.-]{1,100})[\"']?[ \t]*[:=][ \t]*(.*)$",
                         re.M)
# Shell scripts set variables as `X=v`, `export X=v`, `declare -x X=v`, `local x=v`, `set X=v` (cmd),
# `$X = "v"` / `$env:X = "v"` (PowerShell), or with a space: `set -gx X v` (fish), `setenv X v` (csh).
_SHELL_ASSIGNMENT = re.compile(r"^[ \t]*(?:(?:export|declare|typeset|local|readonly|set)(?:[ \t]+-[A-Za-z]+)*[ \t]+)?"
                               r"(?:\$env:|\$)?([A-Za-z_][A-Za-z0-9_]{0,99})[ \t]*=[ \t]*(.*)$", re.M)
_SHELL_SET = re.compile(r"^[ \t]*(?:set(?:[ \t]+-[A-Za-z]+)*|setenv)[ \t]+([A-Za-z_][A-Za-z0-9_]{0,99})[ \t]+(\S.*)$",
                        re.M)
_JSON_PAIR = re.compile(r'"([A-Za-z0-9_.-]{1,100})"\s*:\s*"((?:[^"\\\n]|\\.)*)"')
# <password>v</password> (Maven's settings.xml, .NET's web.config): in XML and .config files, an
# element named as a credential (`keystorePassword`, `apiToken`), but not a bare <token> (a word of a
# corpus: `<token>Paris</token>`).
_XML_ELEMENT = re.compile(r"<([A-Za-z_][A-Za-z0-9_.-]{0,99})>([^<>\n]{1,500})</\1>")
# In a file, a key that holds a credential ends in the secret word (`hf_token`, `client_secret`,
# `AWS_SECRET_ACCESS_KEY`, "private_key"), where a key that only mentions one does not
# (`token_classification` in peft-ray's own JSON Schema); `PrivateKey = ` is WireGuard's.
# `PGPASSWORD`, `authToken` and `clientsecret` run the words together; `pwd` stands alone.
_SECRET_KEY_END = re.compile(r"(?:(?:^|[_.-])(?:api[_-]?key|access[_-]?key|secret[_-]?key|credentials?|private[_-]?key|"
                             r"pwd)|token|secret|passw(?:or)?d)$", re.I)
# `auth` (a Docker registry's login: base64 of user:password) and `Authorization` (a header) as whole
# keys hold a credential only when the value is one: `Basic <base64>`, or base64 of `user:password`
# (`auth: Kerberos`, `auth: application-default` name a mode). A token is found by its shape.
_AUTH_KEY = re.compile(r"auth(?:orization)?", re.I)
_BASIC = re.compile(r"Basic\s+[A-Za-z0-9+/]{4,}={0,2}")
_PRIVATE_KEY_NAME = re.compile(r"private[_-]?key", re.I)
# A tokenizer's special tokens (`pad_token: "[PAD]"`, `"eos_token": "</s>"`) are model config, not
# credentials: every Hugging Face model folder holds them, and a model folder may travel with a job.
# Nor are fields about a credential rather than holding it (`pad_token_id`, `token_dim`, `token_path`,
# `secret_name`).
_NOT_SECRET_KEY = re.compile(r"(?:^|[_.-])(?:bos|eos|unk|sep|pad|cls|mask|special|decoder_start|start|end)_tokens?"
                             r"(?:$|[_.-])|[_.-](?:id|ids|dim|len|length|size|count|num|type|path|file|dir|name|"
                             r"url|uri|env|var|expiry|expires|ttl)$", re.I)
# Values that stand for a credential without being one: empty, a number or boolean, a reference to
# another variable, template or file (${X}, $X, {{ x }}, %(x)s, %X% and %1 in batch files,
# <your-token>, ~/.ssh/key), masks (xxx, ***, ...) and the usual fillers. An unquoted value with a
# space in it is prose ("password: see the wiki"), not a secret.
_PLACEHOLDER = re.compile(r"(?:[-+]?[0-9][0-9_.eE+-]*|true|false|yes|no|on|off|null|none|nil|~|~/.*|\.\.?/.*|/.*|"
                          r"[A-Za-z]:\\.*|.*\.(?:pem|key|json|p12|pfx|crt|txt)|"   # paths: ssh_private_key: /home/a/k.pem
                          r"anon|anonymous|default|google_default|cloud|browser|"   # gcsfs's token modes

                          r"\$.*|\{\{.*|%\(.*|%[A-Za-z_][A-Za-z0-9_]*%.*|%~?[0-9*].*|<.*>|\[.*\]|\{.*|x+|\*+.*|\.+|-+|.*redacted.*|changeme|change[_-]me|"
                          r"placeholder|todo|tbd|secret|password|token|your[_-].*|my[_-](?:token|secret|password|key))",
                          re.I)


def secret_container(head: bytes) -> str:
    """What binary secret container a file's first bytes open ("" if none)."""
    return next((what for magic, what in _CONTAINERS if magic.match(head)), "")


def holds_private_key(text: str) -> bool:
    """Whether text holds a PEM/PGP private key block, literal or base64-encoded (kubeconfig), a
    PuTTY private key or an age secret key."""
    if _PRIVATE_KEY_BLOCK.search(text) or _PUTTY_KEY.search(text) or _AGE_KEY.search(text):
        return True
    for blob in _BASE64_PEM.findall(text):
        try:
            decoded = base64.b64decode(blob[: len(blob) // 4 * 4]).decode("ascii", errors="ignore")
        except ValueError:
            continue
        if _PRIVATE_KEY_BLOCK.search(decoded):
            return True
    return False


def holds_token(text: str) -> bool:
    """Whether a text holds a token-shaped string (hf_..., ghp_..., AKIA..., sk-..., a JWT): what
    source and notebooks are searched for (a URL password or a `password:` line is too often an
    example there)."""
    return bool(_SECRET_VALUE.search(text))


# A netrc entry under any name (curl's, git's and pip's login file is often kept as `hosts` or
# `login.txt`): at a line's start `machine HOST` (or `default`), netrc's `login`/`account`/`port`
# pairs, then `password VALUE`, on one line or several. netrc's words are lower case, and VALUE must
# look like a password (_secret_setting), so "machine learning password reset" is prose.
_NETRC = re.compile(r"^[ \t]*(?:machine[ \t]+\S+|default)(?:\s+(?:login|account|port)\s+\S+)*\s+password\s+(\S+)",
                    re.M)


def _credential_shape(text: str) -> str:
    """A credential recognisable by its shape alone ("" if none): a token-shaped string, a URL with
    a password (a pip index, a proxy, a git remote), a Google credentials file, a netrc entry with a
    password, a private key."""
    if _SECRET_VALUE.search(text):
        return "a token-shaped value"
    if _URL_PASSWORD.search(text):
        return "a URL with a password"
    if _GOOGLE_CREDENTIALS.search(text):
        return "a Google credentials file"
    if any(_secret_setting("password", value, True) for value in _NETRC.findall(text)):
        return "a netrc login with a password"
    return "a private key" if holds_private_key(text) else ""


# A JSON array of rows (objects, strings, numbers, literals, arrays) opens so, after an optional
# byte-order mark. Only asked of JSON files: TOML and INI sections open with brackets too
# (`["server"]`, `[0]`, `[[a.b]]`), and those files are settings.
_JSON_ROWS = re.compile(r'\ufeff?\s*\[\s*(?:[{"0-9tfn-]|\[\s*[\[{"0-9tfn\]-])')
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def is_json_rows(head: str, name: str = ".json") -> bool:
    """Whether a JSON file (by `name`'s suffix) opening with `head` is an array: data (rows), not
    settings ("token": "EU")."""
    return name.lower().endswith(JSON_SUFFIXES) and bool(_JSON_ROWS.match(head))


def holds_credentials(text: str, rows: bool = False) -> str:
    """What in a config file's text is a credential ("" if nothing): a credential by its shape, or a
    secret-looking key (as for --env names) set to a real value (named, its value never). `rows`:
    the file is a JSON array of rows (is_json_rows, decided once from its opening): data, whose
    "token" fields are words."""
    shape = _credential_shape(text)
    if shape:
        return shape
    if rows:
        return ""
    pairs = [(k, v, True) for k, v in _JSON_PAIR.findall(text)]
    pairs += [(k, *_unquoted(v)) for k, v in _ASSIGNMENT.findall(text)]
    return next((f"key {key!r}" for key, value, quoted in pairs if _secret_setting(key, value, quoted)), "")


# A key export's header: the AWS console's `Access key ID,Secret access key` (and IAM's credentials.csv
# with `User name,Password,...`), or any column named as a secret in full.
_TABLE_SECRET_COLUMN = re.compile(r"^\s*\"?(?:secret[ _]access[ _]key|password|passwd|api[ _]key|secret[ _]key|"
                                  r"client[ _]secret|private[ _]key|access[ _]token|refresh[ _]token|auth[ _]token)"
                                  r"\"?\s*$", re.I)


def holds_xml_credentials(text: str) -> str:
    """What in an XML or .config file is a credential ("" if nothing): what a settings file holds
    (holds_credentials), or an element named as a credential with a real value (`<password>` in
    Maven's settings.xml, `<apiToken>`), a bare <token> excepted."""
    found = holds_credentials(text)
    if found:
        return found
    return next((f"element <{k}>" for k, v in _XML_ELEMENT.findall(text)
                 if k.lower() != "token" and _secret_setting(k, v, True)), "")


def _is_login(value: str) -> bool:
    """Whether a value is base64 of `user:password` (a Docker registry's `auth`)."""
    if not re.fullmatch(r"[A-Za-z0-9+/]{8,}={0,2}", value):
        return False
    try:
        text = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except ValueError:
        return False
    user, sep, password = text.partition(":")
    return bool(sep and user and password and text.isprintable())


def holds_table_credentials(text: str, header: bool = True) -> str:
    """What in a table's text (CSV, TSV) is a credential ("" if nothing): a credential by its shape, or
    (`header`: the piece starts with the file's header) a column named as a secret with a real value
    under it. Its other cells are data, whose words ("token", "password") mean nothing."""
    shape = _credential_shape(text)
    if shape or not header:
        return shape
    lines = text.lstrip("\ufeff").splitlines()
    if len(lines) < 2:
        return ""
    sep = "\t" if lines[0].count("\t") > lines[0].count(",") else ","
    head, first = lines[0].split(sep), lines[1].split(sep)
    for name, value in zip(head, first):
        if _TABLE_SECRET_COLUMN.match(name) and _secret_setting("secret", value.strip().strip('"'), True):
            return f"a {name.strip().strip(chr(34))!r} column"
    return ""


# An environment variable set in a log's line, anywhere in it (logs prefix lines with times and
# levels; `env` and `set -x` print `+ export X=v`; a diff `+X=v`): `NAME=value`, `NAME: value`,
# "NAME": "value" (a run record's env). Only upper-case names count: a log's prose and a data row's
# fields (`token`, `password`) are words, and an environment variable is how a secret reaches a job.
_ENV_SETTING = re.compile(r"(?<![A-Za-z0-9_$])[\"']?([A-Z][A-Z0-9_]{0,99})[\"']?[ \t]*[:=][ \t]*"
                          r"(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;}\]\"']+)")


# A JSON Lines record's key that names an environment variable, with a string value: `"HF_TOKEN": "..."`
# in a run record's env. Not quoted inside another string (a data row's text quoting one is text).
_JSON_ENV_KEY = re.compile(r'(?<!\\)"([A-Z][A-Z0-9_]{0,99})"[ \t]*:[ \t]*"((?:[^"\\\n]|\\.)*)"')


def holds_record_credentials(text: str) -> str:
    """What in JSON Lines text (.jsonl, .ndjson: peft-ray's data format, and run records) is a
    credential ("" if nothing): a credential by its shape, or an upper-case key named as a secret
    with a real value (a record of a job's environment). A data row's words are data: a spam set's
    "your PASSWORD: qwerty123" is text, not a login."""
    shape = _credential_shape(text)
    if shape:
        return shape
    return next((f"variable {key!r}" for key, value in _JSON_ENV_KEY.findall(text)
                 if _secret_setting(key, value, True)), "")


def holds_log_credentials(text: str) -> str:
    """What in a log's or a diff's text (.log, .out, .err, .diff, ...) is a credential ("" if
    nothing): a credential by its shape, or a secret-looking environment variable set to a real value
    (`export HF_TOKEN=...` in a nohup.out, `AWS_SECRET_ACCESS_KEY=...` printed by `env`). A line that
    only mentions a password is not."""
    shape = _credential_shape(text)
    if shape:
        return shape
    pairs = [(k, *_unquoted(v)) for k, v in _ENV_SETTING.findall(text)]
    return next((f"variable {key!r}" for key, value, quoted in pairs if _secret_setting(key, value, quoted)), "")


def holds_shell_credentials(text: str) -> str:
    """What in a shell script's text is a credential ("" if nothing): a credential by its shape, or
    a secret-looking variable set to a real value (`export HF_TOKEN=...`; `TOKEN=$(cat f)` is not)."""
    shape = _credential_shape(text)
    if shape:
        return shape
    pairs = [(k, *_unquoted(v)) for rx in (_SHELL_ASSIGNMENT, _SHELL_SET) for k, v in rx.findall(text)]
    return next((f"variable {key!r}" for key, value, quoted in pairs if _secret_setting(key, value, quoted)), "")


def _unquoted(raw: str) -> Tuple[str, bool]:
    """An assignment's value without its quotes, trailing comma or comment, and whether it was quoted."""
    raw = raw.strip().rstrip(",").strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1], True
    return re.split(r"\s+[#;]", raw, maxsplit=1)[0].strip(), False


def _secret_setting(key: str, value: str, quoted: bool) -> bool:
    """Whether KEY=value sets a credential: a secret-looking key (not a tokenizer's or a reference's
    field) with a real value (not empty, a number, a placeholder or prose)."""
    if _AUTH_KEY.fullmatch(key):
        return bool(_BASIC.fullmatch(value.strip())) or _is_login(value.strip())
    if not (_SECRET_KEY_END.search(key) or _PRIVATE_KEY_NAME.fullmatch(key)) or _NOT_SECRET_KEY.search(key):
        return False
    value = value.strip()
    if not value or _PLACEHOLDER.fullmatch(value) or not re.search(r"[A-Za-z0-9]", value):
        return False
    if not (quoted or not re.search(r"\s", value)):
        return False
    # A secret has a digit, mixed case, a symbol or length; a lower-case word is a setting's name
    # (`label_token: positive`), not a password.
    return bool(re.search(r"[0-9]|[^A-Za-z0-9\s]", value) or (value.lower() != value and value.upper() != value)
                or len(value) >= 20)


def looks_secret(name: str, value: str) -> bool:
    """Whether NAME=value would put a credential in plain sight (a dashboard, a log)."""
    return bool(value) and bool(_SECRET_KEY.search(name) or _SECRET_VALUE.search(value)
                                or _URL_CREDENTIALS.search(value))


@dataclass(frozen=True)
class Trust:
    """What the command line allows. An adapter's peft_ray.json is a file someone else may
    have written, so the job it records never turns these on by itself."""

    remote_code: bool = False            # --trust-remote-code: the base model's own Python (auto_map)
    pickle: bool = False                 # --allow-pickle: pickle-only (.bin/.pt) base weights
    base_model: Optional[str] = None     # --base-model: this machine's copy of the recorded base model


def trust_flags(command):
    """--trust-remote-code / --allow-pickle for commands that load a model from a recorded job
    (eval, predict, export): only the person running the command can turn these on."""
    import click

    def _base_model(ctx, param, value):
        from peft_ray.storage.paths import fits_filesystem

        if value is None:
            return None
        if not value.strip():
            raise click.BadParameter("is empty; name a folder or a hub id in the local cache")
        try:
            return fits_filesystem(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    command = click.option("--base-model", "base_model", default=None, metavar="PATH", callback=_base_model,
                           help="This machine's copy of the adapter's base model (a folder, or a hub id in the "
                                "local cache), where the one its run recorded is not here. The adapter's "
                                "tensors are checked against it as they load.")(command)
    command = click.option("--allow-pickle", is_flag=True,
                           help="Allow the base model's pickle-only weights (.bin/.pt can run code).")(command)
    return click.option("--trust-remote-code", is_flag=True,
                        help="Run the base model's own Python (config auto_map), as recorded in the "
                             "adapter's job. Only for adapters and models you trust.")(command)


PICKLED = "Ray Tune's saved state is pickled (loading it can run code)"


def check_own_pickles(folder, what: str, why: str = PICKLED) -> None:
    """Refuse to unpickle state someone else could have written: every file under `folder`
    must belong to this user and be writable by nobody else. (Ray Tune's experiment state is
    cloudpickled, and unpickling runs code; there is no tensors-only loader for it.) `why`: what
    a planted file there would do."""
    import os
    import stat
    from pathlib import Path

    from peft_ray.errors import CheckpointError

    for p in [Path(folder), *Path(folder).rglob("*")]:
        st = p.lstat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise CheckpointError(
                f"{what}: refusing to resume from {p}: it is owned by another user or writable by others, and "
                f"{why}. Resume only from storage nobody else can write, or start the search again without "
                "--resume")
