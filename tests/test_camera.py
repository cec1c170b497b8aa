"""SV3D's camera path (svd_core/video/camera.py) and the per-frame vector it becomes (family_vector, embed_vector),
each against a computation by hand from the reference's formulas.

The formulas are those of Stability-AI/generative-models, scripts/sampling/simple_video_sample.py, version
"sv3d_p": elevations_deg default 10.0, one value or one per frame; polars_rad = deg2rad(90 - e); azimuths_deg
default np.linspace(0, 360, num_frames + 1)[1:] % 360; azimuths_rad = deg2rad((a - azimuths_deg[-1]) % 360);
then `azimuths_rad[:-1].sort()`, which sorts a copy of the slice and so keeps the order given. The embedding is
sgm/modules/diffusionmodules/util.py timestep_embedding: [cos(t f), sin(t f)], f = exp(-log(10000) i / half),
i = 0 .. half - 1; sv3d_p.yaml embeds cond_aug (outdim 256), polars_rad (512) and azimuths_rad (512).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from svd_core.config import FAMILIES
from svd_core.video.camera import DEFAULT_ELEVATION_DEG, camera_path, camera_radians, parse_angles
from svd_core.video.conditioning import embed_vector, family_vector


@pytest.mark.parametrize("num_frames", [1, 4, 21])
def test_the_default_path_is_10_degrees_on_the_even_orbit(num_frames: int) -> None:
    elevations, azimuths = camera_path(num_frames)
    assert DEFAULT_ELEVATION_DEG == 10.0
    assert elevations == (10.0,) * num_frames
    assert azimuths == tuple(float(a) for a in np.linspace(0, 360, num_frames + 1)[1:] % 360)
    assert azimuths[-1] == 0.0  # the last view is the input image's
    if num_frames == 4:
        assert azimuths == (90.0, 180.0, 270.0, 0.0)


@pytest.mark.parametrize("given", [30, 30.0, [30.0], (30,)])
def test_one_elevation_is_every_frames(given: object) -> None:
    elevations, _ = camera_path(4, given)  # type: ignore[arg-type]
    assert elevations == (30.0,) * 4
    assert all(type(e) is float for e in elevations)


def test_radians_by_hand() -> None:
    elevations, azimuths = [10.0, -20.0, 90.0, -90.0, 0.5], [300.0, 90.0, 180.0, 12.5, 45.0]
    polars, azimuths_rad = camera_radians(elevations, azimuths)
    assert polars == pytest.approx([math.radians(90.0 - e) for e in elevations], rel=1e-15, abs=0)
    assert polars[2] == 0.0 and polars[3] == pytest.approx(math.pi, rel=1e-15)  # straight down and up
    assert azimuths_rad == pytest.approx([math.radians((a - 45.0) % 360.0) for a in azimuths], rel=1e-15, abs=0)
    assert azimuths_rad[-1] == 0.0  # measured from the last frame
    assert all(type(v) is float for v in polars + azimuths_rad)


def test_the_order_given_is_kept() -> None:
    # the reference's azimuths_rad[:-1].sort() sorts a copy: an out-of-order path stays out of order
    _, azimuths_rad = camera_radians([10.0] * 4, [270.0, 90.0, 180.0, 0.0])
    assert azimuths_rad == pytest.approx([3 * math.pi / 2, math.pi / 2, math.pi, 0.0], rel=1e-15)
    assert azimuths_rad[:-1] != sorted(azimuths_rad[:-1])
    _, in_order = camera_radians([10.0] * 4, [90.0, 180.0, 270.0, 0.0])
    assert in_order == pytest.approx([math.pi / 2, math.pi, 3 * math.pi / 2, 0.0], rel=1e-15)


def test_azimuths_wrap_like_the_scripts_modulo() -> None:
    # Python's and numpy's % give a result in [0, 360) for negative differences too
    _, azimuths_rad = camera_radians([0.0] * 4, [-90.0, 450.0, 720.0, 30.0])
    assert azimuths_rad == pytest.approx([math.radians(d) for d in (240.0, 60.0, 330.0, 0.0)], rel=1e-15)


def test_elevations_at_the_poles_are_accepted() -> None:
    elevations, _ = camera_path(2, [90.0, -90.0])
    assert elevations == (90.0, -90.0)


@pytest.mark.parametrize(("elevations", "azimuths", "message"), [
    ([10.0] * 3, None, r"elevations_deg has 3 values; give 1 value, or 4 \(one per frame\)"),
    ([], None, r"elevations_deg has 0 values; give 1 value, or 4"),
    (None, [0.0] * 5, r"azimuths_deg has 5 values; give 4 \(one per frame\), or none for the even orbit"),
    (None, [0.0], r"azimuths_deg has 1 values; give 4"),
    (float("nan"), None, r"elevations_deg must be finite numbers of degrees, got nan"),
    ([10.0, float("inf"), 10.0, 10.0], None, r"elevations_deg must be finite numbers of degrees, got inf"),
    (None, [0.0, float("-inf"), 0.0, 0.0], r"azimuths_deg must be finite numbers of degrees, got -inf"),
    (None, [0.0, 0.0, float("nan"), 0.0], r"azimuths_deg must be finite numbers of degrees, got nan"),
    (90.5, None, r"elevations_deg must lie in \[-90, 90\] degrees, got 90.5"),
    ([0.0, 0.0, -91.0, 0.0], None, r"elevations_deg must lie in \[-90, 90\] degrees, got -91.0"),
])
def test_bad_paths_are_refused_naming_the_input_and_what_is_expected(elevations: object, azimuths: object,
                                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        camera_path(4, elevations, azimuths)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("10", [10.0]),
    ("0, 17.1, 34.3", [0.0, 17.1, 34.3]),
    ("0 30,60", [0.0, 30.0, 60.0]),
    ("1,,2", [1.0, 2.0]),
    ("-5.5e1 +3", [-55.0, 3.0]),
    ("", None),
    (" ,  ", None),
])
def test_parse_angles(text: str, expected: list[float] | None) -> None:
    assert parse_angles(text, "azimuths_deg") == expected


def test_parse_angles_refuses_words_naming_the_input() -> None:
    with pytest.raises(ValueError, match=r"elevations_deg: '10 degrees' is not a list of numbers in degrees"):
        parse_angles("10 degrees", "elevations_deg")


def test_family_vector_of_sv3d_u_is_cond_aug_per_frame() -> None:
    vector = family_vector(FAMILIES["sv3d_u"], 2, fps_id=6, motion_bucket_id=127, cond_aug=1e-5, num_frames=4)
    assert vector is not None
    assert vector.shape == (2, 4, 1) and vector.dtype == torch.float32
    assert torch.equal(vector, torch.full((2, 4, 1), 1e-5, dtype=torch.float64).float())


def test_family_vector_of_sv3d_p_is_cond_aug_then_the_cameras_radians_per_frame() -> None:
    polars, azimuths = camera_radians(*camera_path(4, [5.0, 10.0, 20.0, -10.0], [300.0, 90.0, 180.0, 45.0]))
    vector = family_vector(FAMILIES["sv3d_p"], 3, fps_id=6, motion_bucket_id=127, cond_aug=1e-5, num_frames=4,
                           polars_rad=polars, azimuths_rad=azimuths)
    assert vector is not None
    assert vector.shape == (3, 4, 3) and vector.dtype == torch.float32
    # the float64 values, then float32 (the reference's timestep embedding takes timesteps.float())
    rows = [[1e-5, p, a] for p, a in zip(polars, azimuths, strict=True)]
    expected = torch.tensor(rows, dtype=torch.float64).float()
    for b in range(3):
        assert torch.equal(vector[b], expected)


def test_family_vector_refusals_and_svds_own() -> None:
    assert family_vector(FAMILIES["svd"], 1, fps_id=6, motion_bucket_id=127, cond_aug=0.02, num_frames=4) is None
    with pytest.raises(ValueError, match="needs the camera path"):
        family_vector(FAMILIES["sv3d_p"], 1, fps_id=6, motion_bucket_id=127, cond_aug=1e-5, num_frames=4)
    with pytest.raises(ValueError, match="polars_rad has 3 values for 4 frames"):
        family_vector(FAMILIES["sv3d_p"], 1, fps_id=6, motion_bucket_id=127, cond_aug=1e-5, num_frames=4,
                      polars_rad=[0.0] * 3, azimuths_rad=[0.0] * 4)


def _sinusoid(t: float, width: int) -> list[float]:
    """sgm's timestep_embedding of one value, by hand in float64: cos half, then sin half."""
    half = width // 2
    freqs = [math.exp(-math.log(10000.0) * i / half) for i in range(half)]
    return [math.cos(t * f) for f in freqs] + [math.sin(t * f) for f in freqs]


