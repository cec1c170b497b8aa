"""Which GPU, which settings: the lightest settings of the pack that fit each card size, modelled.

    python bench/gpu_table.py                            # SVD-XT 1.1 1024x576x25 and SV3D_p 576x576x21 (minutes)
    python bench/gpu_table.py --preset sv3d_p --json out.json
    python bench/gpu_table.py --windows                  # ComfyUI's larger reserve on Windows

Settings the pack offers in ComfyUI, each with what it costs:
  UNet weights  fp16, or fp8_e4m3fn (StableVideoCheckpointLoader's weight_dtype): the UNet's resident weights
                halve, compute stays fp16 (each layer is cast at each call), the frames differ slightly.
  UNet load     full, or partial (ComfyUI's low-VRAM mode, chosen by ComfyUI when the weights do not fit):
                part of the weights resident, the rest copied over PCIe at every UNet call; frames bit-identical.
  decode chunk  14, the reference's (StableVideoDecode's frames_per_chunk), or smaller: the frames decoded
                together, which mix in time, so a smaller chunk changes the video.
For each card the UNet takes the first of fp16 full, fp8 full, fp16 partial that fits (fp8 partial never
comes up: fp16 partial fits wherever it does), and the decoder the largest chunk that fits. The two choices
are independent: each node asks ComfyUI's load_models_gpu for its own models with its own memory_required,
and ComfyUI offloads the others first (the UNet while the VAE decodes, and the reverse), so a run's peak is
the largest stage's, not their sum:

    stage    models held                   activations (bench/memory.py's count)   memory_required (svd_core.memory)
    encode   CLIP vision + VAE, one call   the larger of CLIP's and the VAE encoder's the larger of the two estimates
    unet     the UNet's resident part      one guided step, cond + uncond in a batch  unet_step_bytes
    decode   VAE                           one decode chunk                           decode_bytes

A stage fits when ComfyUI would load it as chosen: resident weights + max(0.8 GiB, memory_required, the counted
activations + any weight-cast buffer) + ComfyUI's reserve + the CUDA context <= the card (`stage_fits`). The
peak printed is what the process would hold at its largest stage: CUDA context + resident weights + counted
activations (+ cast buffer); the reserve is headroom ComfyUI keeps for other programs, not memory it uses.

Times come from bench/time_model.py (roofline per traced kernel, calibrated and pure peak) on one real card of
each size, plus, for a partial load, the UNet bytes not resident copied host -> GPU at every UNet call at the
card's effective PCIe bandwidth (no overlap with compute: an upper bound), and for fp8 weights the cast of
every UNet weight at every call (read 1 byte, write 2, at the card's memory-bound rate, one launch per tensor).
Loading the weights from disk or host RAM once per run is not counted, as in the time model.

Every figure is modelled, none measured. To measure on a card: `bash bench/bench_gpu.sh` (each stage's time
and torch.cuda.max_memory_allocated), and `nvidia-smi --query-gpu=memory.used --format=csv -lms 200` beside a
ComfyUI run for the whole process (context and allocator cache included).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory as memory_model  # noqa: E402
import svd_core  # noqa: E402
import time_model as tm  # noqa: E402
from memory import Work  # noqa: E402

log = logging.getLogger("gpu_table")
GiB = 2**30
MiB = 2**20

# --- what sits beside the model on the card -------------------------------------------------------------------

# The CUDA context of a PyTorch process: 287,047,680 bytes after one tensor op with lazy module loading, PyTorch's
# default since 1.13 (https://github.com/pytorch/pytorch/pull/86509, its description: total - free from
# cudaMemGetInfo); "around 400MB if CUDA >= 11.7 is used and lazy module loading enabled" (PyTorch's ptrblck,
# https://github.com/pytorch/pytorch/issues/109888). cuBLAS and cuDNN handles, their workspaces and the kernels
# a UNet and a VAE load on first use add to that; 0.5 GiB is taken, the upper end.
CUDA_CONTEXT = GiB // 2
# ComfyUI 0.3.64, comfy/model_management.py: EXTRA_RESERVED_VRAM = 400 * 1024 * 1024, 600 MiB on Windows and
# another 100 MiB there on cards of more than 15 GiB ("Windows is higher because of the shared vram issue");
# minimum_inference_memory() = 0.8 GiB + that reserve; load_models_gpu keeps max(minimum_inference_memory,
# memory_required + reserve) free beside the weights, else loads them partially (lowvram_model_memory = free
# minus that, at least 128 MiB).
COMFY_RESERVE_LINUX = 400 * MiB
COMFY_RESERVE_WINDOWS = 600 * MiB
COMFY_RESERVE_WINDOWS_LARGE = 100 * MiB  # added on cards of more than 15 GiB (total_vram > 15 * 1024 MiB)
COMFY_MIN_INFERENCE = int(0.8 * GiB)
COMFY_MIN_PARTIAL = 128 * MiB

# --- the host link, for a partial load -----------------------------------------------------------------------

# PCIe per lane and direction: 8 GT/s (3.0), 16 GT/s (4.0), 32 GT/s (5.0), all 128b/130b encoded (PCI-SIG,
# https://pcisig.com/specifications : PCIe 3.0 / 4.0 / 5.0 base specifications), so 0.985 / 1.969 / 3.938 GB/s
# per lane. Measured host -> GPU copies reach less: 25 GB/s on a 4.0 x16 A100, 12 GB/s on a 3.0 x16 V100 (the
# BaM system's measured peaks, https://github.com/ZaidQureshi/bam/issues/54 , "it is measured peak"), about 0.79
# of the link. Pinned host memory assumed; pageable copies are slower still.
PCIE_GBPS_PER_LANE = {3: 0.985e9, 4: 1.969e9, 5: 3.938e9}
PCIE_EFFECTIVE = 25.0 / 31.5


@dataclass(frozen=True)
class HostLink:
    generation: int
    lanes: int
    source: str

    @property
    def bytes_per_s(self) -> float:
        return PCIE_GBPS_PER_LANE[self.generation] * self.lanes * PCIE_EFFECTIVE


HOST_LINKS: dict[str, HostLink] = {
    "rtx_2060": HostLink(3, 16, "Turing GeForce cards are PCIe 3.0 x16 (RTX 20 series spec pages: PCIe 3.0)"),
    "rtx_4060": HostLink(4, 8, "PCIe Gen4 x8 (https://www.guru3d.com/story/geforce-rtx-4060-ti-gpu-pictured/ table)"),
    "rtx_3060_12gb": HostLink(4, 16, "PCIe Gen4 x16 (the same guru3d table)"),
    "rtx_4060_ti_16gb": HostLink(4, 8, "PCIe Gen4 x8 (the same guru3d table)"),
    "rtx_4090": HostLink(4, 16, "RTX 4090 spec page: PCIe Gen 4, x16 slot"),
    "a100_80gb_sxm4": HostLink(4, 16, "A100 datasheet: PCIe Gen4 64 GB/s (both directions, x16)"),
    "a100_40gb_sxm4": HostLink(4, 16, "A100 datasheet: PCIe Gen4 64 GB/s (both directions, x16)"),
    "h100_sxm": HostLink(5, 16, "H100 datasheet: PCIe Gen5 128 GB/s (both directions, x16)"),
    "h100_pcie": HostLink(5, 16, "H100 datasheet: PCIe Gen5 128 GB/s (both directions, x16)"),
}

# One real card per size; its memory in GiB as the card's "GB" (GDDR and HBM sizes are powers of two: nvidia-smi
# shows an 8 GB card as 8188 MiB or so, the driver keeping a few MiB).
CARDS: tuple[tuple[float, str], ...] = ((6, "rtx_2060"), (8, "rtx_4060"), (12, "rtx_3060_12gb"),
                                      (16, "rtx_4060_ti_16gb"), (24, "rtx_4090"), (80, "a100_80gb_sxm4"))


# --- the stages' needs ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageNeed:
    """Bytes of one stage: its models' weights (fp16 for the UNet), the counted activation peak, and what the node
    asks ComfyUI for (memory_required)."""

    weights: int
    activations: int
    requested: int


@dataclass(frozen=True)
class Needs:
    """Every stage of one preset at one size; `decode(chunk)` for any chunk (counted on demand)."""

    encode: StageNeed
    unet: StageNeed
    decode: Callable[[int], StageNeed]
    unet_params: int
    unet_tensors: int  # parameter tensors: one cast kernel each with fp8 weights
    largest_layer_params: int  # weight + bias of the largest UNet layer: the buffer a cast or copy holds
    chunk: int = 14  # the preset's decode chunk, tried first
    frames: int = 25


@dataclass(frozen=True, order=True)
class UNetSetting:
    weights: str  # "fp16" or "fp8_e4m3fn"
    load: str  # "full" or "partial"

    @property
    def bytes_per_param(self) -> int:
        return 1 if self.weights == "fp8_e4m3fn" else 2


# lightest on quality first: fp8 changes the frames a little; a partial load keeps them bit for bit but copies
# weights over PCIe at every call (ranked after fp8 by the order; `--exact-first` swaps them)
UNET_SETTINGS = (UNetSetting("fp16", "full"), UNetSetting("fp8_e4m3fn", "full"), UNetSetting("fp16", "partial"))
EXACT_FIRST = (UNetSetting("fp16", "full"), UNetSetting("fp16", "partial"), UNetSetting("fp8_e4m3fn", "full"))


def comfy_reserve(card_bytes: int, windows: bool = False) -> int:
    """ComfyUI's EXTRA_RESERVED_VRAM for a card of this size (comfy/model_management.py)."""
    if not windows:
        return COMFY_RESERVE_LINUX
    return COMFY_RESERVE_WINDOWS + (COMFY_RESERVE_WINDOWS_LARGE if card_bytes > 15 * GiB else 0)


