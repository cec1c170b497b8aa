"""Where each part of the model lives in the official single-file checkpoint.

The one renaming table of this package for the single-file layout: our module names are the
checkpoint's names with one prefix swapped, so loading is a strict load_state_dict. Facts from this
repository's tests/data/svd_xt_1_1.keys.json (every tensor name and shape of the official file) and
from the reference's config, scripts/sampling/configs/svd_xt_1_1.yaml in Stability-AI/generative-models
(not in this repository):

- `model.diffusion_model.*`: the spatio-temporal UNet (VideoUNet).
- `conditioner.embedders.0.open_clip.model.visual.*`: the OpenCLIP ViT-H/14 image tower
  (FrozenOpenCLIPImagePredictionEmbedder). The other `conditioner.embedders.0.open_clip.model.*`
  tensors are the unused text tower.
- `conditioner.embedders.3.encoder.*`: the AutoencoderKLModeOnly that the reference uses to encode the
  conditioning frame (VideoPredictionEmbedderWithEncoder): its `encoder` and `quant_conv` are ours; its
  2-D `decoder` and `post_quant_conv` are never used.
- `first_stage_model.decoder.*`: the temporal decoder (VideoDecoder). `first_stage_model.encoder.*`
  (no quant_conv) is never used at inference.

How this differs from ComfyUI's own loader: ComfyUI builds its SVD VAE from `first_stage_model.*`
only and encodes the conditioning frame with `first_stage_model.encoder` and no quant_conv, while the
reference encodes it with `conditioner.embedders.3.encoder` including its quant_conv (posterior mode).
We follow the reference.

The rest of the family moves two of these (tests/data/svd_image_decoder.keys.json, sv3d_u.keys.json,
sv3d_p.keys.json; configs svd_image_decoder.yaml, sv3d_u.yaml, sv3d_p.yaml):
- the image-decoder SVDs: `first_stage_model` is an AutoencoderKL whose `post_quant_conv` runs before its
  2-D `decoder` (its `encoder` and `quant_conv` are unused, as in SVD);
- SV3D: the conditioning frame's encoder is `conditioner.embedders.1.encoder` (its conditioner has no
  fps_id / motion_bucket_id embedders before it), and `first_stage_model` holds only the 2-D `decoder`.
`prefixes(family)` gives each family's table; `SINGLE_FILE_PREFIXES` is SVD's.
"""
from __future__ import annotations

from ..config import FAMILIES

# part attribute of SVDModels -> {our name prefix: checkpoint name prefix}
SINGLE_FILE_PREFIXES: dict[str, dict[str, str]] = {
    "unet": {"": "model.diffusion_model."},
    "image_encoder": {"": "conditioner.embedders.0.open_clip.model.visual."},
    "vae": {
        "encoder.": "conditioner.embedders.3.encoder.encoder.",
        "quant_conv.": "conditioner.embedders.3.encoder.quant_conv.",
        "decoder.": "first_stage_model.decoder.",
    },
}

# Tensors of the official file that are read by no part (documented above).
IGNORED_PREFIXES: tuple[str, ...] = (
    "conditioner.embedders.0.open_clip.model.",  # outside `.visual.`: the text tower
    "conditioner.embedders.3.encoder.decoder.",
    "conditioner.embedders.3.encoder.post_quant_conv.",
    "first_stage_model.encoder.",
)

Prefixes = dict[str, dict[str, str]]


def prefixes(family: str = "svd") -> Prefixes:
    """The table of `family` (a key of config.FAMILIES): part -> {our name prefix: checkpoint name prefix}."""
    kind = FAMILIES[family]
    encoder = f"conditioner.embedders.{kind.cond_encoder}.encoder."
    vae = {"encoder.": encoder + "encoder.", "quant_conv.": encoder + "quant_conv.",
           "decoder.": "first_stage_model.decoder."}
    if kind.post_quant_conv:
        vae["post_quant_conv."] = "first_stage_model.post_quant_conv."
    return {"unet": SINGLE_FILE_PREFIXES["unet"], "image_encoder": SINGLE_FILE_PREFIXES["image_encoder"], "vae": vae}


def ignored_prefixes(family: str = "svd") -> tuple[str, ...]:
    """The tensors of `family`'s official file that no part reads."""
    encoder = f"conditioner.embedders.{FAMILIES[family].cond_encoder}.encoder."
    return ("conditioner.embedders.0.open_clip.model.", encoder + "decoder.", encoder + "post_quant_conv.",
            "first_stage_model.encoder.", "first_stage_model.quant_conv.")


def part_of(file_name: str, table: Prefixes = SINGLE_FILE_PREFIXES) -> tuple[str, str] | None:
    """(part, our name) for a checkpoint tensor name, or None when no part reads it."""
    for part, parts in table.items():
        for ours, theirs in parts.items():
            if file_name.startswith(theirs):
                return part, ours + file_name[len(theirs):]
    return None


def file_name(part: str, name: str, table: Prefixes = SINGLE_FILE_PREFIXES) -> str:
    """The checkpoint's name for the tensor `name` of `part` (the inverse of `part_of`)."""
    for ours, theirs in sorted(table[part].items(), key=lambda item: -len(item[0])):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(f"'{name}' is not a tensor name of the {part}")
