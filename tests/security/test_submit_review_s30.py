"""`submit` and a security review's two findings: a folder link back into the working dir made the
plan (and Ray's zip) walk for ever, and tokens travelled in logs, run records and diffs, in an age
key file and in a netrc file under another name."""

from __future__ import annotations

import os
import random
import time
import zipfile

import pytest
from click.testing import CliRunner

from peft_ray.cli import main
from peft_ray.errors import JobError
from peft_ray.submit.upload import plan_upload
from tests.security.test_submit_secrets import _refused_unless_included, _working_dir


def _tree(root, links):
    """A working dir with a file at its top and one in `sub/`, and the folder links `links` (name -> target)."""
    (root / "sub").mkdir(parents=True)
    (root / "main.py").write_text("print(1)\n")
    (root / "sub" / "data.txt").write_text("rows\n")
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)


def _rays_zip(root, plan, out):
    """The names Ray's own packaging zips for the plan (the upload's walk, with the plan's excludes)."""
    from ray._private.runtime_env.packaging import _zip_files

    _zip_files(str(root), plan.excludes, str(out), include_gitignore=True)
    with zipfile.ZipFile(out) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


# Folder links that lead back to a folder they lie in: the working dir, its own folder, a folder
# above the working dir (the whole disk), and two links that lead into each other.
LOOPS = {
    "to-the-working-dir": ({"sub/up": ".."}, "sub/up"),
    "to-its-own-folder": ({"sub/here": "."}, "sub/here"),
    "to-above-the-working-dir": ({"sub/top": "../.."}, "sub/top"),
    "to-the-root-of-the-disk": ({"sub/disk": "/"}, "sub/disk"),
}


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_a_folder_link_back_into_a_folder_it_lies_in_is_refused(tmp_path, case):
    links, rel = LOOPS[case]
    root = tmp_path / "wd"
    _tree(root, links)
    started = time.monotonic()
    with pytest.raises(JobError, match=f"the folder link '{rel}' .*leads back to a folder it lies in.*Remove the "
                                       f"link, or keep it out with --exclude /{rel}$"):
        plan_upload(root)
    assert time.monotonic() - started < 10       # refused where the walk meets it, not after


def test_two_links_into_each_other_are_refused_by_their_own_names(tmp_path):
    """`a/x -> ../b` and `b/y -> ../a`: neither leads above itself, but the walk goes a, a/x (b),
    a/x/y (a), ... for ever. The link is named where it lies, and where the walk met it."""
    root = tmp_path / "wd"
    _tree(root, {"a/x": "../b", "b/y": "../a"})
    with pytest.raises(JobError, match=r"2 folder links 'a/x' \(reached as 'b/y/x'\) \(-> b\); 'b/y' \(reached as "
                                       r"'a/x/y'\) \(-> a\) lead back.*Remove each link, or a link it is reached "
                                       r"through$"):
        plan_upload(root)


def test_every_looping_link_is_named_in_one_refusal(tmp_path):
    """Three links back in three places: one refusal names all three and the excludes that keep
    them out (a user fixing them one run at a time paid a dry run per link); the walk does not go
    into any of them, and with those excludes the plan passes and matches Ray's own zip."""
    root = tmp_path / "wd"
    _tree(root, {"sub/up": "..", "deep/er/top": "../..", "sub/here": "."})
    started = time.monotonic()
    with pytest.raises(JobError) as e:
        plan_upload(root)
    assert time.monotonic() - started < 10
    message = str(e.value)
    assert message.startswith("--working-dir: 3 folder links ") and " lead back to a folder they lie in " in message
    assert "links 'deep/er/top' (-> .); 'sub/here' (-> sub); 'sub/up' (-> .) lead back" in message
    excludes = ["/deep/er/top", "/sub/here", "/sub/up"]
    assert message.endswith("Remove the links, or keep them out with "
                            + " ".join(f"--exclude {x}" for x in excludes)), message
    plan = plan_upload(root, excludes)
    assert set(plan.names) == {"main.py", "sub/data.txt"}
    assert _rays_zip(root, plan, tmp_path / "pkg.zip") == set(plan.names)


