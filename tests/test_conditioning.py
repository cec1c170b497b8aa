"""Conditioning as the reference makes it (svd_core/video/conditioning.py)."""
from __future__ import annotations

import pytest
import torch

import svd_core
from svd_core import SVDConfig, encode_conditioning
from svd_core.weights.random_weights import random_models

H = W = 64
T = 4



@pytest.fixture(scope="module")
def models() -> svd_core.SVDModels:
    return random_models(SVDConfig.tiny(), seed=10)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """n random RGB images on the uint8 grid (so a PIL round trip is exact), (n, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, H, W), generator=g).float() / 255.0



def test_unconditional_branch_zeroes_image_and_latent(models):
    pos, neg = encode_conditioning(models.image_encoder, models.vae, _images(2), fps_id=6, motion_bucket_id=127,
                                   cond_aug=0.02, generator=torch.Generator().manual_seed(0))
    assert pos.crossattn.abs().sum() > 0 and pos.concat.abs().sum() > 0
    assert torch.count_nonzero(neg.crossattn) == 0 and torch.count_nonzero(neg.concat) == 0
    assert torch.equal(neg.vector, pos.vector)
    assert pos.vector.tolist() == [[6.0, 127.0, pytest.approx(0.02)]] * 2



def test_conditioning_latent_is_unscaled_posterior_mode_of_noised_frame(models):
    image = _images(1, seed=4)
    aug = torch.randn((1, 3, H, W), generator=torch.Generator().manual_seed(9))
    pos, _ = encode_conditioning(models.image_encoder, models.vae, image, fps_id=6, motion_bucket_id=127,
                                 cond_aug=0.02, aug_noise=aug)
    expected = models.vae.encode(image * 2 - 1 + 0.02 * aug)  # no 0.18215 factor (reference: is_ae, unscaled)
    torch.testing.assert_close(pos.concat, expected, rtol=0, atol=1e-6)