def budget(card_bytes: int, windows: bool = False) -> int:
    """What ComfyUI may fill: the card less the CUDA context and ComfyUI's reserve."""
    return card_bytes - CUDA_CONTEXT - comfy_reserve(card_bytes, windows)


def working_memory(need: StageNeed, extra: int = 0) -> int:
    """What ComfyUI keeps free beside the weights (its minimum, or memory_required) or the stage really uses,
    whichever is larger; `extra`: a cast buffer on top of the counted activations."""
    return max(COMFY_MIN_INFERENCE, need.requested, need.activations + extra)


@dataclass(frozen=True)
class StagePlan:
    """One stage as loaded: resident weights, bytes it holds at its peak (context excluded), bytes copied in per
    UNet call (partial load), and whether it fits."""

    resident: int
    peak: int
    streamed: int
    fits: bool


def stage_fits(need: StageNeed, card_bytes: int, *, windows: bool = False) -> StagePlan:
    """A stage whose models load fully (the encoders, the decoder)."""
    room = budget(card_bytes, windows)
    return StagePlan(need.weights, need.weights + need.activations, 0,
                     need.weights + working_memory(need) <= room)


def unet_fits(needs: Needs, setting: UNetSetting, card_bytes: int, *, windows: bool = False) -> StagePlan:
    """The UNet stage in one setting: full load as ComfyUI decides it, or its partial load (resident = free minus
    what it keeps for the step, at least 128 MiB), with the buffer a layer's cast or copy takes."""
    weights = needs.unet_params * setting.bytes_per_param
    cast = needs.largest_layer_params * (2 if setting.weights != "fp16" else 0)
    if setting.load == "partial":
        cast += needs.largest_layer_params * setting.bytes_per_param  # the copied-in layer before its cast
    need = replace(needs.unet, weights=weights)
    room = budget(card_bytes, windows)
    keep = working_memory(need, cast)
    if setting.load == "full":
        return StagePlan(weights, weights + need.activations + cast, 0, weights + keep <= room)
    resident = min(weights, max(COMFY_MIN_PARTIAL, room - keep))
    fits = resident < weights and resident + need.activations + cast <= room
    return StagePlan(resident, resident + need.activations + cast, weights - resident, fits)


