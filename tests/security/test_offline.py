"""peft-ray never reaches the network at run time, even where HF_HUB_OFFLINE was not set before
huggingface_hub was imported (it reads the variable once; the suite's conftest sets it, which would
hide a load that relied on it). A subprocess starts without it and fails any connection or lookup."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import socket, sys
    tried = []
    def blocked(*args, **kwargs):
        tried.append(args[:2])
        raise OSError("network blocked by the test")
    socket.socket.connect = blocked
    socket.getaddrinfo = blocked
    from peft_ray.errors import SpecError
    from peft_ray.models import load_auto, load_tokenizer, lm_kind, resolve_model_path
    path = resolve_model_path("someorg/tiny")
    print("PATH", path)
    print("KIND", lm_kind(path))
    for load in (lambda: load_auto(path, "AutoModel", seed=0), lambda: load_tokenizer(path)):
        try:
            load()
        except (OSError, ValueError, SpecError) as e:   # the cache holds config.json alone
            print("ERR", type(e).__name__, str(e)[:200])
        else:
            print("LOADED")
    try:
        resolve_model_path("someorg/absent")
    except SpecError as e:
        print("ABSENT", e)
    print("TRIED", tried)
""")


def test_a_cached_hub_id_loads_from_its_snapshot_folder_without_the_network(tmp_path):
    snap = tmp_path / "hub" / "models--someorg--tiny" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123abcd")
    (snap / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "vocab_size": 32}))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_CACHE"] = str(tmp_path / "hub")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"PATH {snap}" in r.stdout and "KIND encoder" in r.stdout
    assert "ERR SpecError model.name_or_path: '" in r.stdout and "holds a config.json but no weights" in r.stdout
    assert "ABSENT model.name_or_path: 'someorg/absent'" in r.stdout
    assert "TRIED []" in r.stdout, r.stdout
