"""`submit` and everyday credential files (a security review, then two reviews of its fixes): backups,
key exports, registry and package-manager logins, UTF-16 text, XML and .config settings, token shapes,
archives; and the data, code and words that must still travel."""

from __future__ import annotations

import pytest

from peft_ray.submit.upload import plan_upload
from tests.security.test_submit_secrets import _refused_unless_included


# A security review's everyday credential files that travelled: backups, key exports, registry and
# package-manager logins, UTF-16 text, Terraform, token formats the rules did not know, archives.
EVERYDAY = {
    "alice_accessKeys.csv": b"Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    "export.csv": b"Access key ID,Secret access key\nAKIAIOSFODNN7EXAMPLF,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    "users.csv": b"User name,Password,Console login link\nalice,Xy7!pqrs,https://x.signin.aws.amazon.com\n",
    "credentials.bak": b"[default]\nregion = eu-west-1\n",
    "settings.yaml.orig": b"db:\n  password: Hunter2-prod\n",
    "docker/config.json": b'{"auths": {"ghcr.io": {"auth": "YWxpY2U6Z2hwX2FiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6MDEyMzQ1"}}}\n',
    "ci/npmrc": b"//registry.npmjs.org/:_authToken=npm_" + b"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789\n",
    "notes.txt": ("HF_TOKEN=hf_" "AbCdEfGhIjKlMnOpQrStUvWxYz012345\n").encode("utf-16"),
    "pw.txt": "db_password = Hunter2xyz!\n".encode("utf-16-le"),
    "main.tf": b'provider "aws" {\n  region = "us-east-1"\n  secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"\n}\n',
    "db.sh": b"export PGPASSWORD=Hunter2xyz\n",
    "api.yaml": b'headers:\n  Authorization: "Bearer ' b'abcdefghijklmnopqrstuvwxyz0123456789"\n',
    "pay.yaml": b"stripe_key: sk_" + b"live_51HabcdefghijklmnopQR\n",
    "gh.txt": b"github_" + b"pat_11ABCDEFG0123456789_abcdefghijklmnop\n",
    "notify.yaml": b"webhook: https://hooks.slack.com/services/" b"T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX\n",
    "settings.xml": b"<settings><servers><server><id>x</id><password>Hunter2xyz</password></server></servers></settings>\n",
    "ssh-backup.tgz": b"\x1f\x8b\x08\x00" + bytes(60),
    "tool-1.0-py3-none-any.whl": b"PK\x03\x04" + bytes(60),   # a wheel once travelled from a repo's root
    # a second diff review: what the first fix's XML and auth rules let through
    "web.config": b"<configuration><password>S3cr3tPassw0rd!</password></configuration>\n",
    "app.xml": b"<app><apiToken>f8e7a6b5c4d3e2f1</apiToken></app>\n",
    "ks.xml": b"<ks><keystorePassword>S3cr3tPassw0rd!</keystorePassword></ks>\n",
    "reg/config.json": b'{"auths": {"r.io": {"auth": "Zm9vOmJhcg=="}}}\n',
    "slack.yaml": b"bot: xoxe.xoxb-" b"1-MS0yLTIxabcdefgh\n",
}


@pytest.mark.parametrize("rel", sorted(EVERYDAY))
def test_everyday_credential_files_are_refused(tmp_path, rel):
    _refused_unless_included(tmp_path, rel, EVERYDAY[rel])


def test_data_tables_utf16_text_and_copies_of_plain_files_travel(tmp_path):
    """The wider rules leave data alone: a table whose cells say "token" or "password", a review
    saved as UTF-16, a backup of an ordinary config, a versioned file name."""
    files = {
        "data/train.csv": b"text,label\nI loved the token economy,1\npassword reset was easy,0\n",
        "data/ner.tsv": b"token\ttag\nParis\tB-LOC\nHunter2\tO\n",
        "notes.txt": "The film was great. Password: ask the admin\n".encode("utf-16"),
        "job.yaml.bak": b"name: old\nmodel:\n  name_or_path: minilm\n",
        "release-1.2": b"version: 1.2\n",
        "auth.yaml": b"auth: true\nauthorization: none\n",
        # a diff review's false positives of the first form of these rules
        "tools/kubeconfig_loader.py": b"def load():\n    pass\n",
        "storage.yaml": b'auth: Kerberos\nauthorization: "Basic"\nextra: {"pretrained_auth": "HF-Hub"}\n'
                        b"gcs:\n  auth: application-default\nmode:\n  auth: PasswordAuthenticator\n"
                        b"authorization: role-based-access-control\n",
        "data/tokens.xml": b"<s><token>Paris</token><token>Hunter2</token></s>\n",
        "data/extra.csv": b"text,label\nlove you xoxo-hugs-and-kisses,1\n",
        # over 1 MiB, a data row at the start of a later piece is not a header
        "data/intents.csv": b"text,intent\n" + b"password,account\nI forgot my login 2FA code,Account\n" * 40_000,
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    assert set(files) <= set(plan_upload(tmp_path).names)


def test_token_shapes_are_whole_words_and_redaction_leaves_words_alone():
    """A diff review: the first form of the new token shapes redacted `xoxo-...`, an `ASIA...` word
    and the start of `hf_models..._cache`, in logs and in the template a job.yaml records."""
    from peft_ray.security import redact_text

    for text in ("love you xoxo-hugs-and-kisses", "region ASIAPACIFICHEADQUARTERS2024",
                 "hf_modelsdownloadedfromhub_cache", "{soft} Review (xoxo-gossip-girl fan site): {text}"):
        assert redact_text(text) == text
    assert redact_text("token hf_" + "AbCdEfGhIjKlMnOpQrStUvWx.") == "token ***REDACTED***."
    assert redact_text("SLACK_BOT=xoxe.xoxb-" "1-MS0yLTIxabcdefgh") == "SLACK_BOT=xoxe.***REDACTED***"
    assert redact_text("xapp-" "1-A0123-abcdefghij") == "***REDACTED***"
