"""The seed contract (svd_core/seeds.py): a generator per video seeded seed + i, the order of its draws, ComfyUI's
batch_index, noise drawn on the CPU."""
from __future__ import annotations

import pytest
import torch
from einops import rearrange

from svd_core.seeds import VideoNoise, batch_noise_sampler, indices_from_batch_index, video_seeds


def test_video_seeds_count_up_and_wrap_at_torchs_range() -> None:
    assert video_seeds(5, 3) == [5, 6, 7]
    assert video_seeds(2**64 - 1, 2) == [2**64 - 1, 0]
    assert VideoNoise.for_batch(2**64 - 1, 1).draw((1,)).shape == (1, 1)  # the widget's largest seed


def test_each_video_draws_from_its_own_generator_in_the_contracts_order() -> None:
    noise = VideoNoise.for_batch(10, 2)
    start = noise.start(latent=(3, 4, 2, 2), image=(3, 8, 8), end_image=True)
    fresh = rearrange(noise.sampler(3)(torch.zeros(6, 4, 2, 2)), "(b t) c h w -> b t c h w", t=3)
    for i, seed in enumerate((10, 11)):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(start.latent[i], torch.randn((3, 4, 2, 2), generator=g))
        assert torch.equal(start.augmentation[i], torch.randn((3, 8, 8), generator=g))
        assert torch.equal(start.end_augmentation[i], torch.randn((3, 8, 8), generator=g))
        assert torch.equal(fresh[i], torch.randn((3, 4, 2, 2), generator=g))  # then the sampler's, same generator


def test_a_caller_that_skips_a_draw_keeps_the_order_of_the_rest() -> None:
    """The conditioning node draws no latent noise: its augmentation noise is the first draw of seed + i."""
    aug = VideoNoise.for_batch(3, 1).start(image=(3, 4, 4), end_image=True)
    assert aug.latent is None
    g = torch.Generator().manual_seed(3)
    assert torch.equal(aug.augmentation[0], torch.randn((3, 4, 4), generator=g))
    assert torch.equal(aug.end_augmentation[0], torch.randn((3, 4, 4), generator=g))
    with pytest.raises(ValueError, match="image shape"):
        VideoNoise.for_batch(3, 1).start(end_image=True)


def test_video_i_does_not_depend_on_its_batch() -> None:
    batch = VideoNoise.for_batch(7, 3).draw((2, 5))
    for i in range(3):
        assert torch.equal(batch[i], VideoNoise.for_batch(7 + i, 1).draw((2, 5))[0])
    assert torch.equal(VideoNoise.for_indices(7, [2, 0]).draw((2, 5)), batch[[2, 0]])


def test_generators_made_elsewhere_are_drawn_from_as_they_stand() -> None:
    gens = [torch.Generator().manual_seed(1)]
    gens[0].manual_seed(1)
    first = torch.randn(2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(VideoNoise.of(gens).draw((2,))[0], first)
    assert len(VideoNoise.of(gens)) == 1


@pytest.mark.parametrize("index, expected", [
    (None, [0, 1]),
    ([6, 7, 8, 9, 10, 11], [2, 3]),  # one entry per folded frame (LatentFromBatch of frames 6..11, 3 per video)
    ([4, 1], [4, 1]),  # one entry per video
])
def test_batch_index_names_each_videos_place_in_its_original_batch(index: list[int] | None,
                                                                    expected: list[int]) -> None:
    assert indices_from_batch_index(index, 2, 3) == expected


def test_a_batch_index_of_another_length_is_refused_naming_the_input() -> None:
    with pytest.raises(ValueError, match="latent has a batch_index of 4 entries"):
        indices_from_batch_index([0, 1, 2, 3], 2, 3)


def test_one_generator_for_the_batch_draws_on_the_cpu_and_moves() -> None:
    like = torch.zeros(2, 3, dtype=torch.float64)
    a = batch_noise_sampler(torch.Generator().manual_seed(4))(like)
    assert a.dtype == torch.float64 and torch.equal(a, torch.randn(2, 3, generator=torch.Generator().manual_seed(4),
                                                                   dtype=torch.float64))
    assert torch.equal(batch_noise_sampler(None)(like), torch.randn(2, 3, generator=torch.Generator().manual_seed(0),
                                                                    dtype=torch.float64))
