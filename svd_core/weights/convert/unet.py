"""Renaming between diffusers' `UNetSpatioTemporalConditionModel` state dict and `svd_core.nets.unet.UNet`
(the official `model.diffusion_model.*` names without that prefix).

The one table of this renaming, built for a given layout (levels, res-blocks per level, levels
with attention) by `_table`. Each row maps a layer prefix of ours to one of diffusers', with a
sub-table for what follows it. Ours -> diffusers:
    time_embed.{0,2}                        time_embedding.linear_{1,2}
    label_emb.0.{0,2}                       add_embedding.linear_{1,2}
    input_blocks.0.0                        conv_in
    input_blocks.K.0   (res-block j of level l)       down_blocks.l.resnets.j
    input_blocks.K.1   (its transformer)              down_blocks.l.attentions.j
    input_blocks.K.0.op (after level l)               down_blocks.l.downsamplers.0.conv
    middle_block.{0,1,2}                    mid_block.{resnets.0, attentions.0, resnets.1}
    output_blocks.K.0 / .1 (block j of level l)       up_blocks.(L-1-l).{resnets,attentions}.j
    output_blocks.K.{1|2}.conv (end of level l > 0)   up_blocks.(L-1-l).upsamplers.0.conv
    out.{0,2}                               conv_norm_out, conv_out
Inside a res-block: in_layers.{0,2} / emb_layers.1 / out_layers.{0,3} / skip_connection are
spatial_res_block.{norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut}, and the same layers under
time_stack. (which has no skip_connection) are temporal_res_block.*; inside a transformer: time_stack. is
temporal_transformer_blocks., time_pos_embed.{0,2} is time_pos_embed.linear_{1,2}, the rest is
named alike. Tensors are passed through as they are: no copies, no reshapes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ...nets.unet import UNetConfig
from . import ConversionError

SUBFOLDER = "unet"  # where a diffusers folder keeps this part

__all__ = ["from_folder", "to_folder", "folder_config"]

_LEAF = [("weight", "weight"), ("bias", "bias")]
_RES = [
    ("in_layers.0.", "spatial_res_block.norm1."),
    ("in_layers.2.", "spatial_res_block.conv1."),
    ("emb_layers.1.", "spatial_res_block.time_emb_proj."),
    ("out_layers.0.", "spatial_res_block.norm2."),
    ("out_layers.3.", "spatial_res_block.conv2."),
    ("skip_connection.", "spatial_res_block.conv_shortcut."),
    ("time_stack.in_layers.0.", "temporal_res_block.norm1."),
    ("time_stack.in_layers.2.", "temporal_res_block.conv1."),
    ("time_stack.emb_layers.1.", "temporal_res_block.time_emb_proj."),
    ("time_stack.out_layers.0.", "temporal_res_block.norm2."),
    ("time_stack.out_layers.3.", "temporal_res_block.conv2."),
    ("time_mixer.", "time_mixer."),
]
_ATTN = [
    ("norm.", "norm."),
    ("proj_in.", "proj_in."),
    ("proj_out.", "proj_out."),
    ("time_mixer.", "time_mixer."),
    ("transformer_blocks.", "transformer_blocks."),
    ("time_stack.", "temporal_transformer_blocks."),
    ("time_pos_embed.0.", "time_pos_embed.linear_1."),
    ("time_pos_embed.2.", "time_pos_embed.linear_2."),
]

_Row = tuple[str, str, list[tuple[str, str]]]


def _table(num_levels: int, num_res_blocks: int, attention_levels: tuple[int, ...]) -> list[_Row]:
    """(our prefix, diffusers prefix, sub-table) for every layer of a UNet of this layout."""
    rows: list[_Row] = [
        ("time_embed.0.", "time_embedding.linear_1.", _LEAF),
        ("time_embed.2.", "time_embedding.linear_2.", _LEAF),
        ("label_emb.0.0.", "add_embedding.linear_1.", _LEAF),
        ("label_emb.0.2.", "add_embedding.linear_2.", _LEAF),
        ("input_blocks.0.0.", "conv_in.", _LEAF),
        ("out.0.", "conv_norm_out.", _LEAF),
        ("out.2.", "conv_out.", _LEAF),
        ("middle_block.0.", "mid_block.resnets.0.", _RES),
        ("middle_block.1.", "mid_block.attentions.0.", _ATTN),
        ("middle_block.2.", "mid_block.resnets.1.", _RES),
    ]
    k = 1
    for level in range(num_levels):
        for j in range(num_res_blocks):
            rows.append((f"input_blocks.{k}.0.", f"down_blocks.{level}.resnets.{j}.", _RES))
            if level in attention_levels:
                rows.append((f"input_blocks.{k}.1.", f"down_blocks.{level}.attentions.{j}.", _ATTN))
            k += 1
        if level != num_levels - 1:
            rows.append((f"input_blocks.{k}.0.op.", f"down_blocks.{level}.downsamplers.0.conv.", _LEAF))
            k += 1
    k = 0
    for up, level in enumerate(reversed(range(num_levels))):  # diffusers counts up_blocks from the deepest level
        for j in range(num_res_blocks + 1):
            rows.append((f"output_blocks.{k}.0.", f"up_blocks.{up}.resnets.{j}.", _RES))
            attention = level in attention_levels
            if attention:
                rows.append((f"output_blocks.{k}.1.", f"up_blocks.{up}.attentions.{j}.", _ATTN))
            if level > 0 and j == num_res_blocks:
                rows.append((f"output_blocks.{k}.{2 if attention else 1}.conv.", f"up_blocks.{up}.upsamplers.0.conv.",
                             _LEAF))
            k += 1
    return rows


def _rename(sd: Mapping[str, Tensor], rows: list[_Row], forward: bool) -> dict[str, Tensor]:
    """Rename every key through the table, ours -> diffusers when `forward`, else back."""
    pairs = [(a, b, sub) if forward else (b, a, [(y, x) for x, y in sub]) for a, b, sub in rows]
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for name, tensor in sd.items():
        for src, dst, sub in pairs:
            if name.startswith(src):
                rest = name[len(src):]
                hit = next(((s, d) for s, d in sub if rest.startswith(s)), None)
                if hit is not None:
                    out[dst + hit[1] + rest[len(hit[0]):]] = tensor
                    break
        else:
            unknown.append(name)
    if unknown:
        side = "ours" if forward else "diffusers'"
        raise ConversionError(f"{len(unknown)} tensor names are not in {side} SVD UNet layout, e.g. {unknown[:5]}")
    return out


def to_folder(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our UNet state dict (no 'model.diffusion_model.' prefix) -> diffusers' names, same tensors."""
    cfg = UNetConfig.from_shapes({k: tuple(v.shape) for k, v in sd.items()})
    return _rename(sd, _table(len(cfg.channel_mult), cfg.num_res_blocks, cfg.attention_levels), forward=True)


