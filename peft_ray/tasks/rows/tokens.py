"""Tokenizer conventions shared by the tasks' row builders. Torch-free (see rows/__init__.py)."""

from __future__ import annotations

import functools
from typing import List, Optional, Tuple

IGNORE = -100  # label of positions the loss skips (HF convention)


@functools.lru_cache(maxsize=8)
def tokenizer(path: str, trust_remote_code: bool = False):
    from peft_ray.models import load_tokenizer

    return load_tokenizer(path, trust_remote_code)


@functools.lru_cache(maxsize=8)  # per tokenizer object; row builders call it per row
def lead_tokens(tok) -> Tuple[int, ...]:
    """The special tokens the tokenizer puts before text ([CLS], Llama's <s>; none for GPT-2)."""
    with_special = tok("x")["input_ids"]
    plain = tok("x", add_special_tokens=False)["input_ids"]
    for i in range(len(with_special) - len(plain) + 1):
        if with_special[i:i + len(plain)] == plain:
            return tuple(with_special[:i])
    return ()


def eos_id(tok) -> int:
    for tid in (tok.eos_token_id, tok.sep_token_id, tok.pad_token_id):
        if tid is not None:
            return tid
    raise ValueError("the tokenizer has no eos, sep or pad token to end a response with")


def chat_prompt(tok, text: str, system: Optional[str] = None) -> str:
    """`text` as the user turn of the tokenizer's chat template, ending where the assistant's
    reply starts (LLaMA-Factory/axolotl style); the response or label words follow it."""
    if not getattr(tok, "chat_template", None):
        raise ValueError("template.chat: the tokenizer has no chat template; set template.chat: false")
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def response_sep(chat: bool) -> str:
    """What joins a prompt and its response: a space in plain text, nothing after a chat
    template's assistant header (which ends in a newline)."""
    return "" if chat else " "


def split_ids(tok, prompt: str, response: str, sep: str = " ") -> Tuple[List[int], List[int]]:
    """Prompt and response ids such that prompt + response is how the joined text tokenizes
    (byte-level BPE merges a leading space into the next token, so the two are not
    tokenized independently when the joined text has the prompt's ids as a prefix)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    full = tok(f"{prompt}{sep}{response}".strip(), add_special_tokens=False)["input_ids"]
    if full[:len(p)] == p and len(full) > len(p):
        return p, full[len(p):]
    return p, tok(response, add_special_tokens=False)["input_ids"]
