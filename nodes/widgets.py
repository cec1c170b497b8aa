"""The pack's number widgets, their limits read from svd_core.checks (the command line checks the same ones).

One function per kind, so a limit is written once: `number("steps", default, tooltip)` is an INT widget from
LIMITS["steps"]; `size(...)` a width or height in steps of checks.SIZE_MULTIPLE up to MAX_SIDE.
"""
from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from svd_core.checks import INTEGERS, LIMITS, MAX_SIDE, SIZE_MULTIPLE

__all__ = ["MAX_BATCH", "SEED_MAX", "number", "seed", "size"]

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
