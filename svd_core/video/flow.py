"""The one way a video is made: fit the images, condition, sample, decode, each stage taking the request.

`make_video` runs the stages in order, drawing every random number by the seed contract (seeds.py). The
ComfyUI nodes run the same stages one node each (conditioning, sampler, decoder), and `extend` runs them
clip after clip; the plain / first-to-last / loop dispatch lives in `condition` and `sample`, once:
- plain: the reference's EDM sampling with per-frame guidance (sample.sample_video);
- an end image or a loop: ViBiDSampler between the two keyframes (keyframes.py), the end's conditioning
  carried on the positive conditioning; a loop's repeated last frame is dropped by `decode`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..config import FAMILIES
from ..image_ops import fit_image, orbit_image
from ..nets.image_encoder import ImageEncoder
from ..nets.unet import UNet
from ..nets.vae import VAE
from ..seeds import StartNoise, VideoNoise
from ..weights.models import SVDModels
from .camera import camera_radians
from .conditioning import Conditioning, encode_conditioning, encode_keyframes, family_vector
from .decode import decode_latents
from .keyframes import sample_keyframes
from .request import VideoRequest
from .sample import HeldFrames, StepCallback, sample_video

__all__ = ["condition", "decode", "fit_images", "latent_shape", "make_video", "sample"]


def fit_images(request: VideoRequest, image: Tensor, end_image: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """The B start images (B, 3, H, W) fitted to the request's size with its resize mode (unchanged when they
    have it), and the end images (1 or B) fitted to the same size and repeated to B; a loop's end is its start.
    SV3D's images (RGBA, or RGB used as it is) are first prepared as the reference does (image_ops.orbit_image)."""
    if FAMILIES[request.family].orbit:
        image = orbit_image(image, request.height, frame_ratio=request.frame_ratio)
    image = fit_image(image, request.width, request.height, request.resize_mode)
    if request.loop:
        return image, image
    if not request.end_image:
        return image, None
    if end_image is None:
        raise ValueError("the request asks for an end image, but none is given")
    b = image.shape[0]
    if end_image.shape[0] not in (1, b):
        raise ValueError(f"end_image holds {end_image.shape[0]} images for {b} start images; give 1 or {b}")
    end_image = fit_image(end_image, request.width, request.height, request.resize_mode)
    return image, end_image.expand(b, -1, -1, -1)


def latent_shape(vae: VAE, request: VideoRequest) -> tuple[int, int, int, int]:
    """One video's latent (T, C, h, w) for the request's frames and size."""
    f = vae.config.downscale
    return request.num_frames, vae.config.latent_channels, request.height // f, request.width // f


def condition(image_encoder: ImageEncoder, vae: VAE, request: VideoRequest, image: Tensor,
              end_image: Tensor | None, noise: StartNoise) -> tuple[Conditioning, Conditioning]:
    """(positive, negative) for fitted images (`fit_images`) with the augmentation noise of `noise`; with an end
    image or a loop the positive also carries the keyframes (the end's conditioning and both ends' latents); for
    SV3D it carries the frame that ends the video, and its vector is the family's, one row per frame."""
    kind = FAMILIES[request.family]
    polars, azimuths = (camera_radians(request.elevations_deg, request.azimuths_deg)
                        if request.elevations_deg is not None and request.azimuths_deg is not None else (None, None))
    vector = family_vector(kind, image.shape[0], fps_id=request.fps_id, motion_bucket_id=request.motion_bucket_id,
                           cond_aug=request.cond_aug, num_frames=request.num_frames, polars_rad=polars,
                           azimuths_rad=azimuths)
    positive, negative = encode_conditioning(
        image_encoder, vae, image, fps_id=request.fps_id, motion_bucket_id=request.motion_bucket_id,
        cond_aug=request.cond_aug, aug_noise=noise.augmentation, vector=vector, keep_frame=kind.orbit)
    if not request.keyframed:
        return positive, negative
    if end_image is None or noise.end_augmentation is None:
        raise ValueError("a first-to-last video or loop needs its end image and the end's augmentation noise")
    keyframes = encode_keyframes(image_encoder, vae, image, end_image, fps_id=request.fps_id,
                                 motion_bucket_id=request.motion_bucket_id, cond_aug=request.cond_aug,
                                 end_aug_noise=noise.end_augmentation, loop=request.loop)
    return replace(positive, keyframes=keyframes), negative


