"""Loading a DeepSpeed checkpoint's pickles without running code: TensorsOnlyLoader wraps
DeepSpeed's checkpoint engine so that every file it loads goes through torch.load(weights_only=True)
with a short allow-list of DeepSpeed's plain data classes (_safe_globals). checkpoint.py's
load_checkpoint installs it for the length of one load.
"""

from __future__ import annotations

import pickle

import torch


def _safe_globals() -> list:
    """The only classes a DeepSpeed ZeRO checkpoint pickles besides tensors and containers
    (found with torch.serialization.get_unsafe_globals_in_checkpoint on ZeRO-2 and -3
    checkpoints): plain data holders whose unpickling runs no user code."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


class TensorsOnlyLoader:
    """DeepSpeed's checkpoint engine with `load` restricted to tensors and an allow-list.

    DeepSpeed's own TorchCheckpointEngine.load calls torch.load(weights_only=False), so a
    file planted in output.dir (shared NFS or S3) would run code on every worker at resume;
    the manifest's sha256 proves integrity, not origin. Everything else is delegated."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def load(self, path: str, map_location=None):
        from peft_ray.errors import CheckpointError

        try:
            with torch.serialization.safe_globals(_safe_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).split("WeightsUnpickler error:", 1)[-1].strip().split(".")[0]
            raise CheckpointError(f"refusing to resume from {path}: it holds objects other than tensors "
                                  f"({first}); a checkpoint written by peft-ray never does, so this file was "
                                  "replaced or comes from elsewhere. Delete that checkpoint folder to resume "
                                  "from an earlier one, or start without --resume") from None
