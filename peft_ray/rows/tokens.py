"""Tokenizer conventions shared by the tasks' row builders. Torch-free (see rows/__init__.py)."""

from __future__ import annotations

import functools
import re
import secrets
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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
        ids = self._with_markup(texts, kw)
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def _with_markup(self, texts: List[str], kw) -> List[List[int]]:
        """Each piece between markup as plain text, the mask slots and marked specials as their ids.
        The plain pieces of every text are encoded in one batched call: a classification head's
        rows all hold the mask slot, and a call per piece was most of their preprocessing."""
        split = [self._markup.split(t) for t in texts]
        plain = [p for pieces in split for p in pieces if p and not self._is_markup(p)]
        encoded = iter(self._tok(plain, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                       if plain else [])
        lead, trail = special_tokens(self._tok)
        out = []
        for pieces in split:
            body = [i for p in pieces if p
                    for i in (self._markup_ids(p) if self._is_markup(p) else next(encoded))]
            if kw.get("add_special_tokens", True):
                if kw.get("truncation") and kw.get("max_length"):
                    body = body[:kw["max_length"] - len(lead) - len(trail)]
                body = list(lead) + body + list(trail)
            out.append(body)
        return out

    def _is_markup(self, piece: str) -> bool:
        return piece == self.mask_token or piece.startswith(self.special_mark)

    def _markup_ids(self, piece: str) -> List[int]:
        if piece == self.mask_token:
            return [self._tok.mask_token_id]
        return [self._tok.convert_tokens_to_ids(piece[len(self.special_mark):-len(self.special_mark)])]


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
    """fit_columns_many for one row (`length_of`: the rendered template's tokens of one row)."""
    return fit_columns_many(tok, columns, [row], lambda rs: [length_of(r) for r in rs], max_length)[0]


def fit_columns_many(tok, columns: Sequence[str], rows: List[dict], length_of: Callable[[List[dict]], List[int]],
                     max_length: int, lengths: Optional[List[int]] = None) -> List[dict]:
    """`rows` with the ends of their text columns cut, at token boundaries of each column (its
    offsets; the text kept as written), until `length_of` (the rendered template's tokens of each
    row; `lengths`: those of `rows` where the caller has them) fits `max_length`: the longest columns
    first, to a common length (one token at least). The template's own words stay whole: a fixed cut
    of the rendered text took the cue before a mask ("Overall it was [MASK]") or a question after
    the text, which the template writes to be read, before any of the input (an ML review).
    `columns` lists a column once per use in the template (a column used twice gives up half as many
    tokens a pass). A row comes back as the same object where it already fits or the columns cannot
    absorb the cut (a tokenizer without offsets, a template longer than the room): the caller's own
    cut applies then. The tokenizer is called once a pass for all rows, not per row: in a set of long
    documents nearly every row is cut, and per-row calls tripled its preprocessing."""
    uses = {c: list(columns).count(c) for c in columns}
    fitted, todo = list(rows), list(range(len(rows)))
    for _ in range(2 * len(uses) + 2):     # boundary effects may leave a token or two: another pass
        counted = lengths if lengths is not None else length_of([fitted[i] for i in todo])
        lengths = None
        over = {i: n - max_length for i, n in zip(todo, counted) if n > max_length}
        if not over:
            break
        offsets: Dict[int, Dict[str, list]] = {i: {} for i in over}
        for c in uses:
            have = [i for i in over if isinstance(fitted[i].get(c), str)]
            if not have:
                continue
            try:
                found = tok([fitted[i][c] for i in have], add_special_tokens=False,
                            return_offsets_mapping=True)["offset_mapping"]
            except (NotImplementedError, TypeError, ValueError, KeyError):   # a slow (Python) tokenizer
                return list(rows)
            for i, o in zip(have, found):
                offsets[i][c] = o
        todo = []
        for i, need in over.items():
            cut = _column_caps({c: len(o) for c, o in offsets[i].items()}, uses, need)
            if cut:
                fitted[i] = {**fitted[i], **{c: fitted[i][c][:offsets[i][c][k - 1][1]] for c, k in cut.items()}}
                todo.append(i)
        if not todo:
            break
    return fitted     # as close as the passes came: the caller's cut takes the rest


def _column_caps(counts: Dict[str, int], uses: Dict[str, int], over: int) -> Dict[str, int]:
    """{column: tokens kept} for the columns to cut: the largest common cap that frees `over`
    tokens, longest first (HF's truncation="longest_first" over the columns), each use of a column
    counting; {} where no column can give anything up."""
    def freed(cap: int) -> int:
        return sum(max(0, n - cap) * uses[c] for c, n in counts.items())

    low, cap = 1, max(counts.values(), default=0)   # freed() falls as the cap rises: the largest that frees enough
    while low < cap:
        mid = (low + cap + 1) // 2
        low, cap = (mid, cap) if freed(mid) >= over else (low, mid - 1)
    return {c: cap for c, n in counts.items() if n > cap >= 1}


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
