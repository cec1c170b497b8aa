"""Many videos on many workers: a Ray Data batch job whose workers keep the models resident.

    python -m svd_core batch --checkpoint svd_xt_1_1.safetensors --images 'stills/*.png' --output videos/
    svd_core.batch.run(checkpoint, "stills/*.png", "videos/", workers=2)

The inputs are sorted; image i gets seed + i and the video `<output>/<its stem>.<format>`, made by the
command line's own `render` (render.py), so each video is the one `python -m svd_core generate` makes from
that image and seed on the same kind of device with the same number of CPU threads (CPU results depend on
it in the last bits). Ray Data reads the files (`read_binary_files`) and feeds them, one image a batch, to
a pool of actors (`map_batches` with a callable class): each loads the models once and keeps them. The
driver streams the results: one log line per finished video and one line of `<output>/results.jsonl`
(input, output, seed, settings, seconds, or the error).

- Resumable: an output that exists is finished (videos are written to a temporary name, then renamed),
  and a rerun skips it.
- Fault tolerant: Ray Data restarts an actor that dies and retries its batch (its actor pools default
  to max_restarts=-1 and max_task_retries=-1), so every video is still written.
- An image that cannot be decoded is reported in the manifest; the other images go on.
- `ray` is an optional dependency (`pip install ".[ray]"`); it is imported only here, and the nodes never
  import this module.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import UnidentifiedImageError

from ..seeds import video_seeds
from ..video.request import VideoRequest
from .render import VIDEO_SUFFIXES, RenderOptions, file_fps, open_models, option_errors, render, request_for

log = logging.getLogger("svd_core.batch")

MANIFEST = "results.jsonl"
FORMATS = tuple(suffix.lstrip(".") for suffix in VIDEO_SUFFIXES)  # what the command line writes


class BatchError(ValueError):
    """A batch job refused before Ray starts: the message names the option."""


@dataclass(frozen=True)
class Job:
    index: int  # position in the sorted inputs
    image: str  # absolute path
    output: str  # absolute path of the video
    seed: int  # the job's seed + index


def plan(images: str, output: Path, fmt: str, seed: int) -> list[Job]:
    """Every input matched by the glob `images`, sorted, with its video path and seed."""
    paths = sorted(os.path.abspath(p) for p in glob.glob(os.path.expanduser(images)) if os.path.isfile(p))
    if not paths:
        raise BatchError(f"--images '{images}' matches no file")
    if fmt not in FORMATS:
        raise BatchError(f"--format must be one of {FORMATS}, got {fmt!r}")
    jobs: list[Job] = []
    taken: dict[Path, str] = {}
    seeds = video_seeds(seed, len(paths))
    for i, p in enumerate(paths):
        out = output.resolve() / f"{Path(p).stem}.{fmt}"
        if out in taken:
            raise BatchError(f"--images: '{taken[out]}' and '{p}' would both write '{out.name}'; rename one")
        taken[out] = p
        jobs.append(Job(i, p, str(out), seeds[i]))
    return jobs


def check_output(output: Path) -> None:
    """The output folder exists (made if needed) and can be written."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-test-"):
            pass
    except OSError as e:
        raise BatchError(f"--output '{output}' cannot be written: {e.strerror or e}") from e


class VideoWorker:
    """A Ray Data actor: loads the models once, then turns each row (an image file's bytes) into its video."""

    def __init__(self, options: RenderOptions, jobs: dict[str, Job], threads: int, device: str) -> None:
        import torch

        torch.set_num_threads(threads)
        self.options, self.jobs = options, jobs
        self.models = open_models(options, torch.device(device))
        self.fps = file_fps(self.models, options)
        request_for(self.models, options, seed=0)  # refuse what no image can make before the first one

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {"row": []}
        for path, data in zip(batch["path"], batch["bytes"], strict=True):
            job = self.jobs[os.path.realpath(str(path))]
            request = request_for(self.models, self.options, seed=job.seed)
            row: dict[str, Any] = {"input": job.image, "output": job.output, "seed": job.seed,
                                   "settings": settings_of(request, self.fps)}
            t0 = time.monotonic()
            try:
                frames = render(self.models, request, io.BytesIO(bytes(data)), Path(job.output), fps=self.fps)
                row.update(status="ok", frames=frames)
            except UnidentifiedImageError:
                row.update(status="error", error=f"'{job.image}' is not an image Pillow can read")
            except (OSError, ValueError, SyntaxError) as e:  # a truncated or broken image, a size the model refuses
                row.update(status="error", error=f"{type(e).__name__}: {e}")
            row["seconds"] = round(time.monotonic() - t0, 3)
            rows["row"].append(json.dumps(row))
        return rows


def settings_of(request: VideoRequest, fps: int) -> dict[str, Any]:
    """The manifest's `settings` of a video: what it was made with, every default resolved."""
    r = request
    return {"preset": r.preset, "width": r.width, "height": r.height, "frames": r.num_frames, "steps": r.num_steps,
            "fps": fps, "fps_id": r.fps_id, "motion_bucket_id": r.motion_bucket_id, "cond_aug": r.cond_aug,
            "min_cfg": r.min_cfg, "max_cfg": r.max_cfg, "guidance": r.guidance, "sampler": r.sampler,
            "resize": r.resize_mode, "loop": r.loop}


