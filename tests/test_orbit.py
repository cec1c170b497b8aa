"""The SV3D flow (sv3d_u / sv3d_p through `generate` and `VideoRequest`) and the image-decoder SVDs end to end:
the reference's presets and conventions, the camera path reaching the model, the seed contract, bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import svd_core
from svd_core import SVDConfig, VideoRequest, generate
from svd_core.config import PRESETS
from svd_core.image_ops import orbit_image
from svd_core.weights.random_weights import random_models

T = 4
SIZE = 64


@pytest.fixture(scope="module")
def sv3d_p() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny("sv3d_p"), seed=21)


@pytest.fixture(scope="module")
def sv3d_u() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny("sv3d_u"), seed=22)


def _rgba(n: int, seed: int = 0, h: int = 80, w: int = 96) -> torch.Tensor:
    """n RGBA images on the uint8 grid: random colours, an opaque rectangle off-centre, transparent elsewhere."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (n, 4, h, w), generator=g).float() / 255.0
    image[:, 3] = 0.0
    image[:, 3, 10:40, 50:90] = 1.0
    return image


def test_sv3d_requests_take_the_references_settings() -> None:
    request = VideoRequest.build(PRESETS["sv3d_p"])
    assert (request.num_frames, request.num_steps, request.width, request.height) == (21, 50, 576, 576)
    assert (request.guidance, request.min_cfg, request.max_cfg, request.cond_aug) == ("triangle", 1.0, 2.5, 1e-5)
    assert request.elevations_deg == (10.0,) * 21
    assert request.azimuths_deg is not None and request.azimuths_deg[-1] == 0.0
    assert request.azimuths_deg[0] == pytest.approx(360 / 21)
    u = VideoRequest.build(PRESETS["sv3d_u"])
    assert u.elevations_deg is None and u.azimuths_deg is None and u.guidance == "triangle"
    assert VideoRequest.build(PRESETS["svd_xt_1_1"]).guidance == "linear"


@pytest.mark.parametrize(("preset", "given", "message"), [
    ("svd_xt_1_1", {"elevations_deg": 10.0}, r"elevations_deg / azimuths_deg: the loaded model \(svd_xt_1_1"),
    ("sv3d_u", {"azimuths_deg": [0.0] * 21}, r"sv3d_u.*takes no camera path; only SV3D_p"),
    ("svd_image_decoder", {"frame_ratio": 0.5}, r"frame_ratio: .*is not SV3D"),
    ("sv3d_p", {"end_image": True}, r"end_image / loop: .*orbit"),
    ("sv3d_p", {"loop": True}, r"end_image / loop: .*orbit"),
    ("sv3d_p", {"azimuths_deg": [0.0] * 5}, r"azimuths_deg has 5 values; give 21"),
    ("sv3d_p", {"elevations_deg": [0.0] * 3}, r"elevations_deg has 3 values; give 1 value, or 21"),
    ("sv3d_p", {"elevations_deg": 91.0}, r"elevations_deg must lie in \[-90, 90\]"),
    ("sv3d_p", {"azimuths_deg": [float("nan")] * 21}, r"azimuths_deg must be finite"),
])
def test_bad_camera_and_orbit_settings_are_refused_naming_them(preset: str, given: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoRequest.build(PRESETS[preset], **given)


def test_an_orbit_ends_on_its_prepared_input_image(sv3d_p: svd_core.SVDModels) -> None:
    image = _rgba(1, seed=1)
    video = generate(sv3d_p, image, num_frames=T, num_steps=2, seed=3)
    assert video.shape == (1, T, 3, SIZE, SIZE)
    prepared = orbit_image(image, SIZE)  # the object centred on white, as simple_video_sample.py prepares it
    expected = (((prepared * 2.0 - 1.0) + 1.0) / 2.0).clamp(0.0, 1.0)  # its samples_x[-1:] = cond frame
    assert torch.equal(video[0, -1], expected[0])
    assert not torch.equal(video[0, 0], expected[0])
    assert prepared[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]  # white where the image was transparent


def test_orbit_video_i_is_the_video_its_image_makes_alone(sv3d_p: svd_core.SVDModels) -> None:
    images = _rgba(2, seed=4)
    both = generate(sv3d_p, images, num_frames=T, num_steps=2, seed=10)
    second = generate(sv3d_p, images[1:], num_frames=T, num_steps=2, seed=11)
    # batch-size-dependent CPU kernel rounding only: the tolerance of test_generate's SVD twin of this test
    torch.testing.assert_close(both[1], second[0], rtol=0, atol=2e-3)
    other_seed = generate(sv3d_p, images[1:], num_frames=T, num_steps=2, seed=12)
    assert (other_seed[0, :-1] - both[1, :-1]).abs().max() > 1e-2


def test_the_camera_path_reaches_the_model(sv3d_p: svd_core.SVDModels) -> None:
    image = _rgba(1, seed=5)
    default = generate(sv3d_p, image, num_frames=T, num_steps=2, seed=1)
    even = [float(a) for a in np.linspace(0, 360, T + 1)[1:] % 360]
    spelled = generate(sv3d_p, image, num_frames=T, num_steps=2, seed=1, elevations_deg=[10.0] * T, azimuths_deg=even)
    assert torch.equal(default, spelled), "the defaults are 10 degrees on the even orbit"
    higher = generate(sv3d_p, image, num_frames=T, num_steps=2, seed=1, elevations_deg=30.0)
    turned = generate(sv3d_p, image, num_frames=T, num_steps=2, seed=1, azimuths_deg=[45.0, 90.0, 135.0, 0.0])
    for other in (higher, turned):
        assert not torch.equal(default[:, :-1], other[:, :-1])
        assert torch.equal(default[:, -1], other[:, -1])  # the input view, in both


def test_sv3d_u_takes_rgb_as_it_is_and_refuses_a_camera(sv3d_u: svd_core.SVDModels,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    rgb = _rgba(1, seed=6, h=SIZE, w=SIZE)[:, :3]
    with caplog.at_level(logging.INFO, logger="svd_core"):
        video = generate(sv3d_u, rgb, num_frames=T, num_steps=2, seed=0)
    assert any("used as it is" in r.getMessage() for r in caplog.records)
    assert torch.equal(video[0, -1], (((rgb[0] * 2.0 - 1.0) + 1.0) / 2.0).clamp(0.0, 1.0))
    with pytest.raises(ValueError, match="takes no camera path"):
        generate(sv3d_u, rgb, num_frames=T, num_steps=2, elevations_deg=10.0)


def test_the_image_decoder_svd_decodes_each_frame_alone() -> None:
    models = random_models(SVDConfig.tiny("svd_image_decoder"), seed=23)
    image = _rgba(1, seed=7, h=SIZE, w=SIZE)[:, :3]
    one = generate(models, image, num_frames=T, num_steps=2, seed=0, decode_chunk_size=1)
    all_at_once = generate(models, image, num_frames=T, num_steps=2, seed=0, decode_chunk_size=T)
    torch.testing.assert_close(one, all_at_once, rtol=0, atol=1e-5)  # batched-conv rounding
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        generate(models, _rgba(1, seed=7, h=SIZE, w=SIZE), num_frames=T, num_steps=2)