@dataclass(frozen=True)
class Plan:
    """The settings chosen for one card, or fits=False (then the others describe the nearest miss)."""

    card_gib: float
    fits: bool
    unet: UNetSetting | None
    chunk: int | None
    peak: int  # bytes: context + the largest stage
    largest_stage: str
    resident_unet: int
    streamed_per_call: int
    stages: dict[str, int] = field(default_factory=dict)  # each stage's peak, context excluded


def plan(needs: Needs, card_gib: float, *, windows: bool = False,
         order: Sequence[UNetSetting] = UNET_SETTINGS) -> Plan:
    """The lightest settings that fit a card of `card_gib` GiB: the first UNet setting of `order` that fits and
    the largest decode chunk (from the preset's down to 1) that fits."""
    card = int(card_gib * GiB)
    encode = stage_fits(needs.encode, card, windows=windows)
    unet = next(((s, p) for s in order if (p := unet_fits(needs, s, card, windows=windows)).fits), None)
    decode = None
    for chunk in range(min(needs.chunk, needs.frames), 0, -1):
        d = stage_fits(needs.decode(chunk), card, windows=windows)
        if d.fits:
            decode = (chunk, d)
            break
    fits = encode.fits and unet is not None and decode is not None
    stages = {"encode": encode.peak}
    if unet is not None:
        stages["unet"] = unet[1].peak
    if decode is not None:
        stages["decode"] = decode[1].peak
    largest = max(stages, key=lambda s: stages[s])
    return Plan(card_gib, fits, unet[0] if unet else None, decode[0] if decode else None,
                CUDA_CONTEXT + stages[largest], largest, unet[1].resident if unet else 0,
                unet[1].streamed if unet else 0, stages)


