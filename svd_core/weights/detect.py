"""Which layout a checkpoint has, and which of its tensors belong to which part.

Layouts of a whole checkpoint:
- "single": the official single file (svd_xt_1_1.safetensors), its parts under the prefixes of layout.py;
- "comfyui": a single file saved by ComfyUI (ImageOnlyCheckpointSave), its image tower in transformers'
  clip-vision names;
- "diffusers": a folder with unet/, vae/ and image_encoder/ subfolders in diffusers / transformers names.
Layouts of a UNet-only file (or folder of shards): "diffusers" names, "single" (the official names with
their prefix) or "bare" (the same without it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..config import FAMILIES, SV3D_VECTOR_DIMS
from .layout import SINGLE_FILE_PREFIXES, part_of, prefixes
from .models import PARTS
from .safetensors import CheckpointError, StoredTensor, read_header

CheckpointLayout = Literal["single", "comfyui", "diffusers"]
UNetLayout = Literal["diffusers", "single", "bare"]

UNET_PREFIX = SINGLE_FILE_PREFIXES["unet"][""]  # model.diffusion_model.

# ComfyUI's own SVD files (ImageOnlyCheckpointSave): the UNet as ours, the first-stage VAE
# (`first_stage_model.encoder/decoder`, no `conditioner.embedders.3`), and the image tower in ComfyUI's
# clip-vision names (transformers' layout) under SVD_img2vid.clip_vision_prefix (comfy/supported_models.py),
# or under `clip_vision.` in files other tools wrote.
COMFY_CLIP_PREFIXES = ("conditioner.embedders.0.open_clip.model.visual.", "clip_vision.")
COMFY_VAE_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class Found:
    """A checkpoint's tensors per part: keyed by our names, except the parts in `folder_named`, keyed by
    diffusers / transformers names (renamed in the next step, rename.to_our_names)."""

    path: Path
    layout: CheckpointLayout
    tensors: dict[str, dict[str, StoredTensor]]
    folder_named: tuple[str, ...]
    family: str = "svd"  # a key of config.FAMILIES, told by the tensors (`family_of`)


def checkpoint(path: Path) -> Found:
    """Read the header(s) of a single file or a diffusers folder, and sort its tensors into parts."""
    return diffusers_folder(path) if path.is_dir() else single_file(path)


def comfy_clip_prefix(header: dict[str, StoredTensor]) -> str | None:
    """The clip-vision prefix of a ComfyUI-saved SVD file, or None for another layout."""
    if any(k.startswith("conditioner.embedders.3.") for k in header):
        return None
    for prefix in COMFY_CLIP_PREFIXES:
        if prefix + "visual_projection.weight" in header or any(k.startswith(prefix + "vision_model.") for k in header):
            return prefix
    return None


def single_file(path: Path) -> Found:
    """The official layout or ComfyUI's; refuses other families (SD 1.x / SDXL / others) and incomplete files."""
    header = read_header(path)
    if not any(k.startswith(UNET_PREFIX) for k in header):
        raise CheckpointError(
            f"checkpoint '{path}' is not an SVD model: no tensor starts with '{UNET_PREFIX}' "
            f"(found {len(header)} tensors, e.g. {sorted(header)[:3]})"
        )
    if not any(".time_stack." in k for k in header if k.startswith(UNET_PREFIX)):
        raise CheckpointError(
            f"checkpoint '{path}' is not an SVD model: its UNet has no temporal layers "
            f"('{UNET_PREFIX}*.time_stack.*'); it looks like an image model (SD 1.x / SD 2.x / SDXL)"
        )
    tensors: dict[str, dict[str, StoredTensor]] = {p: {} for p in PARTS}
    comfy = comfy_clip_prefix(header)
    if comfy is not None:
        for key, t in header.items():
            if key.startswith(UNET_PREFIX):
                tensors["unet"][key[len(UNET_PREFIX):]] = t
            elif key.startswith((COMFY_VAE_PREFIX + "encoder.", COMFY_VAE_PREFIX + "decoder.")):
                tensors["vae"][key[len(COMFY_VAE_PREFIX):]] = t
            elif key.startswith(comfy):
                tensors["image_encoder"][key[len(comfy):]] = t  # folder names, renamed in the next step
        if not any(k.startswith("encoder.") for k in tensors["vae"]):
            raise CheckpointError(f"checkpoint '{path}' is ComfyUI's SVD layout but has no "
                                  f"'{COMFY_VAE_PREFIX}encoder.' tensors (needed to encode the conditioning frame)")
        if "encoder.conv_out.weight" in tensors["vae"]:
            tensors["vae"].update(identity_quant_conv(path, tensors["vae"]["encoder.conv_out.weight"]))
        return Found(path, "comfyui", tensors, folder_named=("image_encoder",))
    family = family_of(path, header)
    table = prefixes(family)
    for key, t in header.items():
        hit = part_of(key, table)
        if hit is not None:
            tensors[hit[0]][hit[1]] = t
    for part, parts in table.items():
        for theirs in parts.values():
            if not any(k.startswith(theirs) for k in header):
                raise CheckpointError(
                    f"checkpoint '{path}' is not a complete {family} checkpoint: no tensor starts with '{theirs}' "
                    f"(needed for the {part}); expected the official single-file layout of "
                    f"{OFFICIAL_FILES[family]}"
                )
    return Found(path, "single", tensors, folder_named=(), family=family)


