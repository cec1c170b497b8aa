"""The models' sizes read from a checkpoint's tensor shapes, and every shape checked against the models.

Every size is read from shapes, so smaller members of the family load too; the models are then built on
the `meta` device and their names and shapes compared with the file's before any weight is read.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import SVDConfig
from ..nets.image_encoder import ImageEncoderConfig
from ..nets.unet import UNetConfig
from ..nets.vae import VAEConfig
from .models import PARTS, build_models
from .rename import KeySpelling, respell
from .safetensors import CheckpointError

Shapes = Mapping[str, tuple[int, ...]]  # tensor name -> shape

MAX_LISTED = 5  # offending keys listed in an error message


def expected_shapes(config: SVDConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """part -> our names and shapes of the models of `config` (built on `meta`)."""
    models = build_models(config, device="meta")
    return {part: {k: tuple(v.shape) for k, v in getattr(models, part).state_dict().items()} for part in PARTS}


@functools.lru_cache(maxsize=1)
def probe_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """part -> our names and shapes at full size (built on `meta`): tells tensor names in an error
    message from other quoted words, and gives the renaming a plausible shape."""
    return expected_shapes(SVDConfig())


def configs_from_shapes(paths: Mapping[str, Path], shapes: Mapping[str, Shapes],
                        spells: Mapping[str, KeySpelling]) -> tuple[UNetConfig, ImageEncoderConfig, VAEConfig]:
    """Each part's config read from its shapes; a reader's complaint is re-spelled in the file's names."""
    readers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "unet": UNetConfig.from_shapes, "image_encoder": ImageEncoderConfig.from_shapes, "vae": VAEConfig.from_shapes}
    configs: dict[str, Any] = {}
    for part, read in readers.items():
        try:
            configs[part] = read(shapes[part])
        except (ValueError, KeyError, IndexError) as e:
            known = set(shapes[part]) | set(probe_shapes().get(part, {}))
            raise CheckpointError(
                f"checkpoint '{paths[part]}' is not an SVD model: {respell(str(e), spells[part], known)}") from e
    return configs["unet"], configs["image_encoder"], configs["vae"]


def check(path: Path, part: str, found: Shapes, expected: Shapes, spell: KeySpelling) -> None:
    """The file's names and shapes of `part` are exactly the model's; else one error listing the first
    missing, unexpected and misshaped tensors as the file spells them."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"checkpoint '{path}' does not match the SVD {part} its shapes describe:"]
    if misshaped:
        lines.append(f"  {len(misshaped)} tensor(s) with the wrong shape, first: " + "; ".join(
            f"{spell(k)} expected {list(expected[k])}, found {list(found[k])}" for k in misshaped[:MAX_LISTED]))
    if missing:
        lines.append(f"  {len(missing)} missing tensor(s), first: " + "; ".join(
            f"{spell(k)} expected {list(expected[k])}" for k in missing[:MAX_LISTED]))
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected tensor(s), first: " + "; ".join(
            f"{spell(k)} found {list(found[k])}" for k in unexpected[:MAX_LISTED]))
    raise CheckpointError("\n".join(lines))


def check_unet_fits(path: Path, unet: UNetConfig, clip: ImageEncoderConfig, vae: VAEConfig) -> None:
    """A UNet from another file must take the checkpoint's latents and image embedding."""
    wrong = []
    if unet.in_channels != 2 * vae.latent_channels or unet.out_channels != vae.latent_channels:
        wrong.append(f"it takes {unet.in_channels} input / {unet.out_channels} output channels, the VAE's latents "
                     f"need {2 * vae.latent_channels} / {vae.latent_channels}")
    if unet.context_dim != clip.embed_dim:
        wrong.append(f"its context_dim is {unet.context_dim}, the image encoder's embedding has {clip.embed_dim}")
    if wrong:
        raise CheckpointError(f"unet file '{path}' does not fit the checkpoint's other parts: " + "; ".join(wrong))
