"""`python -m svd_core generate`: one image (or 2 or more keyframes) in, one video file out (WebP, GIF, PNG, or MP4
through PyAV);
`python -m svd_core batch`: a folder of images to videos on Ray workers (svd_core/batch.py)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..checks import device_errors
from ..config import COMPUTE_DTYPES, PRESETS
from ..diffusion import parallel
from ..diffusion.guidance import GUIDANCE_SCHEDULES
from ..image_ops import RESIZE_MODES
from ..video.request import VideoRequest
from ..video.sample import SAMPLER_NAMES
from ..video.sequence import parse_segment_frames, segment_lengths
from ..weights.load import CheckpointError
from ..weights.models import SVDModels
from . import batch
from .render import (
    VIDEO_SUFFIXES,
    RenderOptions,
    file_fps,
    open_models,
    option_errors,
    render,
    render_keyframes,
    request_for,
)

log = logging.getLogger("svd_core")


def _model_options(g: argparse.ArgumentParser) -> None:
    """Options of every subcommand that loads the models and makes videos."""
    g.add_argument("--checkpoint", required=True, type=Path,
                   help="svd_xt_1_1.safetensors (or svd_xt / svd), or a diffusers folder")
    g.add_argument("--unet", type=Path, default=None,
                   help="a UNet-only file used instead of the checkpoint's UNet, e.g. "
                        "AnimateLCM-SVD-xt-1.1.safetensors (its preset, 4 lcm steps, then comes from its name)")
    g.add_argument("--loop", action="store_true", help="a seamless loop: the image at both ends, no frame repeated")
    g.add_argument("--width", type=int, default=None,
                   help="output width, a multiple of 64 (default: the preset's, 1024)")
    g.add_argument("--height", type=int, default=None,
                   help="output height, a multiple of 64 (default: the preset's, 576)")
    g.add_argument("--resize", choices=RESIZE_MODES, default="crop",
                   help="how the image is fitted to the size (default crop)")
    g.add_argument("--frames", type=int, default=None,
                   help="number of frames (default: the preset's, 25 for XT, 14 for SVD)")
    g.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the preset's, 30 for XT, 25 for SVD)")
    g.add_argument("--fps", type=int, default=None,
                   help="frames per second of the file; the model sees fps_id = fps - 1 "
                        "(default: the preset's fps_id + 1, 7)")
    g.add_argument("--fps-id", type=int, default=None,
                   help="override the fps_id conditioning (default fps - 1, the preset's 6)")
    g.add_argument("--motion-bucket-id", type=int, default=None,
                   help="amount of motion (default: the preset's, 127, SVD-XT 1.1's fine-tuning value)")
    g.add_argument("--cond-aug", type=float, default=None,
                   help="noise added to the conditioning frame (default: the preset's, 0.02)")
    g.add_argument("--min-cfg", type=float, default=None,
                   help="guidance scale on the first frame (default: the preset's)")
    g.add_argument("--max-cfg", type=float, default=None,
                   help="guidance scale on the last frame (default: the preset's)")
    g.add_argument("--guidance", choices=GUIDANCE_SCHEDULES, default=None,
                   help="per-frame guidance schedule (default: the preset's, linear for SVD, triangle for SV3D)")
    g.add_argument("--sampler", choices=SAMPLER_NAMES, default=None,
                   help="sampler (default: the preset's; euler, the reference's, or lcm for AnimateLCM)")
    g.add_argument("--seed", type=int, default=0, help="random seed (same video on CPU and GPU)")
    g.add_argument("--decode-chunk-size", type=int, default=None,
                   help="frames decoded at once (default 14, the reference's)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="sampling defaults (default: guessed from the file name)")
    g.add_argument("--dtype", choices=("auto", *COMPUTE_DTYPES), default="auto",
                   help="compute dtype (auto: fp16 on GPU, fp32 on CPU)")
    g.add_argument("--vae-dtype", choices=COMPUTE_DTYPES, default="fp32",
                   help="VAE dtype (default fp32, as the reference runs its VAE; bf16 saves memory when decoding)")
    g.add_argument("--elevations-deg", type=float, nargs="+", default=None,
                   help="SV3D_p only: camera elevation in degrees, one value or one per frame (default 10)")
    g.add_argument("--azimuths-deg", type=float, nargs="+", default=None,
                   help="SV3D_p only: camera azimuth in degrees, one per frame, the last frame's being the input "
                        "view (default: the reference's even orbit)")
    g.add_argument("--frame-ratio", type=float, default=None,
                   help="SV3D only: the object's share of the frame side (the reference's image_frame_ratio); "
                        "the object is found by the image's alpha")
    g.add_argument("--compile", action="store_true",
                   help="compile the UNet and decoder with torch.compile (slow first run; eager with a warning "
                        "where it cannot)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m svd_core", description="Stable Video Diffusion image-to-video")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="turn one image (or a sequence of keyframes) into a video file")
    given = g.add_mutually_exclusive_group(required=True)
    given.add_argument("--image", type=Path, help="input image (any format Pillow reads)")
    given.add_argument("--keyframes", type=Path, nargs="+", default=None, metavar="IMAGE",
                       help="2 or more images: one video through each in order, every segment between two of them "
                            "a first-to-last video (ViBiDSampler) of --frames frames, both keyframes included; each "
                            "image fitted like --image")
    g.add_argument("--end-image", type=Path, default=None,
                   help="last frame: the video ends on it (ViBiDSampler; fitted like --image)")
    g.add_argument("--segment-frames", default=None, metavar="F1,F2,...",
                   help="with --keyframes: the frames of each segment, one per pair of keyframes, e.g. 25,14 for 3 "
                        "keyframes (instead of --frames for all)")
    g.add_argument("--output", required=True, type=Path,
                   help="out.webp, out.gif, out.png (animated PNG, lossless) or out.mp4 (MP4 needs PyAV)")
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
    b.add_argument("--address", default=None,
                   help="a Ray cluster to join (e.g. ray://host:10001 or auto); default: start a local one")
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


CHECKPOINT_HELP = ("checkpoint '{}' not found. Download svd_xt_1_1.safetensors (4.78 GB) from Stability AI's Hugging "
                   "Face page, stabilityai/stable-video-diffusion-img2vid-xt-1-1 (accept its license first), and pass "
                   "its path; in ComfyUI it belongs in ComfyUI/models/checkpoints/.")


def keyframe_errors(args: argparse.Namespace) -> tuple[list[str], list[int] | None]:
    """The problems of --keyframes / --segment-frames and the options they exclude, found before anything is
    loaded, and the frames of each segment --segment-frames gives (None: --frames or the preset's for all)."""
    if args.keyframes is None:
        return (["--segment-frames goes with --keyframes (the frames between two keyframes)"]
                if args.segment_frames is not None else []), None
    errors = []
    if len(args.keyframes) < 2:
        errors.append(f"--keyframes needs at least 2 images, got {len(args.keyframes)}")
    errors += [f"--keyframes: image '{p}' does not exist" for p in args.keyframes if not p.exists()]
    excluded = (("--end-image", args.end_image), ("--loop", args.loop), ("--cfg-parallel", args.cfg_parallel))
    for option, value in excluded:
        if value:
            errors.append(f"--keyframes and {option} exclude each other: every segment runs the keyframe sampler "
                          "from one keyframe to the next, in one process")
    lengths = None
    try:
        if args.segment_frames is not None:
            if args.frames is not None:
                errors.append("--frames and --segment-frames exclude each other: --segment-frames gives the frames "
                              "of each segment, --frames those of all")
            parsed = parse_segment_frames(args.segment_frames, "--segment-frames")
            if parsed is not None and len(args.keyframes) >= 2:
                lengths = segment_lengths(parsed, len(args.keyframes) - 1, 0, name="--segment-frames")
        elif args.frames is not None and args.frames >= 1 and len(args.keyframes) >= 2:  # below 1: option_errors
            segment_lengths(args.frames, len(args.keyframes) - 1, 0, name="--frames")
    except ValueError as e:
        errors.append(str(e))
    return errors, lengths


def run_generate(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() not in VIDEO_SUFFIXES:
        log.error("output '%s' must end in one of %s", args.output, VIDEO_SUFFIXES)
        return 2
    if args.image is not None and not args.image.exists():
        log.error("input image '%s' does not exist", args.image)
        return 2
    if args.end_image is not None and not args.end_image.exists():
        log.error("--end-image '%s' does not exist", args.end_image)
        return 2
    if args.end_image is not None and args.loop:
        log.error("--end-image and --loop exclude each other: a loop ends on its own first frame")
        return 2
    options = RenderOptions.of(args)
    errors, lengths = keyframe_errors(args)
    errors += option_errors(options)
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
    device_name = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtype_name = args.dtype if args.dtype != "auto" else ("fp16" if device_name.startswith("cuda") else "fp32")
    errors = device_errors(device_name, {"dtype": dtype_name, "vae_dtype": args.vae_dtype},
                           lambda name: "--" + name.replace("_", "-"))
    if errors:  # before anything is read: a device that is not here, a dtype it cannot run
        for e in errors:
            log.error("%s", e)
        return 2
    device = torch.device(device_name)
    group, rank = None, 0
    if args.cfg_parallel:
        try:
            group, device = parallel.init_from_env(device)
        except ValueError as e:
            log.error("%s", e)
            return 2
        rank = parallel.rank(group)
    try:
        models = open_models(options, device)
        if args.keyframes is not None and models.config.kind.orbit:
            raise ValueError(f"--keyframes: the loaded model ({models.config.name}) makes orbits of an object; a "
                             "keyframe sequence is made of first-to-last videos, which need an SVD model")
        request = request_for(models, options, seed=args.seed,
                              end_image=args.end_image is not None or args.keyframes is not None)
    except (CheckpointError, ValueError) as e:
        log.error("%s", e)
        return 2
    if args.keyframes is not None:
        return _run_keyframes(args, models, request, options, lengths)
    if rank == 0:
        log.info("%s: %dx%d, %d frames, %d steps, seed %d", request.preset, request.width, request.height,
                 request.num_frames, request.num_steps, args.seed)
    frames = render(models, request, args.image, args.output, fps=file_fps(models, options), end_image=args.end_image,
                    callback=ProgressBar(request.num_steps, enabled=not args.quiet and rank == 0),
                    cfg_parallel=group, write=rank == 0)
    if rank == 0:
        log.info("wrote %s (%d frames)", args.output, frames)
    if group is not None:
        parallel.finish()
    return 0


def _run_keyframes(args: argparse.Namespace, models: SVDModels, request: VideoRequest, options: RenderOptions,
                   lengths: list[int] | None) -> int:
    per_segment = lengths or [request.num_frames] * (len(args.keyframes) - 1)
    log.info("%s: %dx%d, %d keyframes, segments of %s frames, %d steps each, seed %d", request.preset, request.width,
             request.height, len(args.keyframes), ", ".join(map(str, per_segment)), request.num_steps, args.seed)
    frames = render_keyframes(models, request, args.keyframes, args.output, fps=file_fps(models, options),
                              segment_frames=per_segment, decode_chunk_size=options.decode_chunk_size,
                              callback=ProgressBar(request.num_steps * len(per_segment), enabled=not args.quiet))
    log.info("wrote %s (%d frames)", args.output, frames)
    return 0


def run_batch(args: argparse.Namespace) -> int:
    errors = option_errors(RenderOptions.of(args))
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
    args = parser().parse_args(argv)
    if args.command == "generate":
        return run_generate(args)
    if args.command == "batch":
        return run_batch(args)
    return 2