def smallest_card(needs: Needs, setting: UNetSetting, chunk: int, *, windows: bool = False,
                  step_gib: float = 0.25) -> float:
    """The smallest card (in steps of `step_gib` GiB) on which this UNet setting and this chunk both fit."""
    card_gib = step_gib
    while card_gib < 1024:
        card = int(card_gib * GiB)
        if (unet_fits(needs, setting, card, windows=windows).fits
                and stage_fits(needs.decode(chunk), card, windows=windows).fits
                and stage_fits(needs.encode, card, windows=windows).fits):
            return card_gib
        card_gib += step_gib
    raise ValueError(f"{setting} with decode chunk {chunk} fits no card up to 1024 GiB")


# --- time --------------------------------------------------------------------------------------------------------

def plan_seconds(p: Plan, stage_seconds: dict[str, float], needs: Needs, *, device: str, steps: int,
                 calibrated: bool) -> dict[str, float]:
    """End to end (bench/time_model.end_to_end) at the plan's chunk, plus the partial load's copies and fp8's casts,
    one guided UNet call per step (Euler)."""
    if p.unet is None or p.chunk is None:
        raise ValueError(f"no settings fit a {p.card_gib:g} GiB card: nothing to time")
    out = tm.end_to_end(stage_seconds, steps=steps, frames=needs.frames, chunk=p.chunk)
    link = HOST_LINKS[device]
    out["stream"] = steps * p.streamed_per_call / link.bytes_per_s
    out["fp8_cast"] = 0.0
    if p.unet.weights != "fp16":
        gpu = tm.resolve_device(device)
        fraction = tm.attainable_for(device, calibrated).memory
        per_call = needs.unet_params * (p.unet.bytes_per_param + 2) / (gpu.bandwidth * fraction)
        out["fp8_cast"] = steps * (per_call + needs.unet_tensors * tm.LAUNCH_S)
    out["total"] += out["stream"] + out["fp8_cast"]
    return out


# --- the needs of a preset, counted -------------------------------------------------------------------------------