def test_two_links_to_the_working_dir_no_longer_hang_the_dry_run(tmp_path, tiny_bert, tiny_data):
    """The review's repro: two links `sub/up -> ..`, `sub/up2 -> ..` (the walk doubled at every level
    and never ended; with one link, every file was listed 41 times)."""
    wd, job = _working_dir(tmp_path, tiny_bert, tiny_data)
    (wd / "sub").mkdir()
    os.symlink("..", wd / "sub" / "up")
    os.symlink("..", wd / "sub" / "up2")
    started = time.monotonic()
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(wd), "--dry-run"])
    assert time.monotonic() - started < 30
    assert r.exit_code != 0 and "2 folder links 'sub/up' (-> .); 'sub/up2' (-> .) lead back" in r.output, r.output
    assert "--exclude /sub/up --exclude /sub/up2" in r.output and "sub/up/sub/up" not in r.output
    r = CliRunner().invoke(main, ["submit", str(job), "--working-dir", str(wd), "--dry-run",
                                  "--exclude", "/sub/up", "--exclude", "/sub/up2"])
    assert r.exit_code == 0, r.output
    assert "total (1 files)" in r.output


@pytest.mark.parametrize("how", ["exclude-the-link", "gitignore-the-link", "gitignore-below-the-link",
                                 "rayignore-the-folder"])
def test_an_excluded_loop_link_travels_as_rays_zip_does(tmp_path, how):
    """Ray's walk does not go into an excluded folder (nor past a folder whose entries are all
    excluded: gitignore's `up/` matches what lies below `sub/up`, not the link): then nothing loops,
    and the plan must be what Ray's own packaging zips."""
    root = tmp_path / "wd"
    _tree(root, {"sub/up": ".."})
    extra = []
    if how == "exclude-the-link":
        extra = ["/sub/up"]
    elif how == "gitignore-the-link":
        (root / ".gitignore").write_text("sub/up\n")
    elif how == "gitignore-below-the-link":
        (root / ".gitignore").write_text("up/\n")
    else:
        (root / "sub" / ".rayignore").write_text("up\n")
    plan = plan_upload(root, extra)
    assert not any(name.startswith("sub/up/") for name in plan.names)
    assert _rays_zip(root, plan, tmp_path / "pkg.zip") == set(plan.names)


def test_folder_links_that_do_not_loop_still_travel(tmp_path):
    """A link to a sibling folder (`data/latest -> v2`), two links to one folder: each name
    travels, as Ray zips it; only a way back into a folder the walk is in is refused."""
    root = tmp_path / "wd"
    _tree(root, {"data/latest": "v2", "data/stable": "v2", "sub/shared": "../data/v2"})
    (root / "data" / "v2").mkdir()
    (root / "data" / "v2" / "train.csv").write_text("text,label\nok,1\n")
    plan = plan_upload(root)
    assert {"data/v2/train.csv", "data/latest/train.csv", "data/stable/train.csv",
            "sub/shared/train.csv"} <= set(plan.names)
    assert _rays_zip(root, plan, tmp_path / "pkg.zip") == set(plan.names)


TOKEN = "hf_" "abcdefghijklmnopqrstuvwxyzABCDEFGH"
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _age_key() -> str:
    bech32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
    rng = random.Random(30)
    return "AGE-SECRET-KEY-1" + "".join(rng.choice(bech32) for _ in range(58))