def sample(unet: UNet, request: VideoRequest, positive: Conditioning, negative: Conditioning, noise: Tensor,
           video_noise: VideoNoise, *, latent: Tensor | None = None, callback: StepCallback | None = None,
           hold: HeldFrames | None = None, cfg_parallel: Any = None) -> Tensor:
    """Latents (B, T, C, h, w) in the sampler's space from standard-normal `noise` of that shape: the keyframe
    sampler when `positive` carries keyframes, else the request's sampler and guidance (from `latent` re-noised
    when request.denoise < 1). Fresh noise comes from `video_noise`, each video's own generator."""
    if positive.keyframes is None:
        return sample_video(
            unet, positive, negative, noise, num_steps=request.num_steps, min_cfg=request.min_cfg,
            max_cfg=request.max_cfg, guidance=request.guidance, sampler=request.sampler, sigma_min=request.sigma_min,
            sigma_max=request.sigma_max, rho=request.rho, denoise=request.denoise, latent=latent,
            generator=video_noise.generators, callback=callback, hold=hold, cfg_parallel=cfg_parallel)
    if cfg_parallel is not None:
        raise ValueError("cfg_parallel splits the guided sampler's UNet calls; the keyframe sampler of end_image / "
                         "loop runs in one process: leave cfg_parallel unset")
    if hold is not None:
        raise ValueError("held frames and keyframes cannot be combined: the keyframe sampler holds both ends itself")
    if request.denoise != 1.0:
        raise ValueError(f"denoise is {request.denoise}, but a video with an end_image or loop samples from pure "
                         "noise: set denoise to 1")
    return sample_keyframes(unet, positive, negative, positive.keyframes, noise, num_steps=request.num_steps,
                            sigma_min=request.sigma_min, sigma_max=request.sigma_max, rho=request.rho,
                            generators=video_noise.generators, callback=callback)


def decode(vae: VAE, request: VideoRequest, z: Tensor, last_frame: Tensor | None = None) -> Tensor:
    """Latents (B, T, C, h, w) in the sampler's space -> frames (B, T', 3, H, W) in [0, 1], decoded in the
    request's chunks; a loop's last frame (a second copy of its first) is dropped. `last_frame` (B or 1, 3, H, W)
    in [-1, 1] replaces each video's last frame (SV3D: the conditioning frame, Conditioning.last_frame)."""
    frames = decode_latents(vae, z, decode_chunk_size=request.decode_chunk_size)
    if last_frame is not None:
        if last_frame.shape[-2:] != frames.shape[-2:]:
            raise ValueError(f"last_frame is {tuple(last_frame.shape[-2:])}, the frames {tuple(frames.shape[-2:])}")
        frames[:, -1] = ((last_frame.to(frames.device, torch.float32) + 1.0) / 2.0).clamp(0.0, 1.0)
    return frames[:, :-1] if request.loop else frames


def make_video(models: SVDModels, request: VideoRequest, image: Tensor, end_image: Tensor | None = None, *,
               noise: Tensor | None = None, callback: StepCallback | None = None,
               cfg_parallel: Any = None) -> Tensor:
    """B images (B, 3, H, W) in [0, 1] -> B videos (B, T', 3, H, W) float32 in [0, 1], as the request says.

    Video i draws from its own generator seeded request.seed + i, in the contract's order (seeds.py): its
    latent noise, its augmentation noise, the end image's, then the sampler's. `noise` (B, T, C, h, w)
    replaces the first draw (still made, so the others stay the same)."""
    image, end_image = fit_images(request, image, end_image)
    video_noise = VideoNoise.for_batch(request.seed, image.shape[0])
    shape = latent_shape(models.vae, request)
    start = video_noise.start(latent=shape, image=tuple(image.shape[1:]), end_image=request.keyframed)
    assert start.latent is not None
    latent_noise = start.latent
    if noise is not None:
        if noise.shape != latent_noise.shape:
            raise ValueError(f"noise must have shape {tuple(latent_noise.shape)}, got {tuple(noise.shape)}")
        latent_noise = noise.to(torch.float32)
    positive, negative = condition(models.image_encoder, models.vae, request, image, end_image, start)
    z = sample(models.unet, request, positive, negative, latent_noise, video_noise, callback=callback,
               cfg_parallel=cfg_parallel)
    return decode(models.vae, request, z, positive.last_frame)
