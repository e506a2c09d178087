"""Classification by verbalizer scoring: the LM head scores each label's words.

- Masked LMs (BERT family): the template's {label} slot becomes the mask token;
  a label's score is the log-probability of its words at the mask (a multi-token
  word is scored by its first sub-token, OpenPrompt's default "first" handler).
- Causal LMs (GPT-2, Llama): the prompt is the template up to {label}; a word's
  score is the summed log-probability of all of its tokens after the prompt
  (multi-token words are teacher-forced in one extra batched forward).

A label with several words scores log(mean of its words' probabilities).
Training (model.loss) is cross-entropy over the label scores (the LM head is not trained
unless it is listed in method.modules_to_save).
"""

from __future__ import annotations

import functools
import math
from typing import Dict, Optional, Tuple

import torch

from peft_ray.data.batching import pad_lists
from peft_ray.errors import SpecError
from peft_ray.models import lm_kind, resolve_model_path
from peft_ray.rows.tokens import chat_prompt, response_sep, split_ids, tokenizer
from peft_ray.tasks.classification.config import scoring_for, verbalizer_words
from peft_ray.tasks.lm_common import keeps_logits, seq_logits
from peft_ray.templates import Template

Candidates = Tuple[Tuple[Tuple[int, ...], ...], ...]   # per label, per word: token ids


def candidates(tok_path: str, trust: bool, verbalizer: Tuple[Tuple[str, ...], ...], scoring: str,
               chat: bool = False, sep: str = " ", before: str = "x") -> Candidates:
    """Each label word's token ids as they follow the prompt in a row: after `before` (the
    template's own text before {label}, or a stand-in for a row's text) and `sep`."""
    tok = tokenizer(tok_path, trust)
    if chat:
        before = chat_prompt(tok, "x")               # the assistant header precedes the reply
    elif scoring == "mlm":
        before, sep = "x", " "                      # the mask is a whole token: the word's own first token
    out = []
    for words in verbalizer:
        ids = []
        for w in words:
            t = tuple(split_ids(tok, before, w, response_sep(chat, sep))[1])   # as it tokenizes after the prompt
            if not t:
                raise ValueError(f"template.verbalizer: word {w!r} tokenizes to nothing")
            ids.append(t[:1] if scoring == "mlm" else t)
        out.append(tuple(ids))
    return tuple(out)


def spec_candidates(spec, path: Optional[str] = None) -> Tuple[Candidates, str]:
    """The job's candidate token ids and scoring kind, for a verbalizer-scored job (the task's
    runtime, and the tune pre-screen per template). `path`: the resolved model folder."""
    path = path or resolve_model_path(spec.model.name_or_path)
    scoring = scoring_for(spec.task.head, lm_kind(path, spec.model.trust_remote_code))
    words = verbalizer_words(spec.task.labels, spec.template.verbalizer)
    chat = spec.template.chat and scoring == "causal"
    template = Template.parse(spec.template.text)
    # "Sentiment:" + "great", not "x" + "great": a WordPiece tokenizer reads "xgreat" as x ##gre ##at
    return candidates(path, spec.model.trust_remote_code, words, scoring, chat, template.label_sep,
                      template.text_before_label or "x"), scoring


def check_labels_differ(spec) -> None:
    """Every label is scored by tokens of its own: two labels whose words give the same tokens
    (with masked-LM scoring only a word's first token counts: 'unwatchable' and 'unwise' are both
    'un') score alike on every row, and the first of them always wins."""
    try:
        cands, scoring = spec_candidates(spec)
    except ValueError as e:           # a word that tokenizes to nothing
        raise SpecError(str(e)) from None
    seen: Dict[frozenset, str] = {}
    for label, words in zip(spec.task.labels, cands):
        same = seen.setdefault(frozenset(words), label)
        if same != label:
            first = " (masked-LM scoring reads a word's first token only)" if scoring == "mlm" else ""
            raise SpecError(f"template.verbalizer: labels '{same}' and '{label}' are scored by the same tokens "
                            f"{sorted(words)}{first}, so they tie on every row; pick words that tokenize apart")
    if scoring == "mlm":
        _note_cut_words(cut_words(spec))


