"""What the pack's node schemas share: the category, the wire types, the reference's defaults, and the number
widgets, their limits read from svd_core.checks (the command line checks the same ones).

One function per kind of widget, so a limit is written once: `number("steps", default, tooltip)` is an INT widget
from LIMITS["steps"]; `size(...)` a width or height in steps of checks.SIZE_MULTIPLE up to MAX_SIDE.
Node ids, wire type names and widget names are part of every saved workflow: never change them.
"""
from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from svd_core.checks import INTEGERS, LIMITS, MAX_SIDE, SIZE_MULTIPLE
from svd_core.config import PRESETS, SamplingConfig

__all__ = ["CATEGORY", "LCM", "MAX_BATCH", "REFERENCE", "SEED_MAX", "SVDClipVision", "SVDConditioning", "SVDModel",
           "SVDVae", "number", "raise_if", "seed", "size"]

CATEGORY = "video/stable_video_diffusion"
SVDModel = io.Custom("SVD_MODEL")
SVDClipVision = io.Custom("SVD_CLIP_VISION")
SVDVae = io.Custom("SVD_VAE")
SVDConditioning = io.Custom("SVD_CONDITIONING")

# The widgets' defaults: the reference's (scripts/sampling/simple_video_sample.py and svd_xt_1_1.yaml, in
# svd_core.SamplingConfig): 1024x576, 25 frames, 30 steps, cfg 1.5 -> 3.0, fps_id 6, motion bucket 127,
# cond_aug 0.02, EDM sigmas 0.002 / 700 / rho 7; and AnimateLCM-SVD-xt's preset, named in tooltips.
REFERENCE = SamplingConfig()
LCM = PRESETS["animatelcm_svd_xt"].sampling

SEED_MAX = 0xFFFFFFFFFFFFFFFF  # torch.Generator.manual_seed takes 64-bit seeds
MAX_BATCH = 64  # videos of one empty latent: a widget bound, far beyond what fits in any GPU's memory


def number(name: str, default: float, tooltip: str, *, limit: str | None = None, step: float | None = None,
           low: float | None = None, **extra: Any) -> Any:
    """An INT (for checks.INTEGERS) or FLOAT widget named `name` with the limits of LIMITS[limit or name]
    (`low` raises the lowest value where a node needs more, e.g. 2 frames to extend a video)."""
    key = limit or name
    lo, hi = LIMITS[key]
    lo = lo if low is None else low
    if key in INTEGERS:
        return io.Int.Input(name, default=int(default), min=int(lo), max=int(hi), tooltip=tooltip, **extra)
    return io.Float.Input(name, default=float(default), min=lo, max=hi, step=step, tooltip=tooltip, **extra)


def size(name: str, default: int, tooltip: str) -> Any:
    """A width or height in pixels: a multiple of SIZE_MULTIPLE up to MAX_SIDE."""
    return io.Int.Input(name, default=default, min=SIZE_MULTIPLE, max=MAX_SIDE, step=SIZE_MULTIPLE, tooltip=tooltip)


def seed(tooltip: str) -> Any:
    """A seed widget (64-bit, changed after each run the way the user chooses)."""
    return io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True, tooltip=tooltip)


def raise_if(errors: list[str]) -> None:
    """One ValueError naming every problem found (ComfyUI shows it on the node)."""
    if errors:
        raise ValueError("; ".join(errors))
