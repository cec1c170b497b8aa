"""Core patches between StableVideoToCoreModel and core KSampler in an in-process ComfyUI: context windows
(ContextWindowsManual over frames), EasyCache, LazyCache, VideoLinearCFGGuidance, and the refusal of what our
UNet cannot run. References: the same model without the patch, our UNet run on each window's frames, and
ComfyUI's own SVD model (its own UNet class) on the same random weights."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

from test_core_bridge import _comfy_own_svd_model  # noqa: E402

pytestmark = pytest.mark.host
SIZE = 64


@dataclass
class Bridge:
    nodes: dict[str, Any]
    model: Any  # the core MODEL
    positive: Any
    negative: Any
    latents: dict[int, dict[str, Any]]  # frames -> the bridge's empty LATENT
    plain: dict[tuple[int, int, float, str], torch.Tensor] = field(default_factory=dict)  # unpatched runs, kept

    def sample(self, model: Any, frames: int = 3, steps: int = 2, cfg: float = 2.5,
               sampler: str = "euler") -> torch.Tensor:
        """core KSampler (seed 3, karras) on the bridge's empty LATENT of `frames` frames"""
        key = (frames, steps, cfg, sampler)
        if model is self.model and key in self.plain:
            return self.plain[key]
        (out,) = self.nodes["KSampler"]().sample(
            model, seed=3, steps=steps, cfg=cfg, sampler_name=sampler, scheduler="karras", positive=self.positive,
            negative=self.negative, latent_image=self.latents[frames], denoise=1.0)
        if model is self.model:
            self.plain[key] = out["samples"]
        return out["samples"]

    def windows(self, length: int, overlap: int, schedule: str = "standard_static", fuse: str = "pyramid",
                dim: int = 0, model: Any = None) -> Any:
        (patched,) = self.nodes["ContextWindowsManual"].execute(
            model if model is not None else self.model, length, overlap, schedule, 1, False, fuse, dim).result
        return patched


@pytest.fixture(scope="module")
def bridge(comfy_nodes: Any, assets: Path) -> Bridge:
    n = comfy_nodes.NODE_CLASS_MAPPINGS
    handle, clip, vae = n["StableVideoCheckpointLoader"].execute(ckpt_name=hostenv.SVD_CKPT,
                                                                 weight_dtype="fp32").result
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(2))
    pos, neg = n["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=image, width=SIZE, height=SIZE, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.0, seed=0).result
    latents = {}
    for frames in (3, 5):
        model, core_pos, core_neg, latents[frames] = n["StableVideoToCoreModel"].execute(
            model=handle, positive=pos, negative=neg, frames=frames).result
    return Bridge(n, model, core_pos, core_neg, latents)


@pytest.fixture(scope="module")
def theirs(assets: Path) -> Any:
    """ComfyUI's own SVD model (its own UNet class) on the tiny checkpoint's weights."""
    return _comfy_own_svd_model(assets / hostenv.SVD_CKPT)


@contextlib.contextmanager
def unet_calls() -> Iterator[list[int]]:
    """The rows (videos x frames) of each call of one of our UNets while the block runs."""
    import svd_core

    rows: list[int] = []

    def count(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if isinstance(module, svd_core.UNet):
            rows.append(int(args[0].shape[0]))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        yield rows
    finally:
        hook.remove()


def denoised_once(b: Bridge, model: Any, noise: torch.Tensor, cfg: float, sigma: float = 2.0) -> torch.Tensor:
    """One guided model call at `sigma` on noise (frames, 4, h, w) through core's sampling path (CFGGuider,
    calc_cond_batch and so the context handler); returns its denoised latent as the sampler saw it."""
    import comfy.sample
    import comfy.samplers

    seen: list[torch.Tensor] = []

    def one_call(model_k: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Any = None, callback: Any = None,
                 disable: Any = None) -> torch.Tensor:
        seen.append(model_k(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {})))
        return seen[-1]

    comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.KSAMPLER(one_call), torch.tensor([sigma, 0.0]),
                               b.positive, b.negative, torch.zeros_like(noise), disable_pbar=True, seed=0)
    (denoised,) = seen
    return denoised


# --- context windows -----------------------------------------------------------------------------------

