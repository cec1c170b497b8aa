"""SV3D's camera path: elevations and azimuths in degrees to the polar and azimuth radians SV3D_p embeds.

Everything follows Stability-AI/generative-models, scripts/sampling/simple_video_sample.py, version "sv3d_p":
- `elevations_deg` (default 10.0) is one value for every frame or one per frame;
- `polars_rad = [np.deg2rad(90 - e) for e in elevations_deg]`;
- `azimuths_deg` defaults to the even orbit `np.linspace(0, 360, num_frames + 1)[1:] % 360`, one per frame;
- `azimuths_rad = [np.deg2rad((a - azimuths_deg[-1]) % 360) for a in azimuths_deg]`: each azimuth measured
  from the last frame's (the view of the input image). The script then calls `azimuths_rad[:-1].sort()`,
  which sorts a copy of the slice and leaves the list as it was: the order given is the order used, and so
  it is here.
The radians are computed in float64 with numpy, as there, and given to the model as float32 (the
reference's timestep embedding takes `timesteps.float()`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_ELEVATION_DEG", "camera_path", "camera_radians", "parse_angles"]

DEFAULT_ELEVATION_DEG = 10.0  # simple_video_sample.py: elevations_deg = 10.0


def parse_angles(text: str, name: str) -> list[float] | None:
    """A comma- or space-separated list of degrees ('10' or '0, 17.1, 34.3'); empty text: None (the default).
    ValueError naming `name` for anything that is not a number."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        return None
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a list of numbers in degrees (e.g. '10' or '0, 30, 60')") from None


def camera_path(num_frames: int, elevations_deg: float | Sequence[float] | None = None,
                azimuths_deg: Sequence[float] | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-frame elevations and azimuths in degrees: one elevation repeated (default 10), the even orbit
    when no azimuths are given. Refused before any work (ValueError naming the input): a list of the wrong
    length, a non-finite angle, an elevation outside [-90, 90]."""
    if elevations_deg is None:
        elevations_deg = DEFAULT_ELEVATION_DEG
    if isinstance(elevations_deg, (int, float)):
        elevations = [float(elevations_deg)] * num_frames
    else:
        elevations = [float(e) for e in elevations_deg]
        if len(elevations) == 1:
            elevations = elevations * num_frames
        if len(elevations) != num_frames:
            raise ValueError(f"elevations_deg has {len(elevations)} values; give 1 value, or {num_frames} (one per "
                             "frame)")
    if azimuths_deg is None:
        azimuths = [float(a) for a in np.linspace(0, 360, num_frames + 1)[1:] % 360]
    else:
        azimuths = [float(a) for a in azimuths_deg]
        if len(azimuths) != num_frames:
            raise ValueError(f"azimuths_deg has {len(azimuths)} values; give {num_frames} (one per frame), or none "
                             "for the even orbit")
    for name, values in (("elevations_deg", elevations), ("azimuths_deg", azimuths)):
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{name} must be finite numbers of degrees, got {bad[0]}")
    outside = [e for e in elevations if not -90.0 <= e <= 90.0]
    if outside:
        raise ValueError(f"elevations_deg must lie in [-90, 90] degrees, got {outside[0]}")
    return tuple(elevations), tuple(azimuths)


def camera_radians(elevations_deg: Sequence[float], azimuths_deg: Sequence[float]) -> tuple[list[float], list[float]]:
    """(polars_rad, azimuths_rad) of a resolved camera path, exactly as simple_video_sample.py computes them."""
    polars = [float(np.deg2rad(90 - np.float64(e))) for e in elevations_deg]
    last = np.float64(azimuths_deg[-1])
    azimuths = [float(np.deg2rad((np.float64(a) - last) % 360)) for a in azimuths_deg]
    return polars, azimuths