def test_embed_vector_with_sv3d_p_widths_is_three_sinusoids_concatenated() -> None:
    rows = [[1e-5, math.radians(80.0), math.radians(315.0)], [1e-5, math.radians(100.0), 0.0],
            [0.02, math.pi, 2 * math.pi]]
    values = torch.tensor(rows, dtype=torch.float64).float()
    out = embed_vector(values, (256, 512, 512))
    assert out.shape == (3, 1280) and out.dtype == torch.float32
    expected = torch.tensor([_sinusoid(float(r[0]), 256) + _sinusoid(float(r[1]), 512) + _sinusoid(float(r[2]), 512)
                             for r in values.double()], dtype=torch.float64)
    # float32 frequencies and products against float64 by hand: |t| <= 2 pi, so a few float32 spacings
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-6)
    assert out[1, 256 + 512:].tolist()[:256] == [1.0] * 256 and out[1, 256 + 512 + 256:].abs().max() == 0  # t = 0


def test_embed_vector_with_one_width_is_svds_three_at_that_width() -> None:
    values = torch.tensor([[6.0, 127.0, 0.02]])
    out = embed_vector(values, 16)
    expected = torch.tensor([_sinusoid(6.0, 16) + _sinusoid(127.0, 16) + _sinusoid(float(torch.tensor(0.02)), 16)],
                            dtype=torch.float64)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5)  # t up to 127 in float32
    torch.testing.assert_close(embed_vector(values, (16, 16, 16)), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="vector has 3 values per row, the UNet embeds 2"):
        embed_vector(values, (256, 512))
