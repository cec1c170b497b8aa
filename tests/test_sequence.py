"""Keyframe sequences (svd_core/video/sequence.py) on the tiny model: where each keyframe lands, the lengths, the
seed contract per segment, two keyframes as today's first-to-last video, batches, and the refusals."""
from __future__ import annotations

import pytest
import torch

import svd_core
from svd_core import SVDConfig, decode_latents, generate, generate_keyframes
from svd_core.image_ops import fit_image
from svd_core.video.conditioning import clean_latents
from svd_core.video.sequence import join_segments, keyframe_positions, parse_segment_frames, segment_lengths
from svd_core.weights.random_weights import random_models

H = W = 64
STEPS = 1


@pytest.fixture(scope="module")
def models() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny(), seed=40)


def _images(n: int, seed: int, h: int = H, w: int = W) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _round_trip(models: svd_core.SVDModels, image: torch.Tensor) -> torch.Tensor:
    """The keyframe as a video frame can best be: its clean latent decoded alone, (B, 3, H, W)."""
    return decode_latents(models.vae, clean_latents(models.vae, image)[:, None], decode_chunk_size=1)[:, 0]


def test_each_keyframe_is_at_its_frame_and_the_lengths_add_up(models: svd_core.SVDModels) -> None:
    keys = [_images(1, s) for s in (1, 2, 3)]
    lengths = [4, 3]
    video = generate_keyframes(models, keys, segment_frames=lengths, num_steps=STEPS, seed=5, decode_chunk_size=1)
    assert video.shape == (1, 4 + 3 - 1, 3, H, W)  # one frame shared by the two segments, kept once
    positions = keyframe_positions(lengths)
    assert positions == [0, 3, 5]
    trips = [_round_trip(models, k)[0] for k in keys]
    # a segment starts on its keyframe's latent exactly: decoded alone (chunk 1) it is the VAE round trip
    for k in (0, 1):
        torch.testing.assert_close(video[0, positions[k]], trips[k], rtol=0, atol=1e-4)
    # the last frame ends on the last keyframe: nearer its round trip than any other keyframe's
    end = video[0, positions[2]]
    assert (end - trips[2]).abs().mean() < min((end - trips[k]).abs().mean() for k in (0, 1))


def test_every_segment_is_the_first_to_last_video_of_its_seed(models: svd_core.SVDModels) -> None:
    b, seed = 2, 11
    keys = [_images(b, s) for s in (3, 4, 5)]
    lengths = [2, 3]
    video = generate_keyframes(models, keys, segment_frames=lengths, num_steps=STEPS, seed=seed)
    assert video.shape == (b, sum(lengths) - 1, 3, H, W)
    positions = keyframe_positions(lengths)
    segments = [generate(models, keys[k], end_image=keys[k + 1], num_frames=f, num_steps=STEPS, seed=seed + k * b)
                for k, f in enumerate(lengths)]  # video i of the batch: seed + k*B + i
    assert torch.equal(video[:, :positions[1]], segments[0][:, :-1])  # the join keeps segment 1's first frame
    assert torch.equal(video[:, positions[1]:], segments[1])
    # video by video: video 1 of segment 1 alone, with seed + 1*B + 1 (a batch differs from one video only in
    # the last bits of the CPU's batched arithmetic, as in test_generate)
    alone = generate(models, keys[1][1:], end_image=keys[2][1:], num_frames=3, num_steps=STEPS, seed=seed + b + 1)
    torch.testing.assert_close(video[1:, positions[1]:], alone, rtol=0, atol=2e-3)


def test_two_keyframes_are_todays_first_to_last_video(models: svd_core.SVDModels) -> None:
    first, last = _images(1, 7), _images(1, 8)
    settings = dict(num_steps=STEPS, seed=3, fps_id=5, motion_bucket_id=100, cond_aug=0.05)
    a = generate_keyframes(models, [first, last], segment_frames=3, **settings)  # type: ignore[arg-type]
    b = generate(models, first, end_image=last, num_frames=3, **settings)  # type: ignore[arg-type]
    assert torch.equal(a, b)


def test_keyframes_of_another_size_are_fitted_once_and_the_steps_counted_over_all_segments(
        models: svd_core.SVDModels) -> None:
    first, wide, tall = _images(1, 9), _images(1, 10, 48, 160), _images(1, 11, 100, 40)
    calls: list[tuple[int, int]] = []
    a = generate_keyframes(models, [first, wide, tall], segment_frames=2, num_steps=STEPS, resize_mode="pad",
                           callback=lambda step, total, denoised: calls.append((step, total)))
    assert calls == [(1, 2), (2, 2)]  # one step in each segment, counted on one bar
    fitted = [first] + [fit_image(x, W, H, "pad") for x in (wide, tall)]
    assert torch.equal(a, generate_keyframes(models, fitted, segment_frames=2, num_steps=STEPS))


def test_bad_keyframes_and_segment_lengths_are_refused_before_any_work(
        models: svd_core.SVDModels, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model ran")

    monkeypatch.setattr(svd_core.video.sequence, "make_video", no_work)
    one = _images(1, 1)
    cases = [
        (dict(keyframes=[one]), "at least 2 keyframes, got 1"),
        (dict(keyframes=one), "keyframes must be a list"),
        (dict(keyframes=[one, one, _images(2, 2)]), "keyframe_3 holds 2 image"),
        (dict(keyframes=[_images(1, 1, 96, 128), one]), "keyframe_1 is 128x96"),
        (dict(keyframes=[one, torch.full((1, 3, H, W), 2.0)]), "keyframe_2 values must lie in"),
        (dict(keyframes=[one, one, one], segment_frames=[3]), "segment_frames has 1 value(s) for 3 keyframes"),
        (dict(keyframes=[one, one, one], segment_frames=[3, 1]), "segment 2 (keyframe_2 to keyframe_3), is 1 frames"),
        (dict(keyframes=[one, one], segment_frames=1), "segment_frames is 1 frames; a segment needs 2"),
        (dict(keyframes=[one, one], num_steps=0), "num_steps must be between 1"),
        (dict(keyframes=[one, one], resize_mode="fill"), "resize_mode must be one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            generate_keyframes(models, **kwargs)  # type: ignore[arg-type]


def test_segment_frames_text_and_the_join() -> None:
    assert parse_segment_frames("") is None and parse_segment_frames(" , ") is None
    assert parse_segment_frames("25, 14 25") == [25, 14, 25]
    with pytest.raises(ValueError, match="--segment-frames: '25, x'"):
        parse_segment_frames("25, x", "--segment-frames")
    assert segment_lengths(None, 3, 25) == [25, 25, 25] and segment_lengths(5, 2, 25) == [5, 5]
    with pytest.raises(ValueError, match="frames is 2 frames; a segment needs 3"):
        segment_lengths(2, 2, 25, name="frames", least=3)
    parts = [torch.full((1, n, 1, 1, 1), float(k)) for k, n in enumerate((3, 2, 4))]
    joined = join_segments(parts)
    assert joined.flatten().tolist() == [0, 0, 1, 2, 2, 2, 2]  # each join keeps the later segment's first frame
