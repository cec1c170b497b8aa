"""Fitting an input image to the video size (svd_core/image_ops.py): crop, stretch, pad."""
from __future__ import annotations

import pytest
import torch

from svd_core.image_ops import fit_image


@pytest.mark.parametrize("mode", ["crop", "stretch", "pad"])
def test_fit_image_identity_at_target_size(mode: str, rng: torch.Generator) -> None:
    img = torch.rand(2, 3, 64, 128, generator=rng)
    out = fit_image(img, 128, 64, mode)
    assert torch.equal(out, img) and out is not img



def test_fit_image_crop_keeps_centre_undistorted(rng: torch.Generator) -> None:
    img = torch.rand(1, 3, 64, 96, generator=rng)  # 96 wide -> crop to 64 wide keeps columns 16..80
    out = fit_image(img, 64, 64, "crop")
    assert out.shape == (1, 3, 64, 64)
    assert torch.equal(out, img[:, :, :, 16:80])



def test_fit_image_pad_keeps_whole_image(rng: torch.Generator) -> None:
    img = torch.rand(1, 3, 32, 64, generator=rng)
    out = fit_image(img, 64, 64, "pad")
    assert out.shape == (1, 3, 64, 64)
    assert torch.equal(out[:, :, 16:48], img)
    assert not out[:, :, :16].any() and not out[:, :, 48:].any()



def test_fit_image_stretch_and_downscale_stay_in_range(rng: torch.Generator) -> None:
    img = torch.rand(2, 3, 50, 70, generator=rng)
    for mode in ("crop", "stretch", "pad"):
        out = fit_image(img, 128, 64, mode)
        assert out.shape == (2, 3, 64, 128)
        assert out.min() >= 0 and out.max() <= 1
    const = torch.full((1, 3, 30, 40), 0.25)
    assert torch.allclose(fit_image(const, 64, 128, "stretch"), torch.full((1, 3, 128, 64), 0.25), atol=1e-6)
    with pytest.raises(ValueError, match="resize mode"):
        fit_image(img, 64, 64, "zoom")

