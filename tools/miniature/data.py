"""Short synthetic clips whose motion is known exactly: the training data and the ground truth of the miniature SVD.

A clip is one or more objects (discs and squares of random colours; squares turn) moving at constant velocity over
a smooth two-colour gradient, bouncing off the frame's edges; in some clips the whole frame slowly brightens or
darkens. Everything is drawn from one seed (`numpy.random.Generator`), so a clip is reproducible, and the centre
of every object in every frame is returned with it (`Clip.centers`).

Positions are computed in closed form: an object of half-size r on an axis of length L moves on
[r + EDGE, L - r - EDGE] and bounces by reflection, i.e. its coordinate is a triangle wave of the unbounded
coordinate (`bounce`). Edges are antialiased by a one-pixel linear ramp of coverage and kept EDGE pixels inside
the frame, so the coverage-weighted centroid of an unoccluded object is its centre up to the pixel sampling
(under 0.1 pixel; tests/test_miniature_data.py checks it).

The motion bucket: SVD conditions on `motion_bucket_id` in [0, 255] (the SVD paper, section 4 / appendix: the
bucketed optical-flow magnitude of the training clip). Here it is the clip's mean object speed scaled linearly,
`round(255 * mean_speed / MAX_SPEED)`, so a bucket asks for a known speed (`speed_of_bucket`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MAX_SPEED", "Clip", "ClipSpec", "batch", "bounce", "make_clip", "motion_bucket", "speed_of_bucket"]

# Objects bounce this far from the frame's edges (pixels), so their antialiasing ramp is never cut off.
EDGE = 1.0
# The fastest object speed drawn, in pixels per frame at 64x64 (scaled with the frame size); motion bucket 255.
MAX_SPEED = 4.0


@dataclass(frozen=True)
class ClipSpec:
    """What clips look like. Sizes are in pixels at `size` x `size`; speeds in pixels per frame at 64 x 64 and
    scaled by size / 64, so the same spec at another size moves the same fraction of the frame."""

    size: int = 64
    frames: int = 8
    max_objects: int = 2  # 1..max_objects objects per clip
    radius: tuple[float, float] = (6.0, 10.0)  # half-size range at 64x64 (disc radius, half the square's side)
    max_speed: float = MAX_SPEED  # object speeds are uniform in [0, max_speed]
    static_p: float = 0.1  # share of clips where nothing moves (motion bucket 0)
    max_turn: float = 0.25  # squares turn at up to this many radians per frame
    brightness_p: float = 0.3  # share of clips with a global brightness ramp
    max_brightness: float = 0.25  # the ramp's total change over the clip, up to +-this (a gain 1 -> 1 +- it)

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"ClipSpec.size must be at least 8 pixels, got {self.size}")
        if self.frames < 2:
            raise ValueError(f"ClipSpec.frames must be at least 2, got {self.frames}")
        if self.max_objects < 1:
            raise ValueError(f"ClipSpec.max_objects must be at least 1, got {self.max_objects}")

    @property
    def scale(self) -> float:
        return self.size / 64.0


@dataclass(frozen=True)
class Clip:
    """One clip and its ground truth. K objects, T frames, S x S pixels."""

    frames: np.ndarray  # (T, 3, S, S) float32 in [0, 1]
    centers: np.ndarray  # (T, K, 2) float64: (x, y) of each object's centre in pixels (pixel i spans [i, i + 1))
    velocities: np.ndarray  # (K, 2) pixels per frame before any bounce
    colors: np.ndarray  # (K, 3) in [0, 1]
    radii: np.ndarray  # (K,) half-sizes in pixels
    kinds: tuple[str, ...]  # "disc" or "square" per object
    angles: np.ndarray  # (T, K) radians (squares turn; discs keep 0)
    gains: np.ndarray  # (T,) the global brightness factor of each frame
    background: np.ndarray  # (3, S, S) float32: the gradient before the gain
    masks: np.ndarray  # (T, K, S, S) float32: each object's own coverage (before occlusion by later objects)
    motion_bucket_id: int

    @property
    def speeds(self) -> np.ndarray:
        """(K,) each object's speed in pixels per frame."""
        return np.hypot(self.velocities[:, 0], self.velocities[:, 1])


def bounce(p: np.ndarray, low: float | np.ndarray, high: float | np.ndarray) -> np.ndarray:
    """An unbounded coordinate folded into [low, high] by reflection at both ends (a triangle wave)."""
    span = np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)
    q = np.mod(np.asarray(p, dtype=np.float64) - low, 2.0 * span)
    return low + np.where(q > span, 2.0 * span - q, q)


def motion_bucket(mean_speed: float, max_speed: float = MAX_SPEED) -> int:
    """The motion_bucket_id of a clip whose objects move at `mean_speed` pixels per frame (at 64x64)."""
    return int(np.clip(round(255.0 * mean_speed / max_speed), 0, 255))


