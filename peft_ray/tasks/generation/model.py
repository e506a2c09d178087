"""Generation and translation, model side: the LM base, the per-job runtime, the response-only
loss, decoding-based evaluation and `predict` output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F

from peft_ray import dist as D
from peft_ray.models import lm_kind, load_auto
from peft_ray.rows.tokens import IGNORE, eos_id, tokenizer
from peft_ray.tasks.generation import check_lm_head
from peft_ray.tasks.evaluate import sequence_eval
from peft_ray.tasks.generation.decoding import LMIO, generate
from peft_ray.tasks.generation.rows import DUMMY
from peft_ray.tasks.lm_common import base_config, keeps_logits, seq_logits, shift_right

AUTO = {"causal": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM"}


@dataclass(frozen=True)
class Runtime:
    """Resolved once per job: the loss, evaluation and predict read this, never the spec."""

    tokenizer: Any
    decoding: Any                       # task.decoding (DecodingSpec)
    scores: Callable[[List[str], List[str]], Dict[str, float]]   # the task's metrics
    eval_batch_size: int
    lm_kind: str = "causal"             # "causal" | "seq2seq": the base's architecture, not the task's


def load_base(spec, path: str):
    kind = lm_kind(path, spec.model.trust_remote_code)
    check_lm_head(spec, kind)          # the pre-flight's check, for callers that skip it
    return load_auto(path, AUTO[kind], seed=spec.train.seed, trust_remote_code=spec.model.trust_remote_code,
                     allow_pickle=spec.model.allow_pickle)


def runtime(spec, path: str, scores: Callable) -> Runtime:
    return Runtime(tokenizer(path, spec.model.trust_remote_code), spec.task.decoding, scores,
                   spec.train.eval_batch_size, lm_kind(path, spec.model.trust_remote_code))


# --- training ---------------------------------------------------------------------------------

def lm_logits(model, batch: dict) -> torch.Tensor:
    """Teacher-forced logits aligned with batch["labels"] (position t predicts labels[t])."""
    dev = model.device
    ids, mask, labels = batch["input_ids"].to(dev), batch["attention_mask"].to(dev), batch["labels"].to(dev)
    cfg = base_config(model)
    if getattr(cfg, "is_encoder_decoder", False):
        dec = shift_right(labels, cfg.decoder_start_token_id, cfg.pad_token_id)
        return model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.float()
    logits = seq_logits(model(input_ids=ids, attention_mask=mask).logits, ids.shape[1]).float()
    return F.pad(logits[:, :-1], (0, 0, 1, 0))           # position t now holds the prediction for token t


def loss(model, batch: dict, rt: Runtime = None) -> torch.Tensor:
    if keeps_logits(model) and not getattr(base_config(model), "is_encoder_decoder", False):
        return response_loss(model, batch)
    logits = lm_logits(model, batch)
    labels = batch["labels"].to(logits.device)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def response_loss(model, batch: dict) -> torch.Tensor:
    """The same response-only cross-entropy, with only the positions that predict a labelled
    token projected through the LM head (`logits_to_keep`): the prompt's rows never make their
    (n, V) logits. Position t predicts token t + 1; token 0 is always the prompt's (causal rows
    start with it), so no labelled token is left out."""
    dev = model.device
    ids, mask, labels = batch["input_ids"].to(dev), batch["attention_mask"].to(dev), batch["labels"].to(dev)
    targets = labels[:, 1:]
    scored = targets != IGNORE
    k = max(1, int(scored.sum(1).max()))
    # Each row's scored positions first, in order; a row with fewer than k is padded with
    # unscored positions, whose targets are IGNORE.
    keep = torch.sort((~scored).to(torch.int8), dim=1, stable=True).indices[:, :k]       # (B, k)
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float()   # (B, k, V)
    return F.cross_entropy(logits.flatten(0, 1), targets.gather(1, keep).flatten(), ignore_index=IGNORE)


# --- evaluation -------------------------------------------------------------------------------

def lm_io(model, tok) -> LMIO:
    cfg = base_config(model)
    enc_dec = getattr(cfg, "is_encoder_decoder", False)
    return LMIO(kind="seq2seq" if enc_dec else "causal", pad_id=tok.pad_token_id or 0, eos_id=eos_id(tok),
                decoder_start_id=getattr(cfg, "decoder_start_token_id", None))


def sources(batch: dict) -> List[List[int]]:
    """What decoding continues: each row's prompt, cut to model.max_length without regard to its
    reference (rows.py's source_ids)."""
    return [list(s) for s in batch["meta"]["source_ids"]]


def decode_batch(model, batch: dict, rt: Runtime) -> List[str]:
    tok = rt.tokenizer
    out = generate(model, lm_io(model, tok), sources(batch), rt.decoding, device=model.device)
    return [tok.decode(ids, skip_special_tokens=True).strip() for ids in out]


def evaluate(model, tables, rt: Runtime, pad_id: int) -> Dict[str, float]:
    """Every row is decoded exactly once (batches sharded over workers, lockstep for ZeRO-3)."""
    if tables is None:
        return {}

    def step(batch):
        texts = decode_batch(model, batch, rt)
        return lm_logits(model, batch), list(zip(texts, batch["meta"]["reference"]))

    pairs, loss_ = sequence_eval(model, tables, rt.eval_batch_size, pad_id, lambda: DUMMY, step)
    pairs = D.all_gather_list(pairs)
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    return {**rt.scores(preds, refs), "loss": loss_, "n_eval": len(refs)}


def predict(model, batch: dict, rt: Runtime) -> Dict[str, list]:
    return {"prediction": decode_batch(model, batch, rt)}
