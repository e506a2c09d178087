"""Decoding for generation and translation: greedy, beam search and sampling.

Two paths, the same tokens:
- **KV cache** (greedy and sampling on a causal LM whose adapter only changes weights:
  LoRA, IA3, or no adapter; or whose soft prompt seeds the cache: prompt tuning, P-tuning,
  methods/prompt_decoding.py): the prompts are left-padded with explicit position ids, run
  once, and every later step feeds one token per row against HF's cache. O(n) per token.
- **Full re-run** (everything else): every step re-runs the model on the whole (prompt +
  generated) sequence. It is exactly the forward the model was trained with for prefix
  tuning (K/V injected inside attention), so it needs no cache-aware code path; it is also
  the path for beam search and encoder-decoders. Rows are right-padded; each hypothesis
  reads the logits at its own last position, so padding never changes a result.

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


def kv_cache_exact(model) -> bool:
    """True when HF's KV cache gives this model's exact forward: an adapter that says so
    (`kv_cache_exact`: LoRA and IA3 change weights only; prompt tuning and P-tuning seed the
    cache with their prompt, methods/prompt_decoding.py) or a plain HF generator."""
    inner = getattr(model, "module", model)          # DeepSpeed's engine / InferenceEngine
    flag = getattr(inner, "kv_cache_exact", None)
    if flag is not None:
        return bool(flag)
    can = getattr(inner, "can_generate", None)
    return bool(callable(can) and can())


def generate(model: Callable, io: LMIO, sources: List[List[int]], cfg, device="cpu") -> List[List[int]]:
    """Token ids generated for each source row (without the eos), per `cfg` (task.decoding)."""
    if cfg.strategy == "beam" and cfg.num_beams > 1:
        return _beam(model, io, sources, cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    if io.kind == "causal" and kv_cache_exact(model):
        return _cached(model, io, sources, cfg, device, gen)
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


def _cached(model: Callable, io: LMIO, sources: List[List[int]], cfg, device, gen) -> List[List[int]]:
    """Greedy/sampling with HF's KV cache: the same picks, on the same rows, as the loop above
    (sampling draws for the active rows only, so the random stream matches too)."""
    n = max(len(s) for s in sources)
    ids = torch.tensor([[io.pad_id] * (n - len(s)) + s for s in sources], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in sources], dtype=torch.long, device=device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)          # left padding must not shift RoPE / learned positions
    res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    out: List[List[int]] = [[] for _ in sources]
    active = list(range(len(sources)))
    for t in range(cfg.max_new_tokens):
        if active:
            lp = torch.log_softmax(res.logits[:, -1].float(), dim=-1)
            still = []
            for i, tok in zip(active, _pick(lp[active], cfg, gen)):
                if tok != io.eos_id:
                    out[i].append(tok)
                    still.append(i)
            active = still
        if t == cfg.max_new_tokens - 1 or not D.any_true(bool(active)):
            break
        nxt = torch.full((len(sources), 1), io.pad_id, dtype=torch.long, device=device)
        for i in active:
            nxt[i, 0] = out[i][-1]
        mask = torch.cat([mask, mask.new_ones(len(sources), 1)], dim=1)
        pos = pos[:, -1:] + 1
        # Finished rows keep stepping on pad (their results are final): one forward per step on
        # every worker, as ZeRO-3's collective forwards need.
        res = model(input_ids=nxt, attention_mask=mask, position_ids=pos, cache=res.cache,
                    use_cache=True)
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
    """Beam search, hypotheses scored by log-prob / length, as HF's `generate(num_beams=K,
    length_penalty=1.0, early_stopping=False)`. A row stops once it holds num_beams finished
    hypotheses and no live beam can still beat the worst of them; at max_new_tokens the live beams
    compete with the finished ones."""
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
            for rank, (toks, score) in enumerate(cs):
                if toks[-1] == io.eos_id:
                    if rank < K:        # HF: an ending counts only among the row's K best candidates
                        done[r] = sorted(done[r] + [(toks[:-1], score / len(toks))], key=lambda c: -c[1])[:K]
                elif len(kept) < K:
                    kept.append((toks, score))
                if len(kept) == K:
                    break
            beams[r] = kept
    out = []
    for r in range(len(sources)):
        # Beams still running at max_new_tokens compete with the finished ones (HF's finalize).
        pool = done[r] + [(t, s / max(len(t), 1)) for t, s in beams[r]]
        out.append(max(pool, key=lambda c: c[1])[0])
    return out


def _row_done(done: List[tuple], beams: List[tuple], K: int, step: int) -> bool:
    if not beams:
        return True
    if len(done) < K:
        return False
    best_live = max(s for _, s in beams) / step   # HF's stopping heuristic (early_stopping=False)
    return min(s for _, s in done) >= best_live
