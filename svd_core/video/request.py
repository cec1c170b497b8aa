"""One request: everything that decides a video besides the models and the images, every default filled in.

`VideoRequest.build(config, ...)` is the one place where unset settings fall back to the loaded preset
(`SamplingConfig`), and where the rules of the video flow are checked before any work: an end image and a
loop exclude each other, a first-to-last video needs 2 frames and a loop 3, both sample from pure noise
(denoise 1) with ViBiD's 25 steps unless told otherwise, a step count the sampler's schedule cannot take is
refused, and the decode chunk is resolved (decode.decode_chunk). `generate`, `extend`, the command line, the
batch job and the nodes all build one and hand it to the flow (flow.py).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import SIZE_MULTIPLE, check_number, schedule_errors
from ..config import FAMILIES, SVDConfig
from .camera import camera_path
from .decode import decode_chunk
from .keyframes import VIBID_STEPS

__all__ = ["VideoRequest", "validate_image"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRequest:
    """What one call makes: B videos of `num_frames` frames at width x height (B from the images)."""

    preset: str  # the SVDConfig's name the defaults came from
    width: int
    height: int
    num_frames: int
    num_steps: int
    fps_id: int
    motion_bucket_id: int
    cond_aug: float
    min_cfg: float
    max_cfg: float
    guidance: str
    sampler: str
    sigma_min: float
    sigma_max: float
    rho: float
    denoise: float
    decode_chunk_size: int  # frames decoded together, resolved (at most num_frames)
    resize_mode: str  # how images of another size are fitted (image_ops.fit_image)
    seed: int  # video i of the batch draws from seed + i (seeds.py)
    end_image: bool  # the videos end on given end images (ViBiDSampler)
    loop: bool  # seamless loops: the start image at both ends, the second copy dropped
    family: str = "svd"  # the model family (config.FAMILIES): how the images are conditioned and decoded
    # SV3D_p's camera path, one value per frame in degrees (camera.camera_path); None for other families
    elevations_deg: tuple[float, ...] | None = None
    azimuths_deg: tuple[float, ...] | None = None
    frame_ratio: float | None = None  # SV3D: the object's share of the frame (image_ops.orbit_image)

    @property
    def keyframed(self) -> bool:
        """Sampled by the bidirectional keyframe sampler (an end image or a loop)."""
        return self.end_image or self.loop

    @property
    def output_frames(self) -> int:
        """Frames of each finished video: a loop drops its repeated last frame."""
        return self.num_frames - 1 if self.loop else self.num_frames

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def build(
        cls,
        config: SVDConfig,
        *,
        width: int | None = None,
        height: int | None = None,
        num_frames: int | None = None,
        num_steps: int | None = None,
        fps_id: int | None = None,
        motion_bucket_id: int | None = None,
        cond_aug: float | None = None,
        min_cfg: float | None = None,
        max_cfg: float | None = None,
        guidance: str | None = None,
        sampler: str | None = None,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float | None = None,
        denoise: float = 1.0,
        decode_chunk_size: int | None = None,
        resize_mode: str = "crop",
        seed: int = 0,
        end_image: bool = False,
        loop: bool = False,
        elevations_deg: float | Sequence[float] | None = None,
        azimuths_deg: Sequence[float] | None = None,
        frame_ratio: float | None = None,
    ) -> VideoRequest:
        """The request with every unset (None) setting taken from `config`'s preset; raises ValueError, naming
        the setting, for a combination the flow cannot make. `elevations_deg` / `azimuths_deg` are SV3D_p's
        camera path (camera.camera_path: default 10 degrees on the even orbit), refused for other models."""
        kind = FAMILIES[config.family]
        if not kind.camera and (elevations_deg is not None or azimuths_deg is not None):
            raise ValueError(f"elevations_deg / azimuths_deg: the loaded model ({config.name}, an {kind.name} model) "
                             "takes no camera path; only SV3D_p (sv3d_p.safetensors) does")
        if not kind.orbit and frame_ratio is not None:
            raise ValueError(f"frame_ratio: the loaded model ({config.name}) is not SV3D; it places no object")
        if kind.orbit and (end_image or loop):
            raise ValueError(f"end_image / loop: the loaded model ({config.name}) makes an orbit, which ends on its "
                             "input image already; first-to-last videos and loops are for SVD models")
        if end_image and loop:
            raise ValueError("end_image and loop exclude each other: a loop ends on its own first frame; ask for "
                             "one or the other")
        keyframed = end_image or loop
        s = config.sampling.overridden(
            width=width, height=height, num_frames=num_frames,
            num_steps=VIBID_STEPS if keyframed and num_steps is None else num_steps, fps_id=fps_id,
            motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, min_cfg=min_cfg, max_cfg=max_cfg, sampler=sampler,
            sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
        least = 3 if loop else 2 if keyframed else 1
        if s.num_frames < least:
            where = " for a loop" if loop else " between two keyframes" if keyframed else ""
            raise ValueError(f"num_frames must be at least {least}{where}, got {s.num_frames}")
        steps_error = check_number("steps", s.num_steps, lambda _: "num_steps")
        if steps_error:  # every sampler, the keyframe sampler too, takes at least one step
            raise ValueError(steps_error)
        if keyframed:
            if denoise != 1.0:
                raise ValueError(f"denoise is {denoise}, but a video with an end_image or loop samples from pure "
                                 "noise: set denoise to 1")
            if config.sampling.sampler != "euler":
                log.warning("end_image / loop use the keyframe sampler (ViBiD, %d Karras steps by default), made for "
                            "SVD's own UNet; the %s preset's %s sampler does not apply", VIBID_STEPS, config.name,
                            config.sampling.sampler)
        else:
            errors = schedule_errors(s.sampler, s.num_steps, denoise)
            if errors:
                raise ValueError("; ".join(errors))
        chunk = decode_chunk(decode_chunk_size, s.num_frames, default=s.decode_chunk_size)
        camera: tuple[tuple[float, ...] | None, tuple[float, ...] | None] = (None, None)
        if kind.camera:
            camera = camera_path(s.num_frames, elevations_deg, azimuths_deg)
        return cls(
            preset=config.name, width=s.width, height=s.height, num_frames=s.num_frames, num_steps=s.num_steps,
            fps_id=s.fps_id, motion_bucket_id=s.motion_bucket_id, cond_aug=s.cond_aug, min_cfg=s.min_cfg,
            max_cfg=s.max_cfg, guidance=guidance or s.guidance, sampler=s.sampler, sigma_min=s.sigma_min,
            sigma_max=s.sigma_max, rho=s.rho, denoise=denoise, decode_chunk_size=chunk, resize_mode=resize_mode,
            seed=int(seed), end_image=end_image, loop=loop, family=config.family, elevations_deg=camera[0],
            azimuths_deg=camera[1], frame_ratio=frame_ratio)


def validate_image(image: Tensor, name: str = "image", *, check_size: bool = True,
                   channels: tuple[int, ...] = (3,)) -> None:
    """A float tensor (B, C, H, W) in [0, 1] with C in `channels` (RGB; SV3D also takes RGBA), H and W positive
    (multiples of 64 with check_size); else ValueError naming `name`."""
    if (not isinstance(image, Tensor) or image.ndim != 4 or image.shape[1] not in channels
            or not image.is_floating_point()):
        what = " or ".join(str(c) for c in channels)
        raise ValueError(f"{name} must be a float tensor (B, {what}, H, W) in [0, 1], "
                         f"got {getattr(image, 'shape', type(image))}")
    h, w = image.shape[-2:]
    if h == 0 or w == 0 or (check_size and (h % SIZE_MULTIPLE or w % SIZE_MULTIPLE)):
        raise ValueError(f"{name} is {w}x{h}; width and height must be positive multiples of {SIZE_MULTIPLE}")
    if not torch.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]")
