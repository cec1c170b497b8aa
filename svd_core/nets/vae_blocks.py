"""The 2-D blocks both VAE decoders and the encoder share (sgm/modules/diffusionmodules/model.py): the
res-block, the single-head attention of the middle, the downsampling, and the channels-last helper."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from . import pieces
from .layers import Ops

# GroupNorm eps 1e-6: sgm/modules/diffusionmodules/model.py Normalize.
SPATIAL_NORM_EPS = 1e-6


def channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class _ResnetCore(nn.Module):
    """norm1 -> swish -> conv1 -> norm2 -> swish -> conv2, plus a 1x1 nin_shortcut when widths differ
    (model.py ResnetBlock with temb_channels=0 and dropout 0)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, ops: Ops = nn) -> None:
        super().__init__()
        self.norm1 = ops.GroupNorm(groups, in_ch, eps=SPATIAL_NORM_EPS)
        self.conv1 = ops.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = ops.GroupNorm(groups, out_ch, eps=SPATIAL_NORM_EPS)
        self.conv2 = ops.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = ops.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def spatial(self, x: Tensor) -> Tensor:  # (N, Cin, H, W) -> (N, Cout, H, W)
        h = self.conv1(F.silu(self.norm1(x)))  # swish x*sigmoid(x) == silu
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class ResnetBlock(_ResnetCore):
    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each image, 1x1-conv projections,
    scale C^-0.5, residual (model.py AttnBlock)."""

    def __init__(self, ch: int, groups: int, ops: Ops = nn) -> None:
        super().__init__()
        self.norm = ops.GroupNorm(groups, ch, eps=SPATIAL_NORM_EPS)
        self.q = ops.Conv2d(ch, ch, 1)
        self.k = ops.Conv2d(ch, ch, 1)
        self.v = ops.Conv2d(ch, ch, 1)
        self.proj_out = ops.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W)
        hn = self.norm(x)
        height, width = x.shape[-2:]
        q = rearrange(self.q(hn), "n c h w -> n 1 (h w) c")
        k = rearrange(self.k(hn), "n c h w -> n 1 (h w) c")
        v = rearrange(self.v(hn), "n c h w -> n 1 (h w) c")
        del hn
        a = pieces.attention(q, k, v)  # (N, 1, H*W, C); default scale C^-0.5
        a = rearrange(a, "n 1 (h w) c -> n c h w", h=height, w=width)
        return x + self.proj_out(a)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then 3x3 conv with stride 2 (model.py Downsample)."""

    def __init__(self, ch: int, ops: Ops = nn) -> None:
        super().__init__()
        self.conv = ops.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class EncoderMid(nn.Module):
    """The middle of the encoder and of the frame-wise 2-D decoder: res-block, attention, res-block
    (model.py Encoder.mid / Decoder.mid)."""

    def __init__(self, ch: int, groups: int, ops: Ops = nn) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, groups, ops)
        self.attn_1 = AttnBlock(ch, groups, ops)
        self.block_2 = ResnetBlock(ch, ch, groups, ops)
