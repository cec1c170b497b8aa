"""The VAE of SVD: the 2-D image encoder that encodes the conditioning frame, and the temporal decoder.

The reference builds two autoencoders and uses one half of each:
  * `conditioner.embedders.3.encoder` (an AutoencoderKLModeOnly): its `encoder` and `quant_conv`
    turn the conditioning frame into the posterior mode (the mean half of the moments);
  * `first_stage_model` (an AutoencodingEngine): its temporal `decoder` (time_mode "conv-only")
    turns the sampled latents back into frames.
`VAE` holds exactly those three parts, named so that its state dict maps 1:1 onto the checkpoint:

    encoder.*     <- conditioner.embedders.3.encoder.encoder.*
    quant_conv.*  <- conditioner.embedders.3.encoder.quant_conv.*
    decoder.*     <- first_stage_model.decoder.*

Layers come from an injected operations namespace `ops` (default torch.nn), like the UNet's. The
temporal decoder holds its activations as frame groups (`pieces.FrameGroups`): per-frame layers run a
few frames at a time, temporal layers on spatial slices with clip-wide GroupNorm statistics, so the
decode chunk (14 frames in the reference) stays the unit of temporal mixing at a fraction of the memory.

Sources: sgm/modules/diffusionmodules/model.py (Encoder, Decoder, ResnetBlock, AttnBlock, Downsample,
Upsample), sgm/modules/autoencoding/temporal_ae.py (VideoDecoder, VideoResBlock, AE3DConv),
sgm/modules/diffusionmodules/openaimodel.py (ResBlock, the `time_stack`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from . import pieces
from .image_decoder import ImageDecoder
from .layers import Ops, Upsample
from .vae_blocks import SPATIAL_NORM_EPS, AttnBlock, Downsample, EncoderMid, ResnetBlock, _ResnetCore, channels_last

__all__ = ["SPATIAL_NORM_EPS", "TEMPORAL_NORM_EPS", "VAE", "AttnBlock", "Downsample", "Encoder", "ImageDecoder",
           "ResnetBlock", "TemporalDecoder", "VAEConfig", "VideoResBlock", "channels_last"]

# GroupNorm eps 1e-5 (torch's default) for the 3-D time_stack: openaimodel.py ResBlock uses
# util.py normalization() = GroupNorm32(32, channels), which also computes in fp32.
TEMPORAL_NORM_EPS = 1e-5


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of the SVD VAE. Defaults: svd_xt_1_1.yaml, conditioner.embedders.3 ddconfig and
    first_stage_config encoder/decoder params (identical for both)."""

    in_channels: int = 3  # ddconfig.in_channels
    out_channels: int = 3  # ddconfig.out_ch
    latent_channels: int = 4  # ddconfig.z_channels (embed_dim 4); the encoder emits 2x (double_z)
    ch: int = 128  # ddconfig.ch
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)  # ddconfig.ch_mult
    num_res_blocks: int = 2  # ddconfig.num_res_blocks (decoder levels hold num_res_blocks + 1)
    video_kernel_size: int = 3  # decoder_config.video_kernel_size [3, 1, 1] (time axis only)
    num_groups: int = 32  # model.py Normalize and util.py normalization both use 32 groups
    scale_factor: float = 0.18215  # svd_xt_1_1.yaml model.params.scale_factor
    # SVD's temporal VideoDecoder, or the frame-wise 2-D Decoder of the image-decoder SVDs and SV3D
    temporal: bool = True
    # the first stage is an AutoencoderKL (svd_image_decoder.yaml): z goes through its post_quant_conv first
    post_quant_conv: bool = False

    @property
    def downscale(self) -> int:
        """Spatial factor between pixels and latents (8 for SVD)."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def svd_xt(cls) -> VAEConfig:
        return cls()

    @classmethod
    def image_decoder(cls) -> VAEConfig:
        """svd_image_decoder.yaml / svd_xt_image_decoder.yaml: AutoencoderKL's post_quant_conv and 2-D decoder."""
        return cls(temporal=False, post_quant_conv=True)

    @classmethod
    def orbit(cls) -> VAEConfig:
        """sv3d_u.yaml / sv3d_p.yaml: AutoencodingEngine with a plain 2-D Decoder (no post_quant_conv)."""
        return cls(temporal=False)

    @classmethod
    def tiny(cls) -> VAEConfig:
        # num_res_blocks stays 2: diffusers' temporal decoder ties its mid-block depth to it.
        # Four levels keep the real 8x downscale (what ComfyUI's latent nodes assume) at little cost.
        return cls(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=2)

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Sequence[int]]) -> VAEConfig:
        """Read every size from tensor shapes keyed by OUR names (`encoder.*`, `quant_conv.*`, `decoder.*`)."""
        need = {
            "encoder.conv_in.weight": "an image encoder",
            "quant_conv.weight": "the encoder's quant_conv",
            "decoder.conv_in.weight": "a decoder",
        }
        temporal = any(".time_stack." in k or ".time_mix_conv." in k for k in shapes)
        if temporal:
            need.update({
                "decoder.conv_out.time_mix_conv.weight": "a temporal decoder (conv_out.time_mix_conv)",
                "decoder.mid.block_1.time_stack.in_layers.2.weight": "a temporal decoder (time_stack)",
            })
        for key, what in need.items():
            if key not in shapes:
                raise ValueError(f"not an SVD VAE: no tensor {key!r} ({what} is missing)")
        conv_in = list(shapes["encoder.conv_in.weight"])
        ch, in_channels = int(conv_in[0]), int(conv_in[1])
        levels = sorted({int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down.")})
        if not levels or levels != list(range(len(levels))):
            raise ValueError(f"not an SVD VAE: encoder levels {levels}, expected 0..n-1")
        num_res_blocks = len({k.split(".")[4] for k in shapes if k.startswith("encoder.down.0.block.")})
        ch_mult = []
        for i in levels:
            width = int(shapes[f"encoder.down.{i}.block.0.conv1.weight"][0])
            if width % ch:
                raise ValueError(f"not an SVD VAE: level {i} has {width} channels, not a multiple of ch={ch}")
            ch_mult.append(width // ch)
        cfg = cls(
            in_channels=in_channels,
            out_channels=int(shapes["decoder.conv_out.weight"][0]),
            latent_channels=int(shapes["decoder.conv_in.weight"][1]),
            ch=ch,
            ch_mult=tuple(ch_mult),
            num_res_blocks=num_res_blocks,
            video_kernel_size=int(shapes["decoder.conv_out.time_mix_conv.weight"][2]) if temporal else 3,
            temporal=temporal,
            post_quant_conv="post_quant_conv.weight" in shapes,
        )
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in VAE(cfg).state_dict().items()}
        given = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
        if given != expected:
            missing = sorted(expected.keys() - given.keys())
            extra = sorted(given.keys() - expected.keys())
            wrong = sorted(k for k in expected.keys() & given.keys() if expected[k] != given[k])
            raise ValueError(
                f"shapes are not an SVD VAE with {cfg}: missing {missing[:5]} ({len(missing)}), "
                f"unexpected {extra[:5]} ({len(extra)}), wrong shape {wrong[:5]} ({len(wrong)})"
            )
        return cfg


class TimeStack(nn.Module):
    """3-D ResBlock over (B, C, T, H, W) with (k, 1, 1) kernels, no embedding, identity skip
    (openaimodel.py ResBlock, dims=3, skip_t_emb), GroupNorm32 (float32, eps 1e-5). Sequential indices
    mirror the checkpoint: in_layers = [norm, SiLU, conv], out_layers = [norm, SiLU, Dropout, conv].
    It runs inside VideoResBlock through pieces.temporal_block_, on spatial slices."""

    def __init__(self, ch: int, kernel_t: int, groups: int, ops: Ops = nn) -> None:
        super().__init__()
        kernel, pad = (kernel_t, 1, 1), (kernel_t // 2, 0, 0)
        self.in_layers = nn.Sequential(
            ops.GroupNorm(groups, ch, eps=TEMPORAL_NORM_EPS), nn.SiLU(), ops.Conv3d(ch, ch, kernel, padding=pad)
        )
        self.out_layers = nn.Sequential(
            ops.GroupNorm(groups, ch, eps=TEMPORAL_NORM_EPS),
            nn.SiLU(),
            nn.Dropout(0.0),
            ops.Conv3d(ch, ch, kernel, padding=pad),
        )


class VideoResBlock(_ResnetCore):
    """Spatial ResnetBlock per frame, then the time_stack across frames, blended with a learned
    alpha = sigmoid(mix_factor): out = alpha * temporal + (1 - alpha) * spatial
    (temporal_ae.py VideoResBlock, merge_strategy "learned"; mind the orientation, the UNet's
    mixer weighs the spatial branch with alpha instead)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, kernel_t: int, ops: Ops = nn) -> None:
        super().__init__(in_ch, out_ch, groups, ops)
        self.time_stack = TimeStack(out_ch, kernel_t, groups, ops)
        self.mix_factor = nn.Parameter(torch.zeros(1))  # reference init alpha=0.0

    def run_(self, frames: pieces.FrameGroups, num_frames: int, upsample: Upsample | None = None) -> None:
        """The block on frame groups, in place: spatial part group by group, then the time_stack on
        spatial slices (its GroupNorm sees (group, T, H, W) of each clip jointly), blended in place.
        `upsample`, the previous level's, runs per group just before the spatial part, so that its 4x
        larger output never exists for the whole clip at once."""
        n, c, h, w = frames.shape
        if upsample is None:
            frames.map_(self.spatial, max(c, self.conv1.out_channels) * h * w)
        else:
            frames.map_(lambda x: self.spatial(upsample(x)), 4 * max(c, self.conv1.out_channels) * h * w)
        alpha = torch.sigmoid(pieces.cast_param(self.mix_factor, frames.groups[0]))
        pieces.temporal_block_(frames, num_frames, self.time_stack.in_layers, self.time_stack.out_layers,
                             spatial_weight=1.0 - alpha, temporal_weight=alpha)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        frames = pieces.FrameGroups([x])
        self.run_(frames, num_frames)
        return frames.cat()


class EncoderLevel(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, groups: int, downsample: bool, ops: Ops = nn) -> None:
        super().__init__()
        widths = [in_ch] + [out_ch] * n_blocks
        self.block = nn.ModuleList(ResnetBlock(widths[j], widths[j + 1], groups, ops) for j in range(n_blocks))
        self.downsample = Downsample(out_ch, ops) if downsample else None


class Encoder(nn.Module):
    """Image -> moments (mean and logvar of the latent posterior), model.py Encoder with
    attn_resolutions [] (attention only in the middle) and double_z."""

    def __init__(self, cfg: VAEConfig, ops: Ops = nn) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        n = len(widths)
        self.conv_in = ops.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList(
            EncoderLevel(([cfg.ch] + widths)[i], widths[i], cfg.num_res_blocks, cfg.num_groups, i != n - 1, ops)
            for i in range(n)
        )
        self.mid = EncoderMid(widths[-1], cfg.num_groups, ops)
        self.norm_out = ops.GroupNorm(cfg.num_groups, widths[-1], eps=SPATIAL_NORM_EPS)
        self.conv_out = ops.Conv2d(widths[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, 2*z, H/f, W/f)
        # channels-last, like the decoder: CPU convolutions then make no reordered copies of their
        # input and output (half the peak memory here); only convolution rounding changes
        h = channels_last(self.conv_in(channels_last(x)))
        for level in self.down:
            assert isinstance(level, EncoderLevel)
            for block in level.block:
                h = block(h)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class DecoderLevel(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, groups: int, kernel_t: int, upsample: bool,
                 ops: Ops = nn) -> None:
        super().__init__()
        widths = [in_ch] + [out_ch] * n_blocks
        self.block = nn.ModuleList(
            VideoResBlock(widths[j], widths[j + 1], groups, kernel_t, ops) for j in range(n_blocks)
        )
        self.upsample = Upsample(out_ch, ops) if upsample else None


class DecoderMid(nn.Module):
    def __init__(self, ch: int, groups: int, kernel_t: int, ops: Ops = nn) -> None:
        super().__init__()
        self.block_1 = VideoResBlock(ch, ch, groups, kernel_t, ops)
        self.attn_1 = AttnBlock(ch, groups, ops)  # time_mode "conv-only": plain per-frame attention
        self.block_2 = VideoResBlock(ch, ch, groups, kernel_t, ops)


class VideoConvOut(nn.Module):
    """3x3 2-D conv per frame, then time_mix_conv, a Conv3d with kernel (k, 1, 1) across frames
    (temporal_ae.py AE3DConv). The 2-D weights sit directly on this module, as in the checkpoint."""

    def __init__(self, in_ch: int, out_ch: int, kernel_t: int, ops: Ops = nn) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.empty(out_ch))
        self.time_mix_conv = ops.Conv3d(out_ch, out_ch, (kernel_t, 1, 1), padding=(kernel_t // 2, 0, 0))
        if not self.weight.is_meta:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # torch's Conv2d default init
            nn.init.uniform_(self.bias, -1.0 / math.sqrt(in_ch * 9), 1.0 / math.sqrt(in_ch * 9))

    def spatial(self, x: Tensor) -> Tensor:  # (N, Cin, H, W) -> (N, Cout, H, W)
        return F.conv2d(x, pieces.cast_param(self.weight, x), pieces.cast_param(self.bias, x), padding=1)

    def temporal(self, h: Tensor, num_frames: int) -> Tensor:  # (B*T, Cout, H, W), mixed over frames
        h = rearrange(h, "(b t) c h w -> b c t h w", t=num_frames)
        return rearrange(self.time_mix_conv(h), "b c t h w -> (b t) c h w")

    def forward(self, x: Tensor, num_frames: int) -> Tensor:  # (B*T, Cin, H, W) -> (B*T, Cout, H, W)
        return self.temporal(self.spatial(x), num_frames)


class TemporalDecoder(nn.Module):
    """Latents of B videos of T frames -> frames (temporal_ae.py VideoDecoder, time_mode "conv-only").
    `up[i]` is level i (0 = full resolution); it runs from the deepest level up."""

    def __init__(self, cfg: VAEConfig, ops: Ops = nn) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        n, g, k = len(widths), cfg.num_groups, cfg.video_kernel_size
        self.conv_in = ops.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1)
        self.mid = DecoderMid(widths[-1], g, k, ops)
        # level i takes the width of level i+1 (the deepest takes its own) and upsamples unless i == 0
        self.up = nn.ModuleList(
            DecoderLevel((widths + widths[-1:])[i + 1], widths[i], cfg.num_res_blocks + 1, g, k, i != 0, ops)
            for i in range(n)
        )
        self.norm_out = ops.GroupNorm(g, widths[0], eps=SPATIAL_NORM_EPS)
        self.conv_out = VideoConvOut(widths[0], cfg.out_channels, k, ops)

    def forward(self, z: Tensor, num_frames: int) -> Tensor:  # (B*T, z, h, w) -> (B*T, 3, H, W)
        # Channels-last memory: "(b t) c h w" in NHWC order is "b c t h w" in channels-last-3d order, so
        # the fold to frames is free and the (k,1,1) temporal convs take their fast path (twice as fast
        # on CPU here); the numbers only change by convolution rounding.
        _, _, h, w = z.shape
        frames = pieces.FrameGroups([z])
        frames.map_(lambda x: channels_last(self.conv_in(x)), self.conv_in.out_channels * h * w)
        self.mid.block_1.run_(frames, num_frames)
        frames.map_(lambda x: channels_last(self.mid.attn_1(x)), 4 * self.conv_in.out_channels * h * w)
        self.mid.block_2.run_(frames, num_frames)
        pending: Upsample | None = None  # the previous level's upsampling, fused into the next block
        for level in reversed(self.up):
            assert isinstance(level, DecoderLevel)
            for block in level.block:
                assert isinstance(block, VideoResBlock)
                block.run_(frames, num_frames, upsample=pending)
                pending = None
            pending = level.upsample
        if pending is not None:
            _, c, h, w = frames.shape
            frames.map_(pending, 4 * c * h * w)
        _, c, h, w = frames.shape
        frames.map_(lambda x: self.conv_out.spatial(F.silu(self.norm_out(x))), c * h * w)
        return self.conv_out.temporal(frames.cat(), num_frames)


class VAE(nn.Module):
    """Encoder + quant_conv of the conditioning-frame encoder (conditioner.embedders.3.encoder, SV3D's
    embedders.1) and the decoder of first_stage_model: SVD's temporal one, or the frame-wise 2-D one
    (image_decoder.py) with, for the image-decoder SVDs, the AutoencoderKL's post_quant_conv before it."""

    def __init__(self, cfg: VAEConfig, ops: Ops = nn) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg, ops)
        self.quant_conv = ops.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = (ops.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)
                                if cfg.post_quant_conv else None)
        self.decoder: TemporalDecoder | ImageDecoder = (
            TemporalDecoder(cfg, ops) if cfg.temporal else ImageDecoder(cfg, ops))

    def encode(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> posterior mode (N, z, H/f, W/f), NOT times scale_factor."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"encode expects (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        moments = self.quant_conv(self.encoder(x))  # (N, 2*z, h, w) = [mean | logvar]
        return moments[:, : self.config.latent_channels]  # mode of a diagonal Gaussian = its mean

    def decode(self, z: Tensor, num_frames: int) -> Tensor:
        """Latents (B*T, z, h, w), already divided by scale_factor, T = num_frames frames per video,
        frames of one video contiguous -> (B*T, 3, H, W), roughly [-1, 1], not clamped."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"decode expects (B*T, {self.config.latent_channels}, h, w), got {tuple(z.shape)}")
        if num_frames < 1 or z.shape[0] % num_frames:
            raise ValueError(f"decode got {z.shape[0]} latents, not a multiple of num_frames={num_frames}")
        if self.post_quant_conv is not None:  # AutoencoderKL.decode: post_quant_conv, then the decoder
            z = self.post_quant_conv(z)
        return self.decoder(z, num_frames)
