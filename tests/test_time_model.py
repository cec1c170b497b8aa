"""The time model (bench/time_model.py): kernels traced on fake CUDA tensors, timed on datasheet rooflines.

Tiny shapes and the tiny model only: the full-size tables are the script's own run (minutes on 2 cores).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import svd_core

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import time_model as tm  # noqa: E402


def traced(fn: Callable[..., Any], *shapes: tuple[int, ...], dtype: torch.dtype = torch.float16,
           channels_last: bool = False) -> list[tm.Op]:
    """The kernels fn(*tensors) launches on fake CUDA tensors of the given shapes."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        tensors = [torch.empty(s, device="cuda", dtype=dtype) for s in shapes]
        if channels_last:
            tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
        return tm.trace(lambda: fn(*tensors))


def test_matmul_and_convolution_flops_follow_the_formulas() -> None:
    (mm,) = traced(torch.mm, (64, 32), (32, 16))
    assert (mm.kind, mm.flops) == ("gemm", 2 * 64 * 32 * 16)
    assert mm.bytes == 2 * (64 * 32 + 32 * 16 + 64 * 16)
    (conv,) = traced(lambda x, w: F.conv2d(x, w, padding=1), (2, 8, 10, 12), (16, 8, 3, 3))
    assert conv.kind == "conv"
    assert conv.flops == 2 * 2 * 16 * 10 * 12 * 8 * 3 * 3  # 2 x N x C_out x H_out x W_out x C_in x k x k
    assert conv.extra_launches == 2  # NCHW fp16: cuDNN's transposes in and out
    (cl,) = traced(lambda x, w: F.conv2d(x, w, padding=1), (2, 8, 10, 12), (16, 8, 3, 3), channels_last=True)
    assert cl.extra_bytes == 0 and cl.extra_launches == 0
    (attn,) = traced(F.scaled_dot_product_attention, (2, 4, 25, 64), (2, 4, 25, 64), (2, 4, 25, 64))
    assert attn.kind == "attention" and attn.flops == 4 * 2 * 4 * 25 * 25 * 64
    assert attn.tile_fill == pytest.approx((25 / 128) ** 2)  # one 128 x 128 FlashAttention-2 tile


def test_views_are_no_kernels() -> None:
    def views(x: torch.Tensor) -> torch.Tensor:
        y = x.view(4, 6, 8).permute(2, 0, 1).unsqueeze(0).expand(3, 8, 4, 6)
        return y[:, 1:].select(1, 0).t() if y.ndim == 2 else y.transpose(0, 1).detach()

    assert traced(views, (24, 8)) == []
    (add,) = traced(lambda a, b: a + b.expand(16, 32), (16, 32), (1, 32))
    assert add.flops == 0 and add.bytes == 2 * (16 * 32 + 32 + 16 * 32)  # a broadcast row is read once


def test_an_op_takes_the_slower_of_compute_and_memory_plus_a_launch() -> None:
    device = tm.DEVICES["a100_80gb_sxm4"]
    compute_bound = tm.Op("aten::mm", "gemm", 10**12, 10**6, torch.float16)
    memory_bound = tm.Op("aten::add", "memory", 0, 10**10, torch.float16)
    assert tm.op_seconds(compute_bound, device) == pytest.approx(10**12 / 312e12 + tm.LAUNCH_S)
    assert tm.op_seconds(memory_bound, device) == pytest.approx(10**10 / 2.039e12 + tm.LAUNCH_S)
    fp32 = tm.Op("aten::mm", "gemm", 10**12, 10**6, torch.float32)
    assert tm.op_seconds(fp32, device) == pytest.approx(10**12 / 19.5e12 + tm.LAUNCH_S)  # no TF32 for matmuls
    calibrated = tm.ATTAINABLE["a100_80gb_sxm4"]
    assert tm.op_seconds(compute_bound, device, calibrated) > tm.op_seconds(compute_bound, device)


@pytest.fixture(scope="module")
def tiny_traces() -> dict[str, dict[str, list[tm.Op]]]:
    """The tiny model's decode chunk (every kind of piece) cut small, and uncut."""
    config = svd_core.SVDConfig.tiny()
    work = tm.Work(width=64, height=64, frames=4, chunk=4)
    small = svd_core.PieceSizes(group_elements=2**18, token_elements=2**18, slice_elements=2**18,
                                score_elements=2**18)
    with FakeTensorMode(allow_non_fake_inputs=True):
        vae = tm.memory_model._build(lambda: svd_core.VAE(config.vae), torch.float16, "cuda")
        z = torch.randn(1, work.chunk, config.vae.latent_channels, *work.latent_hw, device="cuda")

        def run() -> torch.Tensor:
            return svd_core.decode_latents(vae, z, decode_chunk_size=work.chunk)

        return {"cut": {"decode_chunk": tm.trace(run, small)}, "uncut": {"decode_chunk": tm.trace(run, tm.UNCUT)}}


def test_a_faster_device_predicts_less_time(tiny_traces: dict[str, dict[str, list[tm.Op]]]) -> None:
    for calibrated in (False, True):
        slow = tm.predict("rtx_3060_12gb", tiny_traces["cut"], calibrated=calibrated)
        fast = tm.predict("h100_sxm", tiny_traces["cut"], calibrated=calibrated)
        assert all(fast[s] < slow[s] for s in slow), (fast, slow)


def test_uncut_pieces_never_launch_more_kernels(tiny_traces: dict[str, dict[str, list[tm.Op]]]) -> None:
    device = tm.DEVICES["a100_80gb_sxm4"]
    cut = tm.summarise(tiny_traces["cut"]["decode_chunk"], device, tm.ATTAINABLE["a100_80gb_sxm4"])
    uncut = tm.summarise(tiny_traces["uncut"]["decode_chunk"], device, tm.ATTAINABLE["a100_80gb_sxm4"])
    assert uncut.kernels < cut.kernels
    assert uncut.flops <= cut.flops  # the same math in fewer pieces (cut temporal blocks recompute h)


def test_end_to_end_adds_the_stages() -> None:
    seconds = {"image_encoder": 1.0, "vae_encoder": 2.0, "unet_step": 0.5, "decode_chunk/14": 3.0,
               "decode_chunk/11": 2.5}
    e2e = tm.end_to_end(seconds, steps=25, frames=25, chunk=14)
    assert e2e["total"] == pytest.approx(1 + 2 + 25 * 0.5 + 3 + 2.5)
    assert tm.chunk_sizes(25, 5) == [5] * 5
    with pytest.raises(ValueError, match="unknown device model"):
        tm.resolve_device("voodoo2")
