"""Unit tests of the node adapters (nodes/adapters.py): no ComfyUI needed.

nodes/adapters.py is loaded by file path under a private name, because ComfyUI owns the top-level
module name `nodes` (the host tests import it in the same pytest process).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from einops import rearrange

REPO = Path(__file__).resolve().parents[1]


def _load_adapters():
    name = "svd_exact_pack_adapters"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "nodes" / "adapters.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


A = _load_adapters()


def test_adapters_do_not_import_comfy() -> None:
    src = (REPO / "nodes" / "adapters.py").read_text()
    assert "import comfy" not in src and "from comfy" not in src
    assert "folder_paths" not in src


def test_fps_to_fps_id_matches_reference_default() -> None:
    # simple_video_sample.py: fps_id 6 and the video is written at fps_id + 1 = 7 fps
    assert A.fps_to_fps_id(7) == 6
    assert A.fps_to_fps_id(1) == 0
    with pytest.raises(ValueError, match="fps"):
        A.fps_to_fps_id(0)


def test_parse_dtype() -> None:
    assert A.parse_dtype("auto") is None
    assert A.parse_dtype("fp16") is torch.float16 and A.parse_dtype("bf16") is torch.bfloat16
    assert A.parse_dtype("fp32") is torch.float32
    with pytest.raises(ValueError, match="weight_dtype"):
        A.parse_dtype("fp8")


def test_image_to_bchw_rgb_roundtrip_layout(rng: torch.Generator) -> None:
    img = torch.rand(2, 5, 7, 3, generator=rng)
    before = img.clone()
    x = A.image_to_bchw(img)
    assert x.shape == (2, 3, 5, 7)
    assert torch.equal(x[1, 2, 4, 6], img[1, 4, 6, 2])
    assert torch.equal(img, before)  # input untouched


def test_image_to_bchw_rgba_drops_alpha_and_gray_repeats(rng: torch.Generator) -> None:
    rgba = torch.rand(1, 4, 4, 4, generator=rng)
    assert torch.equal(A.image_to_bchw(rgba), rearrange(rgba[..., :3], "n h w c -> n c h w"))
    gray = torch.rand(3, 4, 6, 1, generator=rng)
    x = A.image_to_bchw(gray)
    assert x.shape == (3, 3, 4, 6)
    for c in range(3):
        assert torch.equal(x[:, c], gray[..., 0])
    gray_alpha = torch.cat([gray, torch.zeros_like(gray)], dim=-1)
    assert torch.equal(A.image_to_bchw(gray_alpha), x)
    with pytest.raises(ValueError, match="channels"):
        A.image_to_bchw(torch.rand(1, 4, 4, 5))
    with pytest.raises(ValueError, match="image"):
        A.image_to_bchw(torch.rand(4, 4, 3))


def test_frames_to_image_is_video_after_video(rng: torch.Generator) -> None:
    frames = torch.rand(2, 3, 3, 8, 16, generator=rng)  # (B, T, C, H, W)
    img = A.frames_to_image(frames)
    assert img.shape == (6, 8, 16, 3)
    # frame t of video b sits at index b*T + t
    assert torch.equal(img[4], frames[1, 1].permute(1, 2, 0))


def test_empty_latent_folds_frames() -> None:
    lat = A.empty_latent(1024, 576, 25, 2)
    assert lat["samples"].shape == (50, 4, 72, 128)
    assert lat[A.FRAMES_KEY] == 25 and not lat["samples"].any()
    with pytest.raises(ValueError, match="width"):
        A.empty_latent(100, 576, 25, 1)


def test_latent_fold_unfold_roundtrip(rng: torch.Generator) -> None:
    z = torch.randn(2, 5, 4, 3, 6, generator=rng)
    lat = A.video_to_latent(z, like={"samples": torch.zeros(1), "custom": 1, "noise_mask": torch.ones(1)})
    assert lat["samples"].shape == (10, 4, 3, 6) and lat[A.FRAMES_KEY] == 5
    assert lat["custom"] == 1 and "noise_mask" not in lat
    assert torch.equal(lat["samples"][7], z[1, 2])  # "(b t)": b=1, t=2 -> 1*5+2
    assert torch.equal(A.latent_to_video(lat), z)


def test_latent_to_video_refuses_bad_latents() -> None:
    with pytest.raises(ValueError, match="frame count"):
        A.latent_to_video({"samples": torch.zeros(4, 4, 8, 8)})
    with pytest.raises(ValueError, match="whole number"):
        A.latent_to_video({"samples": torch.zeros(5, 4, 8, 8), A.FRAMES_KEY: 2})


def test_match_batches() -> None:
    assert A.match_batches(2, 2) == 2
    assert A.match_batches(2, 1) == 2 and A.match_batches(1, 3) == 3
    with pytest.raises(ValueError, match="positive holds 2 images but latent holds 3"):
        A.match_batches(2, 3)
    x = torch.arange(6.0).reshape(1, 2, 3)
    r = A.repeat_videos(x, 3)
    assert r.shape == (3, 2, 3) and all(torch.equal(r[i], x[0]) for i in range(3))


def test_preview_grid_shows_every_frame(rng: torch.Generator) -> None:
    x0 = torch.randn(2, 3, 4, 5, 7, generator=rng)  # 6 frames -> 3 columns, 2 rows
    grid = A.preview_grid(x0)
    assert grid.shape == (1, 4, 2 * 5, 3 * 7)
    frames = rearrange(x0, "b t c h w -> (b t) c h w")
    for i in range(6):
        r, k = divmod(i, 3)
        assert torch.equal(grid[0, :, r * 5:(r + 1) * 5, k * 7:(k + 1) * 7], frames[i])
    odd = A.preview_grid(torch.randn(1, 5, 4, 2, 2, generator=rng))  # 5 frames -> 3x2 with one blank
    assert odd.shape == (1, 4, 4, 6) and not odd[0, :, 2:, 4:].any()
