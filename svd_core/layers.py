"""Layers shared by the UNet and the VAE (the reference defines them twice, once per model), and the
operations namespace they are built from."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from . import lean

# The namespace layers are built from: anything with torch.nn's Linear, Conv2d, Conv3d, GroupNorm and
# LayerNorm (torch.nn itself by default; a host passes its own, e.g. ComfyUI's comfy.ops classes that
# cast or move weights at each call). Typed loosely: hosts' classes are torch.nn subclasses.
Ops = Any


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (openaimodel.py Upsample with conv_resample=True, and
    model.py Upsample of the autoencoder: the same layer, key `conv`). Runs a frame group at a time:
    the 4x larger nearest-neighbour copy exists for one group only."""

    def __init__(self, channels: int, ops: Ops = nn) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape

        def group(g: slice) -> Tensor:
            return self.conv(F.interpolate(x[g], scale_factor=2.0, mode="nearest"))

        return lean.map_frame_groups(group, n, 4 * c * h * w)