@dataclass(frozen=True)
class BatchOptions:
    """The batch job's own options (the videos' are RenderOptions)."""

    images: str  # a glob of input images
    output: Path  # the folder for the videos and results.jsonl
    format: str = "webp"
    seed: int = 0  # image i of the sorted inputs gets seed + i
    workers: int = 1
    gpus_per_worker: float = 0.0
    threads_per_worker: int | None = None
    address: str | None = None  # a Ray cluster to join; None starts a local one

    @classmethod
    def of(cls, values: Any) -> BatchOptions:
        """The options among an object's attributes (an argparse namespace)."""
        return cls(**{f.name: getattr(values, f.name) for f in dataclasses.fields(cls)})

    def threads(self) -> int:
        """CPU threads of each worker: as given, else 1 with GPUs, else this machine's cores / workers."""
        if self.threads_per_worker is not None:
            return int(self.threads_per_worker)
        return 1 if self.gpus_per_worker > 0 else max(1, (os.cpu_count() or 1) // self.workers)


def run_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The command line's batch (its options already checked by option_errors)."""
    return run_job(RenderOptions.of(args), BatchOptions.of(args))


def run_job(options: RenderOptions, job: BatchOptions) -> list[dict[str, Any]]:
    """Check every option, then run the pool; returns the new manifest rows."""
    if job.workers < 1:
        raise BatchError(f"--workers must be at least 1, got {job.workers}")
    if job.gpus_per_worker < 0:
        raise BatchError(f"--gpus-per-worker must be at least 0, got {job.gpus_per_worker}")
    if job.threads_per_worker is not None and job.threads_per_worker < 1:
        raise BatchError(f"--threads-per-worker must be at least 1, got {job.threads_per_worker}")
    if not Path(options.checkpoint).exists():
        raise BatchError(f"--checkpoint '{options.checkpoint}' does not exist")
    if options.unet is not None and not Path(options.unet).exists():
        raise BatchError(f"--unet '{options.unet}' does not exist")
    output = Path(job.output)
    jobs = plan(job.images, output, job.format, job.seed)
    check_output(output)
    todo = [j for j in jobs if not os.path.exists(j.output)]
    if len(todo) < len(jobs):
        log.info("%d of %d videos already exist in '%s': skipped", len(jobs) - len(todo), len(jobs), output)
    if not todo:
        return []
    return list(_run_pool(options, job, todo, output))


def _run_pool(options: RenderOptions, job: BatchOptions, todo: list[Job], output: Path) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError as e:
        raise BatchError("the batch job needs Ray: pip install 'ray[data]' (or this pack's [ray] extra)") from e
    import ray.data

    started = not ray.is_initialized()
    if started:
        # no --address: a new local Ray ("local"), never whatever cluster this machine last started (Ray's own
        # default for address=None joins the last started cluster, whose record a stopped cluster leaves behind)
        ray.init(address=job.address or "local", logging_level=logging.WARNING, log_to_driver=False)
    try:
        threads = job.threads()
        device = "cuda" if job.gpus_per_worker > 0 else "cpu"
        jobs = {os.path.realpath(j.image): j for j in todo}
        # reading only moves bytes: it reserves no CPU, so it never waits behind workers that hold them all
        ds = ray.data.read_binary_files([j.image for j in todo], include_paths=True, num_cpus=0)
        ds = ds.map_batches(
            VideoWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=job.workers), num_cpus=threads,
            num_gpus=job.gpus_per_worker,
            fn_constructor_kwargs={"options": options, "jobs": jobs, "threads": threads, "device": device})
        done = 0
        with open(output / MANIFEST, "a", encoding="utf-8") as manifest:
            for item in ds.iter_rows():
                row = json.loads(item["row"])
                manifest.write(json.dumps(row) + "\n")
                manifest.flush()
                done += 1
                if row["status"] == "ok":
                    log.info("[%d/%d] %s -> %s (seed %d, %.1f s)", done, len(todo), row["input"], row["output"],
                             row["seed"], row["seconds"])
                else:
                    log.warning("[%d/%d] %s failed: %s", done, len(todo), row["input"], row["error"])
                yield row
    finally:
        if started:
            ray.shutdown()


def run(checkpoint: str | os.PathLike[str], images: str, output: str | os.PathLike[str], *, fmt: str = "webp",
        seed: int = 0, workers: int = 1, gpus_per_worker: float = 0.0, threads_per_worker: int | None = None,
        address: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """The batch job from Python: `options` are the command line's generate options by their Python names
    (`RenderOptions`: num_frames is `frames`, e.g. run(..., frames=14, steps=25, width=1024, height=576)). Returns
    the new manifest rows (also appended to `<output>/results.jsonl`)."""
    known = set(RenderOptions.names()) - {"checkpoint"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BatchError(f"unknown option(s) {unknown}; expected some of {sorted(known)}")
    render_options = RenderOptions(checkpoint=Path(checkpoint), **options)
    errors = option_errors(render_options)
    if errors:
        raise BatchError("; ".join(errors))
    return run_job(render_options, BatchOptions(images=images, output=Path(output), format=fmt, seed=seed,
                                                workers=workers, gpus_per_worker=gpus_per_worker,
                                                threads_per_worker=threads_per_worker, address=address))


__all__ = ["BatchError", "BatchOptions", "Job", "VideoWorker", "check_output", "plan", "run", "run_from_args",
           "run_job", "MANIFEST", "FORMATS"]