def from_folder(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers' UNetSpatioTemporalConditionModel state dict -> our names, same tensors."""
    found: dict[int, set[int]] = {}
    attention: set[int] = set()
    for name in sd:
        m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.", name)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(3)))
            if m.group(2) == "attentions":
                attention.add(int(m.group(1)))
    if not found:
        raise ConversionError("not a diffusers UNetSpatioTemporalConditionModel state dict: "
                              "no 'down_blocks.N.resnets.' tensors")
    num_levels = max(found) + 1
    num_res_blocks = len(found[0])
    return _rename(sd, _table(num_levels, num_res_blocks, tuple(sorted(attention))), forward=False)


def folder_config(cfg: UNetConfig, num_frames: int = 25, sample_size: int = 96) -> dict[str, Any]:
    """The `unet/config.json` diffusers needs to build this UNet.

    num_frames and sample_size are metadata only (they do not change the weights); the defaults
    are those of the diffusers SVD-XT folder.
    """
    channels = [cfg.model_channels * m for m in cfg.channel_mult]
    levels = range(len(channels))
    return {
        "_class_name": "UNetSpatioTemporalConditionModel",
        "sample_size": sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": [
            "CrossAttnDownBlockSpatioTemporal" if i in cfg.attention_levels else "DownBlockSpatioTemporal"
            for i in levels
        ],
        "up_block_types": [
            "CrossAttnUpBlockSpatioTemporal" if i in cfg.attention_levels else "UpBlockSpatioTemporal"
            for i in reversed(levels)
        ],
        "block_out_channels": channels,
        "addition_time_embed_dim": cfg.vector_embed_dim,
        "projection_class_embeddings_input_dim": cfg.adm_in_channels,
        "layers_per_block": cfg.num_res_blocks,
        "cross_attention_dim": cfg.context_dim,
        "transformer_layers_per_block": cfg.transformer_depth,
        "num_attention_heads": [c // cfg.num_head_channels for c in channels],
        "num_frames": num_frames,
    }
