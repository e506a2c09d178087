"""`peft-ray --help` and every subcommand's --help stay fast: nothing heavy is imported
until a command body runs (torch alone took 3.6 s of the 7-13 s `--help` used to take)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "ray", "transformers", "deepspeed", "pyarrow")

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from peft_ray.cli import main
imported = time.perf_counter() - t0
names = sorted(main.commands)
for name in [None] + names:
    args = ["--help"] if name is None else [name, "--help"]
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
    group = main.commands.get(name)
    for sub in sorted(getattr(group, "commands", {})):
        try:
            main([name, sub, "--help"], standalone_mode=False)
        except SystemExit:
            pass
print(json.dumps({"commands": names, "import_s": imported,
                  "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def test_help_of_every_command_imports_nothing_heavy():
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"train", "eval", "predict", "export", "config", "schema", "tune", "submit"} <= set(got["commands"])
    assert got["heavy"] == [], f"--help imported {got['heavy']}; import them inside the command body"
