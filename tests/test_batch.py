"""The Ray Data batch job (svd_core/batch.py) and one video on two processes (svd_core/parallel.py), on a
tiny random checkpoint: outputs equal single-process runs, a resumed job, a killed worker, refused options,
CFG-parallel across two gloo processes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svd_core import SVDConfig, save_random_checkpoint
from svd_core.app.batch import BatchError, run

REPO = Path(__file__).resolve().parents[1]
SIZE = ("--width", "64", "--height", "64", "--frames", "3", "--steps", "2")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    ckpt = save_random_checkpoint(d / "svd_xt_1_1.safetensors", SVDConfig.tiny(), seed=5)
    images = d / "in"
    images.mkdir()
    for i in range(6):
        rgb = (np.random.default_rng(i).random((72, 96, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(images / f"still_{i}.png")
    return ckpt, images, d


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "svd_core", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_bad_options_are_refused_before_ray_starts(inputs, tmp_path):
    ckpt, images, _ = inputs
    with pytest.raises(BatchError, match="--images .* matches no file"):
        run(ckpt, str(images / "*.jpeg"), tmp_path / "out")
    with pytest.raises(BatchError, match="--workers must be at least 1"):
        run(ckpt, str(images / "*.png"), tmp_path / "out", workers=0)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(BatchError, match="--output .* cannot be written"):
        run(ckpt, str(images / "*.png"), blocker / "out")
    with pytest.raises(BatchError, match="--width must be a positive multiple of 64"):
        run(ckpt, str(images / "*.png"), tmp_path / "out", width=100)
    r = _cli("batch", "--checkpoint", str(ckpt), "--images", str(images / "*.png"), "--output", str(tmp_path / "o"),
             "--workers", "0")
    assert r.returncode == 2 and "--workers must be at least 1" in r.stderr
    # the refusals never start (nor import) Ray: checked in a fresh process
    probe = subprocess.run([sys.executable, "-c", "import sys, svd_core.app.batch as b\n"
                            "try:\n b.run(sys.argv[1], sys.argv[2], sys.argv[3], workers=0)\n"
                            "except b.BatchError: pass\n"
                            "print('ray' in sys.modules)", str(ckpt), str(images / "*.png"), str(tmp_path / "p")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "False", probe.stderr


@pytest.mark.slow  # two Ray workers and a resumed job: a minute on 2 cores (the default suite's budget)
def test_two_workers_write_what_the_cli_writes_and_a_rerun_resumes(inputs, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]'): the batch job's tests skipped")
    ckpt, images, _ = inputs
    (tmp_path / "in").mkdir()
    for f in sorted(images.iterdir()):
        (tmp_path / "in" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")  # sorted first: index 0, seed 10
    out = tmp_path / "out"
    rows = run(ckpt, str(tmp_path / "in" / "*.png"), out, fmt="png", seed=10, workers=2, threads_per_worker=1,
               width=64, height=64, frames=3, steps=2)
    assert len(rows) == 7 and len(_manifest(out)) == 7
    by_input = {Path(r["input"]).name: r for r in rows}
    assert by_input["broken.png"]["status"] == "error" and "not an image" in by_input["broken.png"]["error"]
    assert all(r["status"] == "ok" and r["frames"] == 3 and r["seconds"] > 0
               for n, r in by_input.items() if n != "broken.png")
    assert by_input["still_0.png"]["settings"]["steps"] == 2 and by_input["still_3.png"]["seed"] == 14
    # each video is the one the command line makes from its image and seed, byte for byte (one thread):
    # one through `python -m svd_core generate`, all six through its render() in this process
    row = by_input["still_4.png"]
    single = tmp_path / "single_still_4.png"
    r = _cli("generate", "--checkpoint", str(ckpt), "--image", row["input"], "--output", str(single), *SIZE,
             "--seed", str(row["seed"]), "--threads", "1", "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    assert single.read_bytes() == Path(row["output"]).read_bytes()
    from svd_core.app.render import RenderOptions, file_fps, open_models, render, request_for

    options = RenderOptions(checkpoint=ckpt, width=64, height=64, frames=3, steps=2)  # SIZE
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = open_models(options, torch.device("cpu"))
        for name, row in by_input.items():
            if name != "broken.png":
                alone = tmp_path / f"alone_{name}"
                request = request_for(models, options, seed=row["seed"])
                render(models, request, Path(row["input"]), alone, fps=file_fps(models, options))
                assert alone.read_bytes() == Path(row["output"]).read_bytes(), name
    finally:
        torch.set_num_threads(threads)
    # a rerun skips what exists; a removed video is made again, the same
    removed = Path(by_input["still_2.png"]["output"])
    before = removed.read_bytes()
    removed.unlink()
    again = run(ckpt, str(tmp_path / "in" / "*.png"), out, fmt="png", seed=10, workers=1, threads_per_worker=1,
                width=64, height=64, frames=3, steps=2)
    assert sorted(Path(r["input"]).name for r in again) == ["broken.png", "still_2.png"]
    assert removed.read_bytes() == before
    assert len(_manifest(out)) == 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_pids() -> dict[int, bool]:
    """Ray names its actor processes after their class, with the method running: ray::MapWorker(MapBatches(
    VideoWorker)).submit while one makes a video. Returns {pid: busy}."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ray::" in cmdline and b"VideoWorker" in cmdline:
                pids[int(entry.name)] = b".submit" in cmdline
    return pids


@pytest.mark.ray_fault
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(),
                    reason="finds Ray's worker processes through /proc (Linux only): the killed-worker test skipped")
