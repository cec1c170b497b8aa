"""The frame-wise 2-D VAE decoder of the image-decoder SVDs and SV3D (the reference's `Decoder`).

svd_image_decoder.yaml / svd_xt_image_decoder.yaml (first stage: AutoencoderKL) and sv3d_u.yaml /
sv3d_p.yaml (first stage: AutoencodingEngine with a plain `Decoder`) decode every frame on its own, with no
layer across frames: the temporal decoder's levels without its `time_stack`, `mix_factor` and
`time_mix_conv`. Attribute names mirror `first_stage_model.decoder.*`.

Memory: frames are independent, so they are decoded one at a time (the result does not depend on the
chunk, unlike the temporal decoder's); each level's upsampling runs after its blocks, on one frame. The peak is
one frame's full-resolution working set, whatever the chunk (memory.image_decode_bytes).

Source: sgm/modules/diffusionmodules/model.py (Decoder with attn_resolutions [], give_pre_end False,
tanh_out False; ResnetBlock with temb_channels 0; AttnBlock; Upsample).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Ops, Upsample
from .vae_blocks import SPATIAL_NORM_EPS, EncoderMid, ResnetBlock, channels_last

if TYPE_CHECKING:
    from .vae import VAEConfig

__all__ = ["ImageDecoder"]


class ImageDecoderLevel(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, groups: int, upsample: bool, ops: Ops = nn) -> None:
        super().__init__()
        widths = [in_ch] + [out_ch] * n_blocks
        self.block = nn.ModuleList(ResnetBlock(widths[j], widths[j + 1], groups, ops) for j in range(n_blocks))
        self.upsample = Upsample(out_ch, ops) if upsample else None


class ImageDecoder(nn.Module):
    """Latents (N, z, h, w) -> frames (N, 3, H, W), each frame alone. `up[i]` is level i (0 = full
    resolution); it runs from the deepest level up, like TemporalDecoder."""

    def __init__(self, cfg: VAEConfig, ops: Ops = nn) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        n, g = len(widths), cfg.num_groups
        self.conv_in = ops.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1)
        self.mid = EncoderMid(widths[-1], g, ops)  # the same middle as the encoder's
        self.up = nn.ModuleList(
            ImageDecoderLevel((widths + widths[-1:])[i + 1], widths[i], cfg.num_res_blocks + 1, g, i != 0, ops)
            for i in range(n)
        )
        self.norm_out = ops.GroupNorm(g, widths[0], eps=SPATIAL_NORM_EPS)
        self.conv_out = ops.Conv2d(widths[0], cfg.out_channels, 3, padding=1)

    def frame(self, z: Tensor) -> Tensor:
        """One frame (1, z, h, w) -> (1, 3, H, W)."""
        h = channels_last(self.conv_in(channels_last(z)))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            assert isinstance(level, ImageDecoderLevel)
            for block in level.block:
                h = block(h)
            if level.upsample is not None:
                h = channels_last(level.upsample(h))
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, z: Tensor, num_frames: int | None = None) -> Tensor:
        """Latents (N, z, h, w) -> (N, 3, H, W); `num_frames` is accepted for the temporal decoder's signature
        and not used: no layer looks across frames."""
        return torch.cat([self.frame(z[i:i + 1]) for i in range(z.shape[0])])
