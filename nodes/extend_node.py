"""StableVideoExtend: continue a video by more clips (svd_core.extend), as a ComfyUI V3 node."""
from __future__ import annotations

import logging
from typing import Any

import comfy.model_management as mm
import torch
from comfy_api.latest import io

import svd_core
from svd_core import memory
from svd_core.checks import MAX_FRAMES, check_size
from svd_core.nets.layers import compute_dtype
from svd_core.video import flow
from svd_core.video.extend import DEFAULT_OVERLAP
from svd_core.video.request import VideoRequest

from . import schema
from .adapters import (
    FRAMES_KEY,
    ModelHandle,
    conditioning_errors,
    fps_to_fps_id,
    frames_to_image,
    image_to_bchw,
    latent_to_video,
    sampler_errors,
)
from .svd_nodes import step_callback

log = logging.getLogger(__name__)
MAX_CLIPS = 64


class StableVideoExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoExtend",
            display_name="Stable Video Extend (exact)",
            category=schema.CATEGORY,
            **schema.aliases("extend video", "long video", "continue video"),
            description="Continues a video by more clips. Each clip is conditioned on the video's last frame and "
                        "its first `overlap` latent frames are held to the video's last ones at every step, so the "
                        "motion carries across the seam; those frames are not repeated in the output. Returns the "
                        "whole video: the given frames, then the new ones.",
            inputs=[
                schema.SVDModel.Input("model", tooltip="Video UNet from the Stable Video checkpoint loader."),
                schema.SVDClipVision.Input("clip_vision",
                                           tooltip="Image encoder from the Stable Video checkpoint loader."),
                schema.SVDVae.Input("vae", tooltip="VAE from the Stable Video checkpoint loader."),
                io.Image.Input("images", optional=True,
                               tooltip="The video so far, its frames (video after video when `latent` says how "
                                       "many frames each has). Give images, a latent, or both."),
                io.Video.Input("video", optional=True,
                               tooltip="The video so far as a core VIDEO (e.g. from LoadVideo or this pack's decoder); "
                                       "used when images are not given."),
                io.Latent.Input("latent", optional=True,
                                tooltip="The video's LATENT from the Stable Video Sampler: its last latents are held "
                                        "exactly (without it the frames are VAE-encoded). Decoded when no images "
                                        "are given."),
                schema.number("frames", schema.REFERENCE.num_frames,
                              "Frames per new clip, the overlap included (SVD-XT: 25).", low=2),
                io.Int.Input("overlap", default=DEFAULT_OVERLAP, min=1, max=MAX_FRAMES - 1,
                             tooltip="Latent frames each clip shares with what precedes it: held to the video's "
                                     "last ones, then dropped. Must be smaller than frames."),
                io.Int.Input("clips", default=1, min=1, max=MAX_CLIPS,
                             tooltip="How many clips to add, one after the other."),
                schema.seed("Seed; video i of a batch uses seed + i."),
                schema.number("steps", schema.REFERENCE.num_steps,
                              "Sampling steps per clip (reference: 30 for SVD-XT)."),
                schema.number("min_cfg", schema.REFERENCE.min_cfg,
                              "Guidance scale of each clip's first frame.", step=0.05),
                schema.number("max_cfg", schema.REFERENCE.max_cfg,
                              "Guidance scale of each clip's last frame.", step=0.05),
                schema.number("fps", schema.REFERENCE.fps_id + 1,
                              "Frames per second (the model sees fps - 1); keep the first clip's."),
                schema.number("motion_bucket_id", schema.REFERENCE.motion_bucket_id,
                              "Amount of motion; keep the first clip's."),
                schema.number("cond_aug", schema.REFERENCE.cond_aug,
                              "Noise added to each clip's conditioning frame (reference 0.02).", step=0.001,
                              expert=True),
                io.Boolean.Input("color_anchor", default=True,
                                 tooltip="Match each new clip's colour statistics (per channel mean and deviation) "
                                         "to the given video's, against drift over many clips."),
                io.Int.Input("frames_per_chunk", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Frames decoded together; 0 = the loaded model's preset (the reference's "
                                     f"{schema.REFERENCE.decode_chunk_size} for SVD and SVD-XT).",
                             **schema.advanced(io.Int.Input)),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The whole video: given frames, then new ones.")],
        )

    @classmethod
    def validate_inputs(cls, frames: int | None = None, overlap: int | None = None) -> bool | str:
        if frames is not None and overlap is not None and overlap >= frames:
            return f"overlap must be smaller than frames, got overlap {overlap} with frames {frames}"
        return True

    @classmethod
    def execute(cls, model: ModelHandle, clip_vision: ModelHandle, vae: ModelHandle, frames: int, overlap: int,
                clips: int, seed: int, steps: int, min_cfg: float, max_cfg: float, fps: int, motion_bucket_id: int,
                cond_aug: float, color_anchor: bool, frames_per_chunk: int, images: torch.Tensor | None = None,
                latent: dict[str, Any] | None = None, video: Any = None) -> io.NodeOutput:
        s = model.config.sampling
        schema.raise_if(sampler_errors(steps, min_cfg, max_cfg, s.sigma_min, s.sigma_max, s.rho, 1.0,
                                       sampler=s.sampler))
        if overlap >= frames:
            raise ValueError(f"overlap must be smaller than frames, got overlap {overlap} with frames {frames}")
        if images is None and video is not None:
            images = video.get_components().images
            if images is None or images.ndim != 4 or images.shape[0] == 0:
                raise ValueError("video has no frames: connect a video with at least one frame")
        if images is None and latent is None:
            raise ValueError("images, video and latent are all missing: connect the video to extend to one of them")
        scale = model.config.vae.scale_factor
        z = latent_to_video(latent, "latent") if latent is not None else None  # (B, T, 4, h, w), VAE latent space
        if images is not None:
            pixels = image_to_bchw(images, "images")  # (N, 3, H, W)
            per_video = int(latent[FRAMES_KEY]) if latent is not None else pixels.shape[0]
            if pixels.shape[0] % per_video:
                raise ValueError(f"images holds {pixels.shape[0]} frames, not a whole number of the latent's "
                                 f"{per_video}-frame videos")
            video = pixels.reshape(-1, per_video, *pixels.shape[1:])
        else:
            assert z is not None
            f = vae.config.vae.downscale
            given = VideoRequest.build(vae.config, width=z.shape[-1] * f, height=z.shape[-2] * f,
                                       num_frames=z.shape[1], decode_chunk_size=frames_per_chunk or None)
            mm.load_models_gpu([vae.patcher])
            video = flow.decode(vae.module, given, z * scale)
        b, t, _, height, width = video.shape
        schema.raise_if([e for e in (check_size("width", width), check_size("height", height)) if e]
                  + conditioning_errors(width, height, fps, motion_bucket_id, cond_aug))
        if overlap > t:
            raise ValueError(f"overlap is {overlap} frames but the video has only {t}")
        f = model.config.vae.downscale
        if z is not None and (z.shape[0] != b or z.shape[-2:] != (height // f, width // f)):
            raise ValueError(f"latent holds {z.shape[0]} video(s) of {z.shape[-1] * f}x{z.shape[-2] * f}, the images "
                             f"{b} of {width}x{height}: connect the latent that made these images")
        # the frames each clip decodes together: 0 = the preset's, as svd_core.extend resolves it
        chunk = svd_core.decode_chunk(frames_per_chunk or None, frames, default=model.config.sampling.decode_chunk_size)
        need = max(memory.unet_step_bytes(model.config.unet, b, frames, height, width, compute_dtype(model.module)),
                   memory.decode_bytes(model.config.vae, chunk, height, width, compute_dtype(vae.module)))
        mm.load_models_gpu([model.patcher, clip_vision.patcher, vae.patcher], memory_required=need)
        parts = svd_core.SVDModels(model.module, clip_vision.module, vae.module, model.config)
        out = svd_core.extend(
            parts, video, num_frames=frames, overlap=overlap, num_clips=clips, num_steps=steps,
            fps_id=fps_to_fps_id(fps), motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, min_cfg=min_cfg,
            max_cfg=max_cfg, seed=seed, color_anchor=color_anchor, video_latents=None if z is None else z * scale,
            decode_chunk_size=chunk, callback=step_callback(model.patcher.load_device, steps * clips))
        return io.NodeOutput(frames_to_image(out).to(mm.intermediate_device()))


EXTEND_NODES: list[type[io.ComfyNode]] = [StableVideoExtend]