def cut_words(spec) -> Tuple[str, ...]:
    """Label words that masked-LM scoring reads by their first sub-token only, as 'word -> token'."""
    path = resolve_model_path(spec.model.name_or_path)
    tok = tokenizer(path, spec.model.trust_remote_code)
    cut = []
    for words in verbalizer_words(spec.task.labels, spec.template.verbalizer):
        for w in words:
            ids = split_ids(tok, "x", w, " ")[1]
            if len(ids) > 1:
                cut.append(f"{w!r} -> {tok.convert_ids_to_tokens(ids[:1])[0]!r}")
    return tuple(cut)


@functools.lru_cache(maxsize=None)   # once a process, however often the job is checked
def _note_cut_words(cut: Tuple[str, ...]) -> None:
    import sys

    if cut:
        print(f"[peft-ray] note: masked-LM scoring reads a label word's first sub-token only: {', '.join(cut[:6])}"
              f"{' ...' if len(cut) > 6 else ''}. Words of one token each are scored whole", file=sys.stderr)


# --- scoring ---------------------------------------------------------------------------------

def label_scores(engine, batch: dict, cands: Candidates, scoring: str, keep_logits: bool = True) -> torch.Tensor:
    """(B, K) label scores: log of the mean probability of each label's words.

    keep_logits=False makes the full (B, n, V) logits first (the reference the tests and
    bench/scored_logits.py compare against)."""
    dev = engine.device
    ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
    pos = batch["score_pos"].to(dev)
    if keep_logits and scoring == "causal" and keeps_logits(engine):
        # Only each row's scored position reaches the LM head: exact, and the (B, n, V) logits of
        # the other positions are never made. Positions are the inputs'; a method that prepends
        # virtual tokens shifts them itself (methods/virtual_tokens.prepend_prompt).
        out = engine(input_ids=ids, attention_mask=mask, logits_to_keep=pos.unsqueeze(1))
        first = torch.log_softmax(out.logits[:, 0].float(), dim=-1)                      # (B, V)
    else:
        logits = seq_logits(engine(input_ids=ids, attention_mask=mask).logits, ids.shape[1]).float()
        first = torch.log_softmax(logits[torch.arange(len(ids), device=dev), pos], dim=-1)
    words = [w for label in cands for w in label]
    if scoring == "mlm" or all(len(w) == 1 for w in words):
        per_word = first[:, [w[0] for w in words]]                                       # (B, W)
    else:
        per_word = _multi_token(engine, batch, words, first)
    return _pool(per_word, cands)


def _multi_token(engine, batch: dict, words, first: torch.Tensor) -> torch.Tensor:
    """Sum of log p(word tokens | prompt) for causal LMs, teacher-forcing each word's tokens."""
    dev = engine.device
    ids, pos = batch["input_ids"].tolist(), batch["score_pos"].tolist()
    seqs, where = [], []
    for b in range(len(ids)):
        for j, w in enumerate(words):
            if len(w) > 1:
                seqs.append(ids[b][:pos[b] + 1] + list(w[:-1]))
                where.append((b, j))
    x = pad_lists(seqs, 0).to(dev)
    m = pad_lists([[1] * len(s) for s in seqs], 0).to(dev)
    lp = torch.log_softmax(seq_logits(engine(input_ids=x, attention_mask=m).logits, x.shape[1]).float(), -1)
    out = first[:, [w[0] for w in words]].clone()
    for k, (b, j) in enumerate(where):
        w = words[j]
        steps = torch.arange(pos[b] + 1, pos[b] + len(w), device=dev)
        out[b, j] = out[b, j] + lp[k, steps, torch.tensor(w[1:], device=dev)].sum()
    return out


def _pool(per_word: torch.Tensor, cands: Candidates) -> torch.Tensor:
    cols, i = [], 0
    for label in cands:
        n = len(label)
        cols.append(torch.logsumexp(per_word[:, i:i + n], dim=-1) - math.log(n))
        i += n
    return torch.stack(cols, dim=-1)
