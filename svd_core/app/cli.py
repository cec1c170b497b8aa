"""`python -m svd_core generate`: one image in, one video file out (WebP, GIF, PNG, or MP4 through PyAV);
`python -m svd_core batch`: a folder of images to videos on Ray workers (svd_core/batch.py)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from ..config import COMPUTE_DTYPES, PRESETS
from ..config import DTYPES as DTYPES_BY_NAME
from ..checks import check_number, check_size, schedule_errors
from ..diffusion.guidance import GUIDANCE_SCHEDULES
from ..image_ops import RESIZE_MODES, fit_image
from ..diffusion import parallel
from ..weights.load import CheckpointError, load_models
from ..weights.models import SVDModels
from ..video.generate import generate
from ..video.keyframes import VIBID_STEPS
from ..video.pipeline import SAMPLER_NAMES

log = logging.getLogger("svd_core")

DTYPES = {name: DTYPES_BY_NAME[name] for name in COMPUTE_DTYPES}
VIDEO_SUFFIXES = (".webp", ".gif", ".png", ".mp4")


def _model_options(g: argparse.ArgumentParser) -> None:
    """Options of every subcommand that loads the models and makes videos."""
    g.add_argument("--checkpoint", required=True, type=Path, help="svd_xt_1_1.safetensors (or svd_xt / svd), or a diffusers folder")
    g.add_argument("--unet", type=Path, default=None,
                   help="a UNet-only file used instead of the checkpoint's UNet, e.g. AnimateLCM-SVD-xt-1.1.safetensors "
                        "(its preset, 4 lcm steps, then comes from its name)")
    g.add_argument("--loop", action="store_true", help="a seamless loop: the image at both ends, no frame repeated")
    g.add_argument("--width", type=int, default=None, help="output width, a multiple of 64 (default: the preset's, 1024)")
    g.add_argument("--height", type=int, default=None, help="output height, a multiple of 64 (default: the preset's, 576)")
    g.add_argument("--resize", choices=RESIZE_MODES, default="crop", help="how the image is fitted to the size (default crop)")
    g.add_argument("--frames", type=int, default=None, help="number of frames (default: the preset's, 25 for XT, 14 for SVD)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's, 30 for XT, 25 for SVD)")
    g.add_argument("--fps", type=int, default=None,
                   help="frames per second of the file; the model sees fps_id = fps - 1 (default: the preset's fps_id + 1, 7)")
    g.add_argument("--fps-id", type=int, default=None, help="override the fps_id conditioning (default fps - 1, the preset's 6)")
    g.add_argument("--motion-bucket-id", type=int, default=None,
                   help="amount of motion (default: the preset's, 127, SVD-XT 1.1's fine-tuning value)")
    g.add_argument("--cond-aug", type=float, default=None, help="noise added to the conditioning frame (default: the preset's, 0.02)")
    g.add_argument("--min-cfg", type=float, default=None, help="guidance scale on the first frame (default: the preset's)")
    g.add_argument("--max-cfg", type=float, default=None, help="guidance scale on the last frame (default: the preset's)")
    g.add_argument("--guidance", choices=GUIDANCE_SCHEDULES, default="linear", help="per-frame guidance schedule")
    g.add_argument("--sampler", choices=SAMPLER_NAMES, default=None,
                   help="sampler (default: the preset's; euler, the reference's, or lcm for AnimateLCM)")
    g.add_argument("--seed", type=int, default=0, help="random seed (same video on CPU and GPU)")
    g.add_argument("--decode-chunk-size", type=int, default=None, help="frames decoded at once (default 14, the reference's)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None, help="sampling defaults (default: guessed from the file name)")
    g.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="compute dtype (auto: fp16 on GPU, fp32 on CPU)")
    g.add_argument("--vae-dtype", choices=DTYPES, default="fp32",
                   help="VAE dtype (default fp32, as the reference runs its VAE; bf16 saves memory when decoding)")
    g.add_argument("--compile", action="store_true",
                   help="compile the UNet and decoder with torch.compile (slow first run; eager with a warning where it cannot)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m svd_core", description="Stable Video Diffusion image-to-video")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="turn one image into a video file")
    g.add_argument("--image", required=True, type=Path, help="input image (any format Pillow reads)")
    g.add_argument("--end-image", type=Path, default=None,
                   help="last frame: the video ends on it (ViBiDSampler; fitted like --image)")
    g.add_argument("--output", required=True, type=Path, help="out.webp, out.gif, out.png (animated PNG, lossless) or out.mp4 (MP4 needs PyAV)")
    _model_options(g)
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (default: torch's choice); CPU results depend on it in the last bits")
    g.add_argument("--cfg-parallel", action="store_true",
                   help="one video on two processes (launch with torchrun --nproc-per-node 2): the conditional and "
                        "unconditional halves of each step run on two ranks; NCCL on GPUs, gloo on CPUs")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    b = sub.add_parser("batch", help="turn a folder of images into videos on a pool of Ray workers (pip install ray)")
    b.add_argument("--images", required=True, help="a glob of input images, e.g. 'stills/*.png' (quote it)")
    b.add_argument("--output", required=True, type=Path, help="the folder for the videos and results.jsonl")
    b.add_argument("--format", choices=tuple(x.lstrip(".") for x in VIDEO_SUFFIXES), default="webp",
                   help="video format of every output (default webp)")
    _model_options(b)
    b.add_argument("--address", default=None, help="a Ray cluster to join (e.g. ray://host:10001 or auto); default: start a local one")
    b.add_argument("--workers", type=int, default=1, help="workers, each holding the models (default 1)")
    b.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs of each worker (default 0: CPU workers)")
    b.add_argument("--threads-per-worker", type=int, default=None,
                   help="CPU threads of each worker (default: 1 with GPUs, else this machine's cores / --workers)")
    return p


class ProgressBar:
    """A plain text progress bar on stderr."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30) -> None:
        self.total, self.enabled, self.width, self.start = total, enabled, width, time.monotonic()

    def __call__(self, step: int, total: int, denoised: torch.Tensor) -> None:
        if not self.enabled:
            return
        done = int(self.width * step / max(1, total))
        elapsed = time.monotonic() - self.start
        sys.stderr.write(f"\rsampling [{'#' * done}{'.' * (self.width - done)}] {step}/{total} {elapsed:6.1f}s")
        if step >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def load_image(path: Path | BinaryIO) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]; an alpha channel is dropped, grayscale is repeated to RGB."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
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


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_errors(args: argparse.Namespace) -> list[str]:
    """Every given number checked before anything is loaded (svd_core.checks, named as options)."""
    errors: list[str] = []
    for side in ("width", "height"):
        value = getattr(args, side)
        if value is not None:
            errors.append(check_size(side, value, _option) or "")
    for name in ("fps", "motion_bucket_id", "cond_aug", "frames", "steps", "min_cfg", "max_cfg"):
        value = getattr(args, name)
        if value is not None:
            errors.append(check_number(name, value, _option) or "")
    if args.fps_id is not None:
        errors.append(check_number("fps", args.fps_id + 1, lambda _: "--fps-id + 1") or "")
    if args.decode_chunk_size is not None and args.decode_chunk_size < 1:
        errors.append(f"--decode-chunk-size must be at least 1 frame, got {args.decode_chunk_size}")
    if args.sampler is not None and args.steps is not None:
        errors.extend(schedule_errors(args.sampler, args.steps, label=_option))
    return [e for e in errors if e]