def test_a_killed_worker_is_replaced_and_every_video_is_written(inputs, tmp_path):
    """A local cluster (`ray start --head`), the job joining it with --address; one worker is SIGKILLed
    while it makes a video: Ray restarts it, the batch it held is retried there, and every video is still
    written, once. Waits on Ray's restart (up to 300 s), hence its own marker: `pytest -m ray_fault`."""
    pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]'): the killed-worker test skipped")
    ckpt, images, _ = inputs
    port = _free_port()
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = subprocess.run([*ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                            "--disable-usage-stats"], capture_output=True, text=True, timeout=120, env=env)
    assert start.returncode == 0, start.stderr
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "svd_core", "batch", "--checkpoint", str(ckpt), "--images",
                            str(images / "*.png"), "--output", str(out), "--address", f"127.0.0.1:{port}",
                            "--workers", "2", "--threads-per-worker", "1", "--width", "64", "--height", "64",
                            "--frames", "3", "--steps", "60"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        killed, replaced = None, False
        deadline = time.monotonic() + 300
        while job.poll() is None and time.monotonic() < deadline and not replaced:
            done = len((out / "results.jsonl").read_text().splitlines()) if (out / "results.jsonl").exists() else 0
            alive = _worker_pids()
            busy = sorted(pid for pid, working in alive.items() if working)
            if killed is None and done >= 1 and busy:  # a worker in the middle of a video, with work left
                killed, before = busy[0], set(alive)
                os.kill(killed, signal.SIGKILL)
            elif killed is not None:
                replaced = bool(set(alive) - before)
            time.sleep(0.1)
        assert killed is not None, "no worker was found alive mid-job"
        log, _ = job.communicate(timeout=600)
        assert job.returncode == 0, log[-4000:]
        assert replaced, f"no new worker process appeared after the kill; the job said:\n{log[-4000:]}"
        rows = _manifest(out)
        assert sorted(Path(r["input"]).name for r in rows) == sorted(f.name for f in images.iterdir())
        assert all(r["status"] == "ok" and Path(r["output"]).is_file() for r in rows)
        assert not list(out.glob(".partial-*"))  # nothing half-written is left
    finally:
        if job.poll() is None:
            job.kill()
        subprocess.run([*ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=env)


CFG_WORKER = """
import sys, torch, torch.distributed as dist
import svd_core
rank, store, ckpt, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
models = svd_core.load_models(ckpt, dtype=torch.float32, vae_dtype=torch.float32)
image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
video = svd_core.generate(models, image, num_frames=3, num_steps=3, seed=4, cfg_parallel=dist.group.WORLD)
torch.save(video, f"{out}.{rank}.pt")
dist.destroy_process_group()
"""


needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="this torch has no torch.distributed with gloo: the CFG-parallel tests skipped")


@needs_gloo
def test_cfg_parallel_on_two_gloo_processes_equals_one_process(inputs, tmp_path):
    import svd_core

    ckpt, _, _ = inputs
    script = tmp_path / "cfg_worker.py"
    script.write_text(CFG_WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path / "store"), str(ckpt),
                               str(tmp_path / "video")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}) for r in range(2)]
    for p in procs:
        log, _ = p.communicate(timeout=600)
        assert p.returncode == 0, log[-4000:]
    a, b = (torch.load(tmp_path / f"video.{r}.pt") for r in range(2))
    assert torch.equal(a, b)  # both ranks hold the same video
    models = svd_core.load_models(ckpt, dtype=torch.float32, vae_dtype=torch.float32)
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: CPU results depend on the thread count in the last bits
    try:
        alone = svd_core.generate(models, image, num_frames=3, num_steps=3, seed=4)
    finally:
        torch.set_num_threads(threads)
    assert alone.std() > 1e-3
    torch.testing.assert_close(a, alone, rtol=0, atol=1e-5)


@needs_gloo
@pytest.mark.slow  # torchrun's two processes: 20 s on 2 cores; test_cfg_parallel_on_two_gloo_processes runs by default
def test_the_command_line_under_torchrun_writes_what_one_process_writes(inputs, tmp_path):
    """Rank 0 writes the video, the same as one process makes. `--standalone`: torchrun binds its rendezvous
    store to a port the kernel picks (localhost:0) and its workers join that store, so no port is chosen
    here and left free for another process (a Ray cluster of another test) to take in between."""
    ckpt, images, _ = inputs
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    r = _cli("generate", "--checkpoint", str(ckpt), "--image", str(images / "still_1.png"), "--output", str(one),
             *SIZE, "--device", "cpu", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "svd_core", "generate", "--checkpoint", str(ckpt), "--image", str(images / "still_1.png"),
                        "--output", str(two), *SIZE, "--device", "cpu", "--threads", "1", "--quiet", "--cfg-parallel"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    with Image.open(one) as x, Image.open(two) as y:
        frames = []
        for i in range(x.n_frames):
            x.seek(i)
            y.seek(i)
            diff = np.asarray(x.convert("RGB"), dtype=int) - np.asarray(y.convert("RGB"), dtype=int)
            frames.append(np.abs(diff).max())
    assert len(frames) == 3 and max(frames) <= 1
    r = _cli("generate", "--checkpoint", str(ckpt), "--image", str(images / "still_1.png"), "--output",
             str(tmp_path / "x.png"), *SIZE, "--cfg-parallel")
    assert r.returncode == 2 and "torchrun --nproc-per-node 2" in r.stderr
