"""One GPU, one process, one table: every stage of SVD measured, beside diffusers', the time model and the
memory model.

    python bench/gpu_report.py                     # full-size SVD-XT 1.1, 1024x576, 25 frames, fp16, cuda
    python bench/gpu_report.py --device cpu --model tiny --width 64 --height 64 --frames 4 --steps 2  # smoke run

Rows: image encoder, VAE encoder, one guided UNet step eager and compiled (svd_core.speed.compile_models:
CUDA graphs on a GPU), one decode chunk, and end to end (svd_core.generate: encoders, --steps sampling steps,
decode in chunks of --chunk; steps and chunk default to the preset's sampling settings, SVD-XT 1.1: 30 steps,
chunk 14). Columns: our median seconds, diffusers' (the same stage through its modules, end to end through
StableVideoDiffusionPipeline with the same steps and chunk), bench/time_model.py's calibrated prediction for
ours on the modelled device closest to this GPU and measured / predicted, the activation peak as
bench/memory.py counts it beside torch.cuda.max_memory_allocated above what was allocated before (weights
excluded), ours and diffusers', and the attention kernel our run dispatched (torch.profiler).

Weights are random (time does not depend on the values; bench/compare.py checks that both implementations
agree on the same weights). The stages run through bench/memory.py's functions as bench/gpu_stages.py runs
them; the models are built once per implementation. The time and memory models (fake tensors, CPU only) run in
a child process while the GPU measures (on a CPU, afterwards). A wall-clock guard (--budget) skips a section
(ours end to end, the compiled step, diffusers' stages, diffusers end to end) when it would end past the
budget by what the stages already measured; a section that fails is logged and listed, and the table still
comes (exit status 1).
The table is also written as JSON (--json, else $BENCH_GPU_JSON, else $OUT/bench_gpu.json, else
./bench_gpu.json).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import memory as memory_model  # noqa: E402
import svd_core  # noqa: E402
import svd_core.speed  # noqa: E402
import time_model  # noqa: E402
from compare import add_gpu_bench_arguments, make_config  # noqa: E402
from gpu_speed import KERNELS, fill_  # noqa: E402
from gpu_stages import run_stage  # noqa: E402

log = logging.getLogger("gpu_report")
GiB = 2**30
# CUDA kernel names -> attention kernel, for runs whose aten operators the profiler does not see (a replayed
# CUDA graph launches kernels without dispatching operators)
CUDA_KERNEL_NAMES = (("flash_fwd", "flash"), ("fmha_cutlass", "efficient"), ("sdpa", "cudnn"))
# name fragment -> time_model.DEVICES key, the first that matches (a 4060 Ti before a 4060)
GEFORCE = (("4090", "rtx_4090"), ("4060 TI", "rtx_4060_ti_16gb"), ("4060", "rtx_4060"), ("3060", "rtx_3060_12gb"),
           ("2060", "rtx_2060"))
H200_NOTE = ("H200 is not in time_model.DEVICES: predicted for the H100 SXM (same fp16 tensor peak, 989 TFLOP/s "
             "dense; 3.35 TB/s against the H200's 4.8 TB/s, so memory-bound kernels should beat the prediction)")


@dataclass
class Row:
    """One line of the table; None where a figure does not apply or was not measured."""

    label: str
    ours_s: float | None = None
    diffusers_s: float | None = None
    model_s: float | None = None
    model_gib: float | None = None
    ours_gib: float | None = None
    diffusers_gib: float | None = None
    attention: str | None = None
    diffusers_attention: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.ours_s / self.model_s if self.ours_s and self.model_s else None


class Clock:
    """Elapsed seconds since the start, per section, and the guard that skips what would not fit."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.sections: dict[str, float] = {}
        self.skipped: list[str] = []
        self.failed: list[str] = []

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def section(self, name: str, *, catch: bool = False) -> Iterator[None]:
        """Times the block; with `catch`, an exception in it is logged and listed instead of ending the run (one
        GPU lease should still give a table)."""
        t0 = time.perf_counter()
        try:
            yield
        except Exception as e:
            if not catch:
                raise
            log.exception("%s failed", name)
            self.failed.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            _free_cuda()
        finally:
            self.sections[name] = time.perf_counter() - t0
            log.info("[%6.1f s] %s: %.1f s", self.elapsed, name, self.sections[name])

    def fits(self, what: str, needed_s: float) -> bool:
        """Whether `what`, expected to take needed_s, ends within the budget; records the skip if not."""
        if self.elapsed + needed_s <= self.budget_s:
            return True
        self.skipped.append(f"{what}: needs ~{needed_s:.0f} s at {self.elapsed:.0f} s of a {self.budget_s:.0f} s "
                            "budget")
        log.info("skipping %s", self.skipped[-1])
        return False


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _gib(peak: float) -> float | None:
    return None if math.isnan(peak) else peak / GiB


