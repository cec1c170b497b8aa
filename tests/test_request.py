"""One request (svd_core/video/request.py): the preset's defaults filled in one place, the flow's rules checked
before any work, each refusal naming the setting."""
from __future__ import annotations

import logging

import pytest

from svd_core import PRESETS, SVDConfig, VideoRequest
from svd_core.video.keyframes import VIBID_STEPS


def test_unset_settings_come_from_the_preset() -> None:
    for name in ("svd", "svd_xt_1_1", "animatelcm_svd_xt"):
        config = PRESETS[name]
        r = VideoRequest.build(config)
        s = config.sampling
        assert (r.preset, r.width, r.height, r.num_frames, r.num_steps) == (name, s.width, s.height, s.num_frames,
                                                                             s.num_steps)
        assert (r.fps_id, r.motion_bucket_id, r.cond_aug, r.min_cfg, r.max_cfg) == (
            s.fps_id, s.motion_bucket_id, s.cond_aug, s.min_cfg, s.max_cfg)
        assert (r.sampler, r.sigma_min, r.sigma_max, r.rho, r.decode_chunk_size) == (
            s.sampler, s.sigma_min, s.sigma_max, s.rho, min(s.decode_chunk_size, s.num_frames))
        assert (r.guidance, r.denoise, r.resize_mode, r.keyframed, r.output_frames) == (
            "linear", 1.0, "crop", False, s.num_frames)


def test_given_settings_win_and_the_request_is_frozen() -> None:
    r = VideoRequest.build(PRESETS["svd_xt_1_1"], num_frames=14, num_steps=7, min_cfg=1.0, guidance="triangle",
                           sampler="heun", decode_chunk_size=5, seed=9)
    assert (r.num_frames, r.num_steps, r.min_cfg, r.max_cfg, r.guidance, r.sampler, r.decode_chunk_size, r.seed) == (
        14, 7, 1.0, 3.0, "triangle", "heun", 5, 9)
    with pytest.raises(AttributeError):
        r.num_steps = 3  # type: ignore[misc]


def test_keyframes_take_vibid_steps_and_loops_drop_a_frame() -> None:
    r = VideoRequest.build(PRESETS["svd_xt_1_1"], end_image=True)
    assert r.keyframed and r.num_steps == VIBID_STEPS and r.output_frames == r.num_frames
    loop = VideoRequest.build(PRESETS["svd_xt_1_1"], loop=True, num_steps=3)
    assert loop.keyframed and loop.num_steps == 3 and loop.output_frames == loop.num_frames - 1


@pytest.mark.parametrize("given, message", [
    ({"end_image": True, "loop": True}, "end_image and loop exclude each other"),
    ({"loop": True, "num_frames": 2}, "num_frames must be at least 3 for a loop, got 2"),
    ({"end_image": True, "num_frames": 1}, "num_frames must be at least 2 between two keyframes, got 1"),
    ({"num_frames": 0}, "num_frames must be at least 1, got 0"),
    ({"end_image": True, "denoise": 0.5}, "denoise is 0.5"),
    ({"sampler": "lcm", "num_steps": 41}, "steps must be at most 40 for the lcm sampler"),
    ({"decode_chunk_size": 0}, "decode_chunk_size must be at least 1 frame"),
    ({"num_steps": 0}, "num_steps must be between 1 and 1000, got 0"),
    ({"end_image": True, "num_steps": 0}, "num_steps must be between 1 and 1000, got 0"),
    ({"loop": True, "num_steps": -1}, "num_steps must be between 1 and 1000, got -1"),
])
def test_what_the_flow_cannot_make_is_refused_naming_it(given: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoRequest.build(SVDConfig.tiny(), **given)  # type: ignore[arg-type]


def test_keyframes_with_a_consistency_preset_say_its_sampler_does_not_apply(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="svd_core.video.request"):
        VideoRequest.build(PRESETS["animatelcm_svd_xt"], loop=True)
    assert "lcm sampler does not apply" in caplog.text
