"""StableVideoOrbitConditioning: SV3D's conditioning (an object's orbit from one image), as the reference makes it.

The node only translates widgets: the image (RGBA, or RGB with the object's mask) is prepared, the camera path
resolved and the conditioning encoded by svd_core's video flow (request.py, flow.py, camera.py,
image_ops.orbit_image), exactly as `svd_core.generate` does for sv3d_u / sv3d_p files. The empty latent takes
its size and frame count from the positive conditioning; the sampler carries the conditioning frame to the
decoder, which makes it the last frame (the reference's convention).
"""
from __future__ import annotations

import logging
import re

import comfy.model_management as mm
import torch
from comfy_api.latest import io
from einops import rearrange

from svd_core.checks import check_size
from svd_core.config import PRESETS
from svd_core.seeds import VideoNoise
from svd_core.video import flow
from svd_core.video.camera import DEFAULT_ELEVATION_DEG, parse_angles
from svd_core.video.request import VideoRequest

from . import schema
from .adapters import ModelHandle, encoding_bytes, image_to_bchw

log = logging.getLogger(__name__)

SV3D = PRESETS["sv3d_p"].sampling  # 576x576, 21 frames, cond_aug 1e-5 (simple_video_sample.py)


def orbit_pixels(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """ComfyUI IMAGE (N, H, W, C) and an optional MASK (N or 1, H, W), 1 = the object -> (N, 3 or 4, H, W): RGBA
    when the image has alpha or a mask is given (the mask then is the alpha), else RGB."""
    if mask is not None:
        rgb = image_to_bchw(image)
        alpha = mask.float()
        if alpha.ndim == 2:
            alpha = alpha[None]
        if alpha.ndim != 3 or alpha.shape[-2:] != rgb.shape[-2:] or alpha.shape[0] not in (1, rgb.shape[0]):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected (1 or {rgb.shape[0]}, {rgb.shape[-2]}, "
                             f"{rgb.shape[-1]}), the image's size")
        alpha = alpha.expand(rgb.shape[0], -1, -1)[:, None]
        return torch.cat([rgb, alpha.clamp(0.0, 1.0)], dim=1)
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[-1] == 4:
        return rearrange(image.float(), "n h w c -> n c h w").clamp(0.0, 1.0).contiguous()
    return image_to_bchw(image)


class StableVideoOrbitConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StableVideoOrbitConditioning",
            display_name="Stable Video Orbit Conditioning (SV3D, exact)",
            category=schema.CATEGORY,
            **schema.aliases("sv3d", "orbit", "novel view", "multi view", "turntable"),
            description="SV3D's conditioning, as Stability's reference makes it: the object (alpha, or the mask) "
                        "centred on white at 576x576, its CLIP embedding and VAE latent, and for SV3D_p the camera "
                        "path (elevation and azimuth per frame). Wire a background-removal node's image and mask "
                        "in; an RGB image without a mask is used as it is. The video ends on the prepared image.",
            inputs=[
                schema.SVDClipVision.Input("clip_vision", tooltip="Image encoder from the loader (an SV3D file)."),
                schema.SVDVae.Input("vae", tooltip="VAE from the loader (an SV3D file)."),
                io.Image.Input("image", tooltip="The object: RGBA (its alpha marks the object), or RGB with `mask`. "
                                                "A batch of B images makes B orbits."),
                schema.size("width", SV3D.width, "Orbit width in pixels (SV3D was trained at 576x576)."),
                schema.size("height", SV3D.height, "Orbit height in pixels (SV3D was trained at 576x576)."),
                schema.number("frames", SV3D.num_frames, "Views of the orbit (SV3D: 21)."),
                io.String.Input("elevations", default="",
                                tooltip="SV3D_p only: camera elevation in degrees, one value or one per frame, "
                                        f"comma-separated, each in [-90, 90]. Empty: {DEFAULT_ELEVATION_DEG:g} "
                                        "(the reference's default)."),
                io.String.Input("azimuths", default="",
                                tooltip="SV3D_p only: camera azimuth in degrees, one per frame, comma-separated, "
                                        "measured so that the last frame is the input view. Empty: the "
                                        "reference's even orbit (360/frames apart, ending at 0)."),
                schema.number("cond_aug", SV3D.cond_aug, "Noise added to the image before VAE encoding "
                              "(the reference forces 1e-5 for SV3D).", step=0.00001, expert=True),
                schema.seed("Seed of the augmentation noise (drawn on the CPU). Image i of a batch uses seed + i."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: the object's mask (1 = object), e.g. from a background-removal "
                                      "node; used as the image's alpha. LoadImage's MASK is 1 where the picture "
                                      "is transparent: invert it first."),
                io.Float.Input("frame_ratio", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="The object's share of the frame side (the reference's image_frame_ratio). "
                                       "0: the reference's default (the square is as wide as the image is tall)."),
            ],
            outputs=[
                schema.SVDConditioning.Output(display_name="positive", tooltip="Conditioning on the object and path."),
                schema.SVDConditioning.Output(display_name="negative",
                                              tooltip="Unconditional branch (image parts zeroed)."),
            ],
        )

    @classmethod
    def execute(cls, clip_vision: ModelHandle, vae: ModelHandle, image: torch.Tensor, width: int, height: int,
                frames: int, elevations: str, azimuths: str, cond_aug: float, seed: int,
                mask: torch.Tensor | None = None, frame_ratio: float = 0.0) -> io.NodeOutput:
        config = clip_vision.config
        if not config.kind.orbit:
            raise ValueError(f"clip_vision: the loaded checkpoint {clip_vision.describe()} is not SV3D; orbits need "
                             "sv3d_u.safetensors or sv3d_p.safetensors. For video from this model use Stable Video "
                             "Conditioning")
        schema.raise_if([e for e in (check_size("width", width), check_size("height", height)) if e])
        elevation_list = parse_angles(elevations, "elevations")
        azimuth_list = parse_angles(azimuths, "azimuths")
        if not config.kind.camera and (elevation_list is not None or azimuth_list is not None):
            raise ValueError(f"elevations / azimuths: the loaded checkpoint {clip_vision.describe()} takes no camera "
                             "path (only SV3D_p does); leave them empty")
        try:
            request = VideoRequest.build(config, width=width, height=height, num_frames=frames, cond_aug=cond_aug,
                                         seed=seed, elevations_deg=elevation_list, azimuths_deg=azimuth_list,
                                         frame_ratio=frame_ratio or None)
        except ValueError as e:  # svd_core names its arguments; say the node's inputs
            raise ValueError(re.sub(r"\b(elevations|azimuths)_deg\b", r"\1", str(e)).replace("num_frames", "frames")
                             ) from e
        pixels, _ = flow.fit_images(request, orbit_pixels(image, mask))  # (B, 3, H, W), prepared as the reference
        b, _, h, w = pixels.shape
        noise = VideoNoise.for_batch(seed, b).start(image=tuple(pixels.shape[1:]))
        need = encoding_bytes(clip_vision, vae, b, h, w)
        mm.load_models_gpu([clip_vision.patcher, vae.patcher], memory_required=need)
        positive, negative = flow.condition(clip_vision.module, vae.module, request, pixels, None, noise)
        out = mm.intermediate_device()
        return io.NodeOutput(positive.to(device=out), negative.to(device=out))


ORBIT_NODES: list[type[io.ComfyNode]] = [StableVideoOrbitConditioning]