def speed_of_bucket(bucket: int, max_speed: float = MAX_SPEED) -> float:
    """The mean speed (pixels per frame at 64x64) a motion bucket stands for: `motion_bucket`'s inverse."""
    return float(bucket) * max_speed / 255.0


def _coverage(dist_inside: np.ndarray) -> np.ndarray:
    """Antialiased coverage from the signed distance to the edge (positive inside), a one-pixel ramp."""
    return np.clip(dist_inside + 0.5, 0.0, 1.0)


def make_clip(seed: int | np.random.Generator, spec: ClipSpec | None = None) -> Clip:
    """One clip drawn from `seed` (an int or a numpy Generator, which it advances)."""
    spec = spec or ClipSpec()
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    s, t_count, scale = spec.size, spec.frames, spec.scale
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5  # pixel centres

    # background: a linear gradient between two colours along a random direction
    c0, c1 = rng.uniform(0.1, 0.9, size=3), rng.uniform(0.1, 0.9, size=3)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    ramp = ((xx - s / 2) * np.cos(theta) + (yy - s / 2) * np.sin(theta)) / s + 0.5  # about [0, 1]
    background = (c0[:, None, None] + (c1 - c0)[:, None, None] * np.clip(ramp, 0.0, 1.0)[None]).astype(np.float32)

    k = int(rng.integers(1, spec.max_objects + 1))
    static = rng.uniform() < spec.static_p
    kinds = tuple("disc" if rng.uniform() < 0.5 else "square" for _ in range(k))
    radii = rng.uniform(spec.radius[0], spec.radius[1], size=k) * scale
    colors = rng.uniform(0.0, 1.0, size=(k, 3))
    colors[np.arange(k), rng.integers(0, 3, size=k)] = rng.choice([0.0, 1.0], size=k)  # saturated: one channel 0 or 1
    speeds = np.zeros(k) if static else rng.uniform(0.0, spec.max_speed, size=k)
    heading = rng.uniform(0.0, 2.0 * np.pi, size=k)
    velocities = np.stack([speeds * np.cos(heading), speeds * np.sin(heading)], axis=1) * scale  # (K, 2)
    low, high = radii + EDGE, s - radii - EDGE  # the whole antialiased object stays inside the frame
    start = np.stack([rng.uniform(low, high), rng.uniform(low, high)], axis=1)  # (K, 2)
    turn = np.where(np.array([kd == "square" for kd in kinds]), rng.uniform(-spec.max_turn, spec.max_turn, size=k), 0.0)
    angle0 = rng.uniform(0.0, np.pi / 2, size=k) * (turn != 0)
    if static:
        turn = np.zeros(k)
    gain_total = rng.uniform(-spec.max_brightness, spec.max_brightness) if rng.uniform() < spec.brightness_p else 0.0

    steps = np.arange(t_count, dtype=np.float64)
    free = start[None] + steps[:, None, None] * velocities[None]  # (T, K, 2) unbounded
    centers = bounce(free, low[None, :, None], high[None, :, None])
    angles = angle0[None] + steps[:, None] * turn[None]  # (T, K)
    gains = 1.0 + gain_total * steps / max(1, t_count - 1)

    frames = np.empty((t_count, 3, s, s), dtype=np.float32)
    masks = np.empty((t_count, k, s, s), dtype=np.float32)
    for t in range(t_count):
        img = background.astype(np.float64).copy()
        for j in range(k):
            dx, dy = xx - centers[t, j, 0], yy - centers[t, j, 1]
            if kinds[j] == "disc":
                inside = radii[j] - np.hypot(dx, dy)
            else:
                ca, sa = np.cos(angles[t, j]), np.sin(angles[t, j])
                u, v = ca * dx + sa * dy, -sa * dx + ca * dy
                inside = radii[j] - np.maximum(np.abs(u), np.abs(v))
            a = _coverage(inside)
            masks[t, j] = a
            img = img * (1.0 - a[None]) + colors[j][:, None, None] * a[None]
        frames[t] = np.clip(img * gains[t], 0.0, 1.0)
    mean_speed = float(np.mean(speeds))
    return Clip(frames=frames, centers=centers, velocities=velocities, colors=colors, radii=radii, kinds=kinds,
                angles=angles, gains=gains, background=background, masks=masks,
                motion_bucket_id=motion_bucket(mean_speed, spec.max_speed))


def batch(seed: int, count: int, spec: ClipSpec | None = None) -> tuple[torch.Tensor, torch.Tensor, list[Clip]]:
    """`count` clips from one seed: frames (count, T, 3, S, S) float32 in [0, 1], motion buckets (count,) float32,
    and the clips themselves (ground truth)."""
    rng = np.random.default_rng(seed)
    clips = [make_clip(rng, spec) for _ in range(count)]
    frames = torch.from_numpy(np.stack([c.frames for c in clips]))
    buckets = torch.tensor([c.motion_bucket_id for c in clips], dtype=torch.float32)
    return frames, buckets, clips
