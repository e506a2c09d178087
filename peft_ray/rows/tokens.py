"""Tokenizer conventions shared by the tasks' row builders. Torch-free (see rows/__init__.py)."""

from __future__ import annotations

import functools
import re
import secrets
from typing import Callable, List, Optional, Sequence, Tuple

from peft_ray.errors import SpecError

IGNORE = -100  # label of positions the loss skips (HF convention)


@functools.lru_cache(maxsize=8)
def tokenizer(path: str, trust_remote_code: bool = False):
    from peft_ray.models import load_tokenizer

    tok = load_tokenizer(path, trust_remote_code)
    # Rows are cut to model.max_length by peft-ray itself (and counted in the summary), so the
    # tokenizer's "sequence length is longer than the specified maximum ... indexing errors"
    # warning about the uncut text is wrong here; transformers keeps this flag for saying it once.
    getattr(tok, "deprecation_warnings", {})["sequence-length-is-longer-than-the-specified-maximum"] = True
    return PlainTextTokenizer(tok)


class PlainTextTokenizer:
    """The tokenizer with user text kept as text: `[SEP]`, `[MASK]`, `<|endoftext|>` in a row
    are encoded as ordinary characters (split_special_tokens), so a row cannot move its own
    scored position or forge a chat turn. Two kinds of markup are real tokens, each behind a
    per-process random string no data can know: the templates' mask slot (`mask_token`, the
    mask id) and the chat template's own special tokens (`mark_specials`, their ids)."""

    def __init__(self, tok):
        self._tok = tok
        self.mask_token = f"\ue000{secrets.token_hex(8)}\ue000" if tok.mask_token else tok.mask_token
        self.special_mark = f"\ue001{secrets.token_hex(8)}\ue001"
        slots = ([re.escape(self.mask_token)] if self.mask_token else []) + \
            [f"{re.escape(self.special_mark)}.*?{re.escape(self.special_mark)}"]
        self._markup = re.compile(f"({'|'.join(slots)})", re.S)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    @functools.lru_cache(maxsize=2)  # noqa: B019 (with and without a system turn, per tokenizer)
    def chat_skeleton(self, with_system: bool) -> str:
        """The chat template rendered around CHAT_HOLES, its special-token strings marked."""
        msgs = ([{"role": "system", "content": CHAT_HOLES["system"]}] if with_system else []) + \
            [{"role": "user", "content": CHAT_HOLES["user"]}]
        rendered = self._tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        for role in ("user", "system") if with_system else ("user",):
            if rendered.count(CHAT_HOLES[role]) != 1:   # dropped, changed (| upper) or written twice
                raise SpecError(f"template.chat: the model's chat template writes the {role} turn's text "
                                f"{rendered.count(CHAT_HOLES[role])} times, not once as written (it drops, "
                                "transforms or repeats it); use template.chat: false or another model")
        return self.mark_specials(rendered)

    def mark_specials(self, text: str) -> str:
        """`text` (trusted markup, e.g. a rendered chat template) with its special-token strings
        marked, so that __call__ encodes them as the special ids rather than as characters."""
        found = self._specials_re()
        if found is None:
            return text
        return found.sub(lambda m: f"{self.special_mark}{m.group(0)}{self.special_mark}", text)

    @functools.lru_cache(maxsize=1)  # noqa: B019 (one per tokenizer, which lives as long as the process)
    def _specials_re(self):
        """The special-token strings, longest first, as one pattern (None: the tokenizer has none)."""
        specials = sorted({t for t in self._tok.all_special_tokens if t}, key=len, reverse=True)
        return re.compile("|".join(map(re.escape, specials))) if specials else None

    def __call__(self, text, **kw):
        kw.setdefault("split_special_tokens", True)
        texts = [text] if isinstance(text, str) else text
        if kw.get("is_split_into_words") or \
                not any(isinstance(t, str) and self._markup.search(t) for t in texts):
            return self._tok(text, **kw)
        ids = [self._with_markup(t, kw) for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def _piece_ids(self, piece: str) -> List[int]:
        if piece == self.mask_token:
            return [self._tok.mask_token_id]
        if piece.startswith(self.special_mark):
            return [self._tok.convert_tokens_to_ids(piece[len(self.special_mark):-len(self.special_mark)])]
        return self._tok(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"] if piece else []

    def _with_markup(self, text: str, kw) -> List[int]:
        """Each piece between markup as plain text, the mask slots and marked specials as their ids."""
        body = [i for piece in self._markup.split(text) for i in self._piece_ids(piece)]
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
    if not isinstance(tok, PlainTextTokenizer):
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # The template's markup (<|im_start|> ...) must reach the model as its special ids, the row's
    # text as characters: the template is rendered once around fixed holes, its specials marked,
    # then each row's text goes between the parts (it is never searched or replaced in).
    # Once, and the same everywhere: the one rendering the pre-flight timed is the only one a run does.
    head, tail = chat_parts(tok, system)
    return head + text + tail


def chat_parts(tok: "PlainTextTokenizer", system: Optional[str]) -> Tuple[str, str]:
    """The rendered chat template before and after the user's text (chat_skeleton has it once)."""
    head, tail = tok.chat_skeleton(bool(system)).replace(CHAT_HOLES["system"], system or "").split(
        CHAT_HOLES["user"], 1)
    return head, tail


CHAT_HOLES = {"system": "\ue002system\ue002", "user": "\ue002user\ue002"}


def cut_prompt(tok, ids: List[int], room: int, chat_text: Optional[str] = None,
               system: Optional[str] = None) -> List[int]:
    """A prompt's ids within `room`, its end kept (nearest the answer). A chat prompt (`chat_text`:
    the user turn it was rendered from) keeps the template's markup, the system turn and the
    assistant header whole and cuts the start of the user's text: cutting the rendered prompt's
    start took `<|im_start|>system` off and left the model a half turn."""
    if len(ids) <= room:
        return ids
    if chat_text is None or not isinstance(tok, PlainTextTokenizer):
        return ids[-room:]
    head, tail = (tok(part, add_special_tokens=False)["input_ids"] for part in chat_parts(tok, system))
    keep = room - len(head) - len(tail)
    if keep <= 0:                    # no room for any text: the markup alone, its end
        return (head + tail)[-room:]
    return head + tok(chat_text, add_special_tokens=False)["input_ids"][-keep:] + tail


def fit_columns(tok, columns: Sequence[str], row: dict, length_of: Callable[[dict], int], max_length: int) -> dict:
    """`row` with the ends of its text columns cut, at token boundaries of each column (its offsets;
    the text kept as written), until `length_of(row)` (the rendered template's tokens) fits
    `max_length`: the longest columns first, to a common length (one token at least). The
    template's own words stay whole: a fixed cut of the rendered text took the cue before a mask
    ("Overall it was [MASK]") or a question after the text, which the template writes to be read,
    before any of the input (an ML review). `columns` lists a column once per use in the template
    (a column used twice gives up half as many tokens a pass). The row comes back as it is where
    it already fits or the columns cannot absorb the cut (a tokenizer without offsets, a template
    longer than the room): the caller's own cut applies then."""
    uses = {c: list(columns).count(c) for c in columns}
    fitted = row
    for _ in range(2 * len(uses) + 2):     # boundary effects may leave a token or two: another pass
        over = length_of(fitted) - max_length
        if over <= 0:
            return fitted
        offsets = {}
        for c in uses:
            if isinstance(fitted.get(c), str):
                try:
                    offsets[c] = tok(fitted[c], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
                except (NotImplementedError, TypeError, ValueError, KeyError):   # a slow (Python) tokenizer
                    return row
        counts = {c: len(o) for c, o in offsets.items()}
        cap = max(counts.values(), default=0)
        # longest first (HF's truncation="longest_first" over the columns): the largest cap that frees
        # `over` tokens, each use of a column counting
        while cap > 1 and sum(max(0, n - cap) * uses[c] for c, n in counts.items()) < over:
            cap -= 1
        cut = {c: cap for c, n in counts.items() if n > cap >= 1}
        if not cut:
            return fitted
        fitted = {**fitted, **{c: fitted[c][:offsets[c][k - 1][1]] for c, k in cut.items()}}
    return fitted     # as close as the passes came: the caller's cut takes the rest


def response_sep(chat: bool, written: str = " ") -> str:
    """What joins a prompt and its response: what the template writes before {label} in plain text
    (Template.label_sep; a space by default), nothing after a chat template's assistant header
    (which ends in a newline)."""
    return "" if chat else written


def split_ids(tok, prompt: str, response: str, sep: str = " ") -> Tuple[List[int], List[int]]:
    """Prompt and response ids such that prompt + response is how the joined text tokenizes
    (byte-level BPE merges a leading space into the next token, so the two are not
    tokenized independently when the joined text has the prompt's ids as a prefix)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    full = tok(f"{prompt}{sep}{response}".strip(), add_special_tokens=False)["input_ids"]
    if full[:len(p)] == p and len(full) > len(p):
        return p, full[len(p):]
    return p, tok(response, add_special_tokens=False)["input_ids"]
