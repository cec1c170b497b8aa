"""Soak: many runs in one in-process ComfyUI, and a cancelled run that leaves nothing behind.

    python -m pytest -m soak -s tests/host/test_soak.py     # prints the figures

`test_cancel_then_rerun_gives_the_frames_of_a_run_never_cancelled` runs in the default suite too.
"""
from __future__ import annotations

import asyncio
import gc
import statistics
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
RUNS, WARM_UP = 50, 10


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024.0


class Recorder:
    """Keeps every video the decoder node returns (svd_core.video.flow.decode, as the node calls it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from svd_core.video import flow

        self.videos: list[torch.Tensor] = []
        real = flow.decode  # the decoder node's stage of the video flow

        def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
            out = real(*args, **kwargs)
            self.videos.append(out.clone())
            return out

        monkeypatch.setattr(flow, "decode", recording)


def _execute(prompt: dict[str, Any], executor: Any = None) -> Any:
    import execution

    pid = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(pid, prompt, None))
    assert valid[0], valid
    if executor is None:
        executor = execution.PromptExecutor(hostenv.ServerStub(), cache_type=execution.CacheType.CLASSIC)
    executor.server = hostenv.ServerStub()
    executor.execute(prompt, pid, {"client_id": None}, valid[2])
    return executor


def _prompt(seed: int = 0) -> dict[str, Any]:
    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "soak")
    prompt["5"]["inputs"]["seed"] = seed
    prompt["5"]["inputs"]["steps"] = 3
    return prompt


def test_cancel_then_rerun_gives_the_frames_of_a_run_never_cancelled(
        comfy_nodes: Any, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import comfy.model_management as mm
    import comfy.utils

    rec = Recorder(monkeypatch)
    never = _execute(_prompt(seed=5))
    assert never.success and len(rec.videos) == 1
    reference = rec.videos[0]

    real_update = comfy.utils.ProgressBar.update_absolute
    cancelled: list[int] = []

    def cancel_after_first_step(self: Any, value: Any, total: Any = None, preview: Any = None) -> Any:
        if value == 1 and not cancelled:
            cancelled.append(value)
            mm.interrupt_current_processing(True)  # what POST /interrupt does
        return real_update(self, value, total, preview)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", cancel_after_first_step)
    executor = _execute(_prompt(seed=5))
    assert cancelled and not executor.success
    assert any(ev == "execution_interrupted" for ev, _ in executor.status_messages), executor.status_messages
    assert len(rec.videos) == 1  # nothing was decoded
    executor = _execute(_prompt(seed=5), executor)  # the same prompt, the same executor and caches
    assert executor.success
    assert len(rec.videos) == 2
    assert torch.equal(rec.videos[1], reference)


@pytest.mark.soak
def test_fifty_runs_do_not_grow_the_process(comfy_nodes: Any, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """50 runs, alternately the same prompt on a fresh executor (everything runs again, the checkpoint is
    loaded again) and a new seed on one long-lived executor (models stay loaded); resident memory after
    warm-up must grow by less than 1 MB per run."""
    rec = Recorder(monkeypatch)
    long_lived = None
    rss: list[float] = []
    for i in range(RUNS):
        if i % 2 == 0:
            executor = _execute(_prompt(seed=1))
        else:
            long_lived = _execute(_prompt(seed=100 + i), long_lived)
            executor = long_lived
        assert executor.success
        rec.videos.clear()
        gc.collect()
        rss.append(_rss_mb())
    after = rss[WARM_UP:]
    xs = list(range(len(after)))
    slope = statistics.linear_regression(xs, after).slope  # MB per run
    print(f"\nsoak: {RUNS} runs, resident size {rss[0]:.1f} MB after the first, {rss[WARM_UP]:.1f} MB after "
          f"warm-up ({WARM_UP} runs), {rss[-1]:.1f} MB at the end; growth after warm-up {slope:+.3f} MB per run")
    assert slope < 1.0, rss
