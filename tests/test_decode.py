"""Decoding in fixed chunks (svd_core/video/decode.py)."""
from __future__ import annotations

import pytest
import torch

import svd_core
from svd_core import SVDConfig, decode_latents
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



def test_default_decode_chunk_is_the_references_14(models):
    """The reference decodes 14 frames at a time (decoding_t); diffusers' default decodes all frames at
    once. The temporal layers see across frames, so the two differ."""
    f = 2 ** (len(models.vae.config.ch_mult) - 1)
    z = torch.randn((1, 16, 4, H // f, W // f), generator=torch.Generator().manual_seed(1))
    default = decode_latents(models.vae, z)
    by_hand = torch.cat([decode_latents(models.vae, z[:, :14], decode_chunk_size=14),
                         decode_latents(models.vae, z[:, 14:], decode_chunk_size=14)], dim=1)
    torch.testing.assert_close(default, by_hand, rtol=0, atol=1e-6)
    all_at_once = decode_latents(models.vae, z, decode_chunk_size=16)
    assert (all_at_once - default).abs().max() > 1e-4



@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_decode_chunk_below_one_or_not_whole_is_refused_naming_it(bad: object) -> None:
    from svd_core import decode_chunk

    with pytest.raises(ValueError, match="decode_chunk_size"):
        decode_chunk(bad, 25)  # type: ignore[arg-type]



def test_decode_chunk_larger_than_the_video_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from svd_core import decode_chunk

    with caplog.at_level("WARNING", logger="svd_core.video.decode"):
        assert decode_chunk(30, 25) == 25
    assert "decode_chunk_size 30" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="svd_core.video.decode"):
        assert decode_chunk(None, 4) == 4  # the reference's 14 on a short video: quietly all frames
        assert decode_chunk(None, 25) == 14
        assert decode_chunk(7, 25) == 7
    assert not caplog.text

