"""One image file (or a sequence of keyframe files) to one video file: the options, the checks, the models and the
request they name.

Shared by the command line (`python -m svd_core generate`) and the batch job's workers, so a batch's video is
byte for byte the one the command line makes from the same image and seed (on the same device, with the same
number of CPU threads). The options are the command line's, by their Python names (`RenderOptions`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from ..checks import check_number, check_size, schedule_errors
from ..config import COMPUTE_DTYPES, DTYPES, FAMILIES
from ..image_ops import fit_image
from ..video.flow import make_video
from ..video.request import VideoRequest
from ..video.sample import StepCallback
from ..video.sequence import generate_keyframes
from ..weights.load import load_models
from ..weights.models import SVDModels

__all__ = ["VIDEO_SUFFIXES", "RenderOptions", "load_image", "open_models", "option_errors", "render",
           "render_keyframes", "request_for", "write_video"]

VIDEO_SUFFIXES = (".webp", ".gif", ".png", ".mp4")
COMPUTE = {name: DTYPES[name] for name in COMPUTE_DTYPES}


@dataclass(frozen=True)
class RenderOptions:
    """The options that decide the models and the videos; None is the loaded preset's default."""

    checkpoint: Path
    unet: Path | None = None
    preset: str | None = None
    dtype: str = "auto"  # fp16 on a GPU, fp32 on a CPU
    vae_dtype: str = "fp32"  # the reference runs its VAE in fp32
    compile: bool = False
    width: int | None = None
    height: int | None = None
    resize: str = "crop"
    frames: int | None = None
    steps: int | None = None
    fps: int | None = None  # the file's frame rate; the model sees fps_id = fps - 1
    fps_id: int | None = None
    motion_bucket_id: int | None = None
    cond_aug: float | None = None
    min_cfg: float | None = None
    max_cfg: float | None = None
    guidance: str | None = None  # the preset's: linear (SVD), triangle (SV3D)
    sampler: str | None = None
    decode_chunk_size: int | None = None
    loop: bool = False
    elevations_deg: tuple[float, ...] | None = None  # SV3D_p's camera path (camera.camera_path)
    azimuths_deg: tuple[float, ...] | None = None
    frame_ratio: float | None = None  # SV3D: the object's share of the frame (image_ops.orbit_image)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of(cls, values: Any) -> RenderOptions:
        """The options among an object's attributes (an argparse namespace); lists become tuples."""
        given: dict[str, Any] = {}
        for name in cls.names():
            if hasattr(values, name):
                value = getattr(values, name)
                given[name] = tuple(value) if isinstance(value, list) else value
        return cls(**given)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_errors(options: RenderOptions) -> list[str]:
    """Every given number checked before anything is loaded (svd_core.checks), named as options."""
    errors: list[str | None] = []
    for side in ("width", "height"):
        value = getattr(options, side)
        if value is not None:
            errors.append(check_size(side, value, _option))
    for name in ("fps", "motion_bucket_id", "cond_aug", "frames", "steps", "min_cfg", "max_cfg"):
        value = getattr(options, name)
        if value is not None:
            errors.append(check_number(name, value, _option))
    if options.fps_id is not None:
        errors.append(check_number("fps", options.fps_id + 1, lambda _: "--fps-id + 1"))
    if options.decode_chunk_size is not None and options.decode_chunk_size < 1:
        errors.append(f"--decode-chunk-size must be at least 1 frame, got {options.decode_chunk_size}")
    if options.sampler is not None and options.steps is not None:
        errors.extend(schedule_errors(options.sampler, options.steps, label=_option))
    for name in ("elevations_deg", "azimuths_deg"):
        bad = [v for v in getattr(options, name) or () if not math.isfinite(v)]
        if bad:
            errors.append(f"{_option(name)} must be finite numbers of degrees, got {bad[0]}")
    outside = [e for e in options.elevations_deg or () if math.isfinite(e) and not -90.0 <= e <= 90.0]
    if outside:
        errors.append(f"--elevations-deg must lie in [-90, 90] degrees, got {outside[0]}")
    if options.frame_ratio is not None and not 0.0 < options.frame_ratio <= 1.0:
        errors.append(f"--frame-ratio (the object's share of the frame) must lie in (0, 1], got {options.frame_ratio}")
    return [e for e in errors if e]


