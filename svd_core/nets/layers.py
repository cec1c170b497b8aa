"""Layers shared by the UNet and the VAE (the reference defines them twice, once per model), and the
operations namespace they are built from."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import pieces

# The namespace layers are built from: anything with torch.nn's Linear, Conv2d, Conv3d, GroupNorm and
# LayerNorm (torch.nn itself by default; a host passes its own, e.g. ComfyUI's comfy.ops classes that
# cast or move weights at each call). Typed loosely: hosts' classes are torch.nn subclasses.
Ops = Any

# Where and in what precision a model computes, when that is not what its first parameter says: a host
# may keep some weights on another device (ComfyUI's low-VRAM loading) or store them in fp8 and compute
# in fp16 / bf16. `set_execution` records them on the module; `execution_device` and `compute_dtype` read
# them back (the video flow in svd_core.video, the image encoder).
_DEVICE_ATTR = "svd_execution_device"
_DTYPE_ATTR = "svd_compute_dtype"


def set_execution(module: nn.Module, *, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> None:
    """Record the device inputs go to and the dtype activations take for `module` (None: unchanged)."""
    if device is not None:
        setattr(module, _DEVICE_ATTR, torch.device(device))
    if dtype is not None:
        setattr(module, _DTYPE_ATTR, dtype)


def execution_device(module: nn.Module) -> torch.device:
    """The recorded device, else the device of the module's first parameter."""
    device = getattr(module, _DEVICE_ATTR, None)
    return device if device is not None else next(module.parameters()).device


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The recorded compute dtype, else the dtype of the module's first floating-point parameter."""
    dtype = getattr(module, _DTYPE_ATTR, None)
    if dtype is not None:
        return dtype
    return next(p.dtype for p in module.parameters() if p.is_floating_point())


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

        return pieces.map_frame_groups(group, n, 4 * c * h * w)