# Logs, run records and diffs (read by shape and for secret environment variables), an age key
# file, and netrc entries under other names.
TRAVELLED = {
    "nohup.out": f"starting\nexport HF_TOKEN={TOKEN}\nstep 1 loss 0.7\n",
    "runs.jsonl": '{"step": 1, "env": {"HF_TOKEN": "%s"}}\n' % TOKEN,
    "logs/train.log": f"2024-05-01 12:00:01 INFO env AWS_SECRET_ACCESS_KEY={AWS} AWS_REGION=eu-west-1\n",
    "job.err": f"+ export AWS_SECRET_ACCESS_KEY='{AWS}'\n+ python train.py\n",
    "events.ndjson": '{"env": {"AWS_SECRET_ACCESS_KEY": "%s"}}\n' % AWS,
    "fix.diff": "--- a/.env\n+++ b/.env\n@@ -1 +1 @@\n-DB_PASSWORD=changeme\n+DB_PASSWORD=Hunter2-prod\n",
    "0001-ci.patch": f"+    env:\n+      HF_TOKEN: {TOKEN}\n",
    "keys.txt": f"# created: 2024-01-01T00:00:00Z\n# public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zm\n"
                f"{_age_key()}\n",
    "notes.md": f"the key, for now: {_age_key()}\n",         # a private key: found in any file
    "hosts": "machine x login me password hunter2secret\n",
    "login.cfg": "machine pypi.example.com\n  login alice\n  password S3cr3t-pass\n",
    "deploy.log": "default login ci password Tr0ub4dor&3\n",
}


@pytest.mark.parametrize("rel", sorted(TRAVELLED))
def test_credentials_in_logs_run_records_diffs_age_and_netrc_files_are_refused(tmp_path, rel):
    _refused_unless_included(tmp_path, rel, TRAVELLED[rel], r" \((a |variable ).*\)\..*--include")


def test_logs_that_only_mention_a_password_and_data_in_json_lines_travel(tmp_path):
    """What a log, a data file or notes say about passwords and tokens is prose, and a masked or
    referenced value is no credential; an encrypted file (`*.gpg`) is data without its key."""
    files = {
        "train.log": "2024-05-01 INFO step 10: loss 0.5\nWARNING password prompt skipped, using key auth\n"
                     "Password: see the wiki\nERROR: Token expired, log in again\nPASSWORD=\n"
                     "EOS_TOKEN: </s>\nMAX_TOKENS=512\nHF_TOKEN: set\nHF_TOKEN=${HF_TOKEN}\n"
                     "Looking in indexes: https://alice:****@pypi.example.com/simple\n",
        "nohup.out": "machine learning password reset examples\nexport HF_TOKEN=$(cat ~/.hf)\n",
        "data/spam.jsonl": '{"text": "Dear customer, your account PASSWORD: qwerty123 has expired", "label": 1}\n',
        "data/train.jsonl": '{"text": "my password is hunter2, lol", "label": 1}\n'
                            '{"text": "Paris", "token": "Paris", "password": "Hunter2x"}\n',
        "review.diff": "-the password for the demo box is in the wiki\n+ask the admin for the password\n",
        "notes.txt": "the netrc format: machine HOST login USER password <your-password>\n"
                     "age public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # an OpenPGP message: a public-key encrypted session key packet (tag 1), then encrypted data
    files["backup.tar.gpg"] = b"\x85\x01\x0c\x03" + bytes(range(256)) * 4
    (tmp_path / "backup.tar.gpg").write_bytes(files["backup.tar.gpg"])
    assert set(files) <= set(plan_upload(tmp_path).names)


def test_a_token_late_in_a_big_log_is_found(tmp_path):
    """A log is read whole (in pieces, like a table), not only its opening: the token sits after
    3 MiB of ordinary lines."""
    line = "2024-05-01 12:00:00 INFO step 1 loss 0.5 lr 1e-4 tokens 512\n"
    text = line * (3 * 1024 * 1024 // len(line)) + f"export HF_TOKEN={TOKEN}\n"
    _refused_unless_included(tmp_path, "run.log", text, r" \(a token-shaped value\)")
