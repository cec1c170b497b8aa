"""Renaming between our image tower (the official OpenCLIP names) and transformers'
`CLIPVisionModelWithProjection`, the layout of the diffusers SVD folder's `image_encoder/`.

The one table of this renaming. Ours -> transformers:
    class_embedding                       vision_model.embeddings.class_embedding
    conv1.weight                          vision_model.embeddings.patch_embedding.weight
    positional_embedding                  vision_model.embeddings.position_embedding.weight
    ln_pre.*                              vision_model.pre_layrnorm.*   (sic, transformers' spelling)
    transformer.resblocks.N.ln_1.*        vision_model.encoder.layers.N.layer_norm1.*
    transformer.resblocks.N.attn.in_proj_{weight,bias}
                                          vision_model.encoder.layers.N.self_attn.{q,k,v}_proj.{weight,bias}
    transformer.resblocks.N.attn.out_proj.*   ...self_attn.out_proj.*
    transformer.resblocks.N.ln_2.*        ...layer_norm2.*
    transformer.resblocks.N.mlp.c_fc.*    ...mlp.fc1.*
    transformer.resblocks.N.mlp.c_proj.*  ...mlp.fc2.*
    ln_post.*                             vision_model.post_layernorm.*
    proj (width, embed)                   visual_projection.weight (embed, width) = proj.T

Joining q, k, v into in_proj is the only copy; everything else is returned as the same tensor or a
view (proj.T is a non-contiguous view: call .contiguous() before writing it to safetensors).
"""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from ...nets.image_encoder import LAYER_NORM_EPS, ImageEncoderConfig
from . import ConversionError

SUBFOLDER = "image_encoder"  # where a diffusers folder keeps this part

__all__ = ["from_folder", "to_folder", "folder_config"]

_VM = "vision_model."
_BLOCK = "transformer.resblocks."
_LAYER = _VM + "encoder.layers."

# one-to-one names outside the blocks: ours -> transformers
_TOP: dict[str, str] = {
    "class_embedding": _VM + "embeddings.class_embedding",
    "conv1.weight": _VM + "embeddings.patch_embedding.weight",
    "positional_embedding": _VM + "embeddings.position_embedding.weight",
    "ln_pre.weight": _VM + "pre_layrnorm.weight",
    "ln_pre.bias": _VM + "pre_layrnorm.bias",
    "ln_post.weight": _VM + "post_layernorm.weight",
    "ln_post.bias": _VM + "post_layernorm.bias",
}
# one-to-one names inside block N (after the block prefix): ours -> transformers
_IN_BLOCK: dict[str, str] = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_QKV = ("q_proj", "k_proj", "v_proj")  # stacking order of nn.MultiheadAttention's in_proj
_PROJ_THEIRS = "visual_projection.weight"
_HF = "CLIPVisionModelWithProjection"
# buffers transformers may write that carry no weights
_IGNORED_THEIRS = re.compile(r"^vision_model\.embeddings\.position_ids$")


def _block_indices(names: Any, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for n in names if (m := pattern.match(n))})


def _take(sd: dict[str, Tensor], name: str, used: set[str], layout: str) -> Tensor:
    if name not in sd:
        raise ConversionError(f"{layout} state dict lacks {name!r} ({len(sd)} tensors, e.g. {sorted(sd)[:3]})")
    used.add(name)
    return sd[name]


def to_folder(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our (official) names -> CLIPVisionModelWithProjection names."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for ours, theirs in _TOP.items():
        out[theirs] = _take(sd, ours, used, "image tower")
    for i in _block_indices(sd, _BLOCK):
        src, dst = f"{_BLOCK}{i}.", f"{_LAYER}{i}."
        for ours, theirs in _IN_BLOCK.items():
            out[dst + theirs] = _take(sd, src + ours, used, "image tower")
        for kind in ("weight", "bias"):
            fused = _take(sd, f"{src}attn.in_proj_{kind}", used, "image tower")  # (3*D, ...) q, k, v
            for name, part in zip(_QKV, fused.chunk(3, dim=0), strict=True):
                out[f"{dst}self_attn.{name}.{kind}"] = part
    out[_PROJ_THEIRS] = _take(sd, "proj", used, "image tower").t()  # (E, D)
    unknown = sorted(set(sd) - used)
    if unknown:
        raise ConversionError(f"to_folder: {len(unknown)} names that are not part of the image tower, "
                         f"e.g. {unknown[:3]}")
    return out


def from_folder(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """CLIPVisionModelWithProjection names -> our (official) names."""
    if _PROJ_THEIRS not in sd:
        raise ConversionError(f"not a CLIPVisionModelWithProjection state dict: no {_PROJ_THEIRS!r} "
                         f"(got e.g. {sorted(sd)[:3]})")
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for ours, theirs in _TOP.items():
        out[ours] = _take(sd, theirs, used, _HF)
    for i in _block_indices(sd, _LAYER):
        src, dst = f"{_LAYER}{i}.", f"{_BLOCK}{i}."
        for ours, theirs in _IN_BLOCK.items():
            out[dst + ours] = _take(sd, src + theirs, used, _HF)
        for kind in ("weight", "bias"):
            names = [f"{src}self_attn.{name}.{kind}" for name in _QKV]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([_take(sd, n, used, _HF) for n in names])  # (3*D, ...)
    out["proj"] = _take(sd, _PROJ_THEIRS, used, _HF).t()  # (D, E)
    unknown = sorted(n for n in set(sd) - used if not _IGNORED_THEIRS.match(n))
    if unknown:
        raise ConversionError(f"from_folder: {len(unknown)} names not in CLIPVisionModelWithProjection's "
                         f"image tower, e.g. {unknown[:3]}")
    return out


def folder_config(cfg: ImageEncoderConfig) -> dict[str, Any]:
    """config.json of the matching CLIPVisionModelWithProjection."""
    return {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "hidden_size": cfg.width,
        "intermediate_size": cfg.mlp_width,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_channels": 3,
        "patch_size": cfg.patch_size,
        "image_size": cfg.image_size,
        "projection_dim": cfg.embed_dim,
        # transformers defaults to quick_gelu; OpenCLIP ViT-H/14 uses exact GELU (nn.GELU)
        "hidden_act": "gelu",
        "layer_norm_eps": LAYER_NORM_EPS,
    }
