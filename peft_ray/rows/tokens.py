"""Tokenizer conventions shared by the tasks' row builders. Torch-free (see rows/__init__.py)."""

from __future__ import annotations

import functools
import secrets
from typing import List, Optional, Tuple

IGNORE = -100  # label of positions the loss skips (HF convention)


@functools.lru_cache(maxsize=8)
def tokenizer(path: str, trust_remote_code: bool = False):
    from peft_ray.models import load_tokenizer

    return PlainTextTokenizer(load_tokenizer(path, trust_remote_code))


class PlainTextTokenizer:
    """The tokenizer with user text kept as text: `[SEP]`, `[MASK]`, `<|endoftext|>` in a row
    are encoded as ordinary characters (split_special_tokens), so a row cannot move its own
    scored position. The templates' mask slot is `mask_token` here: a per-process random
    string no data can know, encoded as the real mask id."""

    def __init__(self, tok):
        self._tok = tok
        self.mask_token = f"\ue000{secrets.token_hex(8)}\ue000" if tok.mask_token else tok.mask_token

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, text, **kw):
        kw.setdefault("split_special_tokens", True)
        texts = [text] if isinstance(text, str) else text
        if kw.get("is_split_into_words") or not self.mask_token or \
                not any(isinstance(t, str) and self.mask_token in t for t in texts):
            return self._tok(text, **kw)
        ids = [self._with_mask(t, kw) for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def _with_mask(self, text: str, kw) -> List[int]:
        """Each piece between mask slots as plain text, the slots as the mask id."""
        body: List[int] = []
        for i, piece in enumerate(text.split(self.mask_token)):
            body += ([self._tok.mask_token_id] if i else []) + \
                self._tok(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if not kw.get("add_special_tokens", True):
            return body
        lead, trail = special_tokens(self._tok)
        if kw.get("truncation") and kw.get("max_length"):
            body = body[:kw["max_length"] - len(lead) - len(trail)]
        return list(lead) + body + list(trail)


@functools.lru_cache(maxsize=8)  # per tokenizer object; row builders call it per row
def special_tokens(tok) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The special tokens the tokenizer puts before and after text ([CLS] .. [SEP]; <s>; none)."""
    with_special = tok("x")["input_ids"]
    plain = tok("x", add_special_tokens=False)["input_ids"]
    for i in range(len(with_special) - len(plain) + 1):
        if with_special[i:i + len(plain)] == plain:
            return tuple(with_special[:i]), tuple(with_special[i + len(plain):])
    return (), ()


def lead_tokens(tok) -> Tuple[int, ...]:
    """The special tokens the tokenizer puts before text ([CLS], Llama's <s>; none for GPT-2)."""
    return special_tokens(tok)[0]


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
