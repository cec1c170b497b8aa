"""Antialiased resize as the reference calls it before the CLIP image tower.

The reference (sgm/modules/encoders/modules.py, FrozenOpenCLIPImageEmbedder.preprocess) calls
`kornia.geometry.resize(x, (224, 224), interpolation="bicubic", align_corners=True, antialias=True)`.
That function, when the image shrinks along at least one axis, first smooths it with a separable
Gaussian and then resamples with `F.interpolate`. The facts reproduced here:

- scale factor per axis: f = input / output;
- sigma per axis: max((f - 1) / 2, 0.001) (the scikit-image antialiasing rule);
- taps per axis: int(max(4 * sigma, 3)), bumped to the next odd number;
- taps are exp(-n^2 / (2 sigma^2)) at integer offsets n from the centre, normalised to sum 1;
- borders are reflected (no edge repeat), the width axis is filtered before the height axis;
- no smoothing at all when no axis shrinks.

An axis that does not shrink gets sigma 0.001, whose 3 taps are exactly (0, 1, 0) in float32
(exp(-500000) underflows to 0), so skipping it changes nothing; we skip it.

diffusers' `_resize_with_antialiasing` follows the same rule but smooths even when upscaling; with
sigma 0.001 that is again an identity, so both agree (tests/test_resize.py measures it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = ["resize_antialiased", "gaussian_taps"]

# sigma floor 0.001 and sigma = (f - 1) / 2: kornia.geometry.transform.resize (antialias branch),
# itself after skimage.transform.resize's anti_aliasing_sigma.
_MIN_SIGMA = 0.001


def _sigma(factor: float) -> float:
    return max((factor - 1.0) / 2.0, _MIN_SIGMA)


def _num_taps(sigma: float) -> int:
    # two sigmas either side, at least 3 taps, always odd: kornia.geometry.transform.resize
    n = int(max(4.0 * sigma, 3.0))
    return n if n % 2 == 1 else n + 1


def gaussian_taps(num_taps: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    """Normalised 1-D Gaussian of `num_taps` (odd) samples at integer offsets from the centre."""
    if num_taps < 1 or num_taps % 2 == 0:
        raise ValueError(f"num_taps must be a positive odd integer, got {num_taps}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    # computed on the CPU, moved last (also lets torch's fake tensors stand in for a GPU)
    offsets = torch.arange(num_taps, dtype=dtype) - (num_taps // 2)  # (K,)
    two_var = 2.0 * torch.tensor(sigma, dtype=dtype) ** 2
    weights = torch.exp(-(offsets**2) / two_var)
    return (weights / weights.sum()).to(device)


def _blur_axis(planes: Tensor, taps: Tensor, axis: str) -> Tensor:
    """Filter single-channel planes `(P, 1, H, W)` with `taps` along "h" or "w", reflecting the borders.

    The planes run as the P channels of one depthwise convolution in channels-last memory: the same
    sums as a 1-channel convolution per plane (bit for bit here), without the 16-fold padded copy a
    CPU convolution makes of a 1-channel NCHW input."""
    radius = taps.numel() // 2
    p = planes.shape[0]
    if axis == "w":
        padded = F.pad(planes, (radius, radius, 0, 0), mode="reflect")
        kernel = taps.view(1, 1, 1, -1)
    else:
        padded = F.pad(planes, (0, 0, radius, radius), mode="reflect")
        kernel = taps.view(1, 1, -1, 1)
    channels = rearrange(padded, "p 1 h w -> 1 p h w").contiguous(memory_format=torch.channels_last)
    out = F.conv2d(channels, kernel.expand(p, -1, -1, -1), groups=p)
    return rearrange(out, "1 p h w -> p 1 h w")


def _is_identity(sigma: float) -> bool:
    """True when a Gaussian of this sigma is (0, .., 1, .., 0) in every float format: its first side tap
    exp(-1 / (2 sigma^2)) underflows even in float64 (and so in float32). Decided on the host, without
    reading a tensor. Where it says False for taps that are an identity in float32, blurring with them
    changes nothing either (x * 1 + 0 is x), so this is only a shortcut."""
    return math.exp(-1.0 / (2.0 * sigma * sigma)) == 0.0


def resize_antialiased(x: Tensor, size: tuple[int, int], *, mode: str = "bicubic",
                       align_corners: bool = True) -> Tensor:
    """Resize `(N, C, H, W)` to `size = (h, w)`, Gaussian-smoothing first along any shrinking axis.

    Same result as kornia.geometry.transform.resize(x, size, interpolation=mode,
    align_corners=align_corners, antialias=True). Returns `x` itself when the size already matches.
    The smoothing of float16/bfloat16 inputs runs in float32.
    """
    if x.ndim != 4:
        raise ValueError(f"resize_antialiased expects (N, C, H, W), got shape {tuple(x.shape)}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    n, c, in_h, in_w = x.shape
    if (in_h, in_w) == (out_h, out_w):
        return x
    factor_h, factor_w = in_h / out_h, in_w / out_w

    if max(factor_h, factor_w) > 1.0:
        work_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        planes = rearrange(x.to(work_dtype), "n c h w -> (n c) 1 h w")  # (N*C, 1, H, W)
        # width first, then height: the order kornia's separable filter uses
        for axis, factor, length in (("w", factor_w, in_w), ("h", factor_h, in_h)):
            if factor <= 1.0 or length == 1:
                continue  # sigma 0.001: taps (0, 1, 0), an exact identity
            sigma = _sigma(factor)
            if not _is_identity(sigma):
                taps = gaussian_taps(_num_taps(sigma), sigma, dtype=work_dtype, device=x.device)
                planes = _blur_axis(planes, taps, axis)
        x = rearrange(planes, "(n c) 1 h w -> n c h w", n=n, c=c).to(x.dtype)  # (N, C, H, W)

    corners = align_corners if mode in ("linear", "bilinear", "bicubic", "trilinear") else None
    return F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=corners)

