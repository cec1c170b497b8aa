"""Every entry point on a CUDA device that is not there (bench/fake_cuda.py): fp16 weights on fake CUDA
tensors, CPU work for real, every CUDA operator audited. No tensor may meet one on another device, no
floating dtype may appear that the run did not plan (fp16 compute, float32 preconditioning and statistics),
no float64 may run on CUDA, and the host may read the device only outside sampling steps (the schedule,
read once before a loop).

The default suite runs the tiny model at 14 and 25 frames, once with piece sizes so small that every cut the lean
pieces make at 1024x576 (frame groups, row chunks, spatial slices with their merged GroupNorm statistics,
attention batches) runs here too; every path runs again at full size (SVD-XT 1.1 at 1024x576, SV3D_p at
576x576, the XT image decoder, AnimateLCM) under `-m slow` (the `full` cases), as fake tensors cost 1-2 ms an operator
on 2 cores and a full-size guided step and decode are tens of thousands of operators.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import svd_core
from svd_core import PieceSizes, SVDConfig, build_models, extend, generate, use_piece_sizes
from svd_core.diffusion import parallel

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from fake_cuda import FakeCuda  # noqa: E402

FRAMES = 14  # one decode chunk: the rest of a 25-frame video repeats the same operators (plain runs 25)
SIZE = 64
# every piece kind cuts the tiny model at 64x64, 25 frames, into a few pieces, as the defaults cut SVD-XT at 1024x576
SMALL_PIECES = PieceSizes(group_elements=2**16, token_elements=2**19, slice_elements=2**18, score_elements=2**16)
AUDITED = ("device", "dtype", "float64")
# every path runs on the tiny model by default and on the full-size preset under -m slow
SCALES = ["tiny", pytest.param("full", marks=pytest.mark.slow)]
FULL = {"svd": "svd_xt_1_1", "sv3d_p": "sv3d_p", "svd_image_decoder": "svd_xt_image_decoder",
        "lcm": "animatelcm_svd_xt"}


def config_of(scale: str, family: str = "svd") -> SVDConfig:
    """The tiny family member, or the full-size preset (SVD-XT 1.1, SV3D_p, the XT image decoder, AnimateLCM)."""
    if scale == "full":
        return svd_core.PRESETS[FULL[family]]
    if family == "lcm":
        lcm = svd_core.PRESETS["animatelcm_svd_xt"].sampling
        return replace(SVDConfig.tiny(), sampling=replace(lcm, width=SIZE, height=SIZE))
    return SVDConfig.tiny(family)


def shape_of(scale: str, config: SVDConfig) -> tuple[int, int]:
    """(height, width) of the run: 64x64 tiny, the preset's own at full size (1024x576, SV3D 576x576)."""
    return (config.sampling.height, config.sampling.width) if scale == "full" else (SIZE, SIZE)


