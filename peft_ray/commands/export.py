"""`peft-ray export RUN_DIR OUT [--merge]`: hand a run's adapter to HF PEFT, or fold it
into a plain transformers model.

RUN_DIR may be a run's output.dir (uses its adapter/), a checkpoint folder
(ray/.../checkpoint_*/, uses its adapter/), or an adapter folder itself.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Optional

import click

from peft_ray.commands.options import fail, overwrite_option
from peft_ray.adapter import CARD, CONFIG, EXTRA, WEIGHTS
from peft_ray.errors import CheckpointError, JobError
from peft_ray.security import Trust, trust_flags


# Marks a folder export wrote, so a later export may replace it whole. Recognising an export by
# its file names instead would take any folder with a config.json (a project, a base model).
STAMP = ".peft_ray_export"


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("out_dir", type=click.Path(file_okay=False))
    @click.option("--merge", is_flag=True,
                  help="LoRA/IA3: write the base model with the adapter folded into its weights "
                       "(plain transformers loads it; no PEFT needed).")
    @overwrite_option("OUT_DIR's earlier export")
    @trust_flags
    def export(run_dir: str, out_dir: str, merge: bool, overwrite: bool, trust_remote_code: bool,
               allow_pickle: bool, base_model: Optional[str]) -> None:
        """Write the adapter of RUN_DIR into OUT_DIR in HF PEFT's layout (peft.PeftModel.from_pretrained
        loads it), or with --merge a merged full model (AutoModel*.from_pretrained loads it)."""
        from peft_ray.inference import find_adapter_dir

        try:
            src = find_adapter_dir(run_dir, "RUN_DIR")
            trust = Trust(trust_remote_code, allow_pickle, base_model)
            if merge:
                quiet_deepspeed_guess()
            out = (merge_adapter(src, Path(out_dir), trust, overwrite) if merge
                   else copy_adapter(src, Path(out_dir), overwrite))
        except JobError as e:
            fail(e)
        click.echo(f"wrote {out}")


def quiet_deepspeed_guess() -> None:
    """transformers' save_pretrained imports DeepSpeed (through accelerate) where it is installed, and
    DeepSpeed then warns that it guessed the CPU. Say it for this process, where no GPU is visible."""
    import os

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def copy_adapter(src: Path, out: Path, overwrite: bool = False) -> Path:
    """The files PEFT reads, with inference_mode on (how PEFT itself saves), plus peft_ray.json and
    the README.md model card: only the adapter's own regular files, built aside and swapped in."""
    from peft_ray.adapter import adapter_file, read_json_object

    check_out_dir(src, out, overwrite)
    files = {name: adapter_file(src, name, own_files_only=True) for name in (CONFIG, WEIGHTS, EXTRA, CARD)}
    cfg = read_json_object(files[CONFIG], "adapter config")
    if "peft_type" not in cfg:
        raise CheckpointError(f"{src / CONFIG} has no peft_type; it is not an HF PEFT adapter config")
    with built_in_place_of(out) as stage:
        (stage / CONFIG).write_text(json.dumps({**cfg, "inference_mode": True}, indent=2))
        for name in (WEIGHTS, EXTRA, CARD):   # the job record and the model card travel with the adapter
            if files[name] is not None:
                shutil.copyfile(files[name], stage / name)
    return out


# A run's (or search's) folders that peft-ray replaces whole or checks file by file.
MANAGED = ("adapter", "adapter_last", "checkpoints", "ray", "tensorboard", "tune", "trials", "best")


def run_managed_folder(src: Path, out: Path) -> Optional[Path]:
    """The folder of the adapter's own run that OUT_DIR lies inside, where peft-ray would delete or
    refuse it: the adapter itself, or a run's adapter/, checkpoints/, ray/, ... (None if none)."""
    src, out = src.resolve(), out.resolve()
    if src in out.parents:
        return src
    # a run is a folder peft-ray trained into (its job.yaml and its log), not any folder with a job file
    run = next((up for up in src.parents[:4] if (up / "job.yaml").is_file()
                and ((up / "train.log").is_file() or (up / "tune.log").is_file())), None)
    if run is None or run not in out.parents:
        return None
    top = run / out.relative_to(run).parts[0]
    return top if top.name in MANAGED else None


