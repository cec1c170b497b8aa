"""tools/miniature/train.py: refusals name the option, gradients through the pack's in-place networks are right,
a few steps train, and what is saved loads with load_models like any checkpoint."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from einops import rearrange

from svd_core.weights.load import load_models
from svd_core.weights.models import build_models
from tools.miniature import train as tm

SMALL = tm.Settings(size=16, frames=3, batch=1, vae_steps=1, unet_steps=1, log_every=1)


@pytest.mark.parametrize("changes, option", [
    ({"size": 30}, "--size 30"), ({"size": 4}, "--size 4"), ({"frames": 2}, "--frames 2"),
    ({"batch": 0}, "--batch"), ({"unet_steps": -1}, "--unet-steps"),
])
def test_impossible_settings_are_refused_by_name(tmp_path: Path, changes: dict[str, int], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        tm.check_settings(replace(SMALL, out=str(tmp_path / "m.safetensors"), **changes))


def test_an_existing_file_is_kept_unless_overwrite(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="--overwrite"):
        tm.check_settings(replace(SMALL, out=str(out)))
    assert tm.main(["--out", str(out), "--size", "16", "--frames", "3"]) == 2 and out.read_bytes() == b"keep"
    assert "--overwrite" in caplog.text
    tm.check_settings(replace(SMALL, out=str(out), overwrite=True))
    # the default --out is the shipped file: refused without --overwrite whenever it exists
    assert tm.parse([]).out == str(tm.SHIPPED) and not tm.parse([]).overwrite
    if tm.SHIPPED.exists():
        with pytest.raises(FileExistsError, match="shipped"):
            tm.check_settings(tm.parse([]))


def _directional(loss_of, params: list[torch.nn.Parameter]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(autograd, central finite difference) derivative of loss_of() along a random direction scaled to each
    parameter's size."""
    g = torch.Generator().manual_seed(5)
    d = [torch.randn(p.shape, generator=g) * (p.detach().abs().mean() + 1e-3) for p in params]
    for p in params:
        p.grad = None
    with tm.trainable():
        loss_of().backward()
    analytic = sum(float((p.grad * v).sum()) for p, v in zip(params, d, strict=True) if p.grad is not None)
    eps = 1e-3
    with torch.no_grad():
        for p, v in zip(params, d, strict=True):
            p.add_(eps * v)
        plus = float(loss_of())
        for p, v in zip(params, d, strict=True):
            p.sub_(2 * eps * v)
        minus = float(loss_of())
        for p, v in zip(params, d, strict=True):
            p.add_(eps * v)
    return analytic, (plus - minus) / (2 * eps)