def count_needs(config: svd_core.SVDConfig, work: Work) -> Needs:
    """The stages' bytes at full size: bench/memory.py's count on fake CUDA tensors (minutes on 2 cores), the
    formulas the nodes pass to ComfyUI, and the UNet's parameters from a meta build."""
    counted = memory_model.model(config, work)["svd_core"]
    est = memory_model.formula(config, work)
    decoded: dict[int, StageNeed] = {}

    def stage(counts: dict[str, int], requested: int) -> StageNeed:
        return StageNeed(counts["weights"], counts["activations"], requested)

    decoded[work.chunk] = stage(counted["decode_chunk"], est["decode_chunk"])

    def decode(chunk: int) -> StageNeed:
        if chunk not in decoded:
            w = replace(work, chunk=chunk)
            log.debug("counting a decode chunk of %d frames", chunk)
            c = memory_model.model(config, w, stages=("decode_chunk",))["svd_core"]["decode_chunk"]
            decoded[chunk] = stage(c, memory_model.formula(config, w)["decode_chunk"])
        return decoded[chunk]

    clip, vae = counted["image_encoder"], counted["vae_encoder"]
    encode = StageNeed(clip["weights"] + vae["weights"], max(clip["activations"], vae["activations"]),
                       max(est["image_encoder"], est["vae_encoder"]))
    with torch.device("meta"):
        unet = svd_core.UNet(config.unet)
    params = [p.numel() for p in unet.parameters()]
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in unet.modules())
    del unet
    gc.collect()
    return Needs(encode=encode, unet=stage(counted["unet_step"], est["unet_step"]), decode=decode,
                 unet_params=sum(params), unet_tensors=len(params), largest_layer_params=largest,
                 chunk=work.chunk, frames=work.frames)


# --- the table -------------------------------------------------------------------------------------------------------

STAGE_NAMES = {"encode": "encoders", "unet": "UNet step", "decode": "decode"}


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def table_rows(needs: Needs, traces: tm.Traces, *, steps: int, cards: Sequence[tuple[float, str]],
               windows: bool = False, order: Sequence[UNetSetting] = UNET_SETTINGS,
               trace_chunk: Callable[[int], tm.Traces] | None = None) -> list[dict[str, Any]]:
    """One row per card: the plan, and its modelled seconds (calibrated and pure peak) on the card's stand-in."""
    rows = []
    for card_gib, device in cards:
        p = plan(needs, card_gib, windows=windows, order=order)
        row: dict[str, Any] = {"card_gib": card_gib, "device": device, "device_name": tm.resolve_device(device).name,
                               "plan": asdict(p)}
        if p.fits and p.chunk is not None:
            missing = {c for c in tm.chunk_sizes(needs.frames, p.chunk) if f"decode_chunk/{c}" not in traces}
            if missing and trace_chunk is not None:
                for c in sorted(missing):
                    traces.update(trace_chunk(c))
            for mode, calibrated in (("calibrated", True), ("pure_peak", False)):
                seconds = tm.predict(device, traces, calibrated=calibrated)
                row[mode] = plan_seconds(p, seconds, needs, device=device, steps=steps, calibrated=calibrated)
        rows.append(row)
    return rows


