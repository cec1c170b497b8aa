"""The one-call path: image(s) to video(s), plain, from a first to a last frame, or a seamless loop.

`generate` turns its arguments into a request (request.py: the preset's defaults, the flow's rules) and hands
it to the video flow (flow.make_video), which draws every random number of a video from that video's own CPU
generator (seeds.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ..speed import compile_models
from ..weights.models import SVDModels
from .flow import make_video
from .request import VideoRequest, validate_image
from .sample import StepCallback

__all__ = ["generate"]


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
    guidance: str | None = None,
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
    elevations_deg: float | Sequence[float] | None = None,
    azimuths_deg: Sequence[float] | None = None,
    frame_ratio: float | None = None,
    width: int | None = None,
    height: int | None = None,
) -> Tensor:
    """B images (B, 3, H, W) in [0, 1] -> B videos (B, T, 3, H, W) float32 in [0, 1].

    Unset num_frames / num_steps / min_cfg / max_cfg / fps_id / motion_bucket_id / cond_aug / decode chunk /
    sampler come from the loaded preset (SVD: 14 frames, 25 steps, 1.0-2.5; SVD-XT and XT 1.1: 25 frames,
    30 steps, 1.5-3.0; these three: fps_id 6, motion bucket 127, cond_aug 0.02, 14 frames a decode chunk,
    euler; AnimateLCM-SVD-xt: 4 steps of the lcm sampler, 1.0-1.2, motion bucket 80, chunk 4). Video i has its
    own CPU generator seeded with seed + i (see `video_seeds`), which draws its initial latent noise
    (T, C, H/8, W/8) first, then its augmentation noise (3, H, W), then any noise the sampler adds: video i
    of a batch is the video its image gives alone with seed + i, on any device. `noise` (B, T, C, H/8, W/8)
    replaces the first draws (they are still made, so the augmentation noise stays the same).

    `end_image` (B, 3, H', W'; fitted to the image's size with `resize_mode` when it differs) makes the
    video end on it: ViBiDSampler (keyframes.py) with its defaults, 25 steps unless num_steps is given and
    CFG++ at scale 1 (min_cfg, max_cfg, guidance and sampler do not apply). `loop=True` makes a seamless
    loop: the image at both ends, the second copy dropped, so the video has num_frames - 1 frames. Each
    generator then draws, after the augmentation noise, the end image's augmentation noise and the
    sampler's re-noising. `compile=True` compiles the UNet and decoder first (speed.compile_models).
    `cfg_parallel`, a process group of two ranks, splits every guided UNet call between them
    (parallel.py; each rank calls generate with the same arguments and gets the same video); it does not
    apply to end_image or loop.

    SV3D (sv3d_u / sv3d_p files): `image` may be RGBA (B, 4, H, W) of any size, prepared as the reference does
    (image_ops.orbit_image: the object centred on white; `frame_ratio` its share of the frame) at the preset's
    576x576 unless width / height say otherwise; 21 views, 50 steps, triangle guidance 1.0-2.5, cond_aug 1e-5;
    fps_id and motion_bucket_id do not apply; the last frame is the prepared image. SV3D_p follows the camera
    path `elevations_deg` (one value or one per frame, default 10) and `azimuths_deg` (one per frame, default
    the even orbit), the reference's names; other models refuse them.
    Other models take the video size from the image (width / height, when given, fit the image to them).
    """
    orbit = models.config.kind.orbit
    validate_image(image, check_size=not orbit, channels=(3, 4) if orbit else (3,))
    if end_image is not None:
        validate_image(end_image, "end_image", check_size=False)
    if not orbit and width is None and height is None:
        width, height = image.shape[-1], image.shape[-2]
    request = VideoRequest.build(
        models.config, width=width, height=height, num_frames=num_frames, num_steps=num_steps,
        fps_id=fps_id, motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, min_cfg=min_cfg, max_cfg=max_cfg,
        guidance=guidance, sampler=sampler, decode_chunk_size=decode_chunk_size, resize_mode=resize_mode, seed=seed,
        end_image=end_image is not None, loop=loop, elevations_deg=elevations_deg, azimuths_deg=azimuths_deg,
        frame_ratio=frame_ratio)
    if compile:
        compile_models(models)
    return make_video(models, request, image, end_image, noise=noise, callback=callback, cfg_parallel=cfg_parallel)