@pytest.mark.slow
def test_gradients_through_the_in_place_networks_match_finite_differences() -> None:
    """Without trainable() autograd refuses the pack's in-place layers; with it the gradients are the true ones.
    The networks run in float64 (their norms compute in float32), on a smooth function of their outputs; the
    EDM loss itself is not used here: VDenoiser computes in float32 by design, which drowns a finite difference.
    The finite difference (eps 1e-3 of each parameter's size) carries rounding: 2e-3 relative leaves room for
    it; a wrong gradient is off by far more."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = build_models(tm.miniature_config(32, 3), dtype=torch.float64)
    models.image_encoder.requires_grad_(False)
    frames, buckets = tm.clips(replace(SMALL, batch=2, size=32), 2, 0)
    frames = frames.double()
    with pytest.raises(RuntimeError, match="inplace"):
        tm.unet_loss(models, frames.float().double(), buckets, torch.Generator().manual_seed(1)).backward()
    g = torch.Generator().manual_seed(1)
    n = 6  # 2 videos x 3 frames
    x = torch.randn((n, 8, 4, 4), generator=g, dtype=torch.float64)
    c_noise = torch.randn(n, generator=g, dtype=torch.float64)
    context = torch.randn((n, 1, 32), generator=g, dtype=torch.float64)
    y = torch.randn((n, 48), generator=g, dtype=torch.float64)
    w = torch.randn((n, 4, 4, 4), generator=g, dtype=torch.float64)

    def unet_loss() -> torch.Tensor:
        return (models.unet(x, c_noise, context, y, num_frames=3) * w).sum()

    a, fd = _directional(unet_loss, list(models.unet.parameters()))
    assert abs(a - fd) <= 2e-3 * abs(fd) and abs(fd) > 0

    x = rearrange(frames, "b t c h w -> (b t) c h w")

    def vae_loss() -> torch.Tensor:  # vae_loss's path without its L1 term, whose kinks finite differences blur
        mean, logvar = tm.posterior(models.vae, x)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        rec = models.vae.decode(mean + torch.exp(0.5 * logvar) * noise, num_frames=3)
        return (rec - (x * 2 - 1)).square().mean() + (mean.square() + logvar.exp() - 1 - logvar).mean()

    a, fd = _directional(vae_loss, list(models.vae.parameters()))
    assert abs(a - fd) <= 2e-3 * abs(fd) and abs(fd) > 0


@pytest.mark.slow
def test_latent_rescale_is_exact() -> None:
    models = build_models(tm.miniature_config(16, 3))
    vae = models.vae.eval()
    frames = rearrange(tm.clips(replace(SMALL, batch=2), 3, 0)[0], "b t c h w -> (b t) c h w")
    with torch.no_grad():
        before = vae.decode(vae.encode(frames * 2 - 1), num_frames=3)
        k = tm.rescale_latents_(vae, frames)
        z = vae.encode(frames * 2 - 1)
        after = vae.decode(z, num_frames=3)
    assert k > 0 and abs(float(z.std()) - 1 / vae.config.scale_factor) < 1e-3
    assert torch.allclose(before, after, atol=1e-5)


def test_untrained_models_save_and_load_as_a_checkpoint(tmp_path: Path) -> None:
    """The default suite's check (the training steps are under -m slow: tens of seconds on the shared CPUs)."""
    settings = replace(SMALL, vae_steps=0, unet_steps=0, out=str(tmp_path / "m.safetensors"))
    models, figures = tm.train(settings)
    frames, buckets = tm.clips(settings, 2, 0)
    with torch.no_grad():
        assert torch.isfinite(tm.unet_loss(models, frames, buckets, torch.Generator().manual_seed(0)))
    loaded = load_models(tm.save(models, settings, figures), dtype=torch.float32)
    assert loaded.config.unet == models.config.unet and loaded.config.vae == models.config.vae
    assert all(torch.equal(v, models.unet.state_dict()[k]) for k, v in loaded.unet.state_dict().items())


@pytest.mark.slow
def test_two_steps_train_and_load_as_a_checkpoint(tmp_path: Path) -> None:
    settings = replace(SMALL, vae_steps=2, unet_steps=2, out=str(tmp_path / "m.safetensors"))
    models, figures = tm.train(settings)
    losses = figures["unet_loss_first_last"] + figures["vae_loss_first_last"]  # type: ignore[operator]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    path = tm.save(models, settings, figures)
    loaded = load_models(path, dtype=torch.float32)
    assert loaded.config.unet == models.config.unet and loaded.config.vae == models.config.vae
    assert loaded.config.image_encoder == models.config.image_encoder
    for part in ("unet", "vae", "image_encoder"):
        ours = getattr(models, part).state_dict()
        assert all(torch.equal(v, ours[k].half().float()) for k, v in getattr(loaded, part).state_dict().items())
    with pytest.raises(FileExistsError, match="--overwrite"):
        tm.save(models, settings, figures)


@pytest.mark.slow
def test_training_is_reproducible_and_can_be_split(tmp_path: Path) -> None:
    settings = replace(SMALL, vae_steps=2, unet_steps=2, out=str(tmp_path / "m.safetensors"))
    models, figures = tm.train(settings)
    again, _ = tm.train(settings)
    for part in ("unet", "vae"):
        a, b = getattr(models, part).state_dict(), getattr(again, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # a run split in two (VAE, then UNet from the VAE's file) trains the same UNet as one run does
    vae_settings = replace(settings, unet_steps=0, out=str(tmp_path / "v.safetensors"))
    vae_only = tm.save(tm.train(vae_settings)[0], vae_settings, {})
    two, _ = tm.train(replace(settings, init=str(vae_only), vae_steps=0, out=str(tmp_path / "n.safetensors")))
    a, b = models.unet.state_dict(), two.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
