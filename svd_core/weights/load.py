"""Loading SVD / SVD-XT / SVD-XT 1.1 weights: the official single file, ComfyUI's, or a diffusers folder.

A file flows through one module per step: `safetensors` reads and checks its header, `detect` tells its
layout and which tensors belong to which part, `rename` gives them our names (on meta tensors), `shapes`
reads the models' sizes from them and checks every name and shape, `dtypes` decides storage and compute
dtypes, `models` builds the networks on `meta`; here the weights are then read one tensor at a time, cast
and assigned into the modules (`load_state_dict(assign=True)`), so no weight is ever held twice. Loading is
all-or-nothing: any problem found before a weight is read raises one `CheckpointError` naming the file and
the first offending keys.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch

from ..checks import device_errors
from ..config import DTYPES, FAMILIES, PRESETS, SV3D_VECTOR_DIMS, SVDConfig, preset_for
from ..nets.layers import Ops, set_execution
from ..speed import compile_models
from . import detect, dtypes, layout, rename, shapes
from .detect import COMFY_CLIP_PREFIXES, UNET_PREFIX, made_tensor
from .dtypes import WEIGHT_DTYPES
from .models import PARTS, SVDModels, build_models
from .safetensors import CheckpointError, StoredTensor, read_header, read_tensors
from .shapes import MAX_LISTED

log = logging.getLogger(__name__)

# Names that earlier releases defined here, still importable from this module.
__all__ = ["COMFY_CLIP_PREFIXES", "MAX_LISTED", "UNET_PREFIX", "WEIGHT_DTYPES", "CheckpointError", "load_models",
           "read_header", "read_tensors"]


def load_models(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float16,
    device: str | torch.device = "cpu",
    preset: str | None = None,
    vae_dtype: torch.dtype | None = None,
    weight_dtype: torch.dtype | None = None,
    ops: Ops = torch.nn,
    compile: bool = False,
    unet: str | os.PathLike[str] | None = None,
) -> SVDModels:
    """Load an SVD checkpoint: the official single .safetensors file, or a diffusers folder.

    `dtype` is the compute dtype of the models (fp32, fp16 or bf16, whatever the file stores);
    `vae_dtype`, when given, that of the VAE alone (the reference runs its VAE in fp32:
    disable_first_stage_autocast / disable_encoder_autocast in svd_xt_1_1.yaml);
    `weight_dtype`, when given, the storage dtype of the UNet's matrices (the weights of its linear and
    convolution layers, 99.9 % of its bytes; norms, biases and mix factors stay in `dtype`): e.g.
    torch.float8_e4m3fn, which `ops` must then cast per call (ComfyUI's comfy.ops.manual_cast does);
    `ops`, the namespace the layers are made from (torch.nn; a host's casting layers);
    `preset` picks the sampling defaults (svd / svd_xt / svd_xt_1_1; guessed from the name when None);
    `compile` compiles the UNet and the temporal decoder (speed.compile_models; eager where it cannot);
    `unet`, a UNet-only file (or folder of shards) used instead of the checkpoint's UNet, which is then not
    read: e.g. AnimateLCM-SVD-xt, in diffusers' names as it ships (see `detect.unet_file`); the preset is
    then guessed from its name (AnimateLCM-SVD-xt*.safetensors -> animatelcm_svd_xt).
    Raises CheckpointError, naming the file and the first offending keys, for anything else.
    """
    names = {dtype: name for name, dtype in DTYPES.items()}
    asked = {"dtype": dtype, "vae_dtype": vae_dtype if vae_dtype is not None else dtype}
    errors = device_errors(device, {k: names.get(v, str(v)) for k, v in asked.items()})
    if errors:  # before anything is read
        raise ValueError("; ".join(errors))
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint '{path}' does not exist. The official SVD-XT 1.1 file (svd_xt_1_1.safetensors, 4.78 GB) "
            "is published by Stability AI on Hugging Face (stabilityai/stable-video-diffusion-img2vid-xt-1-1); "
            "in ComfyUI put it in ComfyUI/models/checkpoints/"
        )
    # read and detect, then rename: every part's tensors by our names
    found = detect.checkpoint(path)
    ours = rename.to_our_names(found)
    if found.layout == "comfyui":
        log.warning("'%s' is a ComfyUI-saved SVD checkpoint: the conditioning frame is encoded like ComfyUI does "
                    "(first-stage encoder, no quant_conv), not like the reference", path.name)
    paths = {part: path for part in PARTS}
    unet_layout: detect.UNetLayout | None = None
    if unet is not None:
        paths["unet"] = Path(unet)
        unet_tensors, unet_layout = detect.unet_file(paths["unet"])
        ours["unet"] = rename.unet_file_names(paths["unet"], unet_tensors, unet_layout)

    def spelling(part: str, names: shapes.Shapes) -> rename.KeySpelling:
        if part == "unet" and unet_layout is not None:
            return rename.unet_file_spelling(ours["unet"], unet_layout, names)
        return rename.checkpoint_spelling(path, part, ours[part], names, layout.prefixes(found.family))

    # sizes from shapes, then every name, shape and dtype against the models they describe
    found_shapes = {part: {k: t.shape for k, t in tensors.items()} for part, tensors in ours.items()}
    probe = shapes.probe_shapes()  # full-size names: enough to spell what a config reader complains about
    spells = {part: spelling(part, probe[part]) for part in PARTS}
    unet_cfg, clip_cfg, vae_cfg = shapes.configs_from_shapes(paths, found_shapes, spells)
    if found.family in SV3D_VECTOR_DIMS:  # detect.family_of checked the width: split it as the config does
        unet_cfg = dataclasses.replace(unet_cfg, vector_dims=SV3D_VECTOR_DIMS[found.family])
    if unet is not None:
        if FAMILIES[found.family].orbit:
            raise CheckpointError(f"unet file '{paths['unet']}' cannot replace the UNet of '{path}', an "
                                  f"{found.family} checkpoint: UNet-only files (AnimateLCM-SVD-xt) are SVD UNets")
        shapes.check_unet_fits(paths["unet"], unet_cfg, clip_cfg, vae_cfg)
    name = preset or preset_for(found.family, paths["unet"].name if unet is not None else path.name)
    if name not in PRESETS:
        raise CheckpointError(f"preset '{name}' is unknown; expected one of {sorted(PRESETS)}")
    if PRESETS[name].family != found.family:
        raise CheckpointError(
            f"preset '{name}' is for {PRESETS[name].family} models, but '{path}' is an {found.family} checkpoint "
            f"(told by its tensors); use one of {[n for n, c in PRESETS.items() if c.family == found.family]}")
    config = SVDConfig(name=name, unet=unet_cfg, vae=vae_cfg, image_encoder=clip_cfg, sampling=PRESETS[name].sampling,
                       family=found.family)
    expected = shapes.expected_shapes(config)
    for part in PARTS:
        shapes.check(paths[part], part, found_shapes[part], expected[part], spelling(part, expected[part]))
        dtypes.check_stored(ours[part].values())
    dtypes.check_weight_dtype(weight_dtype)

    # build on meta, then read each part's weights and assign them
    models = build_models(config, device="meta", ops=ops)
    for part in PARTS:
        part_dtype = dtypes.compute_dtype(part, dtype, vae_dtype)
        if part in found.folder_named and not (part == "unet" and unet_layout is not None):
            sd = rename.FROM_FOLDER[part](read_tensors(found.tensors[part], part_dtype, device))
        else:
            sd = _read_part(ours[part], part_dtype, device)
        if part == "unet" and weight_dtype is not None and weight_dtype != part_dtype:
            dtypes.store_matrices(sd, weight_dtype)
        module = getattr(models, part)
        module.load_state_dict(sd, strict=True, assign=True)
        module.eval().requires_grad_(False)
        set_execution(module, dtype=part_dtype)
        del sd
    log.info("loaded %s from '%s'%s as %s (VAE %s) on %s", config.name, path,
             f" with the UNet of '{paths['unet']}'" if unet is not None else "", dtype, vae_dtype or dtype, device)
    if compile:
        compile_models(models)
    return models


def _read_part(tensors: dict[str, StoredTensor], dtype: torch.dtype,
               device: str | torch.device) -> dict[str, torch.Tensor]:
    """A part's state dict from tensors keyed by our names: read from their files, or made (detect.made_tensor)."""
    sd = read_tensors({k: t for k, t in tensors.items() if not t.made}, dtype, device)
    sd.update({k: made_tensor(t, dtype, device) for k, t in tensors.items() if t.made})
    return sd
