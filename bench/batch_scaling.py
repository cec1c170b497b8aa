"""Videos per minute of the Ray batch job with 1 and 2 workers (svd_core/batch.py), and the scaling ratio.

    python bench/batch_scaling.py                  # medium model, 1 CPU thread per worker, local Ray
    python bench/batch_scaling.py --address auto   # on a running cluster (add --gpus-per-worker 1 for GPUs)

Random medium-size weights (bench/compare.py's "medium": every block type of SVD at 128 UNet channels) and
random images; each run is a fresh job into an empty folder, the worker counts alternating over --rounds.
Two rates are printed per run: the whole job (Ray start, model loading, all videos) and the steady rate
(videos finished after the first one, over the time since the first one finished, read from the
manifest's per-video seconds and the finish order).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare import make_config  # noqa: E402
from svd_core import save_random_checkpoint  # noqa: E402
from svd_core.app.batch import run  # noqa: E402

log = logging.getLogger("batch_scaling")


def one_job(ckpt: Path, images: Path, out: Path, workers: int, args: argparse.Namespace) -> dict[str, float]:
    t0 = time.perf_counter()
    rows = []
    for row in run(ckpt, str(images / "*.png"), out, workers=workers, threads_per_worker=args.threads,
                   gpus_per_worker=args.gpus_per_worker, address=args.address, width=args.size, height=args.size,
                   frames=args.frames, steps=args.steps):
        rows.append(row)
    total = time.perf_counter() - t0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" for r in lines), lines
    mtimes = sorted(Path(r["output"]).stat().st_mtime for r in lines)
    finished = [m - mtimes[0] for m in mtimes]
    steady = (len(finished) - 1) / finished[-1] * 60.0 if finished[-1] > 0 else float("nan")
    return {"total_s": total, "per_min": len(rows) / total * 60.0, "steady_per_min": steady}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("svd_core").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per worker")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--address", default=None)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ckpt = save_random_checkpoint(d / "svd_xt_1_1.safetensors", make_config("medium", args.frames, args.size,
                                                                                  args.size), seed=0)
        (d / "in").mkdir()
        for i in range(args.images):
            rgb = (np.random.default_rng(i).random((args.size, args.size, 3)) * 255).astype(np.uint8)
            Image.fromarray(rgb).save(d / "in" / f"{i:03d}.png")
        results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for r in range(args.rounds):
            for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                res = one_job(ckpt, d / "in", d / f"out_{r}_{workers}", workers, args)
                log.info("round %d, %d worker(s): %s", r, workers, {k: round(v, 2) for k, v in res.items()})
                results[workers].append(res)
    med = {w: {k: statistics.median(x[k] for x in v) for k in v[0]} for w, v in results.items()}
    log.info("medium model, %d images of %dx%d, %d frames, %d steps, %d thread(s) per worker%s", args.images, args.size,
             args.size, args.frames, args.steps, args.threads,
             f", {args.gpus_per_worker} GPU(s)" if args.gpus_per_worker else "")
    log.info("%-28s %10s %10s %8s", "", "1 worker", "2 workers", "ratio")
    for key, label in (("per_min", "videos / min, whole job"), ("steady_per_min", "videos / min, steady")):
        log.info("%-28s %10.2f %10.2f %8.2f", label, med[1][key], med[2][key], med[2][key] / med[1][key])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
