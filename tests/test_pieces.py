"""svd_core.nets.pieces: cutting activations into pieces changes memory, not results.

Every test runs the same module twice, whole (the default piece sizes: at these sizes nothing is cut) and
cut into the smallest pieces PieceSizes allows (one frame, one token row, one image row per piece), and asks
for the same numbers: within 1e-5 in float32 on the tiny and the medium model.
"""
from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from svd_core import decode_latents
from svd_core.nets import pieces
from svd_core.nets.image_encoder import ImageEncoder, ImageEncoderConfig
from svd_core.nets.layers import compute_dtype, execution_device, set_execution
from svd_core.nets.unet import UNet, UNetConfig
from svd_core.nets.vae import VAE, VAEConfig
from svd_core.weights.random_weights import randomize_

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from compare import make_config  # noqa: E402

SMALLEST = pieces.PieceSizes(group_elements=1, token_elements=1, slice_elements=1, score_elements=1)
MEDIUM = make_config("medium", 8, 128, 128)


def _spread_mix_factors(module: nn.Module, seed: int) -> nn.Module:
    """randomize_ leaves mix factors near 0; spread them so that a wrong blend would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(torch.randn(p.shape, generator=g) * 2.0)
    return module


# the medium model (a UNet of 93 M parameters) takes minutes on 2 cores: -m slow; the tiny one runs by default
SIZES = ["tiny", pytest.param("medium", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=SIZES)
def unet(request: pytest.FixtureRequest) -> UNet:
    cfg = UNetConfig.tiny() if request.param == "tiny" else MEDIUM.unet
    return _spread_mix_factors(randomize_(UNet(cfg), 3), 4).eval()


@pytest.fixture(scope="module", params=SIZES)
def vae(request: pytest.FixtureRequest) -> VAE:
    cfg = VAEConfig.tiny() if request.param == "tiny" else MEDIUM.vae
    return _spread_mix_factors(randomize_(VAE(cfg), 5), 6).eval()


def _unet_inputs(cfg: UNetConfig, b: int, t: int, h: int, w: int, tokens: int,
                 seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n = b * t
    return (torch.randn(n, cfg.in_channels, h, w, generator=g), torch.randn(n, generator=g),
            torch.randn(n, tokens, cfg.context_dim, generator=g), torch.randn(n, cfg.adm_in_channels, generator=g))


@pytest.mark.parametrize("tokens", [1, pytest.param(3, marks=pytest.mark.slow)])  # 3: -m slow (suite budget)
def test_unet_in_pieces_equals_whole(unet: UNet, tokens: int) -> None:
    args = _unet_inputs(unet.config, b=2, t=5, h=16, w=24, tokens=tokens)
    before = [a.clone() for a in args]
    with torch.inference_mode():
        whole = unet(*args, num_frames=5)
        with pieces.use_piece_sizes(SMALLEST):
            cut = unet(*args, num_frames=5)
    torch.testing.assert_close(cut, whole, rtol=0, atol=1e-5)
    for a, b in zip(args, before, strict=True):
        assert torch.equal(a, b), "the UNet changed its input"


def test_decoder_in_pieces_gives_the_same_frames(vae: VAE) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 5, vae.config.latent_channels, 12, 16, generator=g) * 3.0  # 2 videos of 5 frames
    before = z.clone()
    whole = decode_latents(vae, z, decode_chunk_size=5)
    with pieces.use_piece_sizes(SMALLEST):
        cut = decode_latents(vae, z, decode_chunk_size=5)
    assert torch.equal(z, before)
    torch.testing.assert_close(cut, whole, rtol=0, atol=1e-5)
    # cut or whole, float32 lands as near a float64 evaluation as float32 can: cutting adds no error
    with torch.inference_mode():
        flat = (z / vae.config.scale_factor).flatten(0, 1)
        truth = ((vae.double().decode(flat.double(), num_frames=5).float() + 1) / 2).clamp(0, 1).unflatten(0, (2, 5))
        vae.float()
    err_whole = (whole - truth).abs().max().item()
    err_pieces = (cut - truth).abs().max().item()
    assert err_pieces <= 1.5 * err_whole + 1e-7, (err_pieces, err_whole)


def test_encoder_in_pieces_equals_whole(vae: VAE) -> None:
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        whole = vae.encode(x)
        with pieces.use_piece_sizes(SMALLEST):
            cut = vae.encode(x)
    torch.testing.assert_close(cut, whole, rtol=0, atol=1e-5)


def test_group_stats_match_group_norm_over_the_whole_clip() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 5, 7, 6, generator=g) * 3 + 1  # (B, C, T, H, W)
    norm = randomize_(nn.GroupNorm(4, 8, eps=1e-5), 1)
    stats = pieces.GroupStats(4)
    for r in (slice(0, 2), slice(2, 3), slice(3, 7)):  # uneven bands of rows
        stats.add(x[:, :, :, r])
    out = torch.cat([stats.normalize(x[:, :, :, r], norm) for r in (slice(0, 4), slice(4, 7))], dim=3)
    with torch.no_grad():
        torch.testing.assert_close(out, norm(x), rtol=0, atol=2e-6)


def test_attention_in_query_chunks_and_batches_equals_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(5, 2, 33, 16, generator=g) for _ in range(3))
    whole = F.scaled_dot_product_attention(q, k, v)
    monkeypatch.setattr(pieces, "MAX_ATTENTION_BATCH", 2)
    with pieces.use_piece_sizes(pieces.PieceSizes(score_elements=2 * 33 * 7)):
        torch.testing.assert_close(pieces.attention(q, k, v), whole, rtol=0, atol=1e-6)


def test_frame_groups_free_each_input_group_once_used() -> None:
    x = torch.randn(6, 2, 3, 4)
    groups = pieces.FrameGroups([x[:3].clone(), x[3:].clone()])
    refs = [weakref.ref(t) for t in groups.groups]
    freed_before_second: list[bool] = []

    def double(t: torch.Tensor) -> torch.Tensor:
        gc.collect()
        freed_before_second.append(refs[0]() is None)
        return torch.cat([t, t], dim=1)

    with pieces.use_piece_sizes(pieces.PieceSizes(group_elements=1)):  # one frame per piece
        groups.map_(double, 1)
    assert freed_before_second == [False, False, False, True, True, True]
    assert groups.shape == (6, 4, 3, 4)
    torch.testing.assert_close(groups.cat(), torch.cat([x, x], dim=1))
    rows = groups.rows(slice(1, 3))
    groups.set_rows(slice(1, 3), rows * 2)
    torch.testing.assert_close(groups.cat()[:, :, 1:3], torch.cat([x, x], dim=1)[:, :, 1:3] * 2)


@pytest.mark.parametrize("keep", [True, False])
def test_temporal_block_kept_or_recomputed_intermediate_agree(keep: bool) -> None:
    from svd_core.nets.vae import TimeStack

    block = randomize_(TimeStack(8, 3, 4), 2).eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2 * 5, 8, 6, 7, generator=g)
    whole, cut = x.clone(), x.clone()
    w = (torch.tensor(0.3), torch.tensor(0.7))
    with torch.no_grad():
        pieces.temporal_block_(whole, 5, block.in_layers, block.out_layers, spatial_weight=w[0], temporal_weight=w[1])
        with pieces.use_piece_sizes(SMALLEST):
            pieces.temporal_block_(cut, 5, block.in_layers, block.out_layers, spatial_weight=w[0],
                                   temporal_weight=w[1], keep_intermediate=keep)
    torch.testing.assert_close(cut, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("field", ["group_elements", "token_elements", "slice_elements", "score_elements"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_piece_sizes_refuse_bad_values_naming_them(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        pieces.PieceSizes(**{field: value})


def test_names_of_earlier_releases_still_work() -> None:
    """svd_core.Plan / svd_core.use_plan (and the rest of svd_core.lean's names) are the renamed ones."""
    import svd_core

    assert svd_core.Plan is pieces.PieceSizes and svd_core.use_plan is pieces.use_piece_sizes
    assert pieces.DEFAULT_PLAN is pieces.DEFAULT_PIECE_SIZES and pieces.current_plan is pieces.current_piece_sizes
    with svd_core.use_plan(svd_core.Plan(group_elements=3)) as sizes:
        assert pieces.current_piece_sizes() is sizes
    assert pieces.current_piece_sizes() is pieces.DEFAULT_PIECE_SIZES


# --- the injected operations namespace ------------------------------------------------------------

def _counting_ops() -> tuple[SimpleNamespace, list[str]]:
    """torch.nn's five layers, subclassed to count their calls (how a host's casting layers look)."""
    calls: list[str] = []

    def counted(base: type[nn.Module]) -> type[nn.Module]:
        class Counted(base):  # type: ignore[misc, valid-type]
            def forward(self, *args: Any, **kwargs: Any) -> Any:
                calls.append(base.__name__)
                return super().forward(*args, **kwargs)

        Counted.__name__ = "Counted" + base.__name__
        return Counted

    names = ("Linear", "Conv2d", "Conv3d", "GroupNorm", "LayerNorm")
    return SimpleNamespace(**{n: counted(getattr(nn, n)) for n in names}), calls


@pytest.mark.parametrize("part", ["unet", "vae", "image_encoder"])
def test_layers_come_from_the_injected_ops_and_change_nothing(part: str) -> None:
    ops, calls = _counting_ops()
    build = {"unet": lambda o: UNet(UNetConfig.tiny(), o), "vae": lambda o: VAE(VAEConfig.tiny(), o),
             "image_encoder": lambda o: ImageEncoder(ImageEncoderConfig.tiny(), o)}[part]
    plain = randomize_(build(nn), 1).eval()
    injected = build(ops).eval()
    assert list(injected.state_dict()) == list(plain.state_dict())
    injected.load_state_dict(plain.state_dict())
    layer_types = (nn.Linear, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)
    layers = [m for m in injected.modules() if isinstance(m, layer_types)]
    assert layers and all(type(m).__name__.startswith("Counted") for m in layers)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        if part == "unet":
            args = _unet_inputs(UNetConfig.tiny(), 1, 3, 8, 8, 1)
            a, b = plain(*args, num_frames=3), injected(*args, num_frames=3)
        elif part == "vae":
            z = torch.randn(3, 4, 8, 8, generator=g)
            a, b = plain.decode(z, num_frames=3), injected.decode(z, num_frames=3)
        else:
            pixels = torch.randn(2, 3, 224, 224, generator=g)
            a, b = plain(pixels), injected(pixels)
    assert calls, "no injected layer was called"
    assert torch.equal(a, b)


def test_execution_device_and_dtype_are_recorded_or_read_from_the_weights() -> None:
    model = nn.Linear(2, 2)
    assert execution_device(model) == torch.device("cpu") and compute_dtype(model) == torch.float32
    model.to(torch.float8_e4m3fn)
    set_execution(model, device="cpu", dtype=torch.bfloat16)
    assert compute_dtype(model) == torch.bfloat16 and execution_device(model) == torch.device("cpu")


def test_svd_core_never_imports_comfyui() -> None:
    root = Path(__file__).resolve().parents[1] / "svd_core"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import comfy" not in text and "from comfy" not in text, path
