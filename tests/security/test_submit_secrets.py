"""Secrets stay on the laptop: submit refuses credential files, secret --env values and
overrides; --dry-run lists what travels; redaction covers URL credentials."""

from __future__ import annotations

import base64
import re

import pytest
import yaml
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import JobError
from peft_ray.security import REDACTED, redact, redact_text
from peft_ray.submit.client import call
from peft_ray.submit.job import check_overrides, parse_env
from peft_ray.submit.secret_files import is_secret
from peft_ray.submit.upload import plan_upload
from tests.conftest import job_dict

SECRETS = [".env", ".aws/credentials", ".ssh/id_rsa", ".netrc", "gcp-key.json", "infra/terraform.tfstate",
           "deploy/server.pem", "conf/.env.production", ".cache/huggingface/token", "home/.cache/huggingface/token",
           ".ray/auth_token", ".kaggle/kaggle.json", ".config/gh/hosts.yml", ".ENV", ".Env.local",
           ".cache/huggingface/stored_tokens", ".envrc", ".streamlit/secrets.toml", ".bash_history",
           "client_secret_1234.apps.googleusercontent.com.json", ".config/rclone/rclone.conf", ".my.cnf"]


def _working_dir(tmp_path, tiny_bert, tiny_data):
    wd = tmp_path / "repo"
    (wd / "jobs").mkdir(parents=True)
    job = wd / "jobs" / "j.yaml"
    job.write_text(yaml.safe_dump(job_dict(tiny_bert, tiny_data, "/tmp/peft-ray-out-unused")))
    return wd, job


@pytest.mark.parametrize("rel", SECRETS)
def test_secret_files_are_refused(tmp_path, rel):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text("secret")
    (tmp_path / "train.py").write_text("ok")
    with pytest.raises(JobError, match=f"refusing to upload what looks like credentials: {rel}.*--include"):
        plan_upload(tmp_path)


def test_include_lets_a_named_file_through_and_gitignore_is_honoured(tmp_path):
    (tmp_path / ".env").write_text("A=1")
    (tmp_path / ".gitignore").write_text("private/\n")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "notes.txt").write_text("x")
    plan = plan_upload(tmp_path, include=[".env"])
    assert sorted(map(plan.relative, plan.files)) == [".env", ".gitignore"]


def test_links_out_of_the_working_dir_are_judged_by_their_target(tmp_path):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("token")
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text("hf_token")
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "train.py").write_text("ok")
    (wd / "cluster.txt").symlink_to(home / ".ray" / "auth_token")
    with pytest.raises(JobError, match=r"cluster.txt -> .*\.ray/auth_token"):
        plan_upload(wd)
    (wd / "cluster.txt").unlink()
    (wd / "hf").symlink_to(home / ".cache" / "huggingface")
    with pytest.raises(JobError, match=r"hf/token -> "):
        plan_upload(wd)
    (wd / "hf").unlink()
    (wd / "data").mkdir()
    (wd / "data" / "notes.txt").symlink_to(wd / "train.py")   # a link inside the working dir is just a file
    assert "train.py" in plan_upload(wd).listing()


def test_ordinary_files_are_not_secrets():
    assert not any(map(is_secret, ["peft_ray/security.py", "jobs/default.yaml", "docs/keys.md", "tokenizer.json",
                                   "data/chat_history/train.parquet", ".cache/huggingface/hub/x/config.json"]))


def test_the_ray_token_never_travels_even_under_another_name(tmp_path, monkeypatch):
    wd = tmp_path / "wd"
    (wd / "cluster").mkdir(parents=True)
    (wd / "train.py").write_text("ok")
    token = wd / "cluster" / "ray_token.txt"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    with pytest.raises(JobError, match="refusing to upload the Ray cluster token: cluster/ray_token.txt"):
        plan_upload(wd, include=["cluster/*"])                     # not even with --include
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    token.unlink()
    (wd / "notes.md").write_text("token: 0123456789abcdef0123456789abcdef")   # a copy of it, from the env
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0123456789abcdef0123456789abcdef")
    with pytest.raises(JobError, match="Ray cluster token: notes.md"):
        plan_upload(wd)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "another-token-0000000000000000000")
    assert "notes.md" in plan_upload(wd).listing()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "dev")                # too short to look for in files' text
    (wd / "README.md").write_text("# developer notes")
    assert "README.md" in plan_upload(wd).listing()


