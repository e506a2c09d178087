"""Decoding for generation and translation: greedy, beam search and sampling.

Every step re-runs the model on the whole (prompt + generated) sequence instead
of keeping a KV cache. That is slower per token, but it is exactly the forward
the model was trained with for every PEFT method (prompt and p-tuning prepend
virtual tokens, prefix tuning injects K/V inside attention, LoRA/IA3 change
weights), so no method needs a cache-aware code path, and it is cheap at the
short outputs these tasks produce. Rows are right-padded; each hypothesis reads
the logits at its own last position, so padding never changes a result.

Forwards are collective under ZeRO-3: every worker keeps stepping (with a
dummy hypothesis) until all workers are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from peft_ray.data.batching import pad_lists
from peft_ray import dist as D


@dataclass
class LMIO:
    """How to run one decoding step for a model family."""

    kind: str                       # "causal" | "seq2seq"
    pad_id: int
    eos_id: int
    decoder_start_id: Optional[int] = None


def next_logprobs(model: Callable, io: LMIO, sources: List[List[int]], generated: List[List[int]],
                  device) -> torch.Tensor:
    """(N, V) log-probabilities of the next token for N hypotheses (source row + generated so far)."""
    if io.kind == "causal":
        seqs = [s + g for s, g in zip(sources, generated)]
        ids = pad_lists(seqs, io.pad_id).to(device)
        mask = pad_lists([[1] * len(s) for s in seqs], 0).to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits = logits[:, logits.shape[1] - ids.shape[1]:]                 # drop virtual-token positions
        last = torch.tensor([len(s) - 1 for s in seqs], device=logits.device)
        step = logits[torch.arange(len(seqs), device=logits.device), last]
    else:
        ids = pad_lists(sources, io.pad_id).to(device)
        mask = pad_lists([[1] * len(s) for s in sources], 0).to(device)
        dec = torch.tensor([[io.decoder_start_id] + g for g in generated], dtype=torch.long, device=device)
        step = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits[:, -1]
    return torch.log_softmax(step.float(), dim=-1)


def generate(model: Callable, io: LMIO, sources: List[List[int]], cfg, device="cpu") -> List[List[int]]:
    """Token ids generated for each source row (without the eos), per `cfg` (task.decoding)."""
    if cfg.strategy == "beam" and cfg.num_beams > 1:
        return _beam(model, io, sources, cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    out: List[List[int]] = [[] for _ in sources]
    active = list(range(len(sources)))
    for _ in range(cfg.max_new_tokens):
        if not D.any_true(bool(active)):
            break
        rows = active or [0]  # a finished worker still steps with a dummy (collective forwards)
        lp = next_logprobs(model, io, [sources[i] for i in rows], [out[i] for i in rows], device)
        if not active:
            continue
        tokens = _pick(lp, cfg, gen)
        still = []
        for i, tok in zip(active, tokens):
            if tok == io.eos_id:
                continue
            out[i].append(tok)
            still.append(i)
        active = still
    return out


def _pick(lp: torch.Tensor, cfg, gen: torch.Generator) -> List[int]:
    if cfg.strategy != "sample":
        return lp.argmax(-1).tolist()
    logits = (lp / cfg.temperature).cpu()
    if cfg.top_k:
        kth = logits.topk(min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_l, idx = logits.sort(dim=-1, descending=True)
        probs = sorted_l.softmax(-1)
        drop = probs.cumsum(-1) - probs > cfg.top_p          # keep the smallest set reaching top_p
        logits = logits.scatter(-1, idx, sorted_l.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1).tolist()


def _beam(model: Callable, io: LMIO, sources: List[List[int]], cfg, device) -> List[List[int]]:
    """Beam search, finished hypotheses scored by log-prob / length. A row stops once it holds
    num_beams finished hypotheses and no live beam can still beat the worst of them (HF's rule)."""
    K = cfg.num_beams
    beams = [[([], 0.0)] for _ in sources]              # per row: (tokens, summed log-prob)
    done: List[List[tuple]] = [[] for _ in sources]     # per row: (tokens, normalised score)
    for step in range(1, cfg.max_new_tokens + 1):
        live = [(r, b) for r in range(len(sources)) if not _row_done(done[r], beams[r], K, step)
                for b in range(len(beams[r]))]
        if not D.any_true(bool(live)):
            break
        flat = live or [(0, 0)]
        lp = next_logprobs(model, io, [sources[r] for r, _ in flat], [beams[r][b][0] for r, b in flat], device)
        if not live:
            continue
        top = lp.topk(K, dim=-1)
        cands: dict = {}
        for j, (r, b) in enumerate(live):
            toks, score = beams[r][b]
            for v, t in zip(top.values[j].tolist(), top.indices[j].tolist()):
                cands.setdefault(r, []).append((toks + [t], score + v))
        for r, cs in cands.items():
            cs.sort(key=lambda c: c[1], reverse=True)
            kept = []
            for toks, score in cs:
                if toks[-1] == io.eos_id:
                    done[r] = sorted(done[r] + [(toks[:-1], score / len(toks))], key=lambda c: -c[1])[:K]
                elif len(kept) < K:
                    kept.append((toks, score))
                if len(kept) == K:
                    break
            beams[r] = kept
    out = []
    for r in range(len(sources)):
        pool = done[r] or [(t, s / max(len(t), 1)) for t, s in beams[r]]
        out.append(max(pool, key=lambda c: c[1])[0])
    return out


def _row_done(done: List[tuple], beams: List[tuple], K: int, step: int) -> bool:
    if not beams:
        return True
    if len(done) < K:
        return False
    best_live = max(s for _, s in beams) / step   # HF's stopping heuristic (early_stopping=False)
    return min(s for _, s in done) >= best_live
