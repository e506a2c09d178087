"""How peft-ray calls transformers: offline, without hub kernels, quietly, and seeded.

A leaf module (nothing of peft-ray below it), so the model loaders (models, scratch,
smollm2, the LoRA initialisers) share these without importing each other.
"""

from __future__ import annotations

import contextlib

# Every config and tokenizer load passes OFFLINE, every model load NO_HUB. local_files_only: the
# hub stays untouched even where HF_HUB_OFFLINE was not set before huggingface_hub was imported
# (it reads the variable once). use_kernels: transformers >= 5.25 otherwise "kernelizes" each
# loaded model with kernels fetched from the Hugging Face hub (use_kernels defaults to on):
# compiled code from the network, which a job file must never make peft-ray run, and on the
# meta device (check_weights_match) a ValueError. peft-ray's own fused ops live in kernels/.
OFFLINE = {"local_files_only": True}
NO_HUB = {**OFFLINE, "use_kernels": False}


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings and its "Loading weights" bar off while a model loads: the bar
    reads 0.0 s on these models, and in a Ray worker or actor every redraw is a forwarded line."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def cpu_seeded(seed: int):
    """The CPU generator seeded with `seed` in the block and put back after. Only the CPU one (where
    models are built): torch.manual_seed would also (re)seed every GPU's, or queue that seed for when
    CUDA starts, overriding the trainer's per-rank seeds on GPU ranks."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