CHECKPOINT_HELP = ("checkpoint '{}' not found. Download svd_xt_1_1.safetensors (4.78 GB) from Stability AI's Hugging Face "
                   "page, stabilityai/stable-video-diffusion-img2vid-xt-1-1 (accept its license first), and pass its path; "
                   "in ComfyUI it belongs in ComfyUI/models/checkpoints/.")


def compute_dtypes(args: argparse.Namespace, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(models' dtype, VAE dtype) of the options: --dtype auto is fp16 on a GPU, fp32 on a CPU."""
    return DTYPES.get(args.dtype) or (torch.float16 if device.type == "cuda" else torch.float32), DTYPES[args.vae_dtype]


def open_models(args: argparse.Namespace, device: torch.device) -> SVDModels:
    """The models the options name (raises CheckpointError)."""
    dtype, vae_dtype = compute_dtypes(args, device)
    return load_models(args.checkpoint, dtype=dtype, device=device, preset=args.preset, vae_dtype=vae_dtype,
                       compile=args.compile, unet=args.unet)


@dataclass(frozen=True)
class Settings:
    """What one video is made with, every default resolved from the loaded preset (also the manifest's
    `settings` of the batch job)."""

    preset: str
    width: int
    height: int
    frames: int
    steps: int
    fps: int
    fps_id: int
    motion_bucket_id: int
    cond_aug: float
    min_cfg: float
    max_cfg: float
    guidance: str
    sampler: str
    resize: str
    loop: bool


def settings_for(models: SVDModels, args: argparse.Namespace) -> Settings:
    """The options with the preset's defaults filled in; a step count the sampler cannot take raises ValueError."""
    s = models.config.sampling
    keyframed = getattr(args, "end_image", None) is not None or args.loop
    steps = args.steps or (VIBID_STEPS if keyframed else s.num_steps)
    sampler = args.sampler or s.sampler
    errors = schedule_errors(sampler, steps, label=_option)
    if errors:
        raise ValueError(errors[0])
    fps = args.fps if args.fps is not None else s.fps_id + 1
    o = s.overridden(num_frames=args.frames, motion_bucket_id=args.motion_bucket_id, cond_aug=args.cond_aug,
                     min_cfg=args.min_cfg, max_cfg=args.max_cfg)
    return Settings(
        preset=models.config.name, width=args.width or s.width, height=args.height or s.height,
        frames=o.num_frames, steps=steps, fps=fps, fps_id=fps - 1 if args.fps_id is None else args.fps_id,
        motion_bucket_id=o.motion_bucket_id, cond_aug=o.cond_aug, min_cfg=o.min_cfg, max_cfg=o.max_cfg,
        guidance=args.guidance, sampler=sampler, resize=args.resize, loop=args.loop)


def render(models: SVDModels, settings: Settings, image: Path | BinaryIO, output: Path, *, seed: int,
           decode_chunk_size: int | None = None, end_image: Path | None = None, callback: Any = None,
           cfg_parallel: Any = None, write: bool = True) -> int:
    """One image file to one video file, as `generate` makes it; returns the number of frames. The same
    function serves the command line and the batch job's workers, so their videos are the same. The file is
    written whole or not at all (a temporary name, then renamed)."""
    st = settings
    frame = fit_image(load_image(image), st.width, st.height, st.resize)
    last = None if end_image is None else fit_image(load_image(end_image), st.width, st.height, st.resize)
    video = generate(
        models, frame, num_frames=st.frames, num_steps=st.steps, fps_id=st.fps_id, motion_bucket_id=st.motion_bucket_id,
        cond_aug=st.cond_aug, min_cfg=st.min_cfg, max_cfg=st.max_cfg, guidance=st.guidance, sampler=st.sampler,
        seed=seed, decode_chunk_size=decode_chunk_size, end_image=last, loop=st.loop, callback=callback,
        cfg_parallel=cfg_parallel,
    )
    if write:
        partial = output.with_name(f".partial-{output.name}")
        write_video(video[0], partial, st.fps)
        os.replace(partial, output)
    return int(video.shape[1])


def run_generate(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() not in VIDEO_SUFFIXES:
        log.error("output '%s' must end in one of %s", args.output, VIDEO_SUFFIXES)
        return 2
    if not args.image.exists():
        log.error("input image '%s' does not exist", args.image)
        return 2
    if args.end_image is not None and not args.end_image.exists():
        log.error("--end-image '%s' does not exist", args.end_image)
        return 2
    if args.end_image is not None and args.loop:
        log.error("--end-image and --loop exclude each other: a loop ends on its own first frame")
        return 2
    errors = option_errors(args)
    if args.threads is not None and args.threads < 1:
        errors.append(f"--threads must be at least 1, got {args.threads}")
    if errors:
        for e in errors:
            log.error("%s", e)
        return 2
    if not args.checkpoint.exists():
        log.error(CHECKPOINT_HELP.format(args.checkpoint))
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    group, rank = None, 0
    if args.cfg_parallel:
        try:
            group, device = parallel.init_from_env(device)
        except ValueError as e:
            log.error("%s", e)
            return 2
        rank = parallel.rank(group)
    try:
        models = open_models(args, device)
        settings = settings_for(models, args)
    except (CheckpointError, ValueError) as e:
        log.error("%s", e)
        return 2
    if rank == 0:
        log.info("%s: %dx%d, %d frames, %d steps, seed %d", settings.preset, settings.width, settings.height,
                 settings.frames, settings.steps, args.seed)
    frames = render(models, settings, args.image, args.output, seed=args.seed, decode_chunk_size=args.decode_chunk_size,
                    end_image=args.end_image, callback=ProgressBar(settings.steps, enabled=not args.quiet and rank == 0),
                    cfg_parallel=group, write=rank == 0)
    if rank == 0:
        log.info("wrote %s (%d frames)", args.output, frames)
    if group is not None:
        parallel.finish()
    return 0


def run_batch(args: argparse.Namespace) -> int:
    from . import batch

    errors = option_errors(args)
    if errors:
        for e in errors:
            log.error("%s", e)
        return 2
    try:
        batch.run_from_args(args)
    except batch.BatchError as e:
        log.error("%s", e)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    if args.command == "generate":
        return run_generate(args)
    if args.command == "batch":
        return run_batch(args)
    return 2
