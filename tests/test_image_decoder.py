"""The frame-wise 2-D decoder of the image-decoder SVDs and SV3D (svd_core/nets/image_decoder.py), the
AutoencoderKL's post_quant_conv before it (VAE.decode), and SV3D's input preparation (image_ops.orbit_image).

The decoder is checked piece by piece against a plain re-computation from its own weights, written from the
structure of sgm/modules/diffusionmodules/model.py Decoder (attn_resolutions [], temb_channels 0, GroupNorm
eps 1e-6 with 32 groups, Upsample = nearest x2 then a 3x3 conv): conv_in; mid = block_1, attn_1, block_2; the
levels from the deepest up, each num_res_blocks + 1 res-blocks then (but level 0) the upsampling; norm_out,
SiLU, conv_out. In float64, so that any difference of formula shows above rounding.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from svd_core.image_ops import fit_image, orbit_image
from svd_core.nets.image_decoder import ImageDecoder
from svd_core.nets.vae import VAE, VAEConfig
from svd_core.video.decode import decode_latents
from svd_core.weights.random_weights import randomize_

CFG = replace(VAEConfig.tiny(), temporal=False)  # sv3d_*.yaml's first stage, at the tiny sizes
EPS = 1e-6  # model.py Normalize: GroupNorm(num_groups=32, eps=1e-6)
SIZE = 32  # frames of 32 x 32 (latents 4 x 4: the tiny VAE keeps the real 8x downscale)


@pytest.fixture(scope="module")
def decoder() -> ImageDecoder:
    return randomize_(ImageDecoder(CFG), seed=3).eval().requires_grad_(False)


def _latents(n: int, seed: int = 0, dtype: torch.dtype = torch.float32, size: int = SIZE) -> Tensor:
    """n latents of frames size x size."""
    f = CFG.downscale
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, CFG.latent_channels, size // f, size // f, generator=g, dtype=torch.float64).to(dtype)


def swish(x: Tensor) -> Tensor:
    """model.py nonlinearity: x * sigmoid(x)."""
    return x * torch.sigmoid(x)


class ByHand:
    """model.py's Decoder on the weights of a state dict, in plain torch functions; `seen` keeps each piece's
    output under the module name it belongs to."""

    def __init__(self, sd: dict[str, Tensor], groups: int) -> None:
        self.sd, self.groups = sd, groups
        self.seen: dict[str, Tensor] = {}

    def conv(self, x: Tensor, name: str) -> Tensor:
        w = self.sd[name + ".weight"]
        return F.conv2d(x, w, self.sd[name + ".bias"], padding=w.shape[-1] // 2)

    def norm(self, x: Tensor, name: str) -> Tensor:
        return F.group_norm(x, self.groups, self.sd[name + ".weight"], self.sd[name + ".bias"], eps=EPS)

    def resnet(self, x: Tensor, name: str) -> Tensor:
        h = self.conv(swish(self.norm(x, name + ".norm1")), name + ".conv1")
        h = self.conv(swish(self.norm(h, name + ".norm2")), name + ".conv2")
        skip = self.conv(x, name + ".nin_shortcut") if name + ".nin_shortcut.weight" in self.sd else x
        self.seen[name] = skip + h
        return self.seen[name]

    def attn(self, x: Tensor, name: str) -> Tensor:
        n, c, height, width = x.shape
        hn = self.norm(x, name + ".norm")
        q = self.conv(hn, name + ".q").reshape(n, c, height * width).transpose(1, 2)  # (n, hw, c)
        k = self.conv(hn, name + ".k").reshape(n, c, height * width)  # (n, c, hw)
        v = self.conv(hn, name + ".v").reshape(n, c, height * width)  # (n, c, hw)
        weights = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)  # (n, hw query, hw key)
        a = torch.bmm(v, weights.transpose(1, 2)).reshape(n, c, height, width)
        self.seen[name] = x + self.conv(a, name + ".proj_out")
        return self.seen[name]

    def __call__(self, z: Tensor) -> Tensor:
        h = self.seen["conv_in"] = self.conv(z, "conv_in")
        h = self.resnet(self.attn(self.resnet(h, "mid.block_1"), "mid.attn_1"), "mid.block_2")
        levels = sorted({int(k.split(".")[1]) for k in self.sd if k.startswith("up.")})
        for i in reversed(levels):
            blocks = sorted({int(k.split(".")[3]) for k in self.sd if k.startswith(f"up.{i}.block.")})
            for j in blocks:
                h = self.resnet(h, f"up.{i}.block.{j}")
            if f"up.{i}.upsample.conv.weight" in self.sd:
                up = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.seen[f"up.{i}.upsample"] = self.conv(up, f"up.{i}.upsample.conv")
        h = self.seen["norm_out"] = self.norm(h, "norm_out")
        out = self.seen["conv_out"] = self.conv(swish(h), "conv_out")
        return out


def _pieces(decoder: ImageDecoder, z: Tensor, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """The decoder's output and the output of each module in `names` (frames concatenated), by forward hooks."""
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    modules = dict(decoder.named_modules())
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen[n].append(o)) for n in names]
    try:
        out = decoder(z)
    finally:
        for h in handles:
            h.remove()
    return out, {n: torch.cat(v) for n, v in seen.items()}


