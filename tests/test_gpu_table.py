"""The "which GPU, which settings" planner (bench/gpu_table.py) on synthetic stage sizes: no tracing, no model."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import gpu_table as gt  # noqa: E402

GiB = gt.GiB
FP16_FULL, FP8_FULL, FP16_PARTIAL = gt.UNET_SETTINGS


def decode(chunk: int) -> gt.StageNeed:
    """A decoder of 0.2 GiB whose activations grow 0.2 GiB a frame (memory_required a little above)."""
    return gt.StageNeed(int(0.2 * GiB), int(0.2 * GiB * chunk), int(0.22 * GiB * chunk))


PARAMS = 1_500_000_000  # 2.79 GiB in fp16, 1.40 in fp8
NEEDS = gt.Needs(
    encode=gt.StageNeed(int(1.4 * GiB), int(0.6 * GiB), int(0.65 * GiB)),
    unet=gt.StageNeed(2 * PARAMS, int(1.9 * GiB), int(2.1 * GiB)),
    decode=decode,
    unet_params=PARAMS,
    unet_tensors=700,
    largest_layer_params=30_000_000,
    chunk=14,
    frames=25,
)


def full_fp16_card() -> float:
    """GiB the fp16 full load needs: context + reserve + weights + memory_required."""
    return (gt.CUDA_CONTEXT + gt.COMFY_RESERVE_LINUX + NEEDS.unet.weights + NEEDS.unet.requested) / GiB


def test_a_large_card_takes_the_defaults() -> None:
    p = gt.plan(NEEDS, 12)
    assert p.fits and p.unet == FP16_FULL and p.chunk == 14
    assert p.streamed_per_call == 0 and p.resident_unet == NEEDS.unet.weights


def test_too_small_for_fp16_takes_fp8_then_a_partial_load() -> None:
    edge = full_fp16_card()
    assert gt.plan(NEEDS, edge + 0.01).unet == FP16_FULL
    fp8 = gt.plan(NEEDS, edge - 0.01)
    assert fp8.unet == FP8_FULL and fp8.resident_unet == NEEDS.unet_params  # one byte a parameter
    partial = gt.plan(NEEDS, edge - 1.5)
    assert partial.unet == FP16_PARTIAL
    assert 0 < partial.resident_unet < NEEDS.unet.weights
    assert partial.resident_unet + partial.streamed_per_call == NEEDS.unet.weights


def test_exact_first_prefers_a_partial_fp16_load_to_fp8() -> None:
    assert gt.plan(NEEDS, full_fp16_card() - 0.01, order=gt.EXACT_FIRST).unet == FP16_PARTIAL


def test_a_card_too_small_for_the_default_chunk_decodes_fewer_frames() -> None:
    p = gt.plan(NEEDS, 4.0)
    assert p.fits and p.chunk is not None and p.chunk < 14
    room = gt.budget(4 * GiB)
    assert decode(p.chunk).weights + decode(p.chunk).requested <= room  # this chunk fits
    assert decode(p.chunk + 1).weights + decode(p.chunk + 1).requested > room  # the next one does not


def test_the_chosen_settings_stay_within_the_card_and_never_get_heavier_on_a_bigger_card() -> None:
    previous: gt.Plan | None = None
    cards = [2 + 0.125 * i for i in range(8 * 30)]
    fitted = 0
    for card in cards:
        p = gt.plan(NEEDS, card)
        if p.fits:
            fitted += 1
            assert p.peak + gt.COMFY_RESERVE_LINUX <= card * GiB, (card, p)
            if previous is not None and previous.fits:
                assert p.unet is not None and previous.unet is not None and previous.chunk is not None
                assert gt.UNET_SETTINGS.index(p.unet) <= gt.UNET_SETTINGS.index(previous.unet), (card, p)
                assert p.chunk is not None and p.chunk >= previous.chunk, (card, p)
        else:
            assert previous is None or not previous.fits, f"{card} GiB does not fit but a smaller card did"
        previous = p
    assert 0 < fitted < len(cards)  # some cards too small, the rest fit


def test_a_card_that_cannot_hold_the_encoders_does_not_fit() -> None:
    p = gt.plan(NEEDS, 2.0)
    assert not p.fits


def test_smallest_card_agrees_with_the_plan() -> None:
    for setting in gt.UNET_SETTINGS:
        card = gt.smallest_card(NEEDS, setting, 14)
        assert gt.unet_fits(NEEDS, setting, int(card * GiB)).fits
        assert not gt.unet_fits(NEEDS, setting, int((card - 0.25) * GiB)).fits or not gt.stage_fits(
            NEEDS.decode(14), int((card - 0.25) * GiB)).fits or not gt.stage_fits(
            NEEDS.encode, int((card - 0.25) * GiB)).fits
    assert gt.smallest_card(NEEDS, FP16_PARTIAL, 14) <= gt.smallest_card(NEEDS, FP8_FULL, 14) \
        <= gt.smallest_card(NEEDS, FP16_FULL, 14)


def test_windows_reserves_more() -> None:
    assert gt.comfy_reserve(8 * GiB, windows=True) == 600 * gt.MiB
    assert gt.comfy_reserve(24 * GiB, windows=True) == 700 * gt.MiB
    assert gt.budget(8 * GiB, windows=True) < gt.budget(8 * GiB)


def test_a_partial_load_and_fp8_weights_cost_time() -> None:
    seconds = {"image_encoder": 0.1, "vae_encoder": 0.2, "unet_step": 2.0, "decode_chunk/14": 3.0,
               "decode_chunk/11": 2.5}
    full = gt.plan(NEEDS, 12)
    base = gt.plan_seconds(full, seconds, NEEDS, device="rtx_3060_12gb", steps=30, calibrated=True)
    assert base["total"] == pytest.approx(0.1 + 0.2 + 30 * 2.0 + 3.0 + 2.5)
    partial = gt.plan(NEEDS, full_fp16_card() - 1.5)
    assert partial.unet == FP16_PARTIAL
    stream = partial.streamed_per_call * 30 / gt.HOST_LINKS["rtx_3060_12gb"].bytes_per_s
    # at a 4.0 x16 link's ~25 GB/s
    assert gt.HOST_LINKS["rtx_3060_12gb"].bytes_per_s == pytest.approx(25e9, rel=0.01)
    timed = gt.plan_seconds(partial, seconds | {f"decode_chunk/{c}": 1.0 for c in range(1, 15)}, NEEDS,
                            device="rtx_3060_12gb", steps=30, calibrated=True)
    assert timed["stream"] == pytest.approx(stream) and timed["stream"] > 0
    fp8 = gt.plan(NEEDS, full_fp16_card() - 0.01)
    cast = gt.plan_seconds(fp8, seconds, NEEDS, device="rtx_3060_12gb", steps=30, calibrated=True)
    assert cast["fp8_cast"] > 0 and cast["total"] > base["total"]


def test_every_card_has_a_device_model_and_a_host_link() -> None:
    for _, device in gt.CARDS:
        gt.tm.resolve_device(device)
        assert device in gt.HOST_LINKS and device in gt.tm.ATTAINABLE


def test_the_table_renders_a_row_per_card() -> None:
    import torch

    def op(flops: int) -> list[gt.tm.Op]:
        return [gt.tm.Op("aten::mm", "gemm", flops, 10**6, torch.float16)]

    traces = {"image_encoder": op(10**9), "vae_encoder": op(10**10), "unet_step": op(10**13),
              **{f"decode_chunk/{c}": op(c * 10**11) for c in range(1, 15)}}
    cards = ((2, "rtx_2060"), (4.25, "rtx_2060"), (5, "rtx_4060"), (12, "rtx_3060_12gb"))
    rows = gt.table_rows(NEEDS, traces, steps=30, cards=cards)
    lines = gt.markdown("tiny", rows, NEEDS) + gt.notes(NEEDS) + gt.common_notes(None, cards)
    table = [line for line in lines if line.startswith("| ") and "GB |" in line]
    assert len(table) == len(cards)
    assert "does not fit" in table[0] and "partial" in table[1] and "fp8_e4m3fn" in table[2]
    assert "| fp16 | full | 14 (default) |" in table[3]
    assert rows[3]["calibrated"]["total"] > rows[3]["pure_peak"]["total"]