def fake_models(config: SVDConfig, dtype: torch.dtype = torch.float16) -> svd_core.SVDModels:
    """`config`'s models on (fake) CUDA in `dtype`, built under an active FakeCuda."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # Module.to cannot swap fake parameters: make them in the dtype instead
    try:
        return build_models(config, device="cuda")
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def audit(config: SVDConfig, pieces: PieceSizes | None = None) -> Iterator[tuple[FakeCuda, Any]]:
    with FakeCuda(compute=torch.float16) as run, use_piece_sizes(pieces or svd_core.nets.pieces.DEFAULT_PIECE_SIZES):
        models = fake_models(config)
        run.watch(models)
        yield run, models


def check(run: FakeCuda, *, reads: int = 1) -> None:
    """Nothing audited was found, and the host read the device only outside steps, at most `reads` times (a
    sampling reads its schedule once, before its loop)."""
    bad = run.kinds(*AUDITED) + [f for f in run.kinds("host_read") if f.in_step]
    assert not bad, run.report()
    assert len(run.kinds("host_read")) <= reads, run.report()
    assert run.cuda_ops > 1000  # the networks ran on (fake) CUDA


def image(hw: tuple[int, int] = (SIZE, SIZE), seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(seed))


def _on_cuda(frames: torch.Tensor, count: int, hw: tuple[int, int] = (SIZE, SIZE)) -> None:
    assert frames.device.type == "cuda" and frames.dtype == torch.float32
    assert tuple(frames.shape) == (1, count, 3, *hw)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("mode", ["plain", "first_to_last", "loop"])
def test_generate_on_fake_cuda(mode: str, scale: str) -> None:
    config = config_of(scale)
    hw = shape_of(scale, config)
    steps = 2 if scale == "tiny" else 1
    with audit(config) as (run, models):
        end = image(hw, 1) if mode == "first_to_last" else None
        count = 25 if mode == "plain" else FRAMES  # plain: SVD-XT's 25 frames, two decode chunks (14 + 11)
        frames = generate(models, image(hw), num_frames=count, num_steps=steps, end_image=end, loop=mode == "loop")
    _on_cuda(frames, count - (mode == "loop"), hw)
    check(run)


def test_every_cut_on_fake_cuda() -> None:
    """The lean pieces' every cut (frame groups, row chunks, spatial slices and their merged GroupNorm
    statistics, attention batches) in a guided step and a decode chunk (at full size the default pieces cut
    them all: the full-size runs above)."""
    with audit(SVDConfig.tiny(), SMALL_PIECES) as (run, models):
        frames = generate(models, image(), num_frames=FRAMES, num_steps=1)
    _on_cuda(frames, FRAMES)
    check(run)


@pytest.mark.parametrize("scale", SCALES)
def test_lcm_preset_on_fake_cuda(scale: str) -> None:
    """AnimateLCM's preset: the lcm sampler, which re-noises from each video's CPU generator every step."""
    config = config_of(scale, "lcm")
    hw = shape_of(scale, config)
    with audit(config) as (run, models):
        frames = generate(models, image(hw), num_frames=FRAMES, num_steps=2)
    assert config.sampling.sampler == "lcm"
    _on_cuda(frames, FRAMES, hw)
    check(run)


@pytest.mark.parametrize("scale", SCALES)
def test_extend_on_fake_cuda(scale: str) -> None:
    config = config_of(scale)
    hw = shape_of(scale, config)
    with audit(config) as (run, models):
        video = torch.rand(1, FRAMES, 3, *hw, generator=torch.Generator().manual_seed(2))
        longer = extend(models, video, num_frames=FRAMES, num_steps=1, num_clips=2)
    assert longer.device == video.device and longer.shape[1] > FRAMES  # extend returns beside the video it got
    check(run, reads=3 * 2)  # per clip, between steps: the schedule, the new frames, the held latents


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("rank", [0, 1])
def test_cfg_parallel_halves_on_fake_cuda(rank: int, scale: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank's half of the guided batch (parallel.SplitGuidanceBatch), the all_gather standing in."""
    def all_gather(halves: list[torch.Tensor], out: torch.Tensor, group: Any = None) -> None:
        assert out.device.type == "cuda"
        for h in halves:
            h.copy_(out)

    monkeypatch.setattr(parallel, "check_group", lambda group: rank)
    monkeypatch.setattr("svd_core.video.sample.check_group", lambda group: rank)
    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    config = config_of(scale)
    hw = shape_of(scale, config)
    with audit(config) as (run, models):
        frames = generate(models, image(hw), num_frames=FRAMES, num_steps=1, cfg_parallel=object())
    _on_cuda(frames, FRAMES, hw)
    check(run)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("family", ["sv3d_p", "svd_image_decoder"])
def test_family_members_on_fake_cuda(family: str, scale: str) -> None:
    """SV3D_p's camera rows and its input view as the last frame; the frame-wise 2-D decoder."""
    config = config_of(scale, family)
    hw = shape_of(scale, config)
    count = config.sampling.num_frames if scale == "full" else FRAMES
    with audit(config) as (run, models):
        frames = generate(models, image(hw), num_frames=count, num_steps=1, width=hw[1], height=hw[0])
    _on_cuda(frames, count, hw)
    check(run)


def test_the_audit_finds_what_it_looks_for() -> None:
    """A CPU tensor meeting a CUDA one, float64 and an unplanned dtype on CUDA, and a read inside a step."""
    with FakeCuda(compute=torch.float16) as run:
        x = torch.ones(4, device="cuda", dtype=torch.float16)
        with contextlib.suppress(Exception):  # fake tensors refuse the mix as CUDA does; the audit saw it first
            x + torch.ones(4)
        x.double()
        x.bfloat16()
        run.plan.in_step = True
        schedule = torch.linspace(1.0, 0.0, 3, device="cuda")
        assert schedule.tolist() == [1.0, 0.5, 0.0]  # small values made on the device keep real numbers
        torch.ones(8192, device="cuda").sum(0, keepdim=True).expand(8192).cpu()  # too large to keep: unknown
    assert {f.kind for f in run.findings} == {"device", "float64", "dtype", "host_read", "unknown_read"}
    assert run.kinds("host_read") and all(f.in_step for f in run.kinds("host_read"))
