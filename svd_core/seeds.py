"""The seed contract: every random number of a video comes from that video's own CPU generator.

- **A seed per video.** Video i of a batch made with `seed` has its own `torch.Generator("cpu")` seeded
  `seed + i` (`video_seeds`, modulo 2**64, torch's range); after ComfyUI's `LatentFromBatch` the index is the
  video's place in its original batch (`indices_from_batch_index`). So video i is the video its image gives
  alone with seed + i, whatever else is in its batch.
- **The order of draws** from a video's generator (`VideoNoise.start`): its initial latent noise
  (T, C, h, w), then the start image's augmentation noise (3, H, W), then the end image's (first-to-last
  videos and loops), then whatever the sampler draws as it goes (churn, the lcm sampler's re-noising,
  ViBiD's back-up noise; `VideoNoise.sampler`). A caller that makes only some of these (the conditioning
  node draws no latent noise, the sampler node no augmentation noise) skips them and keeps the order.
- **Drawn on the CPU** in float32, then moved: the same numbers on every device.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

__all__ = ["StartNoise", "VideoNoise", "batch_noise_sampler", "indices_from_batch_index", "video_seeds"]

NoiseSampler = Callable[[Tensor], Tensor]  # like -> standard-normal noise of like's shape, device and dtype
SEED_RANGE = 2**64  # torch.Generator.manual_seed takes seeds modulo 2**64


def video_seeds(seed: int, count: int) -> list[int]:
    """The seeds of `count` videos made with `seed`: seed, seed + 1, ... (modulo 2**64, torch's range)."""
    return [(int(seed) + i) % SEED_RANGE for i in range(count)]


def indices_from_batch_index(batch_index: Sequence[int] | None, num_videos: int, num_frames: int,
                             name: str = "latent") -> list[int]:
    """Which video of its original batch each of `num_videos` videos is, from ComfyUI's `batch_index` (one
    entry per folded frame, as LatentFromBatch and RepeatLatentBatch write it, or one per video); without
    one, 0, 1, ... `name` is the input named in the error."""
    if batch_index is None:
        return list(range(num_videos))
    rows = [int(i) for i in batch_index]
    if len(rows) == num_videos * num_frames:
        return [rows[j * num_frames] // num_frames for j in range(num_videos)]
    if len(rows) == num_videos:
        return rows
    raise ValueError(f"{name} has a batch_index of {len(rows)} entries; expected one per frame "
                     f"({num_videos * num_frames}) or one per video ({num_videos})")


@dataclass(frozen=True)
class StartNoise:
    """The draws a video starts with, each (B, ...) float32 on the CPU, in the contract's order."""

    latent: Tensor | None  # (B, T, C, h, w): the initial latent noise
    augmentation: Tensor | None  # (B, 3, H, W): the start image's cond_aug noise
    end_augmentation: Tensor | None  # (B, 3, H, W): the end image's, for first-to-last videos and loops


class VideoNoise:
    """One CPU generator per video, seeded with that video's seed; every draw stacks one per video."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator("cpu").manual_seed(int(s) % SEED_RANGE) for s in seeds]

    @classmethod
    def for_batch(cls, seed: int, count: int) -> VideoNoise:
        """Videos 0 .. count-1 of a batch made with `seed`."""
        return cls(video_seeds(seed, count))

    @classmethod
    def for_indices(cls, seed: int, indices: Sequence[int]) -> VideoNoise:
        """Videos at `indices` of their original batch (see `indices_from_batch_index`)."""
        return cls([(int(seed) + int(i)) % SEED_RANGE for i in indices])

    @classmethod
    def of(cls, generators: Sequence[torch.Generator]) -> VideoNoise:
        """Generators made elsewhere (one per video), drawn from as they stand."""
        noise = cls([])
        noise.generators = list(generators)
        return noise

    def __len__(self) -> int:
        return len(self.generators)

    def draw(self, per_video: tuple[int, ...]) -> Tensor:
        """One standard-normal draw of shape `per_video` from each video's generator: (B, *per_video)."""
        return torch.stack([torch.randn(per_video, generator=g, dtype=torch.float32) for g in self.generators])

    def start(self, *, latent: tuple[int, ...] | None = None, image: tuple[int, ...] | None = None,
              end_image: bool = False) -> StartNoise:
        """The draws a video starts with, in the contract's order: latent noise of per-video shape `latent`
        (T, C, h, w), then augmentation noise of shape `image` (3, H, W), then the end image's (same shape)."""
        if end_image and image is None:
            raise ValueError("an end image's augmentation noise needs the image shape")
        return StartNoise(
            latent=self.draw(latent) if latent is not None else None,
            augmentation=self.draw(image) if image is not None else None,
            end_augmentation=self.draw(image) if end_image and image is not None else None,
        )

    def sampler(self, num_frames: int) -> NoiseSampler:
        """Fresh standard-normal noise like a "(b t)"-folded x: video i's frames from generators[i], drawn on
        the CPU, then moved to x's device and dtype."""

        def noise(like: Tensor) -> Tensor:
            drawn = self.draw((num_frames, *like.shape[1:]))
            return rearrange(drawn, "b t ... -> (b t) ...").to(device=like.device, dtype=like.dtype)

        return noise


def batch_noise_sampler(generator: torch.Generator | None) -> NoiseSampler:
    """Fresh standard-normal noise like x from one CPU generator for the whole batch (None: seeded 0), drawn on
    the CPU and moved to x's device and dtype: what sample_video draws when given one generator."""
    gen = generator if generator is not None else torch.Generator("cpu").manual_seed(0)

    def noise(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)

    return noise
