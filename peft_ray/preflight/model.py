"""The model's side of the pre-flight, before any data is read or weight loaded: its folder and
files, its position limit, the method's target modules, the task on it and its chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from peft_ray.data.columns import max_text_chars
from peft_ray.errors import SpecError
from peft_ray.methods import get_method
from peft_ray.methods.adapter_model import check_init_from
from peft_ray.methods.targets import check_method_modules
from peft_ray.models import check_model_folder, check_weights_match, lm_kind, resolve_model_path
from peft_ray.spec.load import shown
from peft_ray.spec.schema import JobSpec
from peft_ray.tasks import get_task


def check_model_and_method(spec: JobSpec) -> str:
    """The model's folder, files and weights, and the method and task on it (no data read, no
    weights loaded): its resolved path."""
    model_path = resolve_model_path(spec.model.name_or_path)
    check_model_folder(model_path, spec.model.allow_pickle)
    check_model_files(spec, model_path)
    check_weights_match(model_path, spec.model.trust_remote_code)  # on the meta device: no weights read
    check_method_modules(model_path, spec.method, spec.model.trust_remote_code)
    check_model_fits_task(spec, model_path)
    if spec.method.init_from:
        check_init_from(spec.method.init_from, get_method(spec.method.name).peft_type, spec.method)
    return model_path


def check_model_fits_task(spec: JobSpec, model_path: str) -> None:
    """Read the model's config now, before Ray starts: a bad pairing (verbalizer scoring on T5)
    fails here, and the config is cached for the data pipeline. (Also, inside a `ray job
    submit` driver, ray.init replaces the job's working directory, the process's cwd, and
    transformers cannot be imported for the first time after that.)"""
    kind = lm_kind(model_path, spec.model.trust_remote_code)
    get_task(spec.task.type).check_model(spec, kind)
    if spec.template.chat:
        check_chat(spec, model_path, kind)


def check_chat(spec: JobSpec, model_path: str, kind: str) -> None:
    if kind != "causal":
        raise SpecError(f"template.chat: chat templates are for causal LMs; '{spec.model.name_or_path}' is "
                        f"{kind}. Set template.chat: false")
    from peft_ray.rows.tokens import tokenizer

    tok = tokenizer(model_path, spec.model.trust_remote_code)   # the row builders' own: the same rendering
    if not getattr(tok, "chat_template", None):
        raise SpecError(f"template.chat: the tokenizer of '{spec.model.name_or_path}' has no chat template; "
                        "set template.chat: false, or use an instruct model such as smollm2")
    check_chat_renders(tok, spec)


CHAT_RENDER_SECONDS = 10


def check_chat_renders(tok, spec: JobSpec) -> None:
    """The model folder's chat template (Jinja, from a file users exchange) renders within
    CHAT_RENDER_SECONDS, into at most max_text_chars characters, in a forked child that is killed
    past the limit: transformers' sandbox bounds neither time nor size, and nested `range(100000)`
    loops hung the first row's rendering for ever while `validate` said ok. A run renders the
    template once, around fixed holes (rows.tokens.chat_prompt), so this rendering is the one it does."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_render_sample, args=(writer, tok, spec.template.system), daemon=True)
    child.start()
    finished = reader.poll(CHAT_RENDER_SECONDS)
    if not finished:
        child.kill()
    child.join()
    where = f"template.chat: the chat template of '{spec.model.name_or_path}'"
    if not finished:
        raise SpecError(f"{where} did not render one sample turn in {CHAT_RENDER_SECONDS} s; restore the model "
                        "folder's chat template (tokenizer_config.json or chat_template.jinja)")
    status, value = reader.recv()
    if status == "spec":
        raise SpecError(value)
    if status == "error":
        raise SpecError(f"{where} fails to render a user turn{' with template.system' * bool(spec.template.system)}:"
                        f" {shown(value)}")
    if value > max_text_chars(spec.model.max_length):
        raise SpecError(f"{where} renders one sample turn as {value:,} characters; restore the model folder's chat "
                        "template")


def _render_sample(conn, tok, system: Optional[str]) -> None:
    from peft_ray.rows.tokens import chat_prompt

    try:
        conn.send(("ok", len(chat_prompt(tok, "a sample sentence of the data " * 64, system))))
    except SpecError as e:   # rows.tokens' own check of what the template does with the text
        conn.send(("spec", str(e)))
    except Exception as e:   # the template's own raise_exception, a Jinja error
        conn.send(("error", f"{type(e).__name__}: {e}"))


POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def check_model_files(spec: JobSpec, model_path: str) -> None:
    """A local model's config.json parses, its safetensors headers read, and its position
    limit holds model.max_length plus the soft tokens: each failed late (a traceback, or a
    RuntimeError 46 s into start-up) before."""
    import json

    p = Path(model_path)
    if not p.is_dir():
        return                                        # a hub id: the cached config is checked on load
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"model.name_or_path: {p / 'config.json'} is not valid JSON ({shown(str(e))}); "
                        "restore the model's config.json") from None
    for f in sorted(p.glob("*.safetensors")):
        _check_safetensors(f, "model.name_or_path")
    limit = next((cfg[k] for k in POSITION_KEYS if isinstance(cfg.get(k), int)), None)
    soft = spec.method.input_positions()
    # A decoder-only model decodes after a prompt of up to max_length tokens (an encoder-decoder's
    # decoder has positions of its own): a learned position table (GPT-2) has no row past its limit.
    new = 0 if cfg.get("is_encoder_decoder") else get_task(spec.task.type).generated_tokens(spec.task)
    if limit is not None and spec.model.max_length + soft + new > limit:
        extra = (f" + method.num_virtual_tokens ({soft})" if soft else "") + \
            (f" + task.decoding.max_new_tokens ({new})" if new else "")
        raise SpecError(f"model.max_length ({spec.model.max_length}){extra} exceeds the {limit} positions of "
                        f"'{spec.model.name_or_path}' (config.json); lower model.max_length to at most "
                        f"{limit - soft - new}")


def _check_safetensors(path: Path, field: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:                            # SafetensorError, OSError: truncated, not safetensors
        raise SpecError(f"{field}: {path} is not a readable safetensors file ({shown(str(e))}); "
                        "download or copy it again") from None