# The official file of each family (its layout: tests/data/*.keys.json).
OFFICIAL_FILES = {"svd": "svd_xt_1_1.safetensors",
                  "svd_image_decoder": "svd_image_decoder.safetensors / svd_xt_image_decoder.safetensors",
                  "sv3d_u": "sv3d_u.safetensors", "sv3d_p": "sv3d_p.safetensors"}
LABEL_EMB = UNET_PREFIX + "label_emb.0.0.weight"


def family_of(path: Path, header: dict[str, StoredTensor]) -> str:
    """The family of an official single file, told by its tensors (config.FAMILIES):
    - which conditioner embedder encodes the conditioning frame: `conditioner.embedders.3.encoder` (SVD, the
      image-decoder SVDs) or `conditioner.embedders.1.encoder` (SV3D);
    - whether `first_stage_model.decoder` has temporal layers (`time_stack`, `time_mix_conv`: SVD) or not;
    - SV3D_u from SV3D_p by the UNet's vector width (label_emb.0.0.weight: 256 or 256 + 512 + 512).
    A file whose tensors say two families at once is refused, naming the tensors that disagree."""
    def first(prefix: str, contains: str = "") -> str | None:
        return next((k for k in sorted(header) if k.startswith(prefix) and contains in k), None)

    svd_encoder = first("conditioner.embedders.3.encoder.encoder.")
    sv3d_encoder = first("conditioner.embedders.1.encoder.encoder.")
    temporal = (first("first_stage_model.decoder.", ".time_stack.")
                or first("first_stage_model.decoder.", ".time_mix_conv."))
    post_quant = first("first_stage_model.post_quant_conv.")
    adm = int(header[LABEL_EMB].shape[1]) if LABEL_EMB in header and len(header[LABEL_EMB].shape) == 2 else None

    def mixed(what: str, *keys: str | None) -> CheckpointError:
        named = "; ".join(f"'{k}'" + (f" {list(header[k].shape)}" if k in header else "") for k in keys if k)
        return CheckpointError(f"checkpoint '{path}' mixes model families: {what} ({named}); it would load "
                               "half right, so it is not loaded")

    if svd_encoder and sv3d_encoder:
        raise mixed("it has both SVD's conditioning-frame encoder and SV3D's", svd_encoder, sv3d_encoder)
    if sv3d_encoder:
        if temporal:
            raise mixed("an SV3D conditioner with SVD's temporal decoder", sv3d_encoder, temporal)
        if post_quant:
            raise mixed("an SV3D conditioner with an AutoencoderKL first stage (post_quant_conv)", sv3d_encoder,
                        post_quant)
        for name, dims in SV3D_VECTOR_DIMS.items():
            if adm == sum(dims):
                return name
        raise mixed(f"an SV3D conditioner with a UNet whose vector input is {adm} wide (SV3D_u takes "
                    f"{sum(SV3D_VECTOR_DIMS['sv3d_u'])}, SV3D_p {sum(SV3D_VECTOR_DIMS['sv3d_p'])})",
                    sv3d_encoder, LABEL_EMB)
    if svd_encoder and adm in {sum(d) for d in SV3D_VECTOR_DIMS.values()}:
        raise mixed("SVD's conditioner with an SV3D UNet (its vector input is SV3D's)", svd_encoder, LABEL_EMB)
    if svd_encoder and not temporal and first("first_stage_model.decoder."):
        if not post_quant:
            raise mixed("SVD's conditioner with a frame-wise decoder but no AutoencoderKL post_quant_conv "
                        "(the image-decoder SVDs have 'first_stage_model.post_quant_conv.*')", svd_encoder,
                        first("first_stage_model.decoder."))
        return "svd_image_decoder"
    if temporal and post_quant:
        raise mixed("SVD's temporal decoder with an AutoencoderKL post_quant_conv", temporal, post_quant)
    return "svd"


