"""The keyframe-sequence node in-process: the frames svd_core.generate_keyframes gives, its progress over all
segments and its interrupt, and what it refuses before any model work."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
SIZE = 64
NODE = "StableVideoKeyframeSequence"


def _image(seed: int, h: int = SIZE, w: int = SIZE, n: int = 1) -> torch.Tensor:
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))  # ComfyUI IMAGE (N, H, W, C)


def _widgets(**over: Any) -> dict[str, Any]:
    values = dict(frames=3, segment_frames="", seed=5, steps=1, fps=9, motion_bucket_id=100, cond_aug=0.02,
                  resize_mode="crop", frames_per_chunk=0)
    return {**values, **over}


@pytest.fixture(scope="module")
def loaded(comfy_nodes: Any, assets: Path) -> tuple[Any, ...]:
    return tuple(comfy_nodes.NODE_CLASS_MAPPINGS["StableVideoCheckpointLoader"].execute(
        ckpt_name=hostenv.SVD_CKPT, weight_dtype="fp32").result)


def test_the_node_gives_generate_keyframes_frames_and_counts_its_steps_over_all_segments(
        comfy_nodes: Any, loaded: tuple[Any, ...]) -> None:
    import comfy.utils

    import svd_core
    from svd_core.image_ops import fit_image

    model, clip, vae = loaded
    keys = {"keyframe_1": _image(1), "keyframe_2": _image(2, 48, 96), "keyframe_3": _image(3)}
    seen: list[tuple[int, int]] = []
    before = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        images, video = comfy_nodes.NODE_CLASS_MAPPINGS[NODE].execute(
            model=model, clip_vision=clip, vae=vae, **keys, **_widgets(segment_frames="4, 3")).result
    finally:
        comfy.utils.set_progress_bar_global_hook(before)
    assert images.shape == (4 + 3 - 1, SIZE, SIZE, 3)
    assert seen == [(1, 2), (2, 2)]  # the step of each of the 2 segments, on one bar
    parts = svd_core.SVDModels(model.module, clip.module, vae.module, model.config)
    bchw = [k.permute(0, 3, 1, 2) for k in keys.values()]
    expected = svd_core.generate_keyframes(
        parts, [bchw[0], fit_image(bchw[1], SIZE, SIZE, "crop"), bchw[2]], segment_frames=[4, 3], num_steps=1,
        fps_id=8, motion_bucket_id=100, cond_aug=0.02, seed=5)
    assert torch.equal(images, expected[0].permute(0, 2, 3, 1))
    parts_of_video = video.get_components()
    assert parts_of_video.frame_rate == 9 and torch.equal(parts_of_video.images, images)


def test_a_batch_of_two_and_frames_for_every_segment(comfy_nodes: Any, loaded: tuple[Any, ...]) -> None:
    model, clip, vae = loaded
    keys = {"keyframe_1": _image(4, n=2), "keyframe_2": _image(5, n=2)}
    images, _ = comfy_nodes.NODE_CLASS_MAPPINGS[NODE].execute(
        model=model, clip_vision=clip, vae=vae, **keys, **_widgets()).result
    assert images.shape == (2 * 3, SIZE, SIZE, 3)  # video after video
    assert not torch.equal(images[:3], images[3:])


def test_cancelling_stops_within_one_step(comfy_nodes: Any, loaded: tuple[Any, ...]) -> None:
    import comfy.model_management as mm
    import comfy.utils

    model, clip, vae = loaded
    seen: list[int] = []

    def cancel_after_the_first_step(value: int, total: int, preview: Any, node_id: Any = None) -> None:
        seen.append(value)
        mm.interrupt_current_processing(True)

    before = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(cancel_after_the_first_step)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            comfy_nodes.NODE_CLASS_MAPPINGS[NODE].execute(
                model=model, clip_vision=clip, vae=vae, keyframe_1=_image(6), keyframe_2=_image(7),
                keyframe_3=_image(8), **_widgets())
    finally:
        comfy.utils.set_progress_bar_global_hook(before)
        mm.interrupt_current_processing(False)
    assert seen == [1]  # one step a segment: the second segment stops at its first step, before reporting it


def test_bad_inputs_are_refused_naming_them_before_any_model_work(
        comfy_nodes: Any, loaded: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    import comfy.model_management as mm

    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("models were loaded")

    monkeypatch.setattr(mm, "load_models_gpu", no_work)
    node = comfy_nodes.NODE_CLASS_MAPPINGS[NODE]
    model, clip, vae = loaded
    one, two = _image(1), _image(2)
    cases = [
        (dict(keyframe_1=one, keyframe_2=two, keyframe_4=one), "keyframe_3 is not connected but keyframe_4 is"),
        (dict(keyframe_1=one), "keyframe_2 is not connected"),
        (dict(keyframe_1=_image(1, 96, 128), keyframe_2=two), "keyframe_1 is 128x96: the video takes keyframe_1's"),
        (dict(keyframe_1=one, keyframe_2=_image(2, n=2)), "keyframe_2 holds 2 images, keyframe_1 1"),
        (dict(keyframe_1=one, keyframe_2=two, keyframe_3=one, segment_frames="3"),
         "segment_frames has 1 value(s) for 3 keyframes"),
        (dict(keyframe_1=one, keyframe_2=two, keyframe_3=one, segment_frames="3, 2"),
         "segment_frames, segment 2 (keyframe_2 to keyframe_3), is 2 frames; a segment needs 3"),
        (dict(keyframe_1=one, keyframe_2=two, segment_frames="3 frames"), "segment_frames: '3 frames' is not a list"),
        (dict(keyframe_1=one, keyframe_2=two, frames=2), "frames is 2 frames; a segment needs 3"),
        (dict(keyframe_1=one, keyframe_2=two, fps=0), "fps must be between 1"),
    ]
    for given, message in cases:
        widgets = _widgets(**{k: v for k, v in given.items() if not k.startswith("keyframe_")})
        keys = {k: v for k, v in given.items() if k.startswith("keyframe_")}
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            node.execute(model=model, clip_vision=clip, vae=vae, **keys, **widgets)
    assert "a segment needs 3" in node.validate_inputs(frames=3, segment_frames="25, 2")
    assert "frames is 1 frames" in node.validate_inputs(frames=1, segment_frames="")
    assert node.validate_inputs(frames=3, segment_frames="25, 14") is True
