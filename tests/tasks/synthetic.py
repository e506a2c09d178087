"""Synthetic tasks that a tiny model from config can learn in a few hundred steps, and the
tiny models themselves (BERT, GPT-2, Llama, T5 families) sharing one WordPiece vocabulary."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KEYS = [f"k{i}" for i in range(12)]
VALS = [f"v{i}" for i in range(8)]
PER = ["alice", "bob", "carol", "dave", "erin"]
LOC = ["paris", "rome", "oslo", "lima", "cairo"]
ORG = [["acme", "corp"], ["globex", "inc"], ["initech"], ["umbrella", "group"]]
FILLER = ["met", "with", "in", "visited", "joined", "from", "and", "today", "the", "at", "said", "went", "to"]
WORDS = ["key", "value", "copy", "reverse", ":", "good", "bad", "review", "it", "was", "great", "awful",
         "fine", "movie", "film", "plot"]


def vocab() -> List[str]:
    words = set(KEYS + VALS + PER + LOC + FILLER + WORDS + [w for o in ORG for w in o])
    return SPECIALS + sorted(words)


def make_tokenizer(path: Path):
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab()) + "\n")
    tok = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)  # transformers 5: `vocab=`, not `vocab_file=`
    tok.save_pretrained(path)
    return tok


def make_model(path: Path, family: str, seed: int = 0) -> Path:
    """A tiny model from config: bert (token classification / MLM), gpt2, llama (causal), t5 (seq2seq)."""
    import torch
    import transformers as T

    tok = make_tokenizer(path)
    v = len(vocab())
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id)
    cfg = {
        "bert": lambda: T.BertConfig(vocab_size=v, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128),
        "gpt2": lambda: T.GPT2Config(vocab_size=v, n_embd=64, n_layer=2, n_head=4, n_positions=128, **ids),
        "llama": lambda: T.LlamaConfig(vocab_size=v, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                                       **ids),
        "t5": lambda: T.T5Config(vocab_size=v, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                                 num_heads=4, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.sep_token_id),
    }[family]()
    auto = {"bert": T.BertForMaskedLM, "gpt2": T.GPT2LMHeadModel, "llama": T.LlamaForCausalLM,
            "t5": T.T5ForConditionalGeneration}[family]
    torch.manual_seed(seed)
    auto(cfg).save_pretrained(path)
    return path


def key_value_rows(n: int, seed: int, width: int = 2) -> Dict[str, list]:
    """A fixed key -> `width`-value mapping ("k3" -> "v1 v6"): the answer is decoded token by token."""
    table = {k: " ".join(VALS[(i * (2 * j + 1) + j) % len(VALS)] for j in range(width)) for i, k in enumerate(KEYS)}
    rng = random.Random(seed)
    keys = [rng.choice(KEYS) for _ in range(n)]
    return {"key": keys, "target": [table[k] for k in keys]}


def transduction_rows(n: int, seed: int) -> Dict[str, list]:
    """Key -> four values: long enough for 4-gram BLEU to be meaningful."""
    return key_value_rows(n, seed, width=4)


def copy_rows(n: int, seed: int) -> Dict[str, list]:
    """Copy 2-4 symbols: the output is the input."""
    rng = random.Random(seed)
    src = [" ".join(rng.choice(VALS) for _ in range(rng.randint(2, 4))) for _ in range(n)]
    return {"source": src, "target": list(src)}


def ner_rows(n: int, seed: int) -> Dict[str, list]:
    """Gazetteer NER: names of people, places and (multi-word) organisations among filler words."""
    rng = random.Random(seed)
    tokens, tags = [], []
    for _ in range(n):
        words, labels = [], []
        for _ in range(rng.randint(3, 7)):
            r = rng.random()
            if r < 0.15:
                words.append(rng.choice(PER)); labels.append("B-PER")
            elif r < 0.3:
                words.append(rng.choice(LOC)); labels.append("B-LOC")
            elif r < 0.4:
                org = rng.choice(ORG)
                words += org; labels += ["B-ORG"] + ["I-ORG"] * (len(org) - 1)
            else:
                words.append(rng.choice(FILLER)); labels.append("O")
        tokens.append(words)
        tags.append(labels)
    return {"tokens": tokens, "ner_tags": tags}


def sentiment_rows(n: int, seed: int) -> Dict[str, list]:
    rng = random.Random(seed)
    pos, neg = ["good", "great", "fine"], ["bad", "awful"]
    text, label = [], []
    for _ in range(n):
        y = rng.randint(0, 1)
        text.append(f"the {rng.choice(['movie', 'film', 'plot'])} was {rng.choice(pos if y else neg)}")
        label.append(y)
    return {"text": text, "label": label}