def test_dry_run_lists_files_and_total(tmp_path, tiny_bert, tiny_data):
    wd, job = _working_dir(tmp_path, tiny_bert, tiny_data)
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(wd), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "files to upload:" in r.output and "jobs/j.yaml" in r.output and "total (1 files)" in r.output


@pytest.mark.parametrize("pair", ["HF_TOKEN=abc", "AWS_SECRET_ACCESS_KEY=xyz", "X=hf_" + "a" * 30,
                                  "PROXY=http://user:pass@proxy:3128"])
def test_secret_env_values_are_refused(pair):
    with pytest.raises(JobError, match="looks like a secret.*dashboard.*node"):
        parse_env([pair])


def test_plain_env_values_pass():
    assert parse_env(["TOKENIZERS_PARALLELISM=false", "OMP_NUM_THREADS=2"]) == {
        "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}


def test_secret_overrides_are_refused_and_not_echoed():
    with pytest.raises(JobError) as e:
        check_overrides(["train.max_steps=2", "output.dir=s3://AKIA" "XXXXXXXXXXXXXXXX:secret@bucket/runs"])
    assert "secret@" not in str(e.value) and "entrypoint" in str(e.value)


def test_url_credentials_are_redacted():
    assert redact_text("http://user:pass@host/x") == f"http://{REDACTED}@host/x"
    assert redact({"output": {"dir": "https://tok@h/p"}}) == {"output": {"dir": f"https://{REDACTED}@h/p"}}
    assert redact_text("s3://bucket/a@b") == "s3://bucket/a@b"          # an @ after the host is not a credential
    assert redact_text("http://alice:p@ss-word@10.0.0.5:8265") == f"http://{REDACTED}@10.0.0.5:8265"
    assert redact_text("\x1b[4mhttps://u:p@h/") == f"\x1b[4mhttps://{REDACTED}@h/"   # after an ANSI code's digit


def test_the_command_line_in_train_log_is_redacted():
    from peft_ray.security import redact_command

    line = redact_command(["peft-ray", "train", "j.yaml", "scaling.address=http://alice:hunter2@h:6379",
                           "model.hf_token=abc123", "data.root=/data/x"])
    assert line == (f"peft-ray train j.yaml scaling.address=http://{REDACTED}@h:6379 model.hf_token={REDACTED} "
                    "data.root=/data/x")


def test_no_available_agent_is_retried_then_explained():
    attempts, warned = [], []

    def flaky():
        attempts.append(1)
        if len(attempts) < 2:
            raise RuntimeError("Request failed with status code 500: No available agent to submit job")
        return "job-1"

    assert call(flaky, warn=warned.append, wait_s=10) == "job-1" and warned
    with pytest.raises(JobError, match="did not come up within 0s"):
        call(lambda: (_ for _ in ()).throw(RuntimeError("No available agent")), warn=warned.append, wait_s=0)


@pytest.mark.parametrize("req", ["mypkg @ git+https://ghp_" "abcdefghijklmnopqrstuvwxyz0123@github.com/o/p.git",
                                 "--extra-index-url https://alice:S3cretPass@pypi.corp.example/simple"])
def test_pip_entries_with_credentials_are_refused(req):
    from peft_ray.submit.job import check_pip

    with pytest.raises(JobError, match="--pip .*holds a credential") as e:
        check_pip([req])
    assert "S3cretPass" not in str(e.value) and "ghp_abc" not in str(e.value)
    check_pip(["peft==0.21.0", "git+https://github.com/o/p.git"])   # plain requirements pass


def test_pip_and_tool_configs_and_credentials_in_config_text_are_refused(tmp_path):
    """The --pip refusal sends index credentials to pip.conf: pip.conf must not travel either."""
    (tmp_path / "train.py").write_text("ok")
    for rel in ["pip.conf", ".config/pip/pip.conf", "wandb/settings", ".condarc"]:
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("[global]\n")
        with pytest.raises(JobError, match="looks like credentials: " + re.escape(rel)):
            plan_upload(tmp_path)
        f.unlink()
    (tmp_path / "indexes.txt").write_text("extra-index-url = https://deploy:glpat-SECRET123@gitlab.example/simple\n")
    with pytest.raises(JobError, match="looks like credentials: indexes.txt"):
        plan_upload(tmp_path)
    assert "indexes.txt" in plan_upload(tmp_path, include=["indexes.txt"]).listing()
    (tmp_path / "indexes.txt").unlink()
    (tmp_path / "requirements.txt").write_text("git+ssh://git@github.com/org/repo.git\n")   # a login, no password
    (tmp_path / "test_auth.py").write_text("URL = 'http://alice:hunter2@proxy'\n")           # code is not read
    assert "requirements.txt" in plan_upload(tmp_path).listing()


def test_a_link_out_of_the_working_dir_needs_include(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("private")
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "notes.txt").symlink_to(tmp_path / "elsewhere" / "notes.txt")
    with pytest.raises(JobError, match=r"outside the working dir through links: notes.txt -> .*--include notes.txt\)"):
        plan_upload(wd)
    assert "notes.txt ->" in plan_upload(wd, include=["notes.txt"]).listing()
    (wd / "notes.txt").unlink()
    (wd / "data").mkdir()
    (wd / "data" / "pip.conf").write_text("[global]\n")
    (wd / "data" / "sst2").symlink_to(tmp_path / "elsewhere")          # a linked folder: only it is named
    with pytest.raises(JobError, match=r"--include 'data/sst2/\*'"):
        plan_upload(wd, include=["data/pip.conf"])
    with pytest.raises(JobError, match="looks like credentials: data/pip.conf"):
        plan_upload(wd, include=["data/sst2/*"])                       # the suggested pattern lets no secret by


def test_a_link_under_a_harmless_name_never_carries_a_secret(tmp_path, tiny_bert, tiny_data):
    """Ray zips a link's target under the link's name and the target under its own: every name is
    checked (with the name of what it points at) and listed, so `zsettings.txt -> .env` is the .env."""
    wd, job = _working_dir(tmp_path, tiny_bert, tiny_data)
    (wd / ".env").write_text("DB_PASSWORD=hunter2\nAPI_KEY=abc\n")      # no token shape: only names can tell
    (wd / "zsettings.txt").symlink_to(".env")
    (wd / "main.py").write_text("print(1)\n")
    with pytest.raises(JobError, match=r"looks like credentials: \.env, zsettings\.txt -> \.env\."):
        plan_upload(wd)
    (wd / ".gitignore").write_text(".env\n")                            # the .env stays, its content travels
    with pytest.raises(JobError, match=r"looks like credentials: zsettings\.txt -> \.env\."):
        plan_upload(wd)
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(wd), "--dry-run"])
    assert r.exit_code != 0 and "zsettings.txt -> .env" in r.output
    assert "zsettings.txt ->" in plan_upload(wd, include=["zsettings.txt"]).listing()   # named: it travels
    (wd / "zsettings.txt").unlink()
    (wd / "alias.py").symlink_to("main.py")                             # a harmless link: both names travel
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(wd), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "alias.py -> main.py" in r.output and re.search(r"  main\.py\n", r.output)
    assert "(4 files," in r.output and "total (4 files)" in r.output     # .gitignore, alias.py, job, main.py


