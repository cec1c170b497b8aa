"""Keyframe sequences: one video through K >= 2 keyframes in order, with the stock SVD weights (no training).

Each segment between two consecutive keyframes is a first-to-last video, made by the one video flow
(flow.make_video) with ViBiDSampler (keyframes.py), exactly as `generate(image, end_image=...)` makes it. The
segments are joined with no frame twice: segment k's last frame and segment k+1's first are both keyframe
k+1, and segment k+1's is kept (the sampler holds a video's first latent frame exactly to the keyframe's
latent, its last one only closely). So keyframe k is frame sum_{j<k} (F_j - 1) of the video, and the video
has sum_k F_k - (K - 2) frames.

The seed contract, per segment: segment k of video i (of B) draws from the generator seeded seed + k*B + i,
so it is the video `generate(image=keyframe_k, end_image=keyframe_{k+1}, num_frames=F_k, seed=seed + k*B + i)`
gives alone; two keyframes give today's first-to-last video with the same seed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..checks import MAX_FRAMES
from ..image_ops import RESIZE_MODES, fit_image
from ..seeds import SEED_RANGE
from ..weights.models import SVDModels
from .flow import make_video
from .request import VideoRequest, validate_image
from .sample import StepCallback

__all__ = ["MIN_SEGMENT_FRAMES", "generate_keyframes", "join_segments", "keyframe_positions", "parse_segment_frames",
           "segment_lengths"]

# A segment holds its two keyframes at least: the keyframe sampler's least (request.py, "between two keyframes").
MIN_SEGMENT_FRAMES = 2


def parse_segment_frames(text: str, name: str = "segment_frames") -> list[int] | None:
    """'25, 14, 25' (commas or spaces) -> [25, 14, 25]; empty text: None (every segment the default).
    ValueError naming `name` for anything that is not a whole number."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a list of whole numbers of frames, one per segment "
                         "(e.g. '25, 14, 25')") from None


def segment_lengths(segment_frames: int | Sequence[int] | None, segments: int, default: int, *,
                    name: str = "segment_frames", least: int = MIN_SEGMENT_FRAMES) -> list[int]:
    """The frames of each of `segments` segments, both keyframes included: `default` for every segment (None),
    one number for every segment, or one per segment. ValueError naming `name` (and the segment) for a count
    that does not match, or a length below `least` (the sampler's 2) or above checks.MAX_FRAMES."""
    per_segment = isinstance(segment_frames, Sequence)
    lengths: list[object]
    if isinstance(segment_frames, Sequence):
        lengths = list(segment_frames)
        if len(lengths) != segments:
            raise ValueError(f"{name} has {len(lengths)} value(s) for {segments + 1} keyframes; give one per "
                             f"segment ({segments}), the frames between two keyframes, both included")
    else:
        lengths = [default if segment_frames is None else segment_frames] * segments
    checked: list[int] = []
    for k, f in enumerate(lengths):
        where = f"{name}, segment {k + 1} (keyframe_{k + 1} to keyframe_{k + 2})," if per_segment else name
        if isinstance(f, bool) or not isinstance(f, int):
            raise ValueError(f"{where} must be a whole number of frames, got {f!r}")
        if not least <= f <= MAX_FRAMES:
            raise ValueError(f"{where} is {f} frames; a segment needs {least} to {MAX_FRAMES} frames, its two "
                             "keyframes included")
        checked.append(f)
    return checked


def keyframe_positions(lengths: Sequence[int]) -> list[int]:
    """The frame of each keyframe in the joined video: keyframe k at sum_{j<k} (F_j - 1)."""
    positions = [0]
    for f in lengths:
        positions.append(positions[-1] + f - 1)
    return positions


