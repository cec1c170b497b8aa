"""The pack's five ComfyUI nodes (V3 schema): thin adapters over svd_core.

Each node validates its inputs, converts ComfyUI layouts (nodes/adapters.py), translates its widgets into a
svd_core.VideoRequest (the preset fills what the node has no widget for), asks the host's model management to load
the models it needs, runs one stage of the video flow (svd_core/video/flow.py: condition, sample, decode) and
returns. Devices and dtypes come from `comfy.model_management`; results are moved to its intermediate device.
Node ids and type names are part of every saved workflow: never change them.
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from typing import Any

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.utils
import folder_paths
import latent_preview
import torch
from comfy_api.latest import InputImpl, Types, io

import svd_core
import svd_core.speed
from svd_core import memory
from svd_core.checks import MAX_FRAMES, device_errors
from svd_core.nets.layers import compute_dtype, set_execution
from svd_core.seeds import VideoNoise
from svd_core.video import flow
from svd_core.video.request import VideoRequest

from . import schema
from .adapters import (
    DTYPE_CHOICES,
    FPS_KEY,
    LAST_FRAME_KEY,
    LATENT_DOWNSCALE,
    LOOP_KEY,
    RESIZE_MODES,
    STORAGE_ONLY,
    ModelHandle,
    check_size,
    conditioning_errors,
    empty_latent,
    encoding_bytes,
    fps_of,
    fps_to_fps_id,
    frames_to_image,
    image_to_bchw,
    latent_fps,
    latent_to_video,
    latent_video_indices,
    match_batches,
    parse_dtype,
    preview_grid,
    repeat_videos,
    sampler_errors,
    video_to_latent,
)

log = logging.getLogger(__name__)

GUIDANCE_SCHEDULES = tuple(svd_core.GUIDANCE_SCHEDULES)
SAMPLER_NAMES = tuple(svd_core.SAMPLER_NAMES)


class _Held(torch.nn.Module):
    """Holder handed to ComfyUI's ModelPatcher: it keeps its own bookkeeping attributes (device,
    loaded memory...) on this module instead of on the svd_core module."""

    def __init__(self, part: torch.nn.Module) -> None:
        super().__init__()
        self.part = part

    def get_dtype(self) -> torch.dtype:
        return next(self.part.parameters()).dtype


def _patcher(part: torch.nn.Module, load_device: torch.device, offload_device: torch.device) -> Any:
    return comfy.model_patcher.ModelPatcher(_Held(part), load_device=load_device, offload_device=offload_device)


def _checkpoint_names() -> list[str]:
    """Files of the `checkpoints` folders, plus diffusers folders (with a unet/ subfolder) placed there."""
    names = list(folder_paths.get_filename_list("checkpoints"))
    for base in folder_paths.get_folder_paths("checkpoints"):
        if not os.path.isdir(base):
            continue
        for entry in sorted(os.listdir(base)):
            if os.path.isdir(os.path.join(base, entry, "unet")) and entry not in names:
                names.append(entry)
    return names


NO_UNET = "none"


def _unet_names() -> list[str]:
    """'none', then the files of the diffusion_models folders (models/diffusion_models and models/unet)."""
    return [NO_UNET, *folder_paths.get_filename_list("diffusion_models")]


def _checkpoint_path(name: str) -> str:
    path = folder_paths.get_full_path("checkpoints", name)
    if path is not None:
        return path
    for base in folder_paths.get_folder_paths("checkpoints"):
        candidate = os.path.join(base, name)
        if os.path.isdir(os.path.join(candidate, "unet")):
            return candidate
    raise ValueError(f"ckpt_name: '{name}' was not found in the checkpoints folders")


class StableVideoCheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoCheckpointLoader",
            display_name="Load Stable Video Checkpoint (exact)",
            category=schema.CATEGORY,
            **schema.aliases("svd checkpoint", "load svd", "svd_xt_1_1", "sv3d", "animatelcm"),
            description="Loads an SVD / SVD-XT / SVD-XT 1.1 checkpoint (the official single .safetensors "
                        "file, or a diffusers folder placed in the checkpoints folder), the image-decoder SVDs "
                        "(svd_image_decoder, svd_xt_image_decoder) or SV3D (sv3d_u, sv3d_p; told by their tensors) "
                        "and returns its video UNet, CLIP image encoder and VAE, managed by ComfyUI's model memory "
                        "manager.",
            inputs=[
                io.Combo.Input("ckpt_name", options=_checkpoint_names(),
                               tooltip="The SVD checkpoint: a file (or a diffusers folder) in ComfyUI's "
                                       "models/checkpoints."),
                io.Combo.Input("weight_dtype", options=list(DTYPE_CHOICES), default="auto",
                               tooltip="Weight precision. auto: what ComfyUI picks for your device "
                                       "(fp32 on a CPU, usually fp16 on a GPU). fp8_e4m3fn / fp8_e5m2 keep "
                                       "the UNet's weights in 8 bits (half the memory of fp16) and compute in "
                                       "fp16 or bf16, like core's UNETLoader; the image encoder and VAE then "
                                       "use ComfyUI's choice."),
                io.Boolean.Input("compile", default=False, optional=True,
                                 tooltip="Compile the UNet and decoder with torch.compile: a slow first run per "
                                         "size, faster after. Falls back to eager, with a warning, where it cannot."),
                io.Combo.Input("unet_name", options=_unet_names(), default=NO_UNET, optional=True,
                               tooltip="A UNet-only file in models/diffusion_models (or models/unet) used instead of "
                                       "the checkpoint's UNet, whose weights are then not read: e.g. "
                                       "AnimateLCM-SVD-xt(-1.1).safetensors, sampled with the lcm sampler in 4 "
                                       "steps. none: the checkpoint's own UNet."),
            ],
            outputs=[
                schema.SVDModel.Output(display_name="model", tooltip="The video UNet."),
                schema.SVDClipVision.Output(display_name="clip_vision", tooltip="The OpenCLIP ViT-H/14 image encoder."),
                schema.SVDVae.Output(display_name="vae", tooltip="The VAE: image encoder and temporal decoder."),
            ],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str, compile: bool = False,
                unet_name: str = NO_UNET) -> io.NodeOutput:
        path = _checkpoint_path(ckpt_name)
        unet_path = None if unet_name == NO_UNET else folder_paths.get_full_path("diffusion_models", unet_name)
        if unet_name != NO_UNET and unet_path is None:
            raise ValueError(f"unet_name: '{unet_name}' was not found in the diffusion_models (unet) folders")
        chosen = parse_dtype(weight_dtype)
        unet_dev, enc_dev, vae_dev = mm.get_torch_device(), mm.text_encoder_device(), mm.vae_device()
        if chosen is not None and chosen not in STORAGE_ONLY:  # e.g. bf16 on a card older than Ampere
            schema.raise_if(device_errors(unet_dev, {"weight_dtype": weight_dtype}))
        supported = [torch.float16, torch.bfloat16, torch.float32]
        if chosen in STORAGE_ONLY:  # fp8: stored in 8 bits, computed in what the device supports
            storage = chosen
            unet_dtype = mm.unet_manual_cast(storage, unet_dev, supported_dtypes=supported) or torch.float16
            chosen = None
        else:
            unet_dtype = chosen or mm.unet_dtype(unet_dev, supported_dtypes=supported)
            storage = unet_dtype
        enc_dtype = chosen or mm.text_encoder_dtype(enc_dev)
        vae_dtype = chosen or mm.vae_dtype(vae_dev, allowed_dtypes=[torch.bfloat16, torch.float32])
        # ComfyUI's layers: they cast (and move) weights at each call when the model manager loads a
        # model partially (low VRAM), or always when the UNet's weights are stored in another dtype
        ops = comfy.ops.pick_operations(storage, unet_dtype, load_device=unet_dev)
        try:
            models = svd_core.load_models(path, dtype=unet_dtype, vae_dtype=vae_dtype, device=mm.unet_offload_device(),
                                          weight_dtype=storage, ops=ops, unet=unet_path)
        except svd_core.CheckpointError as e:
            with_unet = f" with unet_name '{unet_name}'" if unet_path is not None else ""
            raise ValueError(f"ckpt_name '{ckpt_name}'{with_unet} cannot be loaded as an SVD model: {e}") from e
        encoder = models.image_encoder.to(device=mm.text_encoder_offload_device(), dtype=enc_dtype)
        vae = models.vae.to(device=mm.vae_offload_device())
        set_execution(models.unet, device=unet_dev, dtype=unet_dtype)
        set_execution(encoder, device=enc_dev, dtype=enc_dtype)
        set_execution(vae, device=vae_dev, dtype=vae_dtype)
        if compile:  # after set_execution: on a GPU the compile mode captures CUDA graphs
            svd_core.speed.compile_models(models)
        log.info("loaded %s (%s, preset %s): unet %s (stored %s), image encoder %s, vae %s", ckpt_name,
                 models.config.family, models.config.name, unet_dtype, storage, enc_dtype, vae_dtype)
        return io.NodeOutput(
            ModelHandle(_patcher(models.unet, unet_dev, mm.unet_offload_device()), models.config, ckpt_name),
            ModelHandle(_patcher(encoder, enc_dev, mm.text_encoder_offload_device()), models.config, ckpt_name),
            ModelHandle(_patcher(vae, vae_dev, mm.vae_offload_device()), models.config, ckpt_name),
        )


class StableVideoConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoConditioning",
            display_name="Stable Video Conditioning (exact)",
            category=schema.CATEGORY,
            **schema.aliases("svd conditioning", "first last frame", "seamless loop"),
            description="Encodes B images into B video conditionings like the reference: CLIP image "
                        "embedding, VAE latent of the noise-augmented frame, and fps / motion / "
                        "augmentation micro-conditioning. The negative zeroes the image parts.",
            inputs=[
                schema.SVDClipVision.Input("clip_vision",
                                           tooltip="Image encoder from the Stable Video checkpoint loader."),
                schema.SVDVae.Input("vae", tooltip="VAE from the Stable Video checkpoint loader."),
                io.Image.Input("image", tooltip="Start images: a batch of B images makes B videos. RGBA "
                                                "loses its alpha (like the reference), grayscale becomes RGB."),
                schema.size("width", schema.REFERENCE.width,
                            "Video width in pixels, a multiple of 64 (the model was trained at 1024)."),
                schema.size("height", schema.REFERENCE.height,
                            "Video height in pixels, a multiple of 64 (the model was trained at 576)."),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop",
                               tooltip="How an image of another size is fitted: crop (scale to cover, cut "
                                       "the centre), stretch (may distort), pad (scale to fit, black borders)."),
                schema.number("fps", schema.REFERENCE.fps_id + 1,
                               "Frames per second the video is meant to play at. The model sees fps_id = fps - 1: the "
                               "default 7 is the reference's fps_id 6 (SVD-XT 1.1 was fine-tuned at it)."),
                schema.number("motion_bucket_id", schema.REFERENCE.motion_bucket_id,
                               "Amount of motion: higher moves more. 127 is the reference default "
                               "(SVD-XT 1.1 was fine-tuned at it)."),
                schema.number("cond_aug", schema.REFERENCE.cond_aug,
                               "Noise added to the start image before VAE encoding (the reference's cond_aug, default "
                               "0.02); also given to the model as conditioning.", step=0.001, expert=True),
                schema.seed("Seed of the augmentation noise (drawn on the CPU: same on every device). Image i of a "
                             "batch uses seed + i, so it gets what it would get alone with that seed."),
                io.Image.Input("end_image", optional=True,
                               tooltip="Optional last frames (1 or B images): the videos end on them "
                                       "(ViBiDSampler, bidirectional sampling; twice the UNet work per step). "
                                       "An image of another size is fitted like the start image."),
                io.Boolean.Input("loop", default=False, optional=True,
                                 tooltip="A seamless loop: the start image at both ends; the decoder drops the "
                                         "second copy, so the video plays round without a repeated frame "
                                         "(frames - 1 frames). Not with end_image."),
            ],
            outputs=[
                schema.SVDConditioning.Output(display_name="positive", tooltip="Conditioning on the images."),
                schema.SVDConditioning.Output(display_name="negative",
                                              tooltip="Unconditional branch (image parts zeroed)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, width: int | None = None, height: int | None = None, fps: int | None = None,
                        motion_bucket_id: int | None = None, cond_aug: float | None = None) -> bool | str:
        values = {"width": width, "height": height, "fps": fps, "motion_bucket_id": motion_bucket_id,
                  "cond_aug": cond_aug}
        if any(v is None for v in values.values()):  # linked inputs are checked again in execute
            return True
        errors = conditioning_errors(**values)  # type: ignore[arg-type]
        return "; ".join(errors) if errors else True

    @classmethod
    def execute(cls, clip_vision: ModelHandle, vae: ModelHandle, image: torch.Tensor, width: int, height: int,
                resize_mode: str, fps: int, motion_bucket_id: int, cond_aug: float, seed: int,
                end_image: torch.Tensor | None = None, loop: bool = False) -> io.NodeOutput:
        schema.raise_if(conditioning_errors(width, height, fps, motion_bucket_id, cond_aug))
        if clip_vision.config.kind.orbit:
            raise ValueError(f"clip_vision: the loaded checkpoint {clip_vision.describe()} is SV3D (orbits of an "
                             "object, no fps or motion conditioning); use Stable Video Orbit Conditioning")
        request = VideoRequest.build(
            clip_vision.config, width=width, height=height, fps_id=fps_to_fps_id(fps),
            motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, resize_mode=resize_mode, seed=seed,
            end_image=end_image is not None, loop=bool(loop))
        end = image_to_bchw(end_image, "end_image") if end_image is not None else None
        pixels, end = flow.fit_images(request, image_to_bchw(image), end)  # (B, 3, H, W)
        b, _, h, w = pixels.shape
        # image i: its own generator seeded seed + i, drawing the start image's noise, then the end image's
        noise = VideoNoise.for_batch(seed, b).start(image=tuple(pixels.shape[1:]), end_image=True)
        need = encoding_bytes(clip_vision, vae, b, h, w)
        mm.load_models_gpu([clip_vision.patcher, vae.patcher], memory_required=need)
        positive, negative = flow.condition(clip_vision.module, vae.module, request, pixels, end, noise)
        out = mm.intermediate_device()
        return io.NodeOutput(positive.to(device=out), negative.to(device=out))


class StableVideoEmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoEmptyLatent",
            display_name="Empty Stable Video Latent (exact)",
            category=schema.CATEGORY,
            **schema.aliases("svd latent", "empty video latent"),
            description="An empty LATENT for batch_size videos of `frames` frames, frames folded into the "
                        "batch (B*T images), so ComfyUI's latent nodes and previews keep working. Wire the "
                        "conditioning to take its size from there (the size is then typed once).",
            inputs=[
                schema.size("width", schema.REFERENCE.width, "Video width in pixels, a multiple of 64. Ignored when "
                                                  "conditioning is wired: the conditioning's width is used."),
                schema.size("height", schema.REFERENCE.height, "Video height in pixels, a multiple of 64. Ignored when "
                                                    "conditioning is wired: the conditioning's height is used."),
                schema.number("frames", schema.REFERENCE.num_frames, "Frames per video (SVD-XT: 25, SVD: 14)."),
                io.Int.Input("batch_size", default=1, min=1, max=schema.MAX_BATCH,
                             tooltip="Videos per image; 1 makes one video per conditioning image."),
                schema.SVDConditioning.Input("conditioning", optional=True,
                                      tooltip="Optional: the positive conditioning. When wired, the latent takes its "
                                              "width and height from it and the width/height widgets are ignored."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Zero latent (B*T, 4, H/8, W/8).")],
        )

    @classmethod
    def validate_inputs(cls, width: int | None = None, height: int | None = None) -> bool | str:
        if width is None or height is None:
            return True
        errors = [e for e in (check_size("width", width), check_size("height", height)) if e]
        return "; ".join(errors) if errors else True

    @classmethod
    def execute(cls, width: int, height: int, frames: int, batch_size: int, conditioning: Any = None) -> io.NodeOutput:
        if conditioning is not None:  # the size typed once, in the conditioning node
            f = LATENT_DOWNSCALE
            height, width = (int(d) * f for d in conditioning.concat.shape[-2:])
            made_for = getattr(conditioning, "num_frames", None)  # SV3D's camera path fixes the frame count
            if made_for is not None and made_for != frames:
                log.info("StableVideoEmptyLatent: %d frames, as the conditioning was made for (frames widget: %d)",
                         made_for, frames)
                frames = made_for
        latent = empty_latent(width, height, frames, batch_size)
        latent["samples"] = latent["samples"].to(mm.intermediate_device())
        return io.NodeOutput(latent)


class StableVideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoSampler",
            display_name="Stable Video Sampler (exact)",
            category=schema.CATEGORY,
            **schema.aliases("svd sampler", "video sampler"),
            description="Samples the videos like the reference: EDM (Karras) sigmas, per-frame classifier-free "
                        "guidance from min_cfg to max_cfg, cond and uncond in one batch. Shows progress and a "
                        "preview of every frame; cancelling stops within one step.",
            inputs=[
                schema.SVDModel.Input("model", tooltip="Video UNet from the Stable Video checkpoint loader."),
                schema.SVDConditioning.Input("positive",
                                             tooltip="Positive conditioning from Stable Video Conditioning."),
                schema.SVDConditioning.Input("negative",
                                             tooltip="Negative conditioning from Stable Video Conditioning."),
                io.Latent.Input("latent", tooltip="Latent from Stable Video Empty Latent (or a video latent to "
                                                  "re-noise with denoise < 1)."),
                schema.seed("Seed of the initial noise (drawn on the CPU: same video on every device). Video i of a "
                             "batch uses seed + i (or seed + its batch_index, after LatentFromBatch), so it is the "
                             "video it would be alone with that seed."),
                schema.number("steps", schema.REFERENCE.num_steps,
                              "Sampling steps (reference: 30 for SVD-XT, 25 for SVD)."),
                schema.number("min_cfg", schema.REFERENCE.min_cfg,
                              "Guidance scale of the first frame (reference SVD-XT: 1.5).", step=0.05),
                schema.number("max_cfg", schema.REFERENCE.max_cfg,
                              "Guidance scale of the last frame (reference SVD-XT: 3.0).", step=0.05),
                io.Combo.Input("guidance", options=list(GUIDANCE_SCHEDULES), default="linear",
                               tooltip="Per-frame guidance: linear min->max (reference), triangle "
                                       "(min at both ends, max mid-video), constant (max_cfg everywhere)."),
                io.Combo.Input("sampler", options=list(SAMPLER_NAMES), default="euler",
                               tooltip="Sampler: euler (the reference's EulerEDMSampler), heun, dpmpp_2m; lcm for "
                                       "AnimateLCM-SVD-xt (load its UNet in the loader's unet_name): consistency "
                                       "sampling on its 40-level schedule, 4 steps, min_cfg 1.0, max_cfg 1.2, "
                                       "motion bucket 80 in its authors' demo."),
                schema.number("sigma_min", schema.REFERENCE.sigma_min,
                               "Smallest noise level of the Karras schedule (reference 0.002).", step=0.0001,
                               expert=True),
                schema.number("sigma_max", schema.REFERENCE.sigma_max,
                               "Largest noise level of the Karras schedule (reference 700).", step=0.1,
                               expert=True),
                schema.number("rho", schema.REFERENCE.rho, "Karras schedule exponent (reference 7).", step=0.1,
                              expert=True),
                schema.number("denoise", 1.0, "1 = start from pure noise (reference). Below 1, re-noise the input "
                                                "latent and run only the last part of the schedule.", step=0.01),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Sampled video latent (B*T, 4, H/8, W/8).")],
        )

    @classmethod
    def validate_inputs(cls, steps: int | None = None, min_cfg: float | None = None, max_cfg: float | None = None,
                        sigma_min: float | None = None, sigma_max: float | None = None, rho: float | None = None,
                        denoise: float | None = None, sampler: str | None = None) -> bool | str:
        values = {"steps": steps, "min_cfg": min_cfg, "max_cfg": max_cfg, "sigma_min": sigma_min,
                  "sigma_max": sigma_max, "rho": rho, "denoise": denoise}
        if any(v is None for v in values.values()):
            return True
        errors = sampler_errors(**values, sampler=sampler if sampler is not None else "euler")  # type: ignore[arg-type]
        return "; ".join(errors) if errors else True

    @classmethod
    def execute(cls, model: ModelHandle, positive: Any, negative: Any, latent: dict[str, Any], seed: int,
                steps: int, min_cfg: float, max_cfg: float, guidance: str, sampler: str, sigma_min: float,
                sigma_max: float, rho: float, denoise: float) -> io.NodeOutput:
        schema.raise_if(sampler_errors(steps, min_cfg, max_cfg, sigma_min, sigma_max, rho, denoise, sampler=sampler))
        start = latent_to_video(latent, "latent")  # (L, T, 4, h, w), ComfyUI latent space
        keyframes = getattr(positive, "keyframes", None)
        f = model.config.vae.downscale
        request = VideoRequest.build(
            model.config, width=start.shape[-1] * f, height=start.shape[-2] * f, num_frames=start.shape[1],
            num_steps=steps, min_cfg=min_cfg, max_cfg=max_cfg, guidance=guidance, sampler=sampler,
            sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, denoise=denoise, seed=seed,
            end_image=keyframes is not None and not keyframes.loop, loop=keyframes is not None and keyframes.loop)
        n = match_batches(positive.batch_size, start.shape[0])
        if positive.concat.shape[-2:] != start.shape[-2:]:
            h, w = positive.concat.shape[-2:]
            raise ValueError(f"latent is {start.shape[-1] * f}x{start.shape[-2] * f} pixels but positive was made "
                             f"at {w * f}x{h * f}: use the same width and height in both nodes")
        positive, negative = _repeat_cond(positive, n), _repeat_cond(negative, n)
        scale = model.config.vae.scale_factor  # ComfyUI latent space -> the model's diffusion space
        indices = latent_video_indices(latent, start.shape[0], "latent")
        if start.shape[0] != n:  # one latent video for several images: video j is index j of the batch
            indices = list(range(n))
        start = repeat_videos(start, n) * scale
        # video j from its own generator seeded seed + its index, which also draws what the sampler adds later
        # (lcm's fresh noise, ViBiD's re-noising)
        video_noise = VideoNoise.for_indices(seed, indices)
        noise = video_noise.start(latent=tuple(start.shape[1:])).latent
        assert noise is not None
        need = memory.unet_step_bytes(model.config.unet, n, request.num_frames, request.height, request.width,
                                      compute_dtype(model.module), downscale=f)
        mm.load_models_gpu([model.patcher], memory_required=need)  # makes room: other models are offloaded first
        z = flow.sample(model.module, request, positive, negative, noise, video_noise, latent=start,
                        callback=step_callback(model.patcher.load_device, steps))
        out = video_to_latent((z / scale).to(mm.intermediate_device()), like=latent)
        out[FPS_KEY] = fps_of(positive)  # the frame rate the videos were conditioned on, for the decoder's VIDEO
        if positive.last_frame is not None:  # SV3D: the decoder ends each video on its conditioning frame
            out[LAST_FRAME_KEY] = positive.last_frame.to(mm.intermediate_device())
        if request.loop:
            out[LOOP_KEY] = True  # the decoder drops each video's last frame (a second copy of the first)
        return io.NodeOutput(out)


def _video(images: torch.Tensor, fps: float) -> Any:
    """A core VIDEO of the frames (N, H, W, 3) at `fps` (comfy_api's VideoFromComponents)."""
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=None, frame_rate=Fraction(fps)))


