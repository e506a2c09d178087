"""`model.name_or_path: scratch:<family>`: a small generator built from config.

No pretrained generative model ships offline (the pretrained MiniLM is an encoder),
so generation and translation jobs that must run anywhere use a small GPT-2, Llama
or T5 built from its config with MiniLM's tokenizer (uncased English WordPiece,
30,522 entries), seeded and cached. Its weights are random: a PEFT method trains
only its adapter (plus the LM head when the job lists it in modules_to_save), so
these models show the machinery end to end, not pretrained-quality output.
"""

from __future__ import annotations

from pathlib import Path

from peft_ray.errors import SpecError
from peft_ray.hf import OFFLINE, cpu_seeded
from peft_ray.storage import staging_dir

PREFIX = "scratch:"
VERSION = 1
SIZES = dict(hidden=256, layers=4, heads=4, ffn=1024, positions=512)


def _config(family: str, tok):
    import transformers as T

    h, L, a, f, p = (SIZES[k] for k in ("hidden", "layers", "heads", "ffn", "positions"))
    v = len(tok)
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    if family == "gpt2":
        return T.GPT2Config(vocab_size=v, n_embd=h, n_layer=L, n_head=a, n_inner=f, n_positions=p, **ids), \
            T.GPT2LMHeadModel
    if family == "llama":
        return T.LlamaConfig(vocab_size=v, hidden_size=h, num_hidden_layers=L, num_attention_heads=a,
                             num_key_value_heads=a // 2, intermediate_size=f, max_position_embeddings=p,
                             tie_word_embeddings=False, **ids), T.LlamaForCausalLM
    if family == "t5":
        return T.T5Config(vocab_size=v, d_model=h, d_kv=h // a, d_ff=f, num_layers=L, num_decoder_layers=L,
                          num_heads=a, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.sep_token_id), T.T5ForConditionalGeneration
    raise SpecError(f"model.name_or_path: unknown scratch family '{family}'; use scratch:gpt2, scratch:llama "
                    "or scratch:t5")


def scratch_model(name: str, cache: Path, tokenizer_path: str) -> str:
    """The cached folder of `scratch:<family>`, built once (atomically: workers may race)."""
    from transformers import AutoTokenizer

    family = name[len(PREFIX):]
    out = cache / f"scratch-{family}-v{VERSION}"
    if (out / "config.json").exists():
        return str(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_path, **OFFLINE)
    cfg, cls = _config(family, tok)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out) as tmp:                     # random name, made exclusively: no planted link
        with cpu_seeded(0):                           # the same weights everywhere; the caller's RNG untouched
            model = cls(cfg)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process won the race: theirs is identical
            pass
    return str(out)