def device_model_for(device: str) -> tuple[str, str]:
    """(time_model.DEVICES key, note) for this device: the modelled GPU closest to torch.cuda.get_device_name()."""
    if not device.startswith("cuda"):
        return "h100_sxm", "CPU run: predicted for the H100 SXM, the ratio says nothing"
    name = torch.cuda.get_device_name(torch.device(device))
    upper = name.upper()
    if "H100" in upper or "H200" in upper:
        if "PCIE" in upper:
            return "h100_pcie", ""
        return "h100_sxm", H200_NOTE if "H200" in upper else ""
    if "A100" in upper:
        return ("a100_80gb_sxm4" if "80G" in upper else "a100_40gb_sxm4"), ""
    for key, model in GEFORCE:
        if key in upper and model in time_model.DEVICES:
            return model, ""
    return "h100_sxm", f"{name} is not modelled: predicted for the H100 SXM, the ratio is only indicative"


def modelled(config: svd_core.SVDConfig, work: memory_model.Work, device_model: str, steps: int,
             fake_device: str) -> dict[str, Any]:
    """The time model's calibrated seconds of ours (per stage, and end to end) and the memory model's activation
    peaks in bytes: fake tensors, no GPU."""
    traces = time_model.trace_stages(config, work, "ours")
    seconds = time_model.predict(device_model, traces)
    total = time_model.end_to_end(seconds, steps=steps, frames=work.frames, chunk=work.chunk)
    counted = memory_model.model(config, work, device=fake_device)["svd_core"]
    return {"seconds": seconds, "end_to_end": total,
            "activations": {s: r["activations"] for s, r in counted.items()}}


def attention_kernels(run: Callable[[], Any], device: str) -> str:
    """The attention kernels one call runs, with counts: from the aten operators it dispatches, else (a replayed
    CUDA graph) from the names of the CUDA kernels it launches."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.inference_mode(), torch.profiler.profile(activities=activities) as prof:
        run()
        _sync(device)
    events = prof.key_averages()
    seen = Counter({KERNELS[e.key]: e.count for e in events if e.key in KERNELS})
    if not seen:
        for e in events:
            kind = next((k for pattern, k in CUDA_KERNEL_NAMES if pattern in e.key.lower()), None)
            if kind is not None:
                seen[f"{kind} (CUDA kernel)"] += e.count
    return ", ".join(f"{k} x{n}" for k, n in seen.most_common()) or "none seen"


def timed_once(run: Callable[[], Any], device: str) -> tuple[float, float]:
    """(seconds, peak bytes above what was allocated before; nan on a CPU) of one call (gpu_stages.run_stage)."""
    r = run_stage(run, device, 1, warmup=0)
    return r["seconds"], r["peak"]


@contextmanager
def warnings_of(logger: str) -> Iterator[list[str]]:
    """The warnings a logger emits inside the block."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logging.getLogger(logger).addHandler(handler)
    try:
        yield seen
    finally:
        logging.getLogger(logger).removeHandler(handler)


