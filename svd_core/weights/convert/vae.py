"""Renaming between diffusers' `AutoencoderKLTemporalDecoder` state dict and `svd_core.nets.vae.VAE` (official names).

One table, read both ways. `{i}`/`{j}` are block indices kept as they are; `{u}` is a decoder level,
which diffusers counts from the deepest level (up_blocks.0 = our up.{n-1}), so it maps to n-1-u both
ways; `{p}` is `weight` or `bias`. Attention projections are 1x1 convs here and Linear layers in
diffusers: their weights are reshaped with views, never copied.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ...nets.vae import VAEConfig
from . import ConversionError

SUBFOLDER = "vae"  # where a diffusers folder keeps this part

# sub-layers of a spatial resnet block: ours -> diffusers ResnetBlock2D
_RESNET = [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
           ("nin_shortcut", "conv_shortcut")]
# sub-layers of a VideoResBlock -> SpatioTemporalResBlock; the time_stack Sequential indices
# (in_layers = [norm, SiLU, conv], out_layers = [norm, SiLU, Dropout, conv]) -> TemporalResnetBlock
_VIDEO_RESNET = [(a, f"spatial_res_block.{b}") for a, b in _RESNET] + [
    ("time_stack.in_layers.0", "temporal_res_block.norm1"),
    ("time_stack.in_layers.2", "temporal_res_block.conv1"),
    ("time_stack.out_layers.0", "temporal_res_block.norm2"),
    ("time_stack.out_layers.3", "temporal_res_block.conv2"),
]
_ATTN = [("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")]
_ATTN_MATRICES = ("q", "k", "v", "proj_out")


def _rows() -> list[tuple[str, str]]:
    rows = [("encoder.conv_in", "encoder.conv_in")]
    rows += [(f"encoder.down.{{i}}.block.{{j}}.{a}", f"encoder.down_blocks.{{i}}.resnets.{{j}}.{b}")
             for a, b in _RESNET]
    rows += [("encoder.down.{i}.downsample.conv", "encoder.down_blocks.{i}.downsamplers.0.conv")]
    for part in ("encoder", "decoder"):
        blocks = _RESNET if part == "encoder" else _VIDEO_RESNET
        for k in (1, 2):
            rows += [(f"{part}.mid.block_{k}.{a}", f"{part}.mid_block.resnets.{k - 1}.{b}") for a, b in blocks]
        rows += [(f"{part}.mid.attn_1.{a}", f"{part}.mid_block.attentions.0.{b}") for a, b in _ATTN]
    rows += [("encoder.norm_out", "encoder.conv_norm_out"), ("encoder.conv_out", "encoder.conv_out")]
    rows += [("quant_conv", "quant_conv"), ("decoder.conv_in", "decoder.conv_in")]
    rows += [(f"decoder.up.{{u}}.block.{{j}}.{a}", f"decoder.up_blocks.{{u}}.resnets.{{j}}.{b}")
             for a, b in _VIDEO_RESNET]
    rows += [("decoder.up.{u}.upsample.conv", "decoder.up_blocks.{u}.upsamplers.0.conv")]
    rows += [("decoder.norm_out", "decoder.conv_norm_out"), ("decoder.conv_out", "decoder.conv_out")]
    rows += [("decoder.conv_out.time_mix_conv", "decoder.time_conv_out")]
    table = [(f"{a}.{{p}}", f"{b}.{{p}}") for a, b in rows]
    # the learned blend factor is a bare parameter, not a layer with weight/bias
    table += [(f"decoder.mid.block_{k}.mix_factor", f"decoder.mid_block.resnets.{k - 1}.time_mixer.mix_factor")
              for k in (1, 2)]
    table += [("decoder.up.{u}.block.{j}.mix_factor", "decoder.up_blocks.{u}.resnets.{j}.time_mixer.mix_factor")]
    return table


# (ours, diffusers) name templates
TABLE: list[tuple[str, str]] = _rows()

_FIELDS = {"i": r"\d+", "j": r"\d+", "u": r"\d+", "p": r"weight|bias"}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    out = "".join(re.escape(s) if n % 2 == 0 else f"(?P<{s}>{_FIELDS[s]})" for n, s in enumerate(parts))
    return re.compile(out + "$")


_OURS = [(_compile(a), b) for a, b in TABLE]
_THEIRS = [(_compile(b), a) for a, b in TABLE]


def _num_levels(keys: list[str], level_re: str) -> int:
    found = [int(m.group(1)) for k in keys if (m := re.match(level_re, k))]
    return max(found) + 1 if found else 0


def _rename(sd: Mapping[str, Tensor], rules: list[tuple[re.Pattern[str], str]], n_levels: int) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in sd.items():
        for pattern, target in rules:
            m = pattern.match(key)
            if m is None:
                continue
            f: dict[str, Any] = dict(m.groupdict())
            if "u" in f:
                f["u"] = n_levels - 1 - int(f["u"])  # deepest-first <-> level index
            out[target.format(**f)] = value
            break
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"{len(unknown)} VAE tensors have no entry in the renaming table, e.g. {unknown[:5]}")
    return out


def _is_attn_matrix(ours_key: str) -> bool:
    parts = ours_key.split(".")
    return len(parts) >= 3 and parts[-3] == "attn_1" and parts[-2] in _ATTN_MATRICES and parts[-1] == "weight"


def from_folder(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers AutoencoderKLTemporalDecoder names -> ours (`encoder.*`, `quant_conv.*`, `decoder.*`)."""
    keys = list(sd)
    n = _num_levels(keys, r"decoder\.up_blocks\.(\d+)\.") or _num_levels(keys, r"encoder\.down_blocks\.(\d+)\.")
    out = _rename(sd, _THEIRS, n)
    for k, v in out.items():
        if _is_attn_matrix(k) and v.ndim == 2:
            out[k] = v.view(*v.shape, 1, 1)  # Linear (C, C) -> 1x1 conv (C, C, 1, 1)
    return out


def to_folder(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our names -> diffusers AutoencoderKLTemporalDecoder names."""
    keys = list(sd)
    n = _num_levels(keys, r"decoder\.up\.(\d+)\.") or _num_levels(keys, r"encoder\.down\.(\d+)\.")
    src = {k: (v.view(v.shape[0], v.shape[1]) if _is_attn_matrix(k) and v.ndim == 4 else v) for k, v in sd.items()}
    return _rename(src, _OURS, n)


def folder_config(cfg: VAEConfig) -> dict[str, Any]:
    """config.json of the diffusers folder for `cfg`.

    diffusers hard-codes 32 groups and a (3, 1, 1) temporal kernel in its temporal decoder, so other
    values cannot be expressed. sample_size 768 and force_upcast follow the published SVD vae/config.json.
    """
    if cfg.num_groups != 32 or cfg.video_kernel_size != 3:
        raise ConversionError(
            f"diffusers' AutoencoderKLTemporalDecoder needs num_groups=32 and video_kernel_size=3, "
            f"got {cfg.num_groups} and {cfg.video_kernel_size}"
        )
    return {
        "_class_name": "AutoencoderKLTemporalDecoder",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(cfg.ch_mult),
        "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
        "layers_per_block": cfg.num_res_blocks,
        "latent_channels": cfg.latent_channels,
        "sample_size": 768,
        "scaling_factor": cfg.scale_factor,
        "force_upcast": True,
    }
