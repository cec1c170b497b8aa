"""The OpenCLIP ViT-H/14 image tower that turns the conditioning frame into one 1024-d embedding.

The reference conditions the UNet's cross-attention on `FrozenOpenCLIPImagePredictionEmbedder`
(scripts/sampling/configs/svd_xt_1_1.yaml), which wraps `FrozenOpenCLIPImageEmbedder`
(sgm/modules/encoders/modules.py): resize the [-1, 1] frame to 224x224, map it to [0, 1], normalise
with the OpenAI CLIP mean/std, run OpenCLIP's `VisionTransformer` and keep its projected pooled output.

The tower, as the checkpoint stores it under `conditioner.embedders.0.open_clip.model.visual.`:
    patches = conv1(pixels)                              # no bias, stride = patch
    tokens  = [class_embedding; patches] + positional_embedding
    tokens  = ln_pre(tokens)
    tokens  = tokens + attn(ln_1(tokens)); tokens = tokens + mlp(ln_2(tokens))   # x layers
    embed   = ln_post(tokens[:, 0]) @ proj                 # CLS token only (no global average pool)
Our attribute names are those keys with the prefix stripped, so loading is a strict load_state_dict.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..resize import resize_antialiased
from . import pieces
from .layers import Ops, compute_dtype, execution_device

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ImageEncoderConfig",
    "ImageEncoder",
    "preprocess",
    "encode_image",
]

# OpenAI CLIP normalisation: the `mean` / `std` buffers of FrozenOpenCLIPImageEmbedder
# (sgm/modules/encoders/modules.py), equal to open_clip's OPENAI_DATASET_MEAN / _STD.
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# LayerNorm eps 1e-5: torch.nn.LayerNorm's default, which open_clip's VisionTransformer uses.
LAYER_NORM_EPS = 1e-5
# Head width 80: open_clip model config ViT-H-14.json, vision_cfg.head_width.
HEAD_WIDTH = 80


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Shape of an OpenCLIP ViT image tower. Defaults: open_clip's ViT-H-14.json
    (embed_dim 1024; vision_cfg image_size 224, layers 32, width 1280, head_width 80, patch_size 14;
    mlp_ratio 4.0 is open_clip's CLIPVisionCfg default)."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    head_width: int = HEAD_WIDTH
    mlp_ratio: float = 4.0
    embed_dim: int = 1024

    def __post_init__(self) -> None:
        if self.width % self.head_width:
            raise ValueError(f"width {self.width} is not a multiple of head_width {self.head_width}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid(self) -> int:
        """Patches per side (16 for ViT-H/14 at 224)."""
        return self.image_size // self.patch_size

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)

    @classmethod
    def vit_h14(cls) -> ImageEncoderConfig:
        """OpenCLIP ViT-H/14 (laion2b_s32b_b79k), the tower SVD conditions on."""
        return cls()

    @classmethod
    def tiny(cls) -> ImageEncoderConfig:
        """Test-sized tower: 2 heads of 80, 2 layers, 7x7 patches of 32 at 224."""
        return cls(image_size=224, patch_size=32, width=160, layers=2, embed_dim=32)

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Any]) -> ImageEncoderConfig:
        """Read the config from tensor shapes (or tensors) keyed by our names (the checkpoint's,
        prefix stripped). The head width is not visible in shapes and is fixed at 80."""

        def shape(name: str) -> tuple[int, ...]:
            if name not in shapes:
                raise ValueError(
                    f"not an OpenCLIP ViT image tower: no tensor named {name!r} "
                    f"(got {len(shapes)} names, e.g. {sorted(shapes)[:3]})"
                )
            value = shapes[name]
            return tuple(int(d) for d in (value.shape if hasattr(value, "shape") else value))

        conv = shape("conv1.weight")  # (width, 3, patch, patch)
        if len(conv) != 4 or conv[1] != 3 or conv[2] != conv[3]:
            raise ValueError(f"not an OpenCLIP ViT image tower: 'conv1.weight' has shape {conv}, "
                             "expected (width, 3, patch, patch)")
        width, patch = conv[0], conv[2]
        tokens = shape("positional_embedding")[0]  # 1 + grid^2
        grid = math.isqrt(tokens - 1)
        if grid * grid != tokens - 1:
            raise ValueError(f"'positional_embedding' has {tokens} tokens; expected 1 + grid^2")
        blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
        if not blocks or blocks != set(range(len(blocks))):
            raise ValueError(f"not an OpenCLIP ViT image tower: resblock indices {sorted(blocks)}")
        mlp_width = shape("transformer.resblocks.0.mlp.c_fc.weight")[0]
        proj = shape("proj")  # (width, embed_dim)
        if proj[0] != width:
            raise ValueError(f"'proj' has shape {proj}, expected ({width}, embed_dim)")
        return cls(image_size=grid * patch, patch_size=patch, width=width, layers=len(blocks),
                   head_width=HEAD_WIDTH, mlp_ratio=mlp_width / width, embed_dim=proj[1])


def _layer_norm(ops: Ops, width: int) -> nn.Module:
    """A LayerNorm layer (eps 1e-5); the tower calls it through pieces.layer_norm32, in float32 and cast
    back, as open_clip's LayerNorm does for half precision."""
    return ops.LayerNorm(width, eps=LAYER_NORM_EPS)


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter layout: one fused
    `in_proj_weight` (q, k, v stacked along dim 0) and `out_proj`."""

    def __init__(self, width: int, heads: int, ops: Ops = nn) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = ops.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:  # x: (N, L, D)
        w, b = pieces.cast_param(self.in_proj_weight, x), pieces.cast_param(self.in_proj_bias, x)
        qkv = F.linear(x, w, b)  # (N, L, 3*D)
        q, k, v = rearrange(qkv, "n l (three h d) -> three n h l d", three=3, h=self.heads)  # (N, H, L, D/H)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H, L, D/H), scale 1/sqrt(D/H)
        return self.out_proj(rearrange(out, "n h l d -> n l (h d)"))  # (N, L, D)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, ops: Ops = nn) -> None:
        super().__init__()
        self.c_fc = ops.Linear(width, hidden)
        self.c_proj = ops.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        # exact (erf) GELU: ViT-H-14.json does not set quick_gelu, so open_clip uses nn.GELU
        return self.c_proj(F.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig, ops: Ops = nn) -> None:
        super().__init__()
        self.ln_1 = _layer_norm(ops, cfg.width)
        self.attn = SelfAttention(cfg.width, cfg.heads, ops)
        self.ln_2 = _layer_norm(ops, cfg.width)
        self.mlp = MLP(cfg.width, cfg.mlp_width, ops)

    def forward(self, x: Tensor) -> Tensor:  # (N, L, D)
        x = x + self.attn(pieces.layer_norm32(self.ln_1, x))
        return x + self.mlp(pieces.layer_norm32(self.ln_2, x))


class Transformer(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig, ops: Ops = nn) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg, ops) for _ in range(cfg.layers))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class ImageEncoder(nn.Module):
    """OpenCLIP ViT image tower: `(N, 3, S, S)` CLIP-normalised pixels -> `(N, embed_dim)`."""

    def __init__(self, cfg: ImageEncoderConfig, ops: Ops = nn) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.width
        self.conv1 = ops.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(d))
        self.positional_embedding = nn.Parameter(torch.empty(cfg.grid**2 + 1, d))
        self.ln_pre = _layer_norm(ops, d)
        self.transformer = Transformer(cfg, ops)
        self.ln_post = _layer_norm(ops, d)
        self.proj = nn.Parameter(torch.empty(d, cfg.embed_dim))
        if not self.class_embedding.is_meta:
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init of the tensors nn.Module does not initialise itself (scale width^-1/2)."""
        scale = self.config.width**-0.5
        for p in (self.class_embedding, self.positional_embedding, self.proj):
            p.normal_(0.0, scale)
        for block in self.transformer.resblocks:
            assert isinstance(block, ResidualAttentionBlock)
            nn.init.xavier_uniform_(block.attn.in_proj_weight)
            nn.init.zeros_(block.attn.in_proj_bias)

    def forward(self, pixels: Tensor) -> Tensor:
        s = self.config.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise ValueError(f"ImageEncoder expects (N, 3, {s}, {s}) pixels, got {tuple(pixels.shape)}")
        x = self.conv1(pixels)  # (N, D, G, G)
        x = rearrange(x, "n d gh gw -> n (gh gw) d")  # (N, G*G, D)
        cls = pieces.cast_param(self.class_embedding, x).expand(x.shape[0], 1, -1)  # (N, 1, D)
        x = torch.cat([cls, x], dim=1) + pieces.cast_param(self.positional_embedding, x)  # (N, 1+G*G, D)
        x = self.transformer(pieces.layer_norm32(self.ln_pre, x))  # (N, 1+G*G, D)
        return pieces.layer_norm32(self.ln_post, x[:, 0]) @ pieces.cast_param(self.proj, x)  # (N, E)


def preprocess(image: Tensor, size: int = 224) -> Tensor:
    """What FrozenOpenCLIPImageEmbedder.preprocess does to an `(N, 3, H, W)` image in [-1, 1]:
    squash the whole frame to size x size (no crop) with the antialiased bicubic resize
    (align_corners=True), map to [0, 1], normalise with CLIP_MEAN / CLIP_STD."""
    x = resize_antialiased(image, (size, size), mode="bicubic", align_corners=True)  # (N, 3, S, S)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(1, 3, 1, 1).to(x.device)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(1, 3, 1, 1).to(x.device)
    return (x - mean) / std


def encode_image(encoder: ImageEncoder, image01: Tensor) -> Tensor:
    """Embed `(N, 3, H, W)` images in [0, 1] -> `(N, embed_dim)` in the encoder's dtype and device.

    The reference feeds the frame in [-1, 1] (simple_video_sample.py: `image * 2.0 - 1.0`), so we map
    to [-1, 1] first, then preprocess (in float32) and run the tower in its own dtype.
    """
    x = image01.to(device=execution_device(encoder), dtype=torch.float32) * 2.0 - 1.0
    pixels = preprocess(x, encoder.config.image_size)
    return encoder(pixels.to(compute_dtype(encoder)))
