"""Reading generated clips against the ground truth of data.py: where an object is, what colour and size it has.

A generated frame is compared with the clip's known background (a single-object clip without brightness ramp, so
the background does not change): pixels far from the background (FOREGROUND summed over the three channels) are
the object; its position is their centroid, its colour their mean, its size their count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FOREGROUND", "Track", "track", "true_area"]

FOREGROUND = 0.2  # summed absolute RGB difference from the background that counts as the object


@dataclass(frozen=True)
class Track:
    """An object followed through T frames; NaN where it was not found."""

    centers: np.ndarray  # (T, 2) (x, y) in pixels
    colors: np.ndarray  # (T, 3) mean colour of its pixels
    areas: np.ndarray  # (T,) its pixel count

    @property
    def found(self) -> np.ndarray:
        return np.isfinite(self.centers[:, 0])

    def speed(self) -> float:
        """Mean distance moved per frame (pixels), over consecutive frames where it was found."""
        steps = np.hypot(*np.diff(self.centers, axis=0).T)
        return float(np.nanmean(steps)) if np.isfinite(steps).any() else float("nan")


def track(frames: np.ndarray, background: np.ndarray, min_pixels: int = 4) -> Track:
    """The foreground blob of each frame (T, 3, S, S) in [0, 1] against `background` (3, S, S)."""
    t_count, _, s, _ = frames.shape
    ys, xs = np.mgrid[0:s, 0:s] + 0.5
    centers = np.full((t_count, 2), np.nan)
    colors = np.full((t_count, 3), np.nan)
    areas = np.zeros(t_count)
    for t in range(t_count):
        mask = np.abs(frames[t] - background).sum(0) > FOREGROUND
        n = int(mask.sum())
        areas[t] = n
        if n >= min_pixels:
            centers[t] = xs[mask].mean(), ys[mask].mean()
            colors[t] = frames[t][:, mask].mean(axis=1)
    return Track(centers, colors, areas)


def true_area(kind: str, radius: float) -> float:
    """Pixels of a disc or square of half-size `radius`."""
    return float(np.pi * radius**2) if kind == "disc" else float((2 * radius) ** 2)
