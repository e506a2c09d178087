"""Initial LoRA factors: PEFT 0.21's `init_lora_weights` (layer.py reset_lora_parameters,
pissa_init, olora_init), computed in fp32 on the (d_out, d_in) weight.

    true       A Kaiming-uniform(a=sqrt 5), B = 0            the adapter starts as the identity
    false      A, B both Kaiming-uniform (nn.Linear's init)   starts non-zero (tests)
    gaussian   A ~ N(0, (1/r)^2), B = 0
    pissa      W = V S U^T; A = sqrt(S_r / s) U_r^T, B = V_r sqrt(S_r / s)   (s B A = top-r part of W)
    pissa_niter_K   the same from torch.svd_lowrank(W, r, niter=K) (randomized: seeded here)
    olora      W = Q R; A = R[:r], B = Q[:, :r]

PiSSA and OLoRA return `mutates=True`: PEFT then sets W_res = W - s B0 A0 in the base weight.
We keep W and subtract s B0 A0 in the layer instead (layer.py says why).
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import torch

from peft_ray.hf import cpu_seeded
from torch import nn

from peft_ray.errors import SpecError


def initial_factors(w: torch.Tensor, r: int, scaling: float, init: Union[bool, str],
                    g: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, bool]:
    """(A (r, d_in), B (d_out, r), mutates) for the (d_out, d_in) weight `w`, in fp32 on the CPU."""
    d_out, d_in = w.shape
    if init is True or init is False or init == "gaussian":
        a, b = torch.empty(r, d_in), torch.zeros(d_out, r)
        if init == "gaussian":
            a.normal_(0, 1 / r, generator=g)
        else:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=g)
        if init is False:
            nn.init.kaiming_uniform_(b, a=math.sqrt(5), generator=g)
        return a, b, False
    if r > min(d_out, d_in):
        raise SpecError(f"method.r: {r} is larger than a targeted layer's smaller side ({d_out} x {d_in}); "
                        f"init_lora_weights '{init}' takes r components of W, so set r <= {min(d_out, d_in)}")
    w32 = w.detach().to("cpu", torch.float32)
    if init == "olora":
        q, rr = torch.linalg.qr(w32)
        return rr[:r].contiguous(), q[:, :r].contiguous(), True
    return (*_pissa(w32, r, scaling, init, g), True)


def _pissa(w32: torch.Tensor, r: int, scaling: float, init: str, g: torch.Generator):
    if init == "pissa":
        v, s, uh = torch.linalg.svd(w32, full_matrices=False)      # (d_out, k), (k,), (k, d_in)
        v, s, uh = v[:, :r], s[:r], uh[:r]
    else:  # pissa_niter_K: svd_lowrank draws from the global RNG, so fork it and seed from `g`
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with cpu_seeded(seed):    # on the CPU, so only its generator is drawn from (and seeded)
            found = torch.svd_lowrank(w32.cpu(), r, niter=int(init.rsplit("_", 1)[1]))
        v, s, u = (t.to(w32.device) for t in found)
        uh = u.t()
    root = torch.sqrt(s / scaling)                                   # (r,)
    return (root[:, None] * uh).contiguous(), (v * root[None, :]).contiguous()
