"""Fitting an input image to the video size: stretch, crop or pad.

The reference (scripts/sampling/simple_video_sample.py) takes the image as it comes and only
warns when it is not 1024x576; the ComfyUI nodes let the user pick how an image of another size
or aspect ratio is brought to the requested size. All three modes are the identity when the
image already has the requested size.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["RESIZE_MODES", "fit_image", "orbit_image"]

log = logging.getLogger(__name__)

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


def _orbit_one(rgba: np.ndarray, size: int, frame_ratio: float | None) -> np.ndarray:
    """One RGBA uint8 image (H, W, 4) -> RGB uint8 (size, size, 3), the steps of simple_video_sample.py for
    SV3D after its background removal: the bounding box of alpha > 0 (cv2.threshold at 0, boundingRect),
    pasted at the centre of a transparent square whose side is max(w, h) / image_frame_ratio, or without a
    ratio the image's first dimension (its height: the script's `in_w = image_arr.shape[0]`); resized to
    size x size with Lanczos (PIL on the RGBA image); composited on white; truncated to uint8."""
    alpha = rgba[..., 3]
    ys, xs = np.nonzero(alpha > 0)
    if ys.size == 0:
        raise ValueError("image: its alpha is 0 everywhere (nothing to centre); give the object's mask")
    y, x = int(ys.min()), int(xs.min())
    h, w = int(ys.max()) - y + 1, int(xs.max()) - x + 1
    max_size = max(w, h)
    side = int(max_size / frame_ratio) if frame_ratio is not None else rgba.shape[0]
    # the script pastes into a square of that side and fails when the object does not fit; here the square
    # grows to hold it (a wide image's object wider than the image is tall)
    side = max(side, w, h)
    padded = np.zeros((side, side, 4), dtype=np.uint8)
    center = side // 2
    top, left = center - h // 2, center - w // 2
    padded[top:top + h, left:left + w] = rgba[y:y + h, x:x + w]
    resized = np.array(Image.fromarray(padded).resize((size, size), Image.Resampling.LANCZOS)) / 255.0
    rgb = resized[..., :3] * resized[..., -1:] + (1 - resized[..., -1:])
    return (rgb * 255).astype(np.uint8)


def orbit_image(image: Tensor, size: int = 576, *, frame_ratio: float | None = None) -> Tensor:
    """SV3D's input image: images (B, 4, H, W) RGBA in [0, 1] -> (B, 3, size, size) RGB in [0, 1], the object
    (alpha > 0) centred on white as Stability's simple_video_sample.py prepares it after removing the
    background (`_orbit_one`; `frame_ratio` is its image_frame_ratio, the object's share of the frame). RGB
    images (B, 3, H, W) are taken as they are, fitted to size x size by `fit_image` ("crop"), with one log
    line: the reference would remove their background first (rembg), which this package does not do."""
    if image.ndim != 4 or image.shape[1] not in (3, 4):
        raise ValueError(f"image must be (B, 3 or 4, H, W) in [0, 1], got shape {tuple(image.shape)}")
    if frame_ratio is not None and not (0.0 < frame_ratio <= 1.0):
        raise ValueError(f"frame_ratio (the object's share of the frame) must lie in (0, 1], got {frame_ratio}")
    if image.shape[1] == 3:
        log.info("SV3D input is RGB: used as it is (no background removal); for the reference's preparation give "
                 "an RGBA image or the object's mask (the object centred on white)")
        return fit_image(image, size, size, "crop")
    out = []
    for one in image.detach().float().clamp(0.0, 1.0).cpu():
        rgba = (one.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        out.append(torch.from_numpy(_orbit_one(rgba, size, frame_ratio)).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out)
