"""StableVideoKeyframeSequence: one video through 2 to 16 keyframes in order (svd_core.generate_keyframes), as a
ComfyUI V3 node.

Each segment between two consecutive keyframes is the first-to-last video the conditioning node's end_image makes
(ViBiDSampler); the segments are joined with no frame twice. keyframe_3 ... keyframe_16 are optional: the web
extension (web/js/keyframes.js) shows the connected ones plus one empty slot, so the node grows as images are
connected.
"""
from __future__ import annotations

import logging

import comfy.model_management as mm
import torch
from comfy_api.latest import io

import svd_core
from svd_core import memory
from svd_core.checks import MAX_FRAMES, check_size
from svd_core.nets.layers import compute_dtype
from svd_core.video.keyframes import VIBID_STEPS
from svd_core.video.sequence import parse_segment_frames, segment_lengths

from . import schema
from .adapters import (
    RESIZE_MODES,
    ModelHandle,
    conditioning_errors,
    encoding_bytes,
    fps_to_fps_id,
    frames_to_image,
    image_to_bchw,
)
from .svd_nodes import _video, step_callback

log = logging.getLogger(__name__)

MAX_KEYFRAMES = 16
KEYFRAMES = tuple(f"keyframe_{k}" for k in range(1, MAX_KEYFRAMES + 1))
# frames of a segment: its two keyframes and at least one frame between them
MIN_FRAMES = 3


def _segment_frames(text: str, frames: int, segments: int | None) -> list[int] | None:
    """The frames of each segment: `segment_frames` parsed (each MIN_FRAMES to MAX_FRAMES; one per segment when
    `segments` is known), or None for `frames` everywhere. ValueError naming the input."""
    parsed = parse_segment_frames(text, "segment_frames")
    if parsed is None:
        if segments is not None:
            segment_lengths(frames, segments, frames, name="frames", least=MIN_FRAMES)
        return None
    return segment_lengths(parsed, len(parsed) if segments is None else segments, frames, least=MIN_FRAMES)


def _keyframes(given: dict[str, torch.Tensor | None]) -> list[torch.Tensor]:
    """The connected keyframes in order as (B, 3, H, W); refused: a gap before a connected one, keyframe_1 of a
    size that is not a multiple of 64, keyframes of different batch sizes."""
    last = max((k for k, name in enumerate(KEYFRAMES) if given.get(name) is not None), default=-1)
    if last < 1:
        raise ValueError("keyframe_2 is not connected: a keyframe sequence needs at least 2 keyframes")
    missing = [name for name in KEYFRAMES[:last] if given.get(name) is None]
    if missing:
        raise ValueError(f"{missing[0]} is not connected but {KEYFRAMES[last]} is: connect the keyframes in order, "
                         "without a gap")
    images = [image_to_bchw(given[name], name) for name in KEYFRAMES[:last + 1]]  # type: ignore[arg-type]
    _, _, h, w = images[0].shape
    if check_size("width", w) or check_size("height", h):
        raise ValueError(f"keyframe_1 is {w}x{h}: the video takes keyframe_1's size, whose sides must be multiples "
                         "of 64; scale it first (e.g. core's Upscale Image to 1024x576). The other keyframes are "
                         "fitted to it with resize_mode")
    for name, image in zip(KEYFRAMES, images, strict=False):
        if image.shape[0] != images[0].shape[0]:
            raise ValueError(f"{name} holds {image.shape[0]} images, keyframe_1 {images[0].shape[0]}: give every "
                             "keyframe the same number of images (B images make B videos)")
    return images