# Built from parts so that no file of this repository holds a key block itself (a PEM private key is
# refused in any small file, this one included).
PEM = ("-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
       "-----END OPENSSH PRIVATE KEY-----\n")
BASE64_PEM = base64.b64encode(PEM.replace("OPENSSH ", "RSA ").encode()).decode()
CREDENTIALS = {
    "deploy_key": PEM,
    "notes/key.py": PEM,                                                 # a key block, whatever the suffix
    "gcp-sa.json": '{"type": "service_account", "project_id": "p", "private_key_id": "0a1b",\n'
                   ' "private_key": "' + PEM.replace("\n", "\\n") + '",\n'
                   ' "client_email": "x@p.iam.gserviceaccount.com"}\n',
    "application_default_credentials.json": '{"client_id": "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.'
                                            'googleusercontent.com", "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",'
                                            ' "refresh_token": "1//0gLx3Nq7w", "type": "authorized_user"}',
    "admin.conf": "users:\n- name: admin\n  user:\n    token: eyJhbGciOiJSUzI1NiIsImtpZCI6IkRfc2VydmljZSJ9."
                  "eyJzdWIiOiJ4In0\n",
    "cluster/kube.yaml": f"users:\n- name: admin\n  user:\n    client-key-data: {BASE64_PEM}\n",
    "config.yaml": "region: us-east-1\naws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    "settings.ini": "[db]\nhost = db.internal\npassword = hunter2   ; prod\n",
    "data/notes.txt": "export DB_PASSWORD='correct horse battery staple'\n",
}


