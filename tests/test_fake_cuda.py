"""Every entry point on a CUDA device that is not there (bench/fake_cuda.py): fp16 weights on fake CUDA
tensors, CPU work for real, every CUDA operator audited. No tensor may meet one on another device, no
floating dtype may appear that the run did not plan (fp16 compute, float32 preconditioning and statistics),
no float64 may run on CUDA, and the host may read the device only outside sampling steps (the schedule,
read once before a loop).

The default suite runs the tiny model at 14 and 25 frames, once with piece sizes so small that every cut the lean
pieces make at 1024x576 (frame groups, row chunks, spatial slices with their merged GroupNorm statistics,
attention batches) runs here too; the full-size SVD-XT 1.1 (1024x576, 25 frames) runs the same audit
under `-m slow` (tests/test_fake_cuda.py::test_full_size_*), as fake tensors cost about 2 ms an operator
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


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _on_cuda(frames: torch.Tensor, count: int) -> None:
    assert frames.device.type == "cuda" and frames.dtype == torch.float32
    assert tuple(frames.shape) == (1, count, 3, SIZE, SIZE)


@pytest.mark.parametrize("mode", ["plain", "first_to_last", "loop"])
def test_generate_on_fake_cuda(mode: str) -> None:
    with audit(SVDConfig.tiny()) as (run, models):
        end = image(1) if mode == "first_to_last" else None
        count = 25 if mode == "plain" else FRAMES  # plain: SVD-XT's 25 frames, two decode chunks (14 + 11)
        frames = generate(models, image(), num_frames=count, num_steps=2, end_image=end, loop=mode == "loop")
    _on_cuda(frames, count - (mode == "loop"))
    check(run)


def test_every_cut_on_fake_cuda() -> None:
    """The lean pieces' every cut (frame groups, row chunks, spatial slices and their merged GroupNorm
    statistics, attention batches) in a guided step and a decode chunk."""
    with audit(SVDConfig.tiny(), SMALL_PIECES) as (run, models):
        frames = generate(models, image(), num_frames=FRAMES, num_steps=1)
    _on_cuda(frames, FRAMES)
    check(run)


def test_lcm_preset_on_fake_cuda() -> None:
    """AnimateLCM's preset: the lcm sampler, which re-noises from each video's CPU generator every step."""
    lcm = svd_core.PRESETS["animatelcm_svd_xt"].sampling
    config = replace(SVDConfig.tiny(), sampling=replace(lcm, width=SIZE, height=SIZE))
    with audit(config) as (run, models):
        frames = generate(models, image(), num_frames=FRAMES, num_steps=2)
    assert config.sampling.sampler == "lcm"
    _on_cuda(frames, FRAMES)
    check(run)


def test_extend_on_fake_cuda() -> None:
    with audit(SVDConfig.tiny()) as (run, models):
        video = torch.rand(1, FRAMES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
        longer = extend(models, video, num_frames=FRAMES, num_steps=1, num_clips=2)
    assert longer.device == video.device and longer.shape[1] > FRAMES  # extend returns beside the video it got
    check(run, reads=3 * 2)  # per clip, between steps: the schedule, the new frames, the held latents


@pytest.mark.parametrize("rank", [0, 1])
def test_cfg_parallel_halves_on_fake_cuda(rank: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank's half of the guided batch (parallel.SplitGuidanceBatch), the all_gather standing in."""
    def all_gather(halves: list[torch.Tensor], out: torch.Tensor, group: Any = None) -> None:
        assert out.device.type == "cuda"
        for h in halves:
            h.copy_(out)

    monkeypatch.setattr(parallel, "check_group", lambda group: rank)
    monkeypatch.setattr("svd_core.video.sample.check_group", lambda group: rank)
    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    with audit(SVDConfig.tiny()) as (run, models):
        frames = generate(models, image(), num_frames=FRAMES, num_steps=1, cfg_parallel=object())
    _on_cuda(frames, FRAMES)
    check(run)


@pytest.mark.parametrize("family", ["sv3d_p", "svd_image_decoder"])
def test_family_members_on_fake_cuda(family: str) -> None:
    """SV3D_p's camera rows and its input view as the last frame; the frame-wise 2-D decoder."""
    config = SVDConfig.tiny(family)
    with audit(config) as (run, models):
        frames = generate(models, image(), num_frames=FRAMES, num_steps=1, width=SIZE, height=SIZE)
    _on_cuda(frames, FRAMES)
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


@pytest.mark.slow  # fake tensors at full size: about 2 ms an operator on 2 cores, minutes a run
def test_full_size_generate_on_fake_cuda() -> None:
    """SVD-XT 1.1 at 1024x576, 25 frames, fp16, the default piece sizes: one guided step and the decode."""
    with audit(svd_core.PRESETS["svd_xt_1_1"], pieces=None) as (run, models):
        frames = generate(models, torch.rand(1, 3, 576, 1024), num_steps=1)
    assert tuple(frames.shape) == (1, 25, 3, 576, 1024) and frames.device.type == "cuda"
    check(run)
