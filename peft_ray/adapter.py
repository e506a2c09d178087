"""Adapters in HF PEFT's own layout, written atomically.

    adapter/
      adapter_config.json          # what peft.PeftModel.from_pretrained reads
      adapter_model.safetensors    # PEFT's key names (prompt_embeddings, base_model.<head>...)
      peft_ray.json                # what PEFT has no place for: template, verbalizer, labels, the job,
                                   # and base_model_path (the local folder the base was loaded from)
      README.md                    # model card (peft_ray/card.py), as PEFT's save_pretrained writes one

base_model_name_or_path is what the job named, so the adapter loads elsewhere: an alias
becomes its hub id (models.canonical_model_id), and only a scratch model keeps its local path.

Under ZeRO-3 every parameter is a partition; the values are read inside
``GatheredParameters`` so the file holds full tensors (the PEFT #453/#2450 bug).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from peft_ray import __version__

if TYPE_CHECKING:  # torch only where tensors are handled: the CLI imports this module for its names
    import torch

CONFIG, WEIGHTS, EXTRA, CARD = "adapter_config.json", "adapter_model.safetensors", "peft_ray.json", "README.md"
ADAPTER_FILES = (CONFIG, WEIGHTS, EXTRA, CARD)   # every file write_adapter writes


def gathered(params):
    """Context in which ZeRO-3-partitioned params hold their full values (no-op otherwise)."""
    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def gather_adapter_state(model) -> Dict[str, torch.Tensor]:
    """Full CPU copies of the adapter tensors. Collective under ZeRO-3: call on every rank."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    with gathered(trainable):
        return {k: v.detach().to("cpu", torch.float32).clone().contiguous()
                for k, v in model.adapter_state().items()}


def write_adapter(out_dir: str | Path, state: Dict[str, torch.Tensor], peft_cfg: Dict[str, Any],
                  extra: Dict[str, Any]) -> Path:
    """Write into a temporary sibling, then rename: a reader never sees a half-written adapter."""
    from safetensors.torch import save_file

    from peft_ray.card import model_card
    from peft_ray.storage import staging_dir

    out = Path(out_dir)
    empty = [k for k, v in state.items() if v.numel() == 0]
    if empty:
        raise RuntimeError(f"refusing to save empty adapter tensors {empty} (ZeRO-3 gather missing?)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out) as tmp:  # a random, exclusively made sibling: no planted link redirects it
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        cfg, extra = portable(peft_cfg, {"peft_ray_version": __version__, **extra})
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2))
        (tmp / EXTRA).write_text(json.dumps(extra, indent=2))
        (tmp / CARD).write_text(model_card(cfg, extra), encoding="utf-8")
        replace_dir(tmp, out)
    return out


def portable(peft_cfg: Dict[str, Any], extra: Dict[str, Any]):
    """(adapter_config, peft_ray extra) for loading anywhere: the base as the job named it, the
    local path kept in extra["base_model_path"]; peft_version the installed one, or none."""
    local = peft_cfg.get("base_model_name_or_path")
    base = base_model_id((extra.get("spec") or {}).get("model", {}).get("name_or_path"), local)
    cfg = {k: (base if v == local and k.endswith("_name_or_path") and v else v) for k, v in peft_cfg.items()}
    cfg.pop("peft_version", None)
    version = _peft_version()
    if version:
        cfg["peft_version"] = version
    labels = task_label_maps((extra.get("spec") or {}).get("task") or {})
    return cfg, {**extra, **({"base_model_path": local} if local else {}), **labels}


def base_model_id(named: Optional[str], local: Optional[str]) -> Optional[str]:
    """What the job named (an alias -> its hub id); a scratch model only exists as its local folder."""
    from peft_ray.models import canonical_model_id, model_kind

    if not named or model_kind(named) == "scratch":
        return local
    return canonical_model_id(named)


def task_label_maps(task: Dict[str, Any]) -> Dict[str, Any]:
    """label_maps of a saved spec's `task:` section, asked of its task; {} without one."""
    from peft_ray.tasks import TASKS   # inside: the CLI imports this module for its names (no pyarrow)

    if task.get("type") not in TASKS:
        return {}
    impl = TASKS.get(task["type"])
    cfg = impl.config_cls.model_validate({k: v for k, v in task.items() if k in impl.config_cls.model_fields})
    return label_maps(impl.label_names(cfg))


def label_maps(labels: Optional[List[str]]) -> Dict[str, Any]:
    """id2label/label2id of the head's label-id order (Task.label_names: IOB2 tags for token
    classification), as HF configs hold them (string ids, as config.json stores them); {} for
    tasks without a classifier head."""
    if not labels:
        return {}
    return {"id2label": {str(i): n for i, n in enumerate(labels)}, "label2id": {n: i for i, n in enumerate(labels)}}


def replace_dir(src: Path, dst: Path) -> None:
    """Swap `src` into `dst`; the old `dst` is removed only after the new one is in place. Its
    files get the modes the user's umask gives new files (safetensors writes 0600, and a copy
    keeps it), so an adapter or merged model is as readable as anything else the user writes."""
    from peft_ray.storage import temp_name, umask_modes

    umask_modes(src)
    old = dst.with_name(temp_name(dst.name, ".old"))
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


