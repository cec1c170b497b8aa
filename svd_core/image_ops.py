"""Fitting an input image to the video size: stretch, crop or pad.

The reference (scripts/sampling/simple_video_sample.py) takes the image as it comes and only
warns when it is not 1024x576; the ComfyUI nodes let the user pick how an image of another size
or aspect ratio is brought to the requested size. All three modes are the identity when the
image already has the requested size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RESIZE_MODES", "fit_image"]

RESIZE_MODES: tuple[str, ...] = ("crop", "stretch", "pad")


def _resample(image: Tensor, height: int, width: int) -> Tensor:
    """Antialiased bicubic resample of `(B, C, H, W)` in [0, 1], clamped back into [0, 1]."""
    if image.shape[-2:] == (height, width):
        return image
    out = F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


def fit_image(image: Tensor, width: int, height: int, mode: str = "crop", *, pad_value: float = 0.0) -> Tensor:
    """Bring images `(B, C, H, W)` in [0, 1] to `(B, C, height, width)`.

    - "stretch": resample to exactly width x height (the aspect ratio may change);
    - "crop": scale so the image covers width x height, then cut the centre (nothing is distorted);
    - "pad": scale so the image fits inside width x height, then pad the borders with `pad_value`
      (nothing is cut).
    Returns a new tensor; the input is never modified.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    src_h, src_w = image.shape[-2:]
    image = image.float()
    if (src_h, src_w) == (height, width):
        return image.clone()
    if mode == "stretch":
        return _resample(image, height, width)

    if mode == "crop":
        scale = max(width / src_w, height / src_h)
    else:
        scale = min(width / src_w, height / src_h)
    # round to the nearest pixel, never below the target (crop) nor above it (pad)
    new_w, new_h = round(src_w * scale), round(src_h * scale)
    if mode == "crop":
        new_w, new_h = max(new_w, width), max(new_h, height)
    else:
        new_w, new_h = max(1, min(new_w, width)), max(1, min(new_h, height))
    scaled = _resample(image, new_h, new_w)  # (B, C, new_h, new_w)

    if mode == "crop":
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return scaled[:, :, top:top + height, left:left + width].contiguous()
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out = torch.full((*image.shape[:2], height, width), pad_value, dtype=scaled.dtype, device=scaled.device)
    out[:, :, top:top + new_h, left:left + new_w] = scaled
    return out
