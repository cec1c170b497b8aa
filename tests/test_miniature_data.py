"""tools/miniature/data.py: clips are reproducible from their seed, and their ground truth is what is drawn."""
from __future__ import annotations

import numpy as np
import pytest

from tools.miniature.data import EDGE, MAX_SPEED, ClipSpec, batch, bounce, make_clip, motion_bucket, speed_of_bucket


def test_same_seed_same_clip_other_seed_other_clip() -> None:
    a, b, c = make_clip(3), make_clip(3), make_clip(4)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.centers, b.centers)
    assert not np.array_equal(a.frames, c.frames)
    fa, ba, _ = batch(7, 3)
    fb, bb, _ = batch(7, 3)
    assert fa.equal(fb) and ba.equal(bb)
    assert tuple(fa.shape) == (3, 8, 3, 64, 64) and float(fa.min()) >= 0.0 and float(fa.max()) <= 1.0


@pytest.mark.parametrize("seed", range(6))
def test_tracks_are_the_centroids_of_what_is_drawn(seed: int) -> None:
    """Each object's coverage-weighted centroid is its track to 0.1 pixel (the antialiasing ramp is symmetric;
    what is left is the pixel sampling, measured up to 0.08); squares turn without moving their centre."""
    clip = make_clip(seed, ClipSpec(max_objects=2))
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    for t in range(clip.frames.shape[0]):
        for j in range(len(clip.kinds)):
            m = clip.masks[t, j].astype(np.float64)
            cx, cy = (m * xs).sum() / m.sum(), (m * ys).sum() / m.sum()
            assert abs(cx - clip.centers[t, j, 0]) < 0.1 and abs(cy - clip.centers[t, j, 1]) < 0.1


def test_single_object_centroid_from_the_pixels() -> None:
    """On a flat background the colour difference alone locates the object at its track."""
    for seed in range(4):
        clip = make_clip(seed, ClipSpec(max_objects=1, brightness_p=0.0))
        ys, xs = np.mgrid[0:64, 0:64] + 0.5
        for t in (0, clip.frames.shape[0] - 1):
            diff = np.abs(clip.frames[t].astype(np.float64) - clip.background).sum(0)
            w = clip.masks[t, 0] * (diff > 0)
            cx, cy = (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()
            assert np.hypot(cx - clip.centers[t, 0, 0], cy - clip.centers[t, 0, 1]) < 0.1


def test_constant_velocity_between_bounces_and_inside_the_frame() -> None:
    for seed in range(20):
        clip = make_clip(seed)
        r = clip.radii[None, :, None] + EDGE
        assert (clip.centers >= r - 1e-9).all() and (clip.centers <= 64 - r + 1e-9).all()
        step = np.diff(clip.centers, axis=0)  # (T-1, K, 2)
        # away from a bounce each axis moves by exactly its velocity; at a bounce by no more than it
        assert (np.abs(step) <= np.abs(clip.velocities)[None] + 1e-9).all()
        free = np.isclose(np.abs(step), np.abs(clip.velocities)[None])
        assert free.mean() > 0.5


def test_bounce_reflects() -> None:
    assert np.allclose(bounce(np.array([0.0, 5.0, 11.0, 21.0, -1.0]), 0.0, 10.0), [0.0, 5.0, 9.0, 1.0, 1.0])


def test_motion_bucket_follows_speed() -> None:
    assert motion_bucket(0.0) == 0 and motion_bucket(MAX_SPEED) == 255 and motion_bucket(99.0) == 255
    assert abs(speed_of_bucket(motion_bucket(1.3)) - 1.3) < MAX_SPEED / 255
    for seed in range(10):
        clip = make_clip(seed)
        assert clip.motion_bucket_id == motion_bucket(float(clip.speeds.mean()))
    static = [make_clip(s, ClipSpec(static_p=1.0)) for s in range(3)]
    assert all(c.motion_bucket_id == 0 and np.allclose(c.centers, c.centers[:1]) for c in static)


def test_brightness_ramp_is_global_and_linear() -> None:
    clip = make_clip(1, ClipSpec(brightness_p=1.0, max_objects=1))
    assert clip.gains[0] == 1.0 and abs(clip.gains[-1] - 1.0) > 0.0
    assert np.allclose(np.diff(clip.gains, 2), 0.0)


def test_other_sizes_scale_the_motion() -> None:
    small = make_clip(5, ClipSpec(size=32, frames=4))
    big = make_clip(5, ClipSpec(size=64, frames=4))
    assert small.frames.shape == (4, 3, 32, 32)
    assert np.allclose(small.velocities * 2, big.velocities) and np.allclose(small.radii * 2, big.radii)


@pytest.mark.parametrize("field, value", [("size", 4), ("frames", 1), ("max_objects", 0)])
def test_spec_refuses_impossible_sizes(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"ClipSpec.{field}"):
        ClipSpec(**{field: value})


def test_the_tracker_reads_the_truth_back_from_true_clips() -> None:
    """tools/miniature/measure.py (what the bench reads generated clips with) on the clips themselves: the object
    is found in every frame, at its track (its thresholded mask is whole pixels: up to 0.4 px measured, 0.5 allowed),
    with its colour and, within its antialiased rim, its area."""
    from tools.miniature.measure import track, true_area

    for seed in range(5):
        clip = make_clip(seed, ClipSpec(max_objects=1, brightness_p=0.0, static_p=0.0))
        tr = track(clip.frames, clip.background)
        assert tr.found.all()
        assert np.hypot(*(tr.centers - clip.centers[:, 0]).T).max() < 0.5
        assert np.abs(tr.colors - clip.colors[0]).max() < 0.1
        area = true_area(clip.kinds[0], clip.radii[0])
        assert np.abs(tr.areas / area - 1).max() < 0.25
        assert abs(tr.speed() - clip.speeds[0]) < 0.3 * clip.speeds[0] + 0.3
