"""Sinusoidal embeddings shared by the UNet (time, frame index) and the vector conditioning."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(N,) values -> (N, dim) float32 embeddings [cos(t*f_i), sin(t*f_i)], f_i = max_period^(-i/(dim/2)).

    The [cos, sin] order and max_period 10000 are those of sgm/modules/diffusionmodules/util.py
    timestep_embedding (the "Attention is all you need" positional encoding with cos first).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
