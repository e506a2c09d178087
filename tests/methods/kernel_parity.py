"""Run as a script with TRITON_INTERPRET=1 (set before triton is imported, so not inside the
pytest process whose other tests use CPU torch): our models with kernels="triton" vs "torch"
give the same logits and adapter gradients. Prints one line per case, exits 1 on a mismatch."""

from __future__ import annotations

import sys

import torch

from tests.methods.families import make_base, make_inputs, valid_logits
from tests.methods.helpers import build_ours, perturb
from tests.methods.matrix import Row

CASES = [Row("prompt", "prompt_tuning", "bert-cls", {"num_virtual_tokens": 3, "init": "random"}),
         # The prompt cache (on by default for causal decoders) replaces the layer-0 fusion: test the fusion.
         Row("prompt", "prompt_tuning", "llama-lm", {"num_virtual_tokens": 3, "init": "random", "prompt_cache": "off"}),
         Row("prefix", "prefix_tuning", "bert-cls", {"num_virtual_tokens": 3}),
         Row("prefix", "prefix_tuning", "llama-lm", {"num_virtual_tokens": 3}),
         Row("lora", "lora", "bert-cls", {"r": 4}),
         Row("lora", "lora", "llama-lm", {"r": 4}),
         # Variants on the fused op: DoRA (row norm and m scale around it), PiSSA (rank-2r factors).
         Row("lora-dora", "lora", "gpt2-lm", {"r": 4, "use_dora": True}),
         Row("lora-dora-pissa", "lora", "llama-lm", {"r": 4, "use_dora": True, "init_lora_weights": "pissa"})]


def run(row: Row, kernels: str):
    model = build_ours(row, make_base(row.family), kernels=kernels)
    perturb(model)
    batch = make_inputs(row.family)
    logits = valid_logits(model(**batch), batch, row.family)
    logits.pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def main() -> int:
    failed = 0
    for row in CASES:
        ref_logits, ref_grads = run(row, "torch")
        logits, grads = run(row, "triton")
        used = {"prompt_tuning": "peft_ray_kernels.prompt_concat", "prefix_tuning": "peft_ray_kernels.prefix_concat",
                "lora": "peft_ray_kernels.lora"}[row.method]
        assert used in sys.modules, f"{row.id}: the Triton path ({used}) never ran"
        errs = [(logits - ref_logits).abs().max().item()]
        errs += [(grads[n] - g).abs().max().item() / max(g.abs().max().item(), 1e-12) for n, g in ref_grads.items()]
        ok = errs[0] < 1e-5 and max(errs[1:]) < 1e-4
        failed += not ok
        print(f"{row.id}: {'ok' if ok else 'MISMATCH'} logits max|diff| {errs[0]:.2e}, "
              f"grads max rel diff {max(errs[1:]):.2e} over {len(ref_grads)} tensors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