def test_the_decoder_piece_by_piece_against_a_recomputation_from_its_weights(decoder: ImageDecoder) -> None:
    levels = len(CFG.ch_mult)
    names = ["conv_in", "mid.block_1", "mid.attn_1", "mid.block_2", "norm_out", "conv_out"]
    names += [f"up.{i}.block.{j}" for i in range(levels) for j in range(CFG.num_res_blocks + 1)]
    names += [f"up.{i}.upsample" for i in range(1, levels)]  # every level but the full-resolution one upsamples
    wide = decoder.double()
    try:
        z = _latents(2, seed=1, dtype=torch.float64)
        out, pieces = _pieces(wide, z, names)
        by_hand = ByHand(dict(wide.state_dict()), CFG.num_groups)
        expected = by_hand(z)
    finally:
        decoder.float()
    assert out.shape == (2, CFG.out_channels, SIZE, SIZE)
    assert sorted(by_hand.seen) == sorted(names)  # the same pieces on both sides, no upsampling at level 0
    for name, theirs in by_hand.seen.items():
        torch.testing.assert_close(pieces[name], theirs, rtol=0, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_the_decoder_in_float32_against_the_recomputation(decoder: ImageDecoder) -> None:
    z = _latents(1, seed=2)
    expected = ByHand({k: v.double() for k, v in decoder.state_dict().items()}, CFG.num_groups)(z.double())
    torch.testing.assert_close(decoder(z).double(), expected, rtol=0, atol=1e-5)


def test_frames_are_decoded_independently(decoder: ImageDecoder) -> None:
    z = _latents(3, seed=4)
    together = decoder(z, num_frames=3)
    alone = torch.cat([decoder(z[i:i + 1], num_frames=1) for i in range(3)])
    assert torch.equal(together, alone)
    changed = z.clone()
    changed[1] += 1.0
    moved = decoder(changed, num_frames=3)
    assert torch.equal(moved[0], together[0]) and torch.equal(moved[2], together[2])  # no layer across frames
    assert not torch.equal(moved[1], together[1])


@pytest.mark.parametrize("post_quant_conv", [False, True])  # SV3D; the image-decoder SVDs (AutoencoderKL)
def test_the_decode_chunk_makes_no_difference(post_quant_conv: bool) -> None:
    vae = randomize_(VAE(replace(CFG, post_quant_conv=post_quant_conv)), seed=5).eval()
    z = _latents(5, seed=6).unsqueeze(0) * CFG.scale_factor  # (1, T, C, h, w) in the sampler's space
    frames = [decode_latents(vae, z, decode_chunk_size=c) for c in (1, 2, 5)]
    assert frames[0].shape == (1, 5, 3, SIZE, SIZE)
    for other in frames[1:]:
        if post_quant_conv:
            # the 1x1 post_quant_conv sees 1, 2 or 5 latents at once: batched-conv rounding (measured 2e-6), the
            # tolerance of test_orbit's chunk test through generate
            torch.testing.assert_close(other, frames[0], rtol=0, atol=1e-5)
        else:
            assert torch.equal(other, frames[0])


def test_vae_decode_applies_post_quant_conv_first() -> None:
    vae = randomize_(VAE(replace(CFG, post_quant_conv=True)), seed=7).eval()
    assert vae.post_quant_conv is not None
    z = _latents(2, seed=8)
    with torch.no_grad():
        w, b = vae.post_quant_conv.weight, vae.post_quant_conv.bias  # (C, C, 1, 1), (C,)
        by_hand = torch.einsum("oc,nchw->nohw", w[:, :, 0, 0], z) + b[None, :, None, None]
        expected = vae.decoder(by_hand, 2)
        got = vae.decode(z, 2)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        assert (got - vae.decoder(z, 2)).abs().max() > 1e-2  # it does something
    sv3d = randomize_(VAE(CFG), seed=7).eval()  # AutoencodingEngine with a plain Decoder: none
    assert sv3d.post_quant_conv is None
    with torch.no_grad():
        assert torch.equal(sv3d.decode(z, 2), sv3d.decoder(z, 2))


# orbit_image: simple_video_sample.py's SV3D preparation, checked by its geometry

def _rgba_object(h: int = 80, w: int = 96, top: int = 2, left: int = 3, oh: int = 20, ow: int = 30,
                 colour: tuple[float, float, float] = (0.2, 0.4, 0.6)) -> Tensor:
    """(1, 4, h, w): an opaque rectangle of `colour` at (top, left), size oh x ow, transparent elsewhere (the
    transparent pixels' colour is noise, which must not show)."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 4, h, w, generator=g)
    image[:, 3] = 0.0
    for c, v in enumerate(colour):
        image[:, c, top:top + oh, left:left + ow] = v
    image[:, 3, top:top + oh, left:left + ow] = 1.0
    return image


def _extent(out: Tensor) -> tuple[int, int, int, int]:
    """Rows and columns (first, last) of the pixels clearly not white (the object; Lanczos ringing is small)."""
    mask = (1.0 - out[0]).abs().amax(dim=0) > 0.2  # (H, W)
    rows, cols = mask.any(dim=1).nonzero()[:, 0], mask.any(dim=0).nonzero()[:, 0]
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def test_an_object_in_a_corner_comes_out_centred_on_white() -> None:
    image = _rgba_object()
    out = orbit_image(image, 64)
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32
    # without a ratio the square's side is the image's height, 80: the object (20 x 30) is pasted at its centre
    # (rows 30..49, columns 25..54) and scaled by 64 / 80 (rows 24..39, columns 20..43)
    r0, r1, c0, c1 = _extent(out)
    assert abs((r0 + r1) / 2 - 31.5) <= 1.0 and abs((c0 + c1) / 2 - 31.5) <= 1.0
    assert abs((r1 - r0 + 1) - 16) <= 2 and abs((c1 - c0 + 1) - 24) <= 2
    # the background is exactly white away from the object's border (Lanczos reaches 3 pixels)
    background = torch.ones(64, 64, dtype=torch.bool)
    background[24 - 3:40 + 3, 20 - 3:44 + 3] = False
    assert torch.equal(out[0][:, background], torch.ones(3, int(background.sum())))
    # inside, the object's colour (on the uint8 grid, as the script's astype(np.uint8))
    inside = out[0, :, 28:36, 26:38]
    for c, v in enumerate((0.2, 0.4, 0.6)):
        assert (inside[c] - v).abs().max() <= 1.5 / 255


def test_frame_ratio_is_the_objects_share_of_the_frame() -> None:
    image = _rgba_object()
    widths = {}
    for ratio in (1.0, 0.5, 0.25):
        r0, r1, c0, c1 = _extent(orbit_image(image, 64, frame_ratio=ratio))
        widths[ratio] = c1 - c0 + 1
        assert abs((c0 + c1) / 2 - 31.5) <= 1.0 and abs((r0 + r1) / 2 - 31.5) <= 1.0
        assert abs(widths[ratio] - 64 * ratio) <= 2  # the wider side (30 pixels) spans ratio of the frame
    assert widths[1.0] > widths[0.5] > widths[0.25]


def test_rgb_passes_through_fit_image_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    g = torch.Generator().manual_seed(1)
    rgb = torch.rand(2, 3, 64, 64, generator=g)
    with caplog.at_level(logging.INFO, logger="svd_core.image_ops"):
        same = orbit_image(rgb, 64)
    assert torch.equal(same, rgb) and same is not rgb
    assert any("used as it is" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    other = torch.rand(1, 3, 80, 96, generator=g)
    assert torch.equal(orbit_image(other, 64), fit_image(other, 64, 64, "crop"))


def test_a_fully_transparent_image_is_refused() -> None:
    image = _rgba_object()
    image[:, 3] = 0.0
    with pytest.raises(ValueError, match="alpha is 0 everywhere"):
        orbit_image(image, 64)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"frame_ratio": 0.0}, r"frame_ratio .* must lie in \(0, 1\], got 0.0"),
    ({"frame_ratio": 1.5}, r"frame_ratio .* must lie in \(0, 1\], got 1.5"),
])
def test_bad_frame_ratios_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        orbit_image(_rgba_object(), 64, **kwargs)


def test_wrong_channels_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3 or 4, H, W\)"):
        orbit_image(torch.rand(1, 2, 8, 8), 64)