def _refused_unless_included(root, rel: str, content, why: str = "") -> None:
    """`rel` holding `content` beside a script: refused, naming it (and `why`, a pattern), until
    --include names it."""
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "main.py").write_text("print(1)\n")
    with pytest.raises(JobError, match=f"looks like credentials: {re.escape(rel)}{why}"):
        plan_upload(root)
    assert rel in plan_upload(root, include=[rel]).listing()


@pytest.mark.parametrize("rel", sorted(CREDENTIALS))
def test_credentials_under_ordinary_names_are_found_in_their_text(tmp_path, rel):
    _refused_unless_included(tmp_path, rel, CREDENTIALS[rel], " \\((a |key ).*\\)\\..*--include")


def test_ordinary_configs_model_folders_code_and_docs_are_not_credentials(tmp_path):
    """Tokenizers' special tokens, placeholders, references to other variables, prose, and passwords
    quoted in code and docs all travel: only real-looking values in config files, and token shapes
    anywhere in text (test_a_token_in_code_a_notebook_or_notes_is_refused), stop."""
    from tests.conftest import make_tiny_bert

    make_tiny_bert(tmp_path / "models" / "tiny-bert")                    # tokenizer_config.json: pad_token, ...
    files = {
        "models/gpt/tokenizer_config.json": '{"eos_token": "<|endoftext|>", "pad_token": "[PAD]", "unk_token": "</s>",'
                                            ' "pad_token_id": 0, "model_max_length": 1024}',
        "models/gpt/adapter_config.json": '{"token_dim": 768, "num_virtual_tokens": 20, "auth_token": null}',
        "jobs/j.yaml": "model:\n  name_or_path: gpt2\n  hf_token: null\n  token_path: ~/.cache/huggingface/token\n",
        ".github/workflows/ci.yml": "env:\n  HF_TOKEN: ${{ secrets.HF_TOKEN }}\n  API_KEY: $API_KEY\n",
        "settings.yaml": 'password: "<your-password>"\napi_key: ""\ntoken: changeme\nsecret: xxxxxx\nsecret_name: db\n',
        "notes.txt": "Password: ask the on-call engineer\n",
        "docs/setup.md": "Put `password: hunter2` in ~/.pgpass; a key starts with -----BEGIN ... PRIVATE KEY-----\n",
        "tests/test_auth.py": "API_KEY = os.environ['API_KEY']\naws_secret_access_key = 'wJalrXUtnFEMI/K7MDENG'\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # the editor schema the README suggests keeping next to job files ("token_classification": {...$ref})
    from click.testing import CliRunner

    from peft_ray.cli import main
    assert CliRunner().invoke(main, ["schema", "-o", str(tmp_path / "jobs" / "peft-ray-job.schema.json")]).exit_code == 0
    listing = plan_upload(tmp_path).listing()
    assert all(rel in listing for rel in files) and "models/tiny-bert/tokenizer_config.json" in listing
    assert "jobs/peft-ray-job.schema.json" in listing


CODE_TOKENS = {
    "settings.py": 'HF_TOKEN = "hf_' 'aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"\n',
    "token.py": "GITHUB = 'ghp_" "abcdefghijklmnopqrstuvwxyz0123456789'\n",
    "nb/explore.ipynb": '{"cells": [{"source": ["os.environ[\'OPENAI_API_KEY\']=\'sk-' 'proj-abcdefghijklmnopqrstuvwx\'"]}]}',
    "NOTES.md": "the bot token is xoxb-" "1234-5678-abcdefghijkl\n",
}


@pytest.mark.parametrize("rel", sorted(CODE_TOKENS))
def test_a_token_in_code_a_notebook_or_notes_is_refused(tmp_path, rel):
    """A security-review finding: source, notebooks and docs were not read at all, so a token kept
    in settings.py or a notebook cell (how tokens most often leak) travelled to the cluster."""
    _refused_unless_included(tmp_path, rel, CODE_TOKENS[rel].encode(), " \\(a token-shaped value in its text\\)")


def test_this_repositorys_own_files_are_not_credentials():
    """`peft-ray submit` from a checkout of this repository must not refuse its own files: its tests
    and docs quote fake credentials (built from parts where a rule reads every file)."""
    import subprocess
    from pathlib import Path

    from peft_ray.submit.secret_files import holds_credentials_file

    root = Path(__file__).resolve().parents[2]
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    found = [rel for rel in tracked.splitlines()
             if (root / rel).is_file() and (is_secret(rel) or holds_credentials_file(root / rel))]
    assert found == []


@pytest.mark.parametrize("text", [
    "auth:\n  ssh_user: ubuntu\n  ssh_private_key: /home/alice/.ssh/ray-us-west-2.pem\n",   # Ray's cluster.yaml
    '[{"token": "EU", "tag": "B-ORG"}, {"token": "rejects", "tag": "O"}]',                  # a JSON data file
    "storage_options:\n  token: anon\n", "token: google_default\n", "label_token: positive\n",
    '{"credentials": "default"}', "A key file starts with -----BEGIN OPENSSH PRIVATE KEY-----\n",
    '{"secret": "blue"}'])
def test_paths_modes_data_and_words_are_not_credentials(text):
    from peft_ray.security import holds_credentials

    assert holds_credentials(text) == ""


def _sparse(path, size=11 * 2**20):
    """A file of `size` bytes that uses no disk (over LARGE_FILE_BYTES: left out of the upload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def test_a_large_files_exclude_keeps_exactly_it_out_of_rays_zip(tmp_path):
    """Ray reads excludes as gitwildmatch: `/data[1].bin` unescaped is `data1.bin`, so the large file
    travelled and a small one stayed home. Ray's own _zip_files must zip exactly the plan's names."""
    import zipfile

    from ray._private.runtime_env.packaging import _zip_files

    wd = tmp_path / "wd"
    for rel in ["main.py", "data1.bin", "wx.bin", "!a.bin", "c\\d.bin"]:
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_text("small")
    large = ["data[1].bin", "w*?.bin", "#notes.bin", "!a.bin2", "c\\d.bin2", "sub/trail.bin  ", "sub/[ab].bin"]
    for rel in large:
        _sparse(wd / rel)
    plan = plan_upload(wd)
    assert sorted(rel for rel, _ in plan.dropped_large) == sorted(large)
    _zip_files(str(wd), plan.excludes, str(tmp_path / "pkg.zip"), include_gitignore=True)
    with zipfile.ZipFile(tmp_path / "pkg.zip") as z:
        zipped = {n for n in z.namelist() if not n.endswith("/")}
    assert zipped == set(plan.names) == {"main.py", "data1.bin", "wx.bin", "!a.bin", "c\\d.bin"}


def test_a_large_file_named_like_credentials_is_refused_not_just_left_out(tmp_path):
    (tmp_path / "main.py").write_text("print(1)\n")
    _sparse(tmp_path / "infra" / "prod[1].tfstate")
    with pytest.raises(JobError, match=r"looks like credentials: infra/prod\[1\]\.tfstate \(left out as large"):
        plan_upload(tmp_path)
    plan = plan_upload(tmp_path, include=["infra/*"])               # named: acknowledged, and still left out
    assert plan.dropped_large == [("infra/prod[1].tfstate", 11 * 2**20)] and "infra/prod\\[1\\].tfstate" in \
        plan.excludes[-1]


# Key formats beyond PEM, built from parts (every file this repository tracks is searched for keys).
_PGP_ARMOR = ("-----BEGIN " + "PGP PRIVATE KEY BLOCK-----\n\nlFgEaxS2JRYJKwYBBAHaRw8BAQdA8Tq+5VTMFPVTsiuoCMw0C/v4Zd"
              "HXX+gmucNl\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----\n")
_PUTTY = ("PuTTY-User-Key-File-" + "3: ssh-ed25519\nEncryption: none\nComment: k\nPublic-Lines: 2\n"
          "AAAAC3NzaC1lZDI1NTE5AAAAIDxSb3d0ZXN0a2V5\nAAAA\nPrivate-Lines: 1\n"
          "AAAAIGl0c2Fsb25nZW5vdWdocHJpdmF0ZWtleWJvZHk0MDBj\nPrivate-MAC: 00\n")
KEY_STORES = {                                    # name -> content; the first bytes are those of real files
    "keys/backup.txt": _PGP_ARMOR,                                    # gpg --export-secret-keys --armor
    "deploy/notes.md": _PUTTY,                                        # a PuTTY key under another name
    "exported.bin": b"\x94\x58\x04\x6b\x14\xb6\x25\x16\x09\x2b",      # gpg --export-secret-keys (ed25519)
    "vault.dat": b"\x03\xd9\xa2\x9a\x67\xfb\x4b\xb5\x01\x00",         # KeePass 2 (.kdbx)
    "store.bin": b"\xfe\xed\xfe\xed\x00\x00\x00\x02\x00\x00",         # keytool -storetype JKS
    "cert.bin": b"\x30\x82\x03\xc6\x02\x01\x03\x30\x82\x03\x70\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01",  # .p12
    "id.ppk": "x", "passwords.kdbx": "x", "server.jks": "x", "app.keystore": "x", ".gnupg/secring.gpg": "x",
    "home/secring.gpg": "x", "home/.password-store/aws.gpg": "x",
}


@pytest.mark.parametrize("rel", sorted(KEY_STORES))
def test_pgp_putty_keepass_and_java_key_stores_are_refused(tmp_path, rel):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    content = KEY_STORES[rel]
    (tmp_path / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "main.py").write_text("print(1)\n")
    with pytest.raises(JobError, match=f"looks like credentials: {re.escape(rel)}"):
        plan_upload(tmp_path)


def test_public_keys_and_ordinary_binaries_are_not_key_stores(tmp_path):
    files = {"keys/pub.asc": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEaxS2JRYJKwYBBAHaRw8BAQdA8Tq+5VTMFPVTs\n",
             "pub.gpg": b"\x98\x33\x04\x6b\x14\xb6\x25\x16", "model.safetensors": b"\x95\x01\x00\x00\x00\x00\x00\x00{}",
             "x.parquet": b"PAR1\x15\x04", "docs/putty.md": "Save it as PuTTY-User-Key-File-3 (a .ppk).\n"}
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert set(files) <= set(plan_upload(tmp_path).names)


_HF = "hf_" + "Ab3" * 10
SHELL_CREDENTIALS = {
    "setup_env.sh": f"#!/bin/bash\nset -euo pipefail\nexport HF_TOKEN={_HF}\n",
    "scripts/aws.sh": "export AWS_REGION=us-east-1\nexport AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY\n",
    "env.fish": "set -gx WANDB_API_KEY 0123456789abcdef0123456789abcdef01234567\n",
    "profile.ps1": '$env:DB_PASSWORD = "Tr0ub4dor&3"\n',
    "run.bat": "@echo off\nset DB_PASSWORD=Tr0ub4dor&3\npython train.py\n",
    "tools/.bashrc": "alias ll='ls -l'\ndeclare -x GITHUB_TOKEN='s3cr3t-value-0f-a-token'\n",
}


@pytest.mark.parametrize("rel", sorted(SHELL_CREDENTIALS))
def test_shell_scripts_that_set_credentials_are_refused(tmp_path, rel):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(SHELL_CREDENTIALS[rel])
    with pytest.raises(JobError, match=f"looks like credentials: {re.escape(rel)} \\((a |variable ).*\\)"):
        plan_upload(tmp_path)


def test_ordinary_shell_scripts_travel(tmp_path):
    (tmp_path / "run.sh").write_text(
        "#!/bin/bash\nset -euo pipefail\nexport HF_TOKEN=\"${HF_TOKEN:?set it on the node}\"\n"
        "TOKEN=$(cat ~/.token)\nexport TOKENIZERS_PARALLELISM=false\nMAX_TOKENS=512\nlocal secret_name=db\n"
        "read -rs PASSWORD\nPASSWORD=\"$1\"\nAPI_KEY=`vault read -field=key secret/x`\n"
        "python train.py --lr 3e-4 --password-file ~/.pw\n")
    (tmp_path / "env.fish").write_text("set -gx PATH $HOME/bin $PATH\nset -x HF_TOKEN $argv[1]\n")
    (tmp_path / "go.ps1").write_text("$password = Read-Host -AsSecureString\n$token = $env:HF_TOKEN\n")
    (tmp_path / "run.bat").write_text("set HF_TOKEN=%HF_TOKEN%\nset DB_PASSWORD=%1\nset API_KEY=%~2\n")   # a review finding
    assert {"run.sh", "env.fish", "go.ps1", "run.bat"} <= set(plan_upload(tmp_path).names)


def test_a_private_key_is_found_in_a_file_of_any_size_that_travels(tmp_path):
    """The key search once stopped at 64 KiB: an 80 KB kubeconfig with client-key-data travelled."""
    (tmp_path / "main.py").write_text("print(1)\n")
    kube = tmp_path / "cluster" / "config.yaml"
    kube.parent.mkdir()
    kube.write_text("clusters:\n" + "- name: c\n  cluster: {server: https://10.0.0.1}\n" * 2000 +
                    f"users:\n- name: admin\n  user:\n    client-key-data: {BASE64_PEM}\n")
    assert kube.stat().st_size > 80_000
    with pytest.raises(JobError, match=r"cluster/config.yaml \(a private key\)"):
        plan_upload(tmp_path)
    kube.unlink()
    notes = tmp_path / "notes.log"                  # 3 MiB, the key straddling the first 1 MiB chunk's end
    head = b"x" * (2**20 - 20)
    notes.write_bytes(head + PEM.encode() + b"y" * (2 * 2**20))
    with pytest.raises(JobError, match=r"notes.log \(a private key\)"):
        plan_upload(tmp_path)
    notes.write_bytes(head + b"-----BEGIN CERTIFICATE-----\n" + b"y" * (2 * 2**20))
    assert "notes.log" in plan_upload(tmp_path).names


@pytest.mark.parametrize("where", ["start", "piece-end", "middle", "end"])
def test_a_token_line_in_a_config_file_over_1_mib_is_found(tmp_path, where):
    """Left undone before: a config file over 1 MiB was only searched for keys, so a 2 MiB
    values.yaml with a token line travelled. Its text is now read whole, in pieces."""
    (tmp_path / "main.py").write_text("print(1)\n")
    filler = "- name: worker\n  replicas: 2\n" * 80_000            # about 2.4 MB of ordinary YAML
    secret = "hf_token: hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz12345678" + "\n"
    cut = {"start": 0, "piece-end": 2**20 - 20, "middle": len(filler) // 2 - 7, "end": len(filler)}[where]
    values = tmp_path / "values.yaml"
    values.write_text(filler[:cut] + secret + filler[cut:])
    assert values.stat().st_size > 2 * 2**20
    with pytest.raises(JobError, match=r"values.yaml \("):
        plan_upload(tmp_path)
    values.write_text(filler)
    assert "values.yaml" in plan_upload(tmp_path).names


def test_a_big_json_array_of_rows_is_data_in_every_piece(tmp_path):
    """A diff-review finding: reading big files in pieces judged "a JSON array is rows, not
    settings" per piece, so a 4 MB NER file with "token": "U.S." rows was refused, and a config
    whose last piece opened with a `[0, 1],` line was not searched there."""
    import json

    (tmp_path / "main.py").write_text("print(1)\n")
    words = ["U.S.", "Obama", "said", "3.5%", "New-York", "the"]
    rows = tmp_path / "ner_tokens.json"
    rows.write_text(json.dumps([{"sentence": i, "token": words[i % 6], "tag": "O"} for i in range(60_000)], indent=2))
    assert rows.stat().st_size > 2 * 2**20
    assert "ner_tokens.json" in plan_upload(tmp_path).names
    rows.unlink()
    config = tmp_path / "arr_cfg.json"
    config.write_text('{\n "matrix": [\n' + "".join(f"  [{i}, {i + 1}],\n" for i in range(200_000)) +
                      '  [0, 0]\n ],\n "hf_token": "Ab12!xyzQQ"\n}\n')
    assert config.stat().st_size > 2 * 2**20
    with pytest.raises(JobError, match=r"arr_cfg.json \(key 'hf_token'\)"):
        plan_upload(tmp_path)


def test_toml_arrays_of_tables_are_settings_not_rows(tmp_path):
    """A diff-review finding (older than the pieces): a TOML file opening with `[[servers]]` was taken
    for a JSON array of rows and never searched for secret settings."""
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "servers.toml").write_text('[[servers]]\nhost = "a"\ntoken = "Zx9!kLmN0pQ"\n')
    with pytest.raises(JobError, match=r"servers.toml \(key 'token'\)"):
        plan_upload(tmp_path)


@pytest.mark.parametrize("name,text", [
    ("quoted.toml", '["server"]\npassword = "hunter2-real-pass"\n'),
    ("quoted2.toml", '[ "prod" ]\napi_key = "abcd1234efgh5678"\n'),
    ("aot.toml", '[[ "a.b" ]]\ntoken = "Zx9!kLmN0pQ"\n'),
    ("digit.ini", "[0]\npassword = hunter2-real\n"),
    ("digitname.ini", "[2024-prod]\npassword = hunter2-real\n"),
    ("neg.cfg", "[-x]\npassword = hunter2-real\n"),
    ("settings.json.txt", '["x"]\npassword = "hunter2-real-pass"\n')])
def test_settings_files_whose_sections_open_like_json_are_searched(tmp_path, name, text):
    """A second diff-review finding (older than this session): `["server"]` or `[0]` opening a TOML/INI
    file was taken for a JSON array of rows, and its secrets travelled. Only JSON files can be rows."""
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / name).write_text(text)
    with pytest.raises(JobError, match=re.escape(name)):
        plan_upload(tmp_path)


@pytest.mark.parametrize("opening", ["\ufeff[", "[true, ", "[null, ", "[\n  "])
def test_json_rows_with_a_bom_or_a_literal_first_are_data(tmp_path, opening):
    """A second diff-review finding: a BOM, or `true`/`null` as the first value, made rows settings."""
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "rows.json").write_text(opening + '{"text": "a", "token": "EU-Zone-Alpha"}]\n', encoding="utf-8")
    assert "rows.json" in plan_upload(tmp_path).names