MAX_JSON_BYTES = 16 * 2 ** 20   # adapter_config.json and peft_ray.json are a few KB; a cap keeps a crafted one small


def adapter_file(folder: Path, name: str, own_files_only: bool = False) -> Optional[Path]:
    """`folder/name` if it is there and a regular file (None if absent). An adapter is a folder
    someone else may have written: a device or FIFO there could be read forever, and with
    `own_files_only` (what `export` passes on) a link may not point outside the folder, or a
    crafted folder could make the user pass on a file of theirs (README.md -> ~/.ssh/id_rsa).
    An adapter in the Hugging Face cache links into its own repo's blobs (snapshots -> blobs), which
    stays allowed; a link into another repo there (a private model's files) does not."""
    import stat

    from peft_ray.errors import SpecError

    path = Path(folder) / name
    if not path.exists() and not path.is_symlink():
        return None
    if not path.exists() or not stat.S_ISREG(path.stat().st_mode):
        raise SpecError(f"adapter {folder}: {name} is not a regular file (a dangling link, a device, a FIFO "
                        "or a folder); copy the adapter folder again")
    if own_files_only and path.is_symlink() and not _inside(path.resolve(), *_own_roots(Path(folder).resolve())):
        raise SpecError(f"adapter {folder}: {name} is a link to {path.resolve()}, outside the adapter folder; "
                        "export passes on the adapter's own files only. Replace the link with the file it "
                        "should hold, or copy the adapter folder from a source you trust")
    return path


def _inside(path: Path, *roots: Path) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _own_roots(folder: Path) -> List[Path]:
    """Where an adapter folder's links may lead: inside it, and for a snapshot in the Hugging
    Face cache (<cache>/models--org--name/snapshots/<rev>/...), inside that one repo."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE).expanduser().resolve()
    if cache not in folder.parents:
        return [folder]
    return [folder, cache / folder.relative_to(cache).parts[0]]


def read_json_object(path: Path, what: str) -> Dict[str, Any]:
    """A JSON object from a file of at most MAX_JSON_BYTES, or a SpecError that says which file."""
    from peft_ray.errors import SpecError

    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise SpecError(f"{what} {path}: {size} bytes, more than the {MAX_JSON_BYTES} this JSON file can "
                        "hold; copy the adapter folder again")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SpecError(f"{what} {path} is not valid JSON ({str(e)[:200]}); copy the adapter folder again") from None
    if not isinstance(obj, dict):
        raise SpecError(f"{what} {path} holds a JSON {type(obj).__name__}, not an object; copy the adapter "
                        "folder again")
    return obj


def read_adapter(path: str | Path):
    """(state, adapter_config, peft_ray extra) from an adapter folder, every file checked as data."""
    from safetensors.torch import load_file

    from peft_ray.errors import SpecError

    p = Path(path)
    found = {name: adapter_file(p, name) for name in (CONFIG, WEIGHTS, EXTRA)}
    for name in (CONFIG, WEIGHTS):
        if found[name] is None:
            raise SpecError(f"adapter {p}: {name} is missing; point at a folder written by `peft-ray train` "
                            "or HF PEFT's save_pretrained")
    cfg = read_json_object(found[CONFIG], "adapter config")
    extra = read_json_object(found[EXTRA], "adapter record") if found[EXTRA] else {}
    if not isinstance(extra.get("spec", {}), dict):
        raise SpecError(f"adapter {p}: {EXTRA}'s 'spec' is a {type(extra['spec']).__name__}, not the job "
                        "object `peft-ray train` writes; copy the adapter folder again")
    try:
        state = load_file(str(found[WEIGHTS]))
    except Exception as e:     # SafetensorError (truncated, not safetensors), OSError
        raise SpecError(f"adapter {p}: {WEIGHTS} is not a readable safetensors file ({str(e)[:200]}); "
                        "copy the adapter folder again") from None
    check_tensors(state, p / WEIGHTS)
    return state, cfg, extra


def check_tensors(state, where: Path) -> None:
    """An adapter's tensors are real floating-point numbers, all finite: a NaN one scored as a
    coin flip without a word, and as init_from failed at step 1 blaming the learning rate."""
    import torch

    from peft_ray.errors import SpecError

    for key, t in state.items():
        if not t.is_floating_point():
            raise SpecError(f"{where}: '{key}' holds {str(t.dtype).removeprefix('torch.')} values, not floating "
                            "point; an adapter's weights are float tensors, so this file was not written as one")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise SpecError(f"{where}: '{key}' holds {bad:,} non-finite value(s) (NaN or inf) of {t.numel():,}; "
                            "the adapter was saved from a diverged run: use an earlier checkpoint's adapter")


def _peft_version() -> Optional[str]:
    """The installed peft's version; None (the key is left out) when peft is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peft")
    except PackageNotFoundError:  # peft is optional at run time
        return None
