"""The memory model (bench/memory.py) and the formulas the nodes use (svd_core.memory).

Live bytes are counted on fake tensors: the real modules at full size, no GPU, deterministic. The
formulas must stay above the count and near it; the count must agree with the kernel's own measure of
a real run (bench/memory.py --validate and one stage of it, both under the `slow` marker: they measure a
real process's resident size, which depends on the allocator and the machine).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import svd_core

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import memory as memory_model  # noqa: E402
from compare import make_config  # noqa: E402

GiB = 2**30
FULL = svd_core.PRESETS["svd_xt_1_1"]


@pytest.fixture(scope="module")
def full_fp16() -> dict[str, dict[str, int]]:
    work = memory_model.Work()  # 1024x576, 25 frames, chunk 14, fp16
    return memory_model.model(FULL, work, stages=("unet_step", "decode_chunk"))["svd_core"]


@pytest.mark.slow  # the full-size model on fake tensors: about a minute on 2 cores
def test_full_size_step_and_decode_fit_the_cards_people_own(full_fp16: dict[str, dict[str, int]]) -> None:
    """Issue 7's targets at 1024x576, 25 frames, fp16 weights (weights + activation peak)."""
    step = full_fp16["unet_step"]
    decode = full_fp16["decode_chunk"]
    assert (step["weights"] + step["activations"]) / GiB <= 6.0, step
    assert (decode["weights"] + decode["activations"]) / GiB <= 4.0, decode
    work32 = memory_model.Work(dtype=torch.float32, vae_dtype=torch.float32)
    d32 = memory_model.model(FULL, work32, stages=("decode_chunk",))["svd_core"]["decode_chunk"]
    assert (d32["weights"] + d32["activations"]) / GiB <= 8.0, d32


@pytest.mark.slow  # the full-size model on fake tensors: about a minute on 2 cores
def test_formulas_stay_above_the_count_and_near_it(full_fp16: dict[str, dict[str, int]]) -> None:
    est = memory_model.formula(FULL, memory_model.Work())
    for stage in ("unet_step", "decode_chunk"):
        ratio = est[stage] / full_fp16[stage]["activations"]
        assert 1.0 <= ratio <= 1.3, (stage, ratio)
    # other sizes, precisions and models: still an upper bound, within half again
    cases = [
        (FULL, memory_model.Work(width=512, height=512, frames=14, chunk=7, vae_dtype=torch.float32)),
        (make_config("medium", 8, 256, 256), memory_model.Work(width=256, height=256, frames=8, chunk=8,
                                                              dtype=torch.float32, vae_dtype=torch.float32)),
    ]
    for config, work in cases:
        counted = memory_model.model(config, work, stages=("unet_step", "decode_chunk", "vae_encoder"))["svd_core"]
        est = memory_model.formula(config, work)
        for stage, r in counted.items():
            ratio = est[stage] / r["activations"]
            assert 0.9 <= ratio <= 1.5, (config.name, work.width, stage, ratio)


def test_lean_pieces_cut_the_peak_the_whole_plan_would_reach() -> None:
    """The same decode with pieces as large as the clip (nothing cut) needs several times the memory."""
    work = memory_model.Work(width=512, height=320, frames=14, chunk=14)
    lean_peak = memory_model.model(FULL, work, stages=("decode_chunk",))["svd_core"]["decode_chunk"]["activations"]
    whole = svd_core.Plan(group_elements=2**40, token_elements=2**40, slice_elements=2**40, score_elements=2**40)
    with svd_core.use_plan(whole):
        whole_peak = memory_model.model(FULL, work, stages=("decode_chunk",))["svd_core"]["decode_chunk"]["activations"]
    assert whole_peak > 2.5 * lean_peak, (whole_peak, lean_peak)


@pytest.mark.slow
def test_counting_agrees_with_the_kernels_resident_size() -> None:
    """One stage of bench/memory.py --validate: the decode's live-byte count on fake CPU tensors against
    VmHWM of a real run in a fresh process (every allocation mapped on its own)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 * 1024), MALLOC_TRIM_THRESHOLD_="0", MALLOC_ARENA_MAX="1")
    out = subprocess.run([sys.executable, str(BENCH / "memory.py"), "--rss-child", "decode_chunk", "--width", "256",
                          "--height", "192"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    config = memory_model.validation_config()
    work = memory_model._validation_work("decode_chunk", 256, 192)
    counted = memory_model.model(config, work, device="cpu", stages=("decode_chunk",))["svd_core"]
    predicted = counted["decode_chunk"]["activations"]
    assert abs(predicted / measured["rss_bytes"] - 1) <= 0.10, (predicted, measured)
    assert abs(measured["tracked_bytes"] / predicted - 1) <= 0.01, (predicted, measured)


@pytest.mark.slow
def test_validation_of_every_stage() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "memory.py"), "--validate"], capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_command_line_prints_every_stage_with_diffusers_beside(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    out = subprocess.run([sys.executable, str(BENCH / "memory.py"), "--width", "256", "--height", "128",
                          "--frames", "4", "--chunk", "4", "--peer", "diffusers", "--json", str(tmp_path / "m.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for stage in memory_model.STAGES:
        assert stage in out.stderr
    result = json.loads((tmp_path / "m.json").read_text())["result"]
    assert set(result) == {"svd_core", "diffusers"}
    assert all(result[k][s]["activations"] > 0 for k in result for s in memory_model.STAGES)
    bad = subprocess.run([sys.executable, str(BENCH / "memory.py"), "--frames", "4", "--chunk", "9"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--chunk" in bad.stderr


def test_stage_bench_runs_on_the_cpu() -> None:
    """bench/gpu_stages.py (what bench_gpu.sh runs on a GPU) as a smoke run on the tiny model."""
    out = subprocess.run([sys.executable, str(BENCH / "gpu_stages.py"), "--device", "cpu", "--model", "tiny",
                          "--width", "64", "--height", "64", "--frames", "4", "--chunk", "4", "--repeats", "1",
                          "--dtype", "fp32", "--peer", "none"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for stage in memory_model.STAGES:
        assert stage in out.stderr