def _repeat_cond(cond: Any, n: int) -> Any:
    """A conditioning for one image, repeated for n videos (or the same one when it already has n)."""
    if cond.batch_size == n:
        return cond
    if cond.batch_size != 1:
        raise ValueError(f"cannot repeat a conditioning of {cond.batch_size} images to {n} videos")
    return cond.select([0] * n)


def step_callback(device: torch.device, steps: int) -> Any:
    """After each step: stop if the user cancelled, then advance the progress bar with a preview of
    every frame (latent-to-RGB with SVD's latent format in ComfyUI, SD15's)."""
    previewer = latent_preview.get_previewer(device, comfy.latent_formats.SD15())
    bar = comfy.utils.ProgressBar(steps)

    def on_step(step: int, total: int, denoised: torch.Tensor) -> None:
        mm.throw_exception_if_processing_interrupted()
        preview = None
        if previewer is not None:
            preview = previewer.decode_latent_to_preview_image("JPEG", preview_grid(denoised))
        bar.update_absolute(step, total, preview)

    return on_step


class StableVideoDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoDecode",
            display_name="Stable Video Decode (exact)",
            category=schema.CATEGORY,
            **schema.aliases("svd decode", "vae decode video"),
            description="Decodes a video latent with SVD's temporal VAE decoder in fixed chunks of frames, "
                        "so the result never depends on free memory. Returns all frames as one IMAGE batch "
                        "(video after video), ready for ComfyUI's video save nodes.",
            inputs=[
                schema.SVDVae.Input("vae", tooltip="VAE from the Stable Video checkpoint loader."),
                io.Latent.Input("latent", tooltip="Video latent from the Stable Video Sampler."),
                io.Int.Input("frames_per_chunk", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Frames decoded together by the temporal decoder. 0 = the loaded model's preset: "
                                     f"the reference's {schema.REFERENCE.decode_chunk_size} (SVD, SVD-XT), "
                                     f"{schema.LCM.decode_chunk_size} for AnimateLCM-SVD-xt. "
                                     "Fixed, never chosen from free memory: another value gives (slightly) different "
                                     "frames.",
                             **schema.advanced(io.Int.Input)),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Frames [B*T, H, W, 3], video after video."),
                     io.Video.Output(display_name="video",
                                     tooltip="The same frames as a VIDEO at the conditioning's fps (carried in the "
                                             "LATENT), for core's SaveVideo; a batch's videos play one after "
                                             "another.")],
        )

    @classmethod
    def execute(cls, vae: ModelHandle, latent: dict[str, Any], frames_per_chunk: int) -> io.NodeOutput:
        z = latent_to_video(latent, "latent") * vae.config.vae.scale_factor  # (B, T, 4, h, w) diffusion space
        f = vae.config.vae.downscale
        request = VideoRequest.build(vae.config, width=z.shape[-1] * f, height=z.shape[-2] * f, num_frames=z.shape[1],
                                     decode_chunk_size=frames_per_chunk or None, loop=bool(latent.get(LOOP_KEY)))
        need = memory.decode_bytes(vae.config.vae, request.decode_chunk_size, request.height, request.width,
                                   compute_dtype(vae.module))
        mm.load_models_gpu([vae.patcher], memory_required=need)  # e.g. the UNet is offloaded first if needed
        last_frame = latent.get(LAST_FRAME_KEY)  # SV3D's conditioning frame (the reference's convention)
        if last_frame is not None and last_frame.shape[0] not in (1, z.shape[0]):
            last_frame = None  # the latent's batch was cut or repeated by another node: nothing to match it with
            log.warning("StableVideoDecode: the latent's SV3D input views do not match its %d videos; the last "
                        "frames are decoded, not replaced by the input view", z.shape[0])
        frames = flow.decode(vae.module, request, z, last_frame)  # a loop's repeated last frame dropped
        images = frames_to_image(frames).to(mm.intermediate_device())
        return io.NodeOutput(images, _video(images, latent_fps(latent)))


NODES: list[type[io.ComfyNode]] = [
    StableVideoCheckpointLoader, StableVideoConditioning, StableVideoEmptyLatent, StableVideoSampler, StableVideoDecode,
]
__all__ = ["NODES"] + [n.__name__ for n in NODES]
