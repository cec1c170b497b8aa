"""What the pack's node schemas share: the category, the wire types, the reference's defaults, and the number
widgets, their limits read from svd_core.checks (the command line checks the same ones).

One function per kind of widget, so a limit is written once: `number("steps", default, tooltip)` is an INT widget
from LIMITS["steps"]; `size(...)` a width or height in steps of checks.SIZE_MULTIPLE up to MAX_SIDE.
Node ids, wire type names and widget names are part of every saved workflow: never change them.

Two schema features of ComfyUI releases after v0.3.64 are used where the installed comfy_api has them:
`io.Schema(search_aliases=[...])` (more words the node search finds the node by) and `advanced=True` on an
input (the frontend hides it behind the node's "Advanced" toggle). v0.3.64 has neither: `aliases()` and
`advanced()` then give nothing, so the same define_schema runs on both. They are told from io.Schema's dataclass
fields and from the input class's __init__ parameters, not from a version number.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from comfy_api.latest import io

from svd_core.checks import INTEGERS, LIMITS, MAX_SIDE, SIZE_MULTIPLE
from svd_core.config import PRESETS, SamplingConfig

__all__ = ["CATEGORY", "LCM", "MAX_BATCH", "REFERENCE", "SEARCH_ALIASES", "SEED_MAX", "SVDClipVision",
           "SVDConditioning", "SVDModel", "SVDVae", "advanced", "aliases", "number", "raise_if", "seed", "size",
           "takes_advanced", "takes_search_aliases"]

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

# what every node of the pack is also found by in the node search (where the host supports search_aliases)
SEARCH_ALIASES = ("svd", "stable video", "stable video diffusion", "img2vid", "image to video")

SEED_MAX = 0xFFFFFFFFFFFFFFFF  # torch.Generator.manual_seed takes 64-bit seeds
MAX_BATCH = 64  # videos of one empty latent: a widget bound, far beyond what fits in any GPU's memory


def takes_search_aliases(schema_cls: type) -> bool:
    """Whether io.Schema (or `schema_cls`) has a `search_aliases` field (ComfyUI after v0.3.64)."""
    return dataclasses.is_dataclass(schema_cls) and any(f.name == "search_aliases"
                                                        for f in dataclasses.fields(schema_cls))


def takes_advanced(input_cls: type) -> bool:
    """Whether the input class (io.Int.Input, io.Float.Input, ...) takes `advanced=` (ComfyUI after v0.3.64)."""
    return "advanced" in inspect.signature(input_cls.__init__).parameters


def aliases(*extra: str) -> dict[str, list[str]]:
    """`io.Schema(..., **aliases("svd sampler"))`: SEARCH_ALIASES and `extra` as the schema's search_aliases, or
    nothing where the installed io.Schema has no such field."""
    if not takes_search_aliases(io.Schema):
        return {}
    return {"search_aliases": list(dict.fromkeys((*SEARCH_ALIASES, *extra)))}


def advanced(input_cls: type) -> dict[str, bool]:
    """`io.Int.Input(..., **advanced(io.Int.Input))`: an expert input, shown behind the node's "Advanced" toggle
    where `input_cls` takes `advanced=`; nothing elsewhere (the input is then shown as always)."""
    return {"advanced": True} if takes_advanced(input_cls) else {}


def number(name: str, default: float, tooltip: str, *, limit: str | None = None, step: float | None = None,
           low: float | None = None, expert: bool = False, **extra: Any) -> Any:
    """An INT (for checks.INTEGERS) or FLOAT widget named `name` with the limits of LIMITS[limit or name]
    (`low` raises the lowest value where a node needs more, e.g. 2 frames to extend a video). `expert` marks it
    advanced (see `advanced`)."""
    key = limit or name
    lo, hi = LIMITS[key]
    lo = lo if low is None else low
    if key in INTEGERS:
        cls: Any = io.Int.Input
        kwargs: dict[str, Any] = {"default": int(default), "min": int(lo), "max": int(hi)}
    else:
        cls = io.Float.Input
        kwargs = {"default": float(default), "min": lo, "max": hi, "step": step}
    if expert:
        kwargs.update(advanced(cls))
    return cls(name, tooltip=tooltip, **kwargs, **extra)


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