def check_out_dir(src: Path, out: Path, overwrite: bool = False) -> None:
    """OUT_DIR is a folder of its own: new, empty, or an earlier export with --overwrite (replaced
    whole, so two adapters never mix); never the adapter itself nor a folder holding anything else."""
    from peft_ray.storage import check_output_dir

    check_output_dir(str(out), "OUT_DIR")        # a file, a file on the way, /proc, read-only
    if out.resolve() == src.resolve() or out.resolve() in src.resolve().parents:
        raise JobError(f"OUT_DIR '{out}' is the adapter folder {src} or holds it; export to a new folder")
    managed = run_managed_folder(src, out)
    if managed is not None:
        raise JobError(f"OUT_DIR '{out}' lies inside {managed}, which peft-ray writes and replaces (a resumed run "
                       if out.resolve() != managed else f"OUT_DIR '{out}' is the run's own {managed.name}/, which "
                       "peft-ray writes and replaces (a resumed run "
                       "replaces its adapter folders; a checkpoint holding an unlisted file fails its check); "
                       "export to a folder outside the run")
    if out.is_symlink():
        raise JobError(f"OUT_DIR '{out}' is a link; export to a new folder")
    if (out / STAMP).is_file():
        stamped = stamped_files(out)
        added = sorted(set(own_files(out)) - set(stamped) - {STAMP}) if stamped else []
        if added:
            raise JobError(f"OUT_DIR '{out}' is an earlier export, but holds files it did not write: "
                           f"{', '.join(added[:5])}{' ...' if len(added) > 5 else ''}. A new export replaces the "
                           "folder whole: move them out first, or export to a new folder")
        if not overwrite:   # as train, eval and predict: what a command wrote is replaced only when asked
            raise JobError(f"OUT_DIR '{out}' holds an earlier export; pass --overwrite to replace it, or export "
                           "to a new folder")
    elif out.is_dir() and any(out.iterdir()):
        if {p.name for p in out.iterdir()} <= {CONFIG, WEIGHTS, EXTRA, CARD}:
            raise JobError(f"OUT_DIR '{out}' holds an adapter without the {STAMP} mark that exports now carry "
                           "(an export by an older peft-ray, or an adapter folder of a run): export replaces only "
                           "folders it marked. Delete it if it is an old export, or pass a new folder")
        held = sorted(p.name for p in out.iterdir())
        raise JobError(f"OUT_DIR '{out}' already holds {', '.join(held[:5])}{' ...' if len(held) > 5 else ''}, "
                       "which no `peft-ray export` wrote; export writes a folder of its own (an earlier export "
                       "there is replaced whole): pass a new or empty folder")


@contextlib.contextmanager
def built_in_place_of(out: Path):
    """A fresh folder to build the export in, swapped onto `out` when the block succeeds: a
    failed export leaves `out` as it was, and a planted link in `out` redirects nothing."""
    from peft_ray.adapter import replace_dir
    from peft_ray.storage import staging_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out) as stage:
        stage.mkdir()
        yield stage
        written = own_files(stage)
        (stage / STAMP).write_text("written by `peft-ray export`; a later export to this folder replaces it "
                                   "(these files, and nothing else)\n" + "\n".join(written) + "\n")
        replace_dir(stage, out)


def own_files(folder: Path) -> list:
    """Every file below `folder`, as relative POSIX paths (links are not followed)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def stamped_files(out: Path) -> list:
    """The files an export recorded in its stamp ([] for a stamp without the list: older exports,
    replaced as before). The stamp is read as data: a regular file of at most 1 MiB."""
    from peft_ray.storage import Location

    text = Location.at(out / STAMP).read_small_text(1 << 20) or ""
    return [line for line in text.splitlines()[1:] if line]


def name_labels(model, maps) -> None:
    """The job's label names in config.json, for a model with a head of that many labels (HF
    reads id2label there; a verbalizer classifier is an LM and has no label head)."""
    heads = ("ForSequenceClassification", "ForTokenClassification")
    if maps and type(model).__name__.endswith(heads) and model.config.num_labels == len(maps["id2label"]):
        model.config.id2label = {int(i): n for i, n in maps["id2label"].items()}
        model.config.label2id = dict(maps["label2id"])


def merge_adapter(src: Path, out: Path, trust: Trust = Trust(), overwrite: bool = False) -> Path:
    """Rebuild the run's model from its recorded job, load the adapter, fold it in, save_pretrained."""
    from peft_ray.adapter import label_maps, read_adapter
    from peft_ray.card import merged_card
    from peft_ray.inference import read_run_spec
    from peft_ray.methods import METHODS, get_method
    from peft_ray.hf import quiet_transformers
    from peft_ray.tasks import get_task
    from peft_ray.train.engine import build_model

    if "spec" not in read_adapter(src)[2]:
        raise CheckpointError(f"--merge needs the job recorded in {src / EXTRA} (written by peft-ray train); "
                              "for a foreign adapter use peft's merge_and_unload()")
    state, spec = read_run_spec(src, trust)   # the base from peft_ray.json's base_model_path where it exists
    merge_fn = get_method(spec.method.name).merge
    if merge_fn is None:
        merging = " and ".join(n for n in METHODS.names() if METHODS.get(n).merge)
        raise CheckpointError(f"--merge: method '{spec.method.name}' {get_method(spec.method.name).no_merge_why}; "
                              f"only {merging} merge. Export without --merge")
    check_out_dir(src, out, overwrite)
    model, tokenizer, _ = build_model(spec)
    model.load_adapter_state(state, str(src))
    plain = merge_fn(model)
    name_labels(plain, label_maps(get_task(spec.task.type).label_names(spec.task)))
    # The job read rows at model.max_length: the saved tokenizer says so (its own default, e.g. 512,
    # scored long rows differently from predict), and so does the card.
    tokenizer.model_max_length = spec.model.max_length
    _, cfg, extra = read_adapter(src)
    with built_in_place_of(out) as stage, quiet_transformers():   # no "Writing model shards" bar
        plain.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        (Path(stage) / CARD).write_text(merged_card(cfg, extra, spec.model.max_length))
    return out