assert set(OFFICIAL_FILES) == set(FAMILIES)


def identity_quant_conv(path: Path, encoder_out: StoredTensor) -> dict[str, StoredTensor]:
    """A quant_conv that changes nothing (1x1 identity, zero bias), for ComfyUI's layout, which has none: the
    VAE then encodes the conditioning frame with the first-stage encoder alone, as ComfyUI's
    SVD_img2vid_Conditioning does. Made by `made_tensor`, read from no file."""
    c = int(encoder_out.shape[0])
    return {"quant_conv.weight": StoredTensor(path, "quant_conv.weight", (c, c, 1, 1), made=True),
            "quant_conv.bias": StoredTensor(path, "quant_conv.bias", (c,), made=True)}


def made_tensor(t: StoredTensor, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """The value of a tensor of `identity_quant_conv`: an identity 1x1 convolution's weight, or a zero bias."""
    value = torch.eye(t.shape[0]).view(t.shape) if len(t.shape) == 4 else torch.zeros(t.shape)
    return value.to(device=device, dtype=dtype)


def safetensors_in(folder: Path) -> list[Path]:
    """The .safetensors files (shards) of a folder; of '.fp16'-style variants, the plain files when present."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        others = sorted(p.name for p in folder.glob("*") if p.suffix in {".bin", ".ckpt", ".pt", ".pth"})
        hint = f" (found pickle files {others}: only .safetensors files are loaded)" if others else ""
        raise CheckpointError(f"diffusers folder '{folder}' has no .safetensors file{hint}")
    # Prefer one variant: the plain file over '.fp16' twins when both exist, unless only variants exist.
    plain = [f for f in files if len(f.name.split(".")) == 2]
    return plain or [f for f in files if f.name.split(".")[-2] == files[0].name.split(".")[-2]]


def diffusers_folder(folder: Path) -> Found:
    """Each part from the subfolder of its name (its shards merged), in the folder's own names."""
    tensors: dict[str, dict[str, StoredTensor]] = {}
    for part in PARTS:
        d = folder / part
        if not d.is_dir():
            raise CheckpointError(f"diffusers folder '{folder}' has no '{part}/' subfolder "
                                  "(expected unet/, vae/, image_encoder/)")
        merged: dict[str, StoredTensor] = {}
        for f in safetensors_in(d):
            merged.update(read_header(f))
        tensors[part] = merged
    return Found(folder, "diffusers", tensors, folder_named=PARTS)


def unet_file(path: Path) -> tuple[dict[str, StoredTensor], UNetLayout]:
    """The tensors of a UNet-only file (or folder of shards) and its layout: keyed by our names for "single"
    (prefix stripped) and "bare", by diffusers' UNetSpatioTemporalConditionModel names for "diffusers" (how
    AnimateLCM-SVD-xt ships: G-U-N/AnimateLCM app.py loads it with pipe.unet.load_state_dict(strict=True))."""
    if not path.exists():
        raise CheckpointError(
            f"unet file '{path}' does not exist. AnimateLCM-SVD-xt's UNets (AnimateLCM-SVD-xt.safetensors, "
            "AnimateLCM-SVD-xt-1.1.safetensors, 6.1 GB each) are published on Hugging Face "
            "(wangfuyun/AnimateLCM-SVD-xt); in ComfyUI put them in ComfyUI/models/diffusion_models/")
    header: dict[str, StoredTensor] = {}
    for f in (safetensors_in(path) if path.is_dir() else [path]):
        header.update(read_header(f))
    if any(k.startswith(UNET_PREFIX) for k in header):
        return {k[len(UNET_PREFIX):]: t for k, t in header.items() if k.startswith(UNET_PREFIX)}, "single"
    if any(k.startswith("input_blocks.") for k in header):
        return dict(header), "bare"
    if not any(k.startswith("down_blocks.") for k in header):
        raise CheckpointError(
            f"unet file '{path}' is not an SVD UNet: none of its {len(header)} tensors (e.g. {sorted(header)[:3]}) "
            f"starts with '{UNET_PREFIX}', 'input_blocks.' or diffusers' 'down_blocks.'")
    return header, "diffusers"

