"""Generation (QA, dialogue) and translation: one prompt in, one response out.

The template's {label} slot marks where the response starts; the response is
the `task.target_column` value. Decoder-only models (GPT-2, Llama) train on
prompt + response + eos with the loss on the response only; encoder-decoder
models (T5) encode the prompt and decode the response. Evaluation decodes per
`task.decoding`, then scores exact match / token F1 / ROUGE-L (generation) or
BLEU / chrF (translation, sacrebleu).
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from peft_ray.metrics import generation_metrics, translation_metrics
from peft_ray.models import lm_kind, load_auto
from peft_ray.tasks.base import TASKS, TaskImpl
from peft_ray.tasks.decoding import LMIO, generate
from peft_ray.tasks.lm_common import base_config, seq_logits, shift_right
from peft_ray.tasks.rows.tokens import IGNORE, eos_id, tokenizer
from peft_ray.train import dist as D

AUTO = {"causal": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM"}


def load_base(spec, path: str):
    kind = lm_kind(path, spec.model.trust_remote_code)
    if kind not in AUTO:
        from peft_ray.errors import SpecError

        raise SpecError(f"model.name_or_path: task.type {spec.task.type} needs a model with an LM head "
                        f"(GPT-2/Llama or T5 families); '{spec.model.name_or_path}' is an encoder. "
                        "Use a classification or token_classification task with it")
    return load_auto(path, AUTO[kind], seed=spec.train.seed, trust_remote_code=spec.model.trust_remote_code,
                     allow_pickle=spec.model.allow_pickle)


# --- training ---------------------------------------------------------------------------------

DUMMY = {"input_ids": [0, 0], "target_ids": [IGNORE, IGNORE], "prompt_len": 1, "reference": "", "length": 2,
         "truncated": False}  # a worker with no validation rows left still steps (collective forwards)


def lm_logits(engine, batch: dict) -> torch.Tensor:
    """Teacher-forced logits aligned with batch["labels"] (position t predicts labels[t])."""
    dev = engine.device
    ids, mask, labels = batch["input_ids"].to(dev), batch["attention_mask"].to(dev), batch["labels"].to(dev)
    cfg = base_config(engine)
    if getattr(cfg, "is_encoder_decoder", False):
        dec = shift_right(labels, cfg.decoder_start_token_id, cfg.pad_token_id)
        return engine(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.float()
    logits = seq_logits(engine(input_ids=ids, attention_mask=mask).logits, ids.shape[1]).float()
    return F.pad(logits[:, :-1], (0, 0, 1, 0))           # position t now holds the prediction for token t


def loss(engine, batch: dict, spec=None) -> torch.Tensor:
    logits = lm_logits(engine, batch)
    labels = batch["labels"].to(logits.device)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


# --- evaluation -------------------------------------------------------------------------------

def lm_io(engine, tok) -> LMIO:
    cfg = base_config(engine)
    enc_dec = getattr(cfg, "is_encoder_decoder", False)
    return LMIO(kind="seq2seq" if enc_dec else "causal", pad_id=tok.pad_token_id or 0, eos_id=eos_id(tok),
                decoder_start_id=getattr(cfg, "decoder_start_token_id", None))


def sources(batch: dict) -> List[List[int]]:
    ids, n = batch["input_ids"].tolist(), batch["meta"]["prompt_len"]
    return [row[:k] for row, k in zip(ids, n)]


def decode_batch(engine, batch: dict, spec, tok) -> List[str]:
    out = generate(engine, lm_io(engine, tok), sources(batch), spec.task.decoding, device=engine.device)
    return [tok.decode(ids, skip_special_tokens=True).strip() for ids in out]


def evaluate(engine, tables, spec, pad_id: int) -> Dict[str, float]:
    """Every row is decoded exactly once (batches sharded over workers, lockstep for ZeRO-3)."""
    from peft_ray.models import resolve_model_path
    from peft_ray.train.evaluate import sequence_eval

    if tables is None:
        return {}
    tok = tokenizer(resolve_model_path(spec.model.name_or_path), spec.model.trust_remote_code)

    def step(batch):
        texts = decode_batch(engine, batch, spec, tok)
        return lm_logits(engine, batch), list(zip(texts, batch["meta"]["reference"]))

    pairs, loss = sequence_eval(engine, tables, spec, pad_id, lambda: DUMMY, step)
    pairs = D.all_gather_list(pairs)
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    scores = translation_metrics if spec.task.type == "translation" else generation_metrics
    return {**scores(preds, refs), "loss": loss, "n_eval": len(refs)}


def predict(engine, batch: dict, spec, tok) -> Dict[str, list]:
    return {"prediction": decode_batch(engine, batch, spec, tok)}


TASKS.register("generation")(TaskImpl(
    name="generation", load_base=load_base, loss=loss, evaluate=evaluate,
    primary_metric="exact_match", headline=("exact_match", "token_f1", "rouge_l"), predict=predict))
TASKS.register("translation")(TaskImpl(
    name="translation", load_base=load_base, loss=loss, evaluate=evaluate,
    primary_metric="bleu", headline=("bleu", "chrf", "exact_match"), predict=predict))
