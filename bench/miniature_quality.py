"""Quality of the miniature SVD (tests/data/miniature_svd.safetensors, tools/train_miniature.py) on clips whose
motion is known (tools/miniature/data.py), through the pack's own `generate`:

    python bench/miniature_quality.py                 # the shipped file
    python bench/miniature_quality.py --model X.safetensors --clips 8 --steps 25

Image to video: for each motion bucket, single-object clips (no brightness ramp) give the first frame; the video's
object is tracked against the known background (tools/miniature/measure.py): its speed (pixels per frame) beside
the speed the bucket was trained to mean (data.speed_of_bucket), its colour error and its area relative to the
truth in the last frame, and the share of frames where it is found.
First to last frame: the same clips with their true last frame as end image (the keyframe sampler); the distance
of the tracked object from its true position in the last frame and, over all frames, from the true track, beside
plain image to video with the clip's own motion bucket (the baseline, which cannot know where the clip ends).
Every figure is the mean over clips, with its standard deviation over clips.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svd_core.video.generate import generate  # noqa: E402
from svd_core.weights.load import load_models  # noqa: E402
from tools.miniature.data import Clip, ClipSpec, make_clip, speed_of_bucket  # noqa: E402
from tools.miniature.measure import track, true_area  # noqa: E402

log = logging.getLogger("miniature_quality")
SHIPPED = REPO / "tests" / "data" / "miniature_svd.safetensors"


def clips_for(count: int, seed: int, frames: int) -> list[Clip]:
    """Single-object moving clips without brightness ramp (the background stays what data.py drew)."""
    spec = ClipSpec(frames=frames, max_objects=1, brightness_p=0.0, static_p=0.0)
    return [make_clip(seed * 10_007 + i, spec) for i in range(count)]


def _stats(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return f"{v.mean():.2f} +- {v.std():.2f} (n={v.size})" if v.size else "nan"


def image_to_video(models, clips: list[Clip], buckets: list[int], steps: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    frames = clips[0].frames.shape[0]
    log.info("image to video, %d clips x %d frames at 64x64, %d steps, seed %d", len(clips), frames, steps, seed)
    log.info("%-8s %-8s %-22s %-22s %-22s %-10s", "bucket", "trained", "speed px/frame", "colour error (last)",
             "area / true (last)", "found")
    for bucket in buckets:
        speeds, colour, area, found = [], [], [], []
        for i, clip in enumerate(clips):
            image = torch.from_numpy(clip.frames[:1])
            video = generate(models, image, num_frames=frames, num_steps=steps, motion_bucket_id=bucket,
                             seed=seed + i)[0].numpy()
            tr = track(video, clip.background)
            speeds.append(tr.speed())
            colour.append(float(np.abs(tr.colors[-1] - clip.colors[0]).mean()))
            area.append(float(tr.areas[-1] / true_area(clip.kinds[0], clip.radii[0])))
            found.append(float(tr.found.mean()))
        log.info("%-8d %-8.2f %-22s %-22s %-22s %-10.2f", bucket, speed_of_bucket(bucket), _stats(speeds),
                 _stats(colour), _stats(area), float(np.mean(found)))


def first_to_last(models, clips: list[Clip], steps: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    frames = clips[0].frames.shape[0]
    log.info("first to last frame, %d clips x %d frames, %d steps", len(clips), frames, steps)
    rows: dict[str, tuple[list[float], list[float]]] = {"keyframes": ([], []), "image to video": ([], [])}
    for i, clip in enumerate(clips):
        image, end = torch.from_numpy(clip.frames[:1]), torch.from_numpy(clip.frames[-1:])
        for name, kwargs in (("keyframes", {"end_image": end}), ("image to video", {})):
            video = generate(models, image, num_frames=frames, num_steps=steps, motion_bucket_id=clip.motion_bucket_id,
                             seed=seed + i, **kwargs)[0].numpy()
            tr = track(video, clip.background)
            err = np.hypot(*(tr.centers - clip.centers[:, 0]).T)
            rows[name][0].append(float(err[-1]))
            rows[name][1].append(float(np.nanmean(err)) if np.isfinite(err).any() else float("nan"))
    log.info("%-16s %-26s %-26s", "", "last-frame error (px)", "mean track error (px)")
    for name, (last, mean) in rows.items():
        log.info("%-16s %-26s %-26s", name, _stats(last), _stats(mean))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(SHIPPED))
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--seed", type=int, default=1000,
                   help="clips (numpy seeds 10007 * seed + i, which no training batch uses) and noise")
    p.add_argument("--buckets", default="0,127,255")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", default="", help="comma-separated parts to skip: i2v, keyframes")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = load_models(a.model, dtype=torch.float32)
    clips = clips_for(a.clips, a.seed, a.frames)
    skip = set(filter(None, a.skip.split(",")))
    start = time.monotonic()
    if "i2v" not in skip:
        image_to_video(models, clips, [int(b) for b in a.buckets.split(",")], a.steps, a.seed)
    if "keyframes" not in skip:
        first_to_last(models, clips, a.steps, a.seed)
    log.info("%.0f s", time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