def test_the_reported_graph_runs_at_any_step_count(bridge: Bridge, comfy_nodes: Any, assets: Path) -> None:
    """The issue's graph: ContextWindowsManual (dim 0, length 2, overlap 1) on 3 frames, then core KSampler and
    our decoder, through ComfyUI's executor. It failed at every step count but 2 (core 0.3.64 compared the
    steps + 1 sigmas with the 3 per-frame timesteps)."""
    import execution

    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "core_windows")
    prompt["2"]["inputs"]["weight_dtype"] = "fp32"
    for k in ("4", "5", "7"):
        del prompt[k]
    prompt["10"] = {"class_type": "StableVideoToCoreModel",
                    "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["3", 1], "frames": 3}}
    prompt["11"] = {"class_type": "ContextWindowsManual",
                    "inputs": {"model": ["10", 0], "context_length": 2, "context_overlap": 1,
                               "context_schedule": "standard_static", "context_stride": 1, "closed_loop": False,
                               "fuse_method": "pyramid", "dim": 0}}
    prompt["12"] = {"class_type": "KSampler",
                    "inputs": {"model": ["11", 0], "positive": ["10", 1], "negative": ["10", 2],
                               "latent_image": ["10", 3], "seed": 0, "steps": 3, "cfg": 2.5, "sampler_name": "euler",
                               "scheduler": "karras", "denoise": 1.0}}
    prompt["6"]["inputs"]["latent"] = ["12", 0]
    prompt["13"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    pid = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(pid, prompt, None))
    assert valid[0], valid
    executor = execution.PromptExecutor(hostenv.ServerStub(), cache_type=execution.CacheType.CLASSIC)
    with unet_calls() as rows:
        executor.execute(prompt, pid, {"client_id": None}, valid[2])
    errors = [d.get("exception_message") for ev, d in executor.status_messages if ev == "execution_error"]
    assert not errors, errors
    assert executor.success
    # 3 steps x 2 windows, each one call of cond and uncond as two videos of 2 frames
    assert rows == [4] * 6, rows
    # node by node: another step count, a sampler that evaluates between steps (Heun: 2 steps, 3 calls), and
    # the fuse method that averages windows as they come (relative)
    for steps, sampler, fuse in ((1, "euler", "pyramid"), (2, "heun", "relative")):
        with unet_calls() as rows:
            z = bridge.sample(bridge.windows(2, 1, fuse=fuse), steps=steps, sampler=sampler)
        assert z.shape == (3, 4, SIZE // 8, SIZE // 8) and torch.isfinite(z).all()
        assert rows == [4] * 2 * (2 * steps - 1 if sampler == "heun" else steps)


@pytest.mark.parametrize("length", [3, 8])
def test_a_window_holding_the_whole_video_equals_no_windows_bit_for_bit(bridge: Bridge, length: int) -> None:
    plain = bridge.sample(bridge.model)
    with unet_calls() as rows:
        windowed = bridge.sample(bridge.windows(length, 1))
    assert rows == [6, 6]  # two steps of one call: cond and uncond of all 3 frames
    assert torch.equal(windowed, plain)


# (frames, length, overlap, schedule, fuse, cfg): windows shorter than the video, with and without overlap,
# each schedule, one-frame windows, a short last window (batched)
WINDOW_CASES = [
    (3, 2, 1, "standard_static", "pyramid", 1.0),  # the reported case
    (3, 2, 1, "standard_static", "pyramid", 2.5),
    (3, 2, 0, "standard_static", "flat", 1.0),
    (3, 1, 0, "batched", "flat", 1.0),
    (5, 3, 1, "standard_static", "pyramid", 1.0),
    (5, 3, 2, "standard_uniform", "flat", 1.0),
    (5, 2, 1, "looped_uniform", "pyramid", 2.5),
    (5, 2, 0, "batched", "flat", 1.0),
    (5, 4, 3, "standard_static", "overlap-linear", 1.0),
]


@pytest.mark.parametrize("frames,length,overlap,schedule,fuse,cfg", WINDOW_CASES)
def test_a_windowed_call_is_our_unet_on_each_windows_frames_fused(bridge: Bridge, frames: int, length: int,
                                                                  overlap: int, schedule: str, fuse: str,
                                                                  cfg: float) -> None:
    """One denoiser call with windows against the reference built here: the unwindowed MODEL on each window's
    frames alone (so our UNet with that window's frame count and conditioning), fused with the fuse method's
    weights. At cfg 1 core guides nothing and the two agree bit for bit."""
    import comfy.context_windows as cw

    noise = torch.randn(frames, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(frames + length))
    patched = bridge.windows(length, overlap, schedule, fuse)
    with unet_calls() as rows:
        got = denoised_once(bridge, patched, noise, cfg)
    handler = patched.model_options["context_handler"]
    windows = handler.context_schedule.func(frames, handler, {})  # step 0: the sigma is the schedule's first
    per_video = 1 if cfg == 1.0 else 2
    assert rows == [per_video * len(w) for w in windows]  # one call per window, with that window's frames
    total = torch.zeros_like(noise)
    count = torch.zeros(frames, 1, 1, 1)
    for w in windows:
        weights = torch.as_tensor(cw.get_context_weights(len(w), frames, w, handler), dtype=torch.float32)
        total[w] += denoised_once(bridge, bridge.model, noise[w], cfg) * weights.reshape(-1, 1, 1, 1)
        count[w] += weights.reshape(-1, 1, 1, 1)
    want = total / count
    if cfg == 1.0:
        assert torch.equal(got, want), (got - want).abs().max()
    else:  # guidance after fusing (core) vs fusing guided windows (here): the same up to float rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_batched_windows_sample_each_window_as_its_own_video(bridge: Bridge) -> None:
    """Windows without overlap never mix: a whole windowed run (2 euler steps, cfg 2.5) on 5 frames is,
    bit for bit, the runs on frames 0-1, 2-3 and 4 alone with the same noise."""
    import comfy.sample

    noise = torch.randn(5, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(7))
    kw = dict(steps=2, cfg=2.5, sampler_name="euler", scheduler="karras", positive=bridge.positive,
              negative=bridge.negative, disable_pbar=True, seed=0)
    got = comfy.sample.sample(bridge.windows(2, 0, "batched", "flat"), noise, latent_image=torch.zeros_like(noise),
                              **kw)
    want = torch.cat([comfy.sample.sample(bridge.model, noise[w], latent_image=torch.zeros_like(noise[w]), **kw)
                      for w in (slice(0, 2), slice(2, 4), slice(4, 5))])
    assert torch.equal(got, want), (got - want).abs().max()


@pytest.mark.slow
def test_context_windows_agree_with_comfyuis_own_svd_model(bridge: Bridge, theirs: Any) -> None:
    """The same windows on ComfyUI's own SVD UNet (2 steps on 3 frames: the one step count core 0.3.64's own
    model windows 3 frames at)."""
    ours = bridge.sample(bridge.windows(2, 1))
    ref = bridge.sample(bridge.windows(2, 1, model=theirs))
    assert (ours - ref).abs().max().item() <= 1e-3 * max(1.0, ref.abs().max().item())  # as without windows
    assert not torch.equal(ours, bridge.sample(bridge.model))  # the windows changed the result


@pytest.mark.parametrize("length,overlap,schedule,fuse,dim,match", [
    (2, 1, "standard_static", "pyramid", 2, r"dim=2, expected 0"),  # WanContextWindowsManual's dim
    (2, 1, "standard_static", "pyramid", 1, r"dim=1, expected 0"),
    (2, 2, "standard_static", "pyramid", 0, r"context_overlap=2 with context_length=2"),
    (2, 3, "looped_uniform", "flat", 0, r"context_overlap=3 with context_length=2"),
    (2, 0, "standard_static", "overlap-linear", 0, r"fuse_method overlap-linear with context_overlap=0"),
    (2, 2, "batched", "overlap-linear", 0,
     r"fuse_method overlap-linear with context_overlap=2.*shortest window \(1 frames"),
])
def test_window_settings_that_cannot_run_are_refused_before_sampling(bridge: Bridge, length: int, overlap: int,
                                                                      schedule: str, fuse: str, dim: int,
                                                                      match: str) -> None:
    patched = bridge.windows(length, overlap, schedule, fuse, dim)
    with unet_calls() as rows, pytest.raises(ValueError, match="ContextWindowsManual: " + match):
        bridge.sample(patched)
    assert rows == []


# --- EasyCache and LazyCache ----------------------------------------------------------------------------

STEPS = 4  # a cache can first reuse at the third step (it needs two changes to estimate a rate)


def _skipped(caplog: pytest.LogCaptureFixture, name: str) -> int:
    found = re.findall(rf"{name} - skipped (\d+)/{STEPS} steps", caplog.text)
    assert len(found) == 1, caplog.text[-2000:]
    return int(found[0])


def test_easycache_runs_around_our_unet_and_skips_steps(bridge: Bridge, caplog: pytest.LogCaptureFixture) -> None:
    """EasyCache's diffusion-model wrapper runs around our UNet, one conditioning at a time (core 0.3.64's
    EasyCache fails on ComfyUI's own SVD model at cfg > 1 once it reuses a step)."""
    plain = bridge.sample(bridge.model, steps=STEPS)
    (idle,) = bridge.nodes["EasyCache"].execute(bridge.model, 0.0, 0.0, 1.0, False).result  # never reuses
    with unet_calls() as rows:  # cond and uncond as two calls of one video instead of one call of two
        torch.testing.assert_close(bridge.sample(idle, steps=STEPS), plain, rtol=1e-5, atol=1e-5)
    assert rows == [3] * (2 * STEPS)
    (cache,) = bridge.nodes["EasyCache"].execute(bridge.model, 3.0, 0.0, 1.0, False).result
    caplog.set_level(logging.INFO)
    with unet_calls() as rows:
        cached = bridge.sample(cache, steps=STEPS)
    skipped = _skipped(caplog, "EasyCache")
    assert 1 <= skipped < STEPS and rows == [3] * (2 * (STEPS - skipped))  # cond, uncond: one video each
    assert torch.isfinite(cached).all() and not torch.equal(cached, plain)


def test_lazycache_skips_steps_like_on_comfyuis_own_svd_model(bridge: Bridge, theirs: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    (idle,) = bridge.nodes["LazyCache"].execute(bridge.model, 0.0, 0.0, 1.0, False).result
    assert torch.equal(bridge.sample(idle, steps=STEPS), bridge.sample(bridge.model, steps=STEPS))
    caplog.set_level(logging.INFO)
    (cache,) = bridge.nodes["LazyCache"].execute(bridge.model, 3.0, 0.0, 1.0, False).result
    with unet_calls() as rows:
        ours = bridge.sample(cache, steps=STEPS)
    skipped = _skipped(caplog, "LazyCache")
    assert 1 <= skipped < STEPS and rows == [6] * (STEPS - skipped)
    caplog.clear()
    (their_cache,) = bridge.nodes["LazyCache"].execute(theirs, 3.0, 0.0, 1.0, False).result
    ref = bridge.sample(their_cache, steps=STEPS)
    assert _skipped(caplog, "LazyCache") == skipped
    assert (ours - ref).abs().max().item() <= 1e-3 * max(1.0, ref.abs().max().item())


def test_easycache_with_context_windows_is_refused(bridge: Bridge) -> None:
    (cache,) = bridge.nodes["EasyCache"].execute(bridge.model, 0.2, 0.15, 0.95, False).result
    with unet_calls() as rows, pytest.raises(ValueError, match="EasyCache with ContextWindowsManual"):
        bridge.sample(bridge.windows(2, 1, model=cache))
    assert rows == []
    (lazy,) = bridge.nodes["LazyCache"].execute(bridge.model, 0.2, 0.15, 0.95, False).result
    assert torch.isfinite(bridge.sample(bridge.windows(2, 1, model=lazy))).all()


# --- guidance, and patches inside core's UNet -----------------------------------------------------------

def test_video_linear_cfg_guidance_matches_comfyuis_own_svd_model(bridge: Bridge, theirs: Any) -> None:
    patch = bridge.nodes["VideoLinearCFGGuidance"]().patch
    (ours_patched,) = patch(bridge.model, 1.0)
    ours = bridge.sample(ours_patched)
    assert not torch.equal(ours, bridge.sample(bridge.model))  # frame 0 at cfg 1.0, frame 2 at 2.5
    ref = bridge.sample(patch(theirs, 1.0)[0])
    assert (ours - ref).abs().max().item() <= 1e-3 * max(1.0, ref.abs().max().item())
    assert torch.isfinite(bridge.sample(bridge.windows(2, 1, model=ours_patched))).all()  # and with windows


def test_patches_inside_cores_unet_are_refused_naming_them(bridge: Bridge) -> None:
    (freeu,) = bridge.nodes["FreeU_V2"]().patch(bridge.model, 1.3, 1.4, 0.9, 0.2)
    with unet_calls() as rows, pytest.raises(ValueError, match=r"patches\['output_block_patch'\]"):
        bridge.sample(freeu)
    assert rows == []  # before the first step
    (pag,) = bridge.nodes["PerturbedAttentionGuidance"].execute(bridge.model, 3.0).result
    with pytest.raises(ValueError, match=r"patches_replace\['attn1'\]"):  # set inside a step: refused there
        bridge.sample(pag)


def test_a_controlnet_on_the_conditioning_is_refused_before_sampling(bridge: Bridge) -> None:
    """What ControlNetApplyAdvanced leaves on CONDITIONING: a `control` entry (core's base class, with no model:
    the refusal comes before core would run it)."""
    import comfy.controlnet

    positive = [[c, {**d, "control": comfy.controlnet.ControlBase()}] for c, d in bridge.positive]
    with unet_calls() as rows, pytest.raises(ValueError, match="positive/negative: a ControlNet"):
        bridge.nodes["KSampler"]().sample(bridge.model, seed=3, steps=2, cfg=2.5, sampler_name="euler",
                                          scheduler="karras", positive=positive, negative=bridge.negative,
                                          latent_image=bridge.latents[3], denoise=1.0)
    assert rows == []