def join_segments(segments: Sequence[Tensor]) -> Tensor:
    """Segments (B, F_k, 3, H, W), each starting on the keyframe the one before ends on -> (B, sum F_k - (K - 2),
    3, H, W): every segment but the last loses its last frame (the next segment's first is kept)."""
    kept = [s[:, :-1] for s in segments[:-1]] + [segments[-1]]
    return torch.cat([s.to(kept[0]) for s in kept], dim=1)


def _check_keyframes(keyframes: Sequence[Tensor]) -> None:
    """At least 2 keyframes, each a valid image batch (keyframe_1's sides multiples of 64: it gives the video's
    size), all with the same number of images; else ValueError naming keyframe_k."""
    if isinstance(keyframes, Tensor) or not isinstance(keyframes, Sequence):
        raise ValueError(f"keyframes must be a list of image batches (B, 3, H, W), got {type(keyframes).__name__}")
    if len(keyframes) < 2:
        raise ValueError(f"keyframes: a sequence needs at least 2 keyframes, got {len(keyframes)}")
    for k, image in enumerate(keyframes):
        validate_image(image, f"keyframe_{k + 1}", check_size=k == 0)
        if image.shape[0] != keyframes[0].shape[0]:
            raise ValueError(f"keyframe_{k + 1} holds {image.shape[0]} image(s), keyframe_1 {keyframes[0].shape[0]}: "
                             "give every keyframe the same number of images (one per video)")


def generate_keyframes(
    models: SVDModels,
    keyframes: Sequence[Tensor],
    *,
    segment_frames: int | Sequence[int] | None = None,
    num_steps: int | None = None,
    fps_id: int | None = None,
    motion_bucket_id: int | None = None,
    cond_aug: float | None = None,
    seed: int = 0,
    decode_chunk_size: int | None = None,
    callback: StepCallback | None = None,
    resize_mode: str = "crop",
) -> Tensor:
    """K keyframe batches (B, 3, H, W) in [0, 1] -> B videos (B, sum F_k - (K - 2), 3, H, W) through every
    keyframe in order.

    The video has keyframe_1's size (multiples of 64); other keyframes are fitted to it with `resize_mode`, as
    an end image is. `segment_frames`: the frames of each segment, its two keyframes included (one number for
    all, or one per segment; default the preset's num_frames). Each segment is a first-to-last video (ViBiD:
    25 steps unless num_steps says otherwise; fps_id, motion_bucket_id, cond_aug and the decode chunk the
    preset's unless given), segment k of video i drawn from seed + k*B + i. Everything is checked before any
    model runs. callback(step, total, denoised) counts the steps of all segments together.
    """
    _check_keyframes(keyframes)
    if models.config.kind.orbit:
        raise ValueError(f"keyframes: the loaded model ({models.config.name}) makes orbits of an object; keyframe "
                         "sequences are made of first-to-last videos, which need an SVD model")
    b, _, height, width = keyframes[0].shape
    segments = len(keyframes) - 1
    lengths = segment_lengths(segment_frames, segments, models.config.sampling.num_frames)
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    requests = [VideoRequest.build(
        models.config, width=width, height=height, num_frames=f, num_steps=num_steps, fps_id=fps_id,
        motion_bucket_id=motion_bucket_id, cond_aug=cond_aug, decode_chunk_size=decode_chunk_size,
        resize_mode=resize_mode, seed=(int(seed) + k * b) % SEED_RANGE, end_image=True)
        for k, f in enumerate(lengths)]
    # keyframes of another size: fitted once, so each is the same image as the end of one segment and the start
    # of the next
    images = [keyframes[0]] + [fit_image(x, width, height, resize_mode) for x in keyframes[1:]]
    total = sum(r.num_steps for r in requests)
    done = 0
    videos = []
    for k, request in enumerate(requests):

        def on_step(step: int, steps: int, denoised: Tensor, before: int = done) -> None:
            if callback is not None:
                callback(before + step, total, denoised)

        videos.append(make_video(models, request, images[k], images[k + 1], callback=on_step))
        done += request.num_steps
    return join_segments(videos)