def open_models(options: RenderOptions, device: torch.device) -> SVDModels:
    """The models the options name (raises CheckpointError): --dtype auto is fp16 on a GPU, fp32 on a CPU."""
    dtype = COMPUTE.get(options.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
    return load_models(options.checkpoint, dtype=dtype, device=device, preset=options.preset,
                       vae_dtype=COMPUTE[options.vae_dtype], compile=options.compile, unet=options.unet)


def request_for(models: SVDModels, options: RenderOptions, *, seed: int, end_image: bool = False) -> VideoRequest:
    """The request the options make with the loaded preset (raises ValueError naming what cannot be made)."""
    fps_id = options.fps_id if options.fps_id is not None else None if options.fps is None else options.fps - 1
    try:
        return VideoRequest.build(
            models.config, width=options.width, height=options.height, num_frames=options.frames,
            num_steps=options.steps, fps_id=fps_id, motion_bucket_id=options.motion_bucket_id,
            cond_aug=options.cond_aug, min_cfg=options.min_cfg, max_cfg=options.max_cfg, guidance=options.guidance,
            sampler=options.sampler, decode_chunk_size=options.decode_chunk_size, resize_mode=options.resize,
            seed=seed, end_image=end_image, loop=options.loop, elevations_deg=options.elevations_deg,
            azimuths_deg=options.azimuths_deg, frame_ratio=options.frame_ratio)
    except ValueError as e:  # the request names its settings; say them as options
        raise ValueError(_as_options(str(e))) from e


_OPTION_OF = {"num_frames": "--frames", "num_steps": "--steps", "steps": "--steps",
              "decode_chunk_size": "--decode-chunk-size", "elevations_deg": "--elevations-deg",
              "azimuths_deg": "--azimuths-deg", "frame_ratio": "--frame-ratio"}


def _as_options(message: str) -> str:
    """A request's message with its setting names spelt as the command line's options."""
    return re.sub(r"(?<![\w-])(" + "|".join(_OPTION_OF) + r")\b", lambda m: _OPTION_OF[m.group(1)], message)


def file_fps(models: SVDModels, options: RenderOptions) -> int:
    """The frame rate written to the file: --fps, else the preset's fps_id + 1."""
    return options.fps if options.fps is not None else models.config.sampling.fps_id + 1


def load_image(path: Path | BinaryIO, *, keep_alpha: bool = False) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]; an alpha channel is dropped, grayscale is repeated to RGB. With `keep_alpha`
    an image that has alpha comes as (1, 4, H, W) RGBA (SV3D's object on transparency)."""
    with Image.open(path) as im:
        alpha = keep_alpha and ("A" in im.getbands() or "transparency" in im.info)
        arr = np.asarray(im.convert("RGBA" if alpha else "RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def write_video(frames: torch.Tensor, path: Path, fps: int) -> None:
    """frames (T, 3, H, W) in [0, 1] -> an animated WebP / GIF / PNG (Pillow) or an H.264 MP4 (PyAV)."""
    arr = (frames.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)  # (T, H, W, 3)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".webp", ".gif", ".png"):
        images = [Image.fromarray(a) for a in arr]
        duration = max(1, round(1000 / fps))
        # .png: an animated PNG, lossless (every frame exactly as decoded, rounded to 8 bits)
        extra: dict[str, Any] = ({"lossless": False, "quality": 90} if suffix == ".webp" else
                                 {"optimize": False} if suffix == ".gif" else {"disposal": 1})
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0, **extra)
        return
    if suffix == ".mp4":
        try:
            import av
        except ImportError as e:
            raise SystemExit(f"writing '{path}' needs PyAV (pip install av); write .webp or .gif instead") from e
        with av.open(str(path), mode="w") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream: Any = container.add_stream(codec, rate=fps)  # a VideoStream
            stream.width, stream.height = arr.shape[2], arr.shape[1]
            stream.pix_fmt = "yuv420p"
            for a in arr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return
    raise SystemExit(f"output '{path}' has suffix '{suffix}'; expected one of {VIDEO_SUFFIXES}")


def render(models: SVDModels, request: VideoRequest, image: Path | BinaryIO, output: Path, *, fps: int,
           end_image: Path | None = None, callback: StepCallback | None = None, cfg_parallel: Any = None,
           write: bool = True) -> int:
    """One image file to one video file, as the request says; returns the number of frames. The file is
    written whole or not at all (a temporary name, then renamed)."""
    frame = load_image(image, keep_alpha=FAMILIES[request.family].orbit)
    last = None if end_image is None else load_image(end_image)
    video = make_video(models, request, frame, last, callback=callback, cfg_parallel=cfg_parallel)
    if write:
        _write_whole(video[0], output, fps)
    return int(video.shape[1])


def render_keyframes(models: SVDModels, request: VideoRequest, keyframes: Sequence[Path], output: Path, *, fps: int,
                     segment_frames: Sequence[int], decode_chunk_size: int | None = None,
                     callback: StepCallback | None = None) -> int:
    """2 or more keyframe files to one video file through each in order (svd_core.generate_keyframes), each
    fitted to the request's size with its resize mode; every segment takes the request's settings (its steps,
    fps_id, motion bucket, cond_aug, seed) and its own frame count. Returns the number of frames."""
    frames = [fit_image(load_image(path), request.width, request.height, request.resize_mode) for path in keyframes]
    video = generate_keyframes(
        models, frames, segment_frames=list(segment_frames), num_steps=request.num_steps, fps_id=request.fps_id,
        motion_bucket_id=request.motion_bucket_id, cond_aug=request.cond_aug, seed=request.seed,
        decode_chunk_size=decode_chunk_size, callback=callback, resize_mode=request.resize_mode)
    _write_whole(video[0], output, fps)
    return int(video.shape[1])


def _write_whole(frames: torch.Tensor, output: Path, fps: int) -> None:
    """The file written whole or not at all: a temporary name, then renamed."""
    partial = output.with_name(f".partial-{output.name}")
    write_video(frames, partial, fps)
    os.replace(partial, output)
