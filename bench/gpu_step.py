"""Training-step time of a from-config SmolLM2-shaped model with each PEFT method, on one GPU.

    python bench/gpu_step.py --out step.json [--steps 20] [--kernels auto]

For the lent GPU machine (bench/gpu_check.sh), which has torch and triton but no Ray,
DeepSpeed or network: the method is built by peft-ray's own registry (the same wrapper
and fused kernels as a job) around a random-weight Llama with SmolLM2-135M's config, and a
plain torch AdamW loop times forward + backward + step (the DeepSpeed engine is absent
there; on one GPU at ZeRO-0 it adds no math). bf16 autocast, batch 8 x 128 tokens,
median of the timed steps after warmup. A part that cannot run (e.g. transformers
missing) is recorded with its error instead of stopping the script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _source_tree  # noqa: E402  (the GPU machine runs an uninstalled copy of the tree)

_source_tree.bind()

METHODS = {
    "prompt_tuning": {"num_virtual_tokens": 16, "init": "random"},
    "p_tuning": {"num_virtual_tokens": 16},
    "prefix_tuning": {"num_virtual_tokens": 16},
    "lora": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                           "gate_proj", "up_proj", "down_proj"]},
    "ia3": {},
}


SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
               tie_word_embeddings=True, rope_theta=100000.0)


def smollm2_shaped(device, **shape):
    """A random-weight Llama with SmolLM2-135M's config (`shape` overrides it: the CPU test
    runs the same code on a tiny one)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**{**SMOLLM2, **shape})).to(device)


def time_method(name: str, kernels: str, steps: int, device, warmup: int = 5, batch=(8, 128),
                amp=None, **shape) -> dict:
    """Median step time; `amp` is the autocast dtype (bf16 by default; the CPU test passes fp16:
    the Triton interpreter's tl.dot is wrong on bf16)."""
    import torch

    from peft_ray.methods import get_method
    from peft_ray.methods.common import BuildContext

    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    m = get_method(name)
    model = m.build(smollm2_shaped(device, **shape), m.config_cls(name=name, **METHODS[name]),
                    BuildContext(tokenizer=None, seed=0, head_modules=[], kernels=kernels)).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, {**SMOLLM2, **shape}["vocab_size"], batch, device=device)
    mask = torch.ones_like(ids)
    times = []
    for i in range(steps + warmup):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = logits[:, -ids.shape[1]:-1].float().logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    return {"method": name, "kernels": kernels, "ms_per_step": ms, "samples_per_s": batch[0] / (ms / 1e3),
            "trainable": sum(p.numel() for p in params), "loss": loss.item(),
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="step.json")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--kernels", default="auto,torch", help="peft-ray kernels settings to compare")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("No CUDA device: the step timing needs a GPU; nothing written.")
        return 0
    rows = []
    for name in METHODS:
        for kernels in a.kernels.split(","):
            try:
                r = time_method(name, kernels, a.steps, "cuda")
                print(f"{name:<14} kernels={kernels:<6} {r['ms_per_step']:8.1f} ms/step  "
                      f"{r['samples_per_s']:7.1f} samples/s  peak {r['peak_mib']:.0f} MiB", flush=True)
            except Exception as e:  # record and keep going: one try on the lent machine
                r = {"method": name, "kernels": kernels, "error": f"{type(e).__name__}: {e}"[:300]}
                print(f"{name:<14} kernels={kernels:<6} ERROR {r['error']}", flush=True)
            rows.append(r)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    Path(a.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
