"""resize_antialiased against kornia (the reference's resize) and diffusers' re-implementation."""
from __future__ import annotations

import logging

import pytest
import torch

from svd_core.resize import gaussian_taps, resize_antialiased

log = logging.getLogger(__name__)

CASES = {
    "down both axes": ((2, 3, 256, 448), (224, 224)),
    "down width only": ((1, 3, 200, 576), (224, 224)),
    "down height only": ((1, 3, 600, 100), (224, 224)),
    "strong non-integer down": ((1, 3, 576, 1024), (224, 224)),
    "up both axes": ((1, 3, 64, 96), (224, 224)),
    "slight down (1.07x)": ((1, 2, 240, 240), (224, 224)),
}


def _image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


@pytest.mark.parametrize("name", list(CASES))
def test_matches_kornia(name: str) -> None:
    kornia = pytest.importorskip("kornia", reason="kornia (the reference's resize) is not installed")
    shape, size = CASES[name]
    x = _image(shape)
    before = x.clone()
    ours = resize_antialiased(x, size)
    ref = kornia.geometry.transform.resize(x, size, interpolation="bicubic", align_corners=True, antialias=True)
    assert ours.shape == ref.shape == (*shape[:2], *size)
    diff = (ours - ref).abs().max().item()
    log.info("%s: max |ours - kornia| = %.3g", name, diff)
    assert diff <= 1e-6, f"{name}: max abs diff {diff}"
    assert torch.equal(x, before), "input was mutated"


def test_equal_size_returns_input() -> None:
    x = _image((1, 3, 224, 224))
    assert resize_antialiased(x, (224, 224)) is x


def test_upscale_has_no_blur() -> None:
    # upscaling is plain bicubic interpolation
    x = _image((1, 3, 32, 48))
    expected = torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic", align_corners=True)
    assert torch.equal(resize_antialiased(x, (64, 64)), expected)


def test_blur_actually_happens_when_downscaling() -> None:
    # 4x down: sigma 1.5, 7 taps; without the blur the result is different by a lot on noise
    x = _image((1, 1, 256, 256))
    plain = torch.nn.functional.interpolate(x, size=(64, 64), mode="bicubic", align_corners=True)
    assert (resize_antialiased(x, (64, 64)) - plain).abs().max() > 0.1


def test_gaussian_taps() -> None:
    taps = gaussian_taps(7, 1.5)
    assert taps.shape == (7,)
    assert torch.allclose(taps.sum(), torch.tensor(1.0))
    assert torch.equal(taps, taps.flip(0))
    assert int(taps.argmax()) == 3
    # sigma 0.001 (an axis that does not shrink) is an exact identity in float32
    assert torch.equal(gaussian_taps(3, 0.001), torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="odd"):
        gaussian_taps(4, 1.0)


def test_half_precision_runs_and_stays_close() -> None:
    x = _image((1, 3, 256, 448))
    ours16 = resize_antialiased(x.to(torch.bfloat16), (224, 224))
    assert ours16.dtype == torch.bfloat16
    assert (ours16.float() - resize_antialiased(x, (224, 224))).abs().max() < 0.05


@pytest.mark.parametrize("name", ["up both axes", "down width only", "down both axes"])
def test_diffusers_resize_agrees(name: str) -> None:
    """diffusers' `_resize_with_antialiasing` always blurs, also on axes (or whole images) that are
    upscaled, where kornia does not blur; the blur there has sigma 0.001, whose 3 taps
    (0, 1, 0) are an exact identity in float32, so the two agree to rounding (here: exactly)."""
    svd = pytest.importorskip("diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion")
    shape, size = CASES[name]
    x = _image(shape, seed=1)
    ref = svd._resize_with_antialiasing(x, size)
    diff = (resize_antialiased(x, size) - ref).abs().max().item()
    log.info("%s: max |ours - diffusers| = %.3g", name, diff)
    assert diff <= 1e-6, f"{name}: max abs diff {diff}"