def markdown(title: str, rows: Sequence[dict[str, Any]], needs: Needs) -> list[str]:
    """The Markdown table of one preset."""
    lines = [f"**{title}** (modelled)", "",
             "| card | modelled on | UNet weights | UNet load | decode chunk | peak GiB | largest stage "
             "| time s, calibrated | time s, pure peak |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        p = r["plan"]
        if not p["fits"]:
            lines.append(f"| {r['card_gib']} GB | {r['device_name']} | does not fit | | | | | | |")
            continue
        unet = p["unet"]
        weights = unet["weights"] + (f" (casts +{r['calibrated']['fp8_cast']:.1f} s)" if unet["weights"] != "fp16"
                                     else "")
        load = "full" if unet["load"] == "full" else (
            f"partial: {_gib(p['resident_unet'])} GiB resident, {_gib(p['streamed_per_call'])} GiB over PCIe "
            f"per step (+{r['calibrated']['stream']:.1f} s)")
        chunk = f"{p['chunk']}" + (" (default)" if p["chunk"] == needs.chunk else "")
        lines.append(f"| {r['card_gib']} GB | {r['device_name']} | {weights} | {load} | {chunk} "
                     f"| {_gib(p['peak'])} | {STAGE_NAMES[p['largest_stage']]} "
                     f"| {r['calibrated']['total']:.0f} | {r['pure_peak']['total']:.0f} |")
    return lines


def notes(needs: Needs, *, windows: bool = False) -> list[str]:
    """Under a preset's table: its stages' sizes and the smallest card of each UNet setting."""
    smallest = {f"{s.weights} {s.load}": smallest_card(needs, s, needs.chunk, windows=windows)
                for s in UNET_SETTINGS}
    reserve = comfy_reserve(8 * GiB, windows) / MiB
    lines = [
        "",
        f"Stage peaks (weights + counted activations, GiB): encoders {_gib(needs.encode.weights)} + "
        f"{_gib(needs.encode.activations)}, UNet step {_gib(needs.unet.weights)} + {_gib(needs.unet.activations)} "
        f"(fp8: {_gib(needs.unet_params)} + the same), decode chunk {needs.chunk} "
        f"{_gib(needs.decode(needs.chunk).weights)} + {_gib(needs.decode(needs.chunk).activations)}. "
        f"Peak = these + {CUDA_CONTEXT / GiB:.1f} GiB CUDA context; a setting fits when ComfyUI would load it so with "
        f"its {reserve:.0f} MiB reserve{' (Windows)' if windows else ''} kept free. Smallest card by this model, "
        "decode chunk " + str(needs.chunk) + ": " + ", ".join(f"{k} {v:g} GiB" for k, v in smallest.items()) + ".",
    ]
    return lines


def common_notes(calibration: dict[str, float] | None, cards: Sequence[tuple[float, str]] = CARDS) -> list[str]:
    """Under both tables: what the times are (the calibration), the cards' figures, and how to measure."""
    lines = []
    if calibration:
        c = calibration
        lines.append(
            "Times: bench/time_model.py's roofline of every traced kernel. Calibration: for diffusers on an A100 80GB "
            f"it gives {c['calibrated']:.1f} s calibrated and {c['pure_peak']:.1f} s pure peak against a published "
            f"eager-PyTorch {c['seconds']:.2f} s (onediff PR 514): the calibrated model is "
            f"{1 / c['calibrated_ratio']:.2f}x optimistic, pure peak {1 / c['pure_peak_ratio']:.2f}x; read the "
            "times as ratios between cards. A partial load adds its PCIe copies (pinned memory, no overlap) and fp8 "
            "the casts of its weights.")
    lines.append("Cards modelled: " + "; ".join(
        f"{tm.resolve_device(d).name} {tm.resolve_device(d).tensor_flops / 1e12:.1f} TFLOP/s fp16 (fp32 accumulate), "
        f"{tm.resolve_device(d).bandwidth / 1e9:.0f} GB/s, PCIe {HOST_LINKS[d].generation}.0 x{HOST_LINKS[d].lanes} "
        f"({HOST_LINKS[d].bytes_per_s / 1e9:.1f} GB/s effective)" for _, d in cards) + " (datasheet figures, "
        "sources in bench/time_model.py; the RTX 2060 has no FlashAttention-2, its attention rate is assumed).")
    lines.append("How to measure for real: `bash bench/bench_gpu.sh` on the card (each stage's time and "
                 "torch.cuda.max_memory_allocated), and `nvidia-smi --query-gpu=memory.used --format=csv -lms 200` "
                 "during a ComfyUI run for the whole process.")
    return lines


def calibrate() -> dict[str, float] | None:
    """bench/time_model.py's calibration against the published eager A100 figure (diffusers traced, ~20 s), or
    None when diffusers is not installed."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        log.warning("diffusers not installed: no calibration line")
        return None
    config = svd_core.PRESETS["svd_xt_1_1"]
    published = next(p for p in tm.PUBLISHED if not p.lower_bound)
    traces = tm.trace_stages(config, Work(), "diffusers", chunks=(published.chunk,))
    row = next(r for r in tm.calibration(traces) if not r["lower_bound"])
    return {k: row[k] for k in ("seconds", "calibrated", "pure_peak", "calibrated_ratio", "pure_peak_ratio")}


PRESETS = ("svd_xt_1_1", "sv3d_p")


def run_preset(name: str, *, cards: Sequence[tuple[float, str]], windows: bool,
               order: Sequence[UNetSetting]) -> tuple[Needs, list[dict[str, Any]], int]:
    """Count, trace once and plan one preset at its own size, steps and decode chunk, fp16 compute."""
    config = svd_core.PRESETS[name]
    s = config.sampling
    if s.sampler != "euler":
        raise ValueError(f"preset {name!r} samples with {s.sampler!r}: the table counts one UNet call per step "
                         "(euler)")
    work = Work(width=s.width, height=s.height, frames=s.num_frames, chunk=min(s.decode_chunk_size, s.num_frames))
    log.debug("%s: counting memory", name)
    needs = count_needs(config, work)
    log.debug("%s: tracing kernels", name)
    traces = tm.trace_stages(config, work, "ours")

    def trace_chunk(chunk: int) -> tm.Traces:
        return tm.trace_stages(config, replace(work, chunk=chunk), "ours", chunks=(chunk,), stages=("decode_chunk",))

    rows = table_rows(needs, traces, steps=s.num_steps, cards=cards, windows=windows, order=order,
                      trace_chunk=trace_chunk)
    return needs, rows, s.num_steps


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=PRESETS, default=None,
                    help="default: both, svd_xt_1_1 (1024x576x25) and sv3d_p (576x576x21)")
    ap.add_argument("--windows", action="store_true", help="ComfyUI's Windows reserve (600 MiB, 700 on > 15 GiB)")
    ap.add_argument("--exact-first", action="store_true",
                    help="rank a partial fp16 load (frames bit-identical, slower) before fp8 weights")
    ap.add_argument("--no-calibration", action="store_true", help="skip tracing diffusers for the calibration line")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    order = EXACT_FIRST if args.exact_first else UNET_SETTINGS
    calibration = None if args.no_calibration else calibrate()
    output: dict[str, Any] = {
        "constants": {"cuda_context": CUDA_CONTEXT, "comfy_reserve": comfy_reserve(8 * GiB, args.windows),
                      "comfy_min_inference": COMFY_MIN_INFERENCE, "comfy_min_partial": COMFY_MIN_PARTIAL,
                      "pcie_effective": PCIE_EFFECTIVE, "windows": args.windows},
        "order": [asdict(s) for s in order], "calibration": calibration, "presets": {}}
    for name in args.preset or PRESETS:
        config = svd_core.PRESETS[name]
        s = config.sampling
        needs, rows, steps = run_preset(name, cards=CARDS, windows=args.windows, order=order)
        title = (f"{name}: {s.width}x{s.height}, {s.num_frames} frames, {steps} steps, fp16 compute, "
                 f"ComfyUI on {'Windows' if args.windows else 'Linux'}")
        for line in markdown(title, rows, needs) + notes(needs, windows=args.windows):
            log.info("%s", line)
        log.info("")
        output["presets"][name] = {
            "work": {"width": s.width, "height": s.height, "frames": s.num_frames, "steps": steps,
                     "chunk": needs.chunk},
            "needs": {"encode": asdict(needs.encode), "unet": asdict(needs.unet),
                      "decode": asdict(needs.decode(needs.chunk)), "unet_params": needs.unet_params,
                      "unet_tensors": needs.unet_tensors,
                      "largest_layer_params": needs.largest_layer_params},
            "rows": rows}
    for line in common_notes(calibration, CARDS):
        log.info("%s", line)
    output["devices"] = {d: {**asdict(tm.resolve_device(d)), "host_link": asdict(HOST_LINKS[d])} for _, d in CARDS}
    if args.json:
        args.json.write_text(json.dumps(output, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
