"""Layers shared by the UNet and the VAE (the reference defines them twice, once per model)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (sgm/modules/diffusionmodules/util.py GroupNorm32;
    eps defaults to torch's 1e-5, as there). The affine parameters are upcast too, so half-precision
    weights work on every device; in float32 every cast is a no-op."""

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (openaimodel.py Upsample with conv_resample=True, and
    model.py Upsample of the autoencoder: the same layer, key `conv`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