class StableVideoKeyframeSequence(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        keyframes = [io.Image.Input("keyframe_1", tooltip="The first keyframe: the video starts on it and takes its "
                                                          "size (multiples of 64). B images make B videos.")]
        later = ("Keyframe {k}: the video passes through it; the last connected keyframe ends it. Fitted to "
                 "keyframe_1's size with resize_mode.")
        keyframes += [io.Image.Input(name, optional=k > 2, tooltip=later.format(k=k)
                                     + (" Optional: connecting it adds a segment." if k > 2 else ""))
                      for k, name in enumerate(KEYFRAMES[1:], start=2)]
        return io.Schema(
            node_id="StableVideoKeyframeSequence",
            display_name="Stable Video Keyframe Sequence (exact)",
            category=schema.CATEGORY,
            **schema.aliases("keyframes", "keyframe sequence", "frame interpolation", "first last frame"),
            description="One video through every keyframe in order: each segment between two consecutive keyframes "
                        "is a first-to-last video (ViBiDSampler, as the conditioning node's end_image makes it), and "
                        "the segments are joined with no frame twice. Connect 2 to 16 images; a new keyframe slot "
                        "appears as each is connected. Segment k of video i uses seed + k*B + i.",
            inputs=[
                schema.SVDModel.Input("model", tooltip="Video UNet from the Stable Video checkpoint loader."),
                schema.SVDClipVision.Input("clip_vision",
                                           tooltip="Image encoder from the Stable Video checkpoint loader."),
                schema.SVDVae.Input("vae", tooltip="VAE from the Stable Video checkpoint loader."),
                *keyframes,
                schema.number("frames", schema.REFERENCE.num_frames,
                              "Frames of each segment, both its keyframes included (SVD-XT: 25). The video has "
                              "segments x (frames - 1) + 1 frames.", low=MIN_FRAMES),
                io.String.Input("segment_frames", default="", optional=True, dynamic_prompts=False,
                                tooltip="Frames of each segment, comma-separated, one per segment (e.g. '25, 14' for "
                                        "3 keyframes), overriding frames; empty: frames for every segment."),
                schema.seed("Seed; segment k of video i (of a batch of B) uses seed + k*B + i, so two keyframes give "
                            "the first-to-last video of that seed."),
                schema.number("steps", VIBID_STEPS, "Sampling steps of each segment (ViBiD's default 25; each step "
                                                    "runs the UNet twice)."),
                schema.number("fps", schema.REFERENCE.fps_id + 1,
                              "Frames per second (the model sees fps - 1); also the VIDEO output's frame rate."),
                schema.number("motion_bucket_id", schema.REFERENCE.motion_bucket_id,
                              "Amount of motion: higher moves more (reference 127)."),
                schema.number("cond_aug", schema.REFERENCE.cond_aug,
                              "Noise added to each keyframe before encoding (reference 0.02).", step=0.001,
                              expert=True),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop",
                               tooltip="How a keyframe of another size than keyframe_1 is fitted: crop (scale to "
                                       "cover, cut the centre), stretch (may distort), pad (scale to fit, black "
                                       "borders)."),
                io.Int.Input("frames_per_chunk", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Frames decoded together; 0 = the loaded model's preset (the reference's "
                                     f"{schema.REFERENCE.decode_chunk_size} for SVD and SVD-XT).",
                             **schema.advanced(io.Int.Input)),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="All frames [T, H, W, 3], video after video."),
                     io.Video.Output(display_name="video", tooltip="The same frames as a VIDEO at fps, for core's "
                                                                   "SaveVideo.")],
        )

    @classmethod
    def validate_inputs(cls, frames: int | None = None, segment_frames: str | None = None) -> bool | str:
        try:  # linked inputs (None here) are checked in execute
            if frames is not None:
                segment_lengths(frames, 1, frames, name="frames", least=MIN_FRAMES)
            if segment_frames is not None:
                _segment_frames(segment_frames, MIN_FRAMES, None)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model: ModelHandle, clip_vision: ModelHandle, vae: ModelHandle, frames: int, seed: int,
                steps: int, fps: int, motion_bucket_id: int, cond_aug: float, resize_mode: str,
                frames_per_chunk: int, segment_frames: str = "", **keyframes: torch.Tensor | None) -> io.NodeOutput:
        if model.config.kind.orbit:
            raise ValueError(f"model: the loaded checkpoint {model.describe()} makes orbits of an object; a keyframe "
                             "sequence is made of first-to-last videos, which need an SVD model")
        images = _keyframes(keyframes)
        b, _, height, width = images[0].shape
        schema.raise_if(conditioning_errors(width, height, fps, motion_bucket_id, cond_aug))
        lengths = _segment_frames(segment_frames, frames, len(images) - 1) or [frames] * (len(images) - 1)
        s = model.config.sampling
        # the frames each segment decodes together, as svd_core resolves it (0 = the preset's)
        chunk = svd_core.decode_chunk(frames_per_chunk or None, max(lengths), default=s.decode_chunk_size)
        need = max(memory.unet_step_bytes(model.config.unet, b, max(lengths), height, width,
                                          compute_dtype(model.module)),
                   memory.decode_bytes(model.config.vae, chunk, height, width, compute_dtype(vae.module)),
                   encoding_bytes(clip_vision, vae, b, height, width))
        mm.load_models_gpu([model.patcher, clip_vision.patcher, vae.patcher], memory_required=need)
        parts = svd_core.SVDModels(model.module, clip_vision.module, vae.module, model.config)
        out = svd_core.generate_keyframes(
            parts, images, segment_frames=lengths, num_steps=steps, fps_id=fps_to_fps_id(fps),
            motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, seed=seed,
            decode_chunk_size=frames_per_chunk or None, resize_mode=resize_mode,
            callback=step_callback(model.patcher.load_device, steps * len(lengths)))
        frames_out = frames_to_image(out).to(mm.intermediate_device())
        return io.NodeOutput(frames_out, _video(frames_out, fps))


KEYFRAME_NODES: list[type[io.ComfyNode]] = [StableVideoKeyframeSequence]
