"""The one-call paths: image(s) to video(s), a first to a last frame, seamless loops.

`generate` draws every random number of a video from that video's own CPU generator (seed + i for video
i), then runs the pipeline's parts (pipeline.py) or, with an end image or `loop`, the bidirectional
keyframe sampler (keyframes.py).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from ..image_ops import fit_image
from .keyframes import VIBID_STEPS, encode_keyframes, sample_keyframes
from ..weights.models import SVDModels
from ..speed import compile_models
from .pipeline import (
    StepCallback, decode_chunk, decode_latents, encode_conditioning, sample_video, validate_image, video_generators, video_seeds,
)

__all__ = ["generate"]

log = logging.getLogger(__name__)


def generate(
    models: SVDModels,
    image: Tensor,
    *,
    num_frames: int | None = None,
    num_steps: int | None = None,
    fps_id: int | None = None,
    motion_bucket_id: int | None = None,
    cond_aug: float | None = None,
    min_cfg: float | None = None,
    max_cfg: float | None = None,
    guidance: str = "linear",
    sampler: str | None = None,
    seed: int = 0,
    noise: Tensor | None = None,
    decode_chunk_size: int | None = None,
    callback: StepCallback | None = None,
    end_image: Tensor | None = None,
    loop: bool = False,
    resize_mode: str = "crop",
    compile: bool = False,
    cfg_parallel: Any = None,
) -> Tensor:
    """B images (B, 3, H, W) in [0, 1] -> B videos (B, T, 3, H, W) float32 in [0, 1].

    Unset num_frames / num_steps / min_cfg / max_cfg / fps_id / motion_bucket_id / cond_aug / decode chunk /
    sampler come from the loaded preset (SVD: 14 frames, 25 steps, 1.0-2.5; SVD-XT and XT 1.1: 25 frames,
    30 steps, 1.5-3.0; these three: fps_id 6, motion bucket 127, cond_aug 0.02, 14 frames a decode chunk,
    euler; AnimateLCM-SVD-xt: 4 steps of the lcm sampler, 1.0-1.2, motion bucket 80, chunk 4). Video i has its
    own CPU generator seeded with seed + i (see `video_seeds`), which draws its initial latent noise
    (T, C, H/8, W/8) first, then its augmentation noise (3, H, W), then any noise the sampler adds: video i of a batch is the video its
    image gives alone with seed + i, on any device. `noise` (B, T, C, H/8, W/8) replaces the first draws
    (they are still made, so the augmentation noise stays the same).

    `end_image` (B, 3, H', W'; fitted to the image's size with `resize_mode` when it differs) makes the
    video end on it: ViBiDSampler (keyframes.py) with its defaults, 25 steps unless num_steps is given and
    CFG++ at scale 1 (min_cfg, max_cfg, guidance and sampler do not apply). `loop=True` makes a seamless
    loop: the image at both ends, the second copy dropped, so the video has num_frames - 1 frames. Each
    generator then draws, after the augmentation noise, the end image's augmentation noise and the
    sampler's re-noising. `compile=True` compiles the UNet and decoder first (speed.compile_models).
    `cfg_parallel`, a process group of two ranks, splits every guided UNet call between them
    (parallel.py; each rank calls generate with the same arguments and gets the same video); it does not
    apply to end_image or loop.
    """
    validate_image(image)
    if compile:
        compile_models(models)
    keyframed = end_image is not None or loop
    if end_image is not None and loop:
        raise ValueError("end_image and loop exclude each other: a loop ends on its own first frame")
    if keyframed and models.config.sampling.sampler != "euler":
        log.warning("end_image / loop use the keyframe sampler (ViBiD, %d Karras steps by default), made for SVD's "
                    "own UNet; the %s preset's %s sampler does not apply", VIBID_STEPS, models.config.name,
                    models.config.sampling.sampler)
    if keyframed and cfg_parallel is not None:
        raise ValueError("cfg_parallel splits the guided sampler's UNet calls; the keyframe sampler of end_image / "
                         "loop runs in one process: leave cfg_parallel unset")
    s = models.config.sampling.overridden(
        num_frames=num_frames, num_steps=VIBID_STEPS if keyframed and num_steps is None else num_steps,
        min_cfg=min_cfg, max_cfg=max_cfg, sampler=sampler, fps_id=fps_id, motion_bucket_id=motion_bucket_id,
        cond_aug=cond_aug)
    num_frames, num_steps, min_cfg, max_cfg, sampler = s.num_frames, s.num_steps, s.min_cfg, s.max_cfg, s.sampler
    fps_id, motion_bucket_id, cond_aug = s.fps_id, s.motion_bucket_id, s.cond_aug
    if num_frames < (3 if loop else 2 if keyframed else 1):
        raise ValueError(f"num_frames must be at least {3 if loop else 2 if keyframed else 1}"
                         f"{' for a loop' if loop else ' between two keyframes' if keyframed else ''}, got {num_frames}")
    # checked before any work; the preset's chunk (the reference's 14) is clamped to short videos quietly
    chunk = decode_chunk(decode_chunk_size, num_frames, default=s.decode_chunk_size)
    b, _, h, w = image.shape
    if end_image is not None:
        validate_image(end_image, "end_image", check_size=False)
        if end_image.shape[0] not in (1, b):
            raise ValueError(f"end_image holds {end_image.shape[0]} images for {b} start images; give 1 or {b}")
        if end_image.shape[-2:] != image.shape[-2:]:
            end_image = fit_image(end_image, w, h, resize_mode)
        end_image = end_image.expand(b, -1, -1, -1)
    f = models.vae.config.downscale
    shape = (b, num_frames, models.vae.config.latent_channels, h // f, w // f)
    # one CPU generator per video, seeded seed + i: video i is the video its image gives alone with seed + i
    gens = video_generators(video_seeds(seed, b))
    drawn = torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32) for g in gens])
    aug_noise = torch.stack([torch.randn(tuple(image.shape[1:]), generator=g, dtype=torch.float32) for g in gens])
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        drawn = noise.to(torch.float32)
    positive, negative = encode_conditioning(
        models.image_encoder, models.vae, image,
        fps_id=fps_id, motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, aug_noise=aug_noise,
    )
    if not keyframed:
        z = sample_video(
            models.unet, positive, negative, drawn,
            num_steps=num_steps, min_cfg=min_cfg, max_cfg=max_cfg, guidance=guidance, sampler=sampler,
            sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho, generator=gens, callback=callback,
            cfg_parallel=cfg_parallel,
        )
        return decode_latents(models.vae, z, decode_chunk_size=chunk)
    last = image if end_image is None else end_image
    end_aug = torch.stack([torch.randn(tuple(image.shape[1:]), generator=g, dtype=torch.float32) for g in gens])
    keyframes = encode_keyframes(models.image_encoder, models.vae, image, last, fps_id=fps_id,
                                 motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, end_aug_noise=end_aug, loop=loop)
    z = sample_keyframes(models.unet, positive, negative, keyframes, drawn, num_steps=num_steps,
                         sigma_min=s.sigma_min, sigma_max=s.sigma_max, rho=s.rho, generators=gens, callback=callback)
    video = decode_latents(models.vae, z, decode_chunk_size=chunk)
    return video[:, :-1] if loop else video