def _free_cuda() -> None:
    """Give back what finished work held (it went out of scope)."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _image(work: memory_model.Work) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(work.videos, 3, work.height, work.width, generator=g)


def _whole_s(rows: dict[str, Row], column: str, work: memory_model.Work, steps: int) -> float:
    """What a whole video should take by the stages measured in `column`, and 10 s to spare (for the guard)."""
    def s(key: str) -> float:
        return getattr(rows[key], column) or 0.0

    chunks = len(time_model.chunk_sizes(work.frames, work.chunk))
    return s("image_encoder") + s("vae_encoder") + steps * s("unet_step_eager") + chunks * s("decode_chunk") + 10.0


def measure_ours(config: svd_core.SVDConfig, work: memory_model.Work, device: str, steps: int, repeats: int,
                 rows: dict[str, Row], clock: Clock, compile_s: float | None) -> None:
    """Our stages eager, end to end eager, then the compiled step (the compiled modules stay compiled; None for
    compile_s: no compiled step)."""
    with clock.section("ours: build"):
        parts = memory_model.ours_stages(config, work, device)
        modules = parts["modules"]
        for m in modules.values():
            fill_(m, 0)
        models = svd_core.SVDModels(modules["unet"], modules["image_encoder"], modules["vae"], config)
    runners = parts["runners"]
    keys = {"image_encoder": "image_encoder", "vae_encoder": "vae_encoder", "unet_step": "unet_step_eager",
            "decode_chunk": "decode_chunk"}
    with clock.section("ours: stages, eager"):
        for stage, key in keys.items():
            rows[key].attention = attention_kernels(runners[stage], device)  # also the warm-up
            r = run_stage(runners[stage], device, repeats, warmup=0)
            rows[key].ours_s, rows[key].ours_gib = r["seconds"], _gib(r["peak"])
    if clock.fits("ours end to end", _whole_s(rows, "ours_s", work, steps)):
        with clock.section(f"ours: end to end, {steps} steps", catch=True):
            image = _image(work)

            def whole() -> Any:
                return svd_core.generate(models, image, num_frames=work.frames, num_steps=steps,
                                         decode_chunk_size=work.chunk)

            seconds, peak = timed_once(whole, device)
            rows["end_to_end"].ours_s, rows["end_to_end"].ours_gib = seconds, _gib(peak)
            rows["end_to_end"].notes.append("ours: one run, no warm-up of its own (the stages warmed it)")
    if compile_s is None:
        clock.skipped.append("ours compiled step: not asked for (--compile; on a CPU compiling takes minutes)")
    elif clock.fits("ours compiled step (compiling)", compile_s):
        with clock.section("ours: compile + compiled step", catch=True):
            row = rows["unet_step_compiled"]
            if svd_core.speed.compile_models(models):
                step = runners["unet_step"]
                with warnings_of("svd_core.speed") as fell_back:  # compile_models' eager fallback warns
                    first = [timed_once(step, device) for _ in range(3)]  # compiling, then CUDA-graph recording
                if fell_back:
                    raise RuntimeError(f"compiling failed, the UNet runs eagerly: {fell_back[0]}")
                row.ours_gib = _gib(max(p for _, p in first))
                row.notes.append(f"first 3 calls (compiling, recording) {sum(s for s, _ in first):.1f} s; peak "
                                 "measured over them (a replayed graph allocates nothing)")
                row.attention = attention_kernels(step, device)
                row.ours_s = run_stage(step, device, repeats, warmup=0)["seconds"]
            else:
                clock.skipped.append("ours compiled step: torch.compile does not work here (warning above)")


def diffusers_pipeline(modules: dict[str, Any]) -> Any:
    """StableVideoDiffusionPipeline on these modules, with the reference's scheduler and CLIP preprocessing."""
    import diffusers
    import transformers

    from svd_core.weights.convert.folder import FEATURE_EXTRACTOR_CONFIG, SCHEDULER_CONFIG

    pipe: Any = diffusers.StableVideoDiffusionPipeline(
        vae=modules["vae"], image_encoder=modules["image_encoder"], unet=modules["unet"],
        scheduler=diffusers.EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        feature_extractor=transformers.CLIPImageProcessor(
            **{k: v for k, v in FEATURE_EXTRACTOR_CONFIG.items() if not k.endswith("_type")}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measure_diffusers(config: svd_core.SVDConfig, work: memory_model.Work, device: str, steps: int, repeats: int,
                      rows: dict[str, Row], clock: Clock) -> None:
    """diffusers' stages eager, and its pipeline end to end when that fits."""
    from PIL import Image

    ours = {k: rows[k].ours_s or 0.0 for k in ("image_encoder", "vae_encoder", "unet_step_eager", "decode_chunk")}
    if not clock.fits("diffusers' stages", 20.0 + (repeats + 2) * sum(ours.values())):
        return
    with clock.section("diffusers: build"):
        parts = memory_model.diffusers_stages(config, work, device)
        for m in parts["modules"].values():
            fill_(m, 0)
    keys = {"image_encoder": "image_encoder", "vae_encoder": "vae_encoder", "unet_step": "unet_step_eager",
            "decode_chunk": "decode_chunk"}
    with clock.section("diffusers: stages, eager"):
        for stage, key in keys.items():
            kernels = attention_kernels(parts["runners"][stage], device)  # also the warm-up
            if key == "unet_step_eager":
                rows[key].diffusers_attention = kernels
            r = run_stage(parts["runners"][stage], device, repeats, warmup=0)
            rows[key].diffusers_s, rows[key].diffusers_gib = r["seconds"], _gib(r["peak"])
    if clock.fits("diffusers end to end", _whole_s(rows, "diffusers_s", work, steps)):
        with clock.section(f"diffusers: end to end, {steps} steps", catch=True):
            pipe = diffusers_pipeline(parts["modules"])
            pixels = (_image(work)[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            image = Image.fromarray(pixels)
            s = config.sampling

            def whole() -> Any:
                return pipe(image, height=work.height, width=work.width, num_frames=work.frames,
                            num_inference_steps=steps, min_guidance_scale=s.min_cfg, max_guidance_scale=s.max_cfg,
                            fps=s.fps_id + 1, motion_bucket_id=s.motion_bucket_id, noise_aug_strength=s.cond_aug,
                            decode_chunk_size=work.chunk, generator=torch.Generator().manual_seed(0),
                            output_type="pt").frames

            seconds, peak = timed_once(whole, device)
            rows["end_to_end"].diffusers_s, rows["end_to_end"].diffusers_gib = seconds, _gib(peak)
            rows["end_to_end"].notes.append("diffusers: one run, no warm-up of its own (the stages warmed it)")


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def table(rows: dict[str, Row]) -> list[str]:
    """The table's lines."""
    head = (f"{'':<30}{'ours s':>10}{'diffusers s':>13}{'model s':>10}{'ours/model':>12}{'model GiB':>11}"
            f"{'ours GiB':>10}{'diffusers GiB':>15}  attention (ours)")
    lines = [head]
    for r in rows.values():
        lines.append(f"{r.label:<30}{_cell(r.ours_s, '.4f', 10)}{_cell(r.diffusers_s, '.4f', 13)}"
                     f"{_cell(r.model_s, '.4f', 10)}{_cell(r.ratio, '.2f', 12)}{_cell(r.model_gib, '.2f', 11)}"
                     f"{_cell(r.ours_gib, '.2f', 10)}{_cell(r.diffusers_gib, '.2f', 15)}  {r.attention or '-'}")
    return lines


def json_path(given: Path | None) -> Path:
    if given is not None:
        return given
    if os.environ.get("BENCH_GPU_JSON"):
        return Path(os.environ["BENCH_GPU_JSON"])
    return Path(os.environ.get("OUT") or ".") / "bench_gpu.json"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gpu_bench_arguments(ap)
    ap.add_argument("--dtype", choices=tuple(memory_model.DTYPES), default=None,
                    help="default: fp16 on CUDA, fp32 elsewhere")
    ap.add_argument("--steps", type=int, default=None, help="end-to-end sampling steps (default: the preset's)")
    ap.add_argument("--chunk", type=int, default=None, help="decode chunk (default: the preset's, at most --frames)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per stage, after one profiled warm-up (median; default 3 on CUDA, 1 elsewhere)")
    ap.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                    help="the compiled step (auto: on CUDA only, where it means CUDA graphs)")
    ap.add_argument("--device-model", default="auto",
                    help=f"time model device: auto (from the GPU's name) or one of {sorted(time_model.DEVICES)}")
    ap.add_argument("--budget", type=float, default=450.0,
                    help="wall-clock seconds; sections that would end past it are skipped")
    ap.add_argument("--compile-estimate", type=float, default=180.0,
                    help="seconds the compiled step is expected to take (compiling included), for the guard")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    clock = Clock(args.budget)
    config = make_config(args.model, args.frames, args.width, args.height)
    device = args.device
    dtype_name = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    dtype = memory_model.DTYPES[dtype_name]
    steps = args.steps or config.sampling.num_steps
    repeats = args.repeats or (3 if device.startswith("cuda") else 1)
    compiled = args.compile == "yes" or (args.compile == "auto" and device.startswith("cuda"))
    chunk = args.chunk or min(config.sampling.decode_chunk_size, args.frames)
    if not 1 <= chunk <= args.frames:
        ap.error(f"--chunk must be between 1 and --frames ({args.frames}), got {chunk}")
    work = memory_model.Work(width=args.width, height=args.height, frames=args.frames, chunk=chunk, dtype=dtype,
                             vae_dtype=dtype)
    device_model, device_note = device_model_for(device)
    if args.device_model != "auto":
        device_model, device_note = time_model.ALIASES.get(args.device_model, args.device_model), ""
        time_model.resolve_device(device_model)
    fake_device = "cuda" if device.startswith("cuda") else "cpu"

    rows = {"image_encoder": Row("image encoder"), "vae_encoder": Row("VAE encoder"),
            "unet_step_eager": Row("guided UNet step (eager)"),
            "unet_step_compiled": Row("guided UNet step (compiled)"),
            "decode_chunk": Row(f"decode chunk ({chunk} frames)"),
            "end_to_end": Row(f"end to end ({steps} steps)")}
    # on a GPU the models (CPU work, minutes at full size) run in a child while the GPU measures; on a CPU they
    # would only slow the measurements down, so they run afterwards in this process
    pool = (concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            if device.startswith("cuda") else None)
    future = pool.submit(modelled, config, work, device_model, steps, fake_device) if pool is not None else None
    try:
        with clock.section("ours, all", catch=True):
            measure_ours(config, work, device, steps, repeats, rows, clock,
                         args.compile_estimate if compiled else None)
        _free_cuda()
        if args.peer == "diffusers":
            with clock.section("diffusers, all", catch=True):
                measure_diffusers(config, work, device, steps, repeats, rows, clock)
            _free_cuda()
        m = None
        with clock.section("time and memory models" + (" (waiting for the child)" if future else ""), catch=True):
            m = future.result() if future is not None else modelled(config, work, device_model, steps, fake_device)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if m is not None:
        stages = {"image_encoder": "image_encoder", "vae_encoder": "vae_encoder", "unet_step_eager": "unet_step",
                  "unet_step_compiled": "unet_step", "decode_chunk": "decode_chunk"}
        for key, stage in stages.items():
            seconds_key = f"decode_chunk/{chunk}" if stage == "decode_chunk" else stage
            rows[key].model_s = m["seconds"][seconds_key]
            rows[key].model_gib = m["activations"][stage] / GiB
        rows["end_to_end"].model_s = m["end_to_end"]["total"]
        rows["end_to_end"].model_gib = max(m["activations"].values()) / GiB
        rows["end_to_end"].notes.append("model GiB: the largest stage's activation peak")
        rows["unet_step_compiled"].notes.append("model: the eager step's kernels (the model knows no graphs)")

    where = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    sampling = config.sampling
    settings = {"model": config.name, "sampling": asdict(sampling), "device": where, "torch": torch.__version__,
                "width": args.width, "height": args.height, "frames": args.frames, "steps": steps, "chunk": chunk,
                "dtype": dtype_name, "device_model": device_model, "device_model_note": device_note,
                "repeats": repeats, "budget_s": args.budget}
    log.info("")
    log.info("%s (random weights), %s, torch %s; %dx%dx%d, %s", config.name, where, torch.__version__, args.width,
             args.height, args.frames, dtype_name)
    steps_from = f"the preset's, {config.name}" if args.steps is None else "--steps"
    log.info("end to end: %d steps (%s), decode chunk %d; the preset's %s sampler, %s guidance %g-%g, fps_id %d, "
             "motion bucket %d, cond_aug %g", steps, steps_from, chunk, sampling.sampler, sampling.guidance,
             sampling.min_cfg, sampling.max_cfg, sampling.fps_id, sampling.motion_bucket_id, sampling.cond_aug)
    log.info("model s: bench/time_model.py, calibrated, ours on %s (%s)%s", device_model,
             time_model.DEVICES[device_model].name, f"; {device_note}" if device_note else "")
    log.info("GiB: activation peak (weights excluded), bench/memory.py's count beside torch.cuda.max_memory_allocated "
             "above what was allocated before")
    for line in table(rows):
        log.info("%s", line)
    for key, r in rows.items():
        for note in ([f"diffusers' attention: {r.diffusers_attention}"] if r.diffusers_attention else []) + r.notes:
            log.info("  %s: %s", key, note)
    for s in clock.skipped:
        log.info("  skipped: %s", s)
    for s in clock.failed:
        log.info("  FAILED: %s", s)
    log.info("elapsed %.1f s of a %.0f s budget", clock.elapsed, args.budget)
    report = {"settings": settings, "rows": {k: {**asdict(r), "ratio": r.ratio} for k, r in rows.items()},
              "sections_s": clock.sections, "skipped": clock.skipped, "failed": clock.failed,
              "elapsed_s": clock.elapsed}
    path = json_path(args.json)
    path.write_text(json.dumps(report, indent=1))
    log.info("written: %s", path)
    return 1 if clock.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
