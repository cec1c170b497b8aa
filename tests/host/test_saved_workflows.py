"""Workflows saved with earlier versions of the pack keep working: the image_to_video template as it was
before end_image, loop, the VIDEO output and the latent's conditioning input existed (tests/data)."""
from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host
SAVED = Path(__file__).resolve().parents[1] / "data" / "saved_workflows"


def test_an_old_ui_workflow_converts_to_its_old_api_twin(comfy_nodes: Any) -> None:
    ui = json.loads((SAVED / "image_to_video.ui.json").read_text())
    api = json.loads((SAVED / "image_to_video.api.json").read_text())
    defs = {k: v.INPUT_TYPES() for k, v in comfy_nodes.NODE_CLASS_MAPPINGS.items()}
    assert hostenv.ui_to_api(ui, defs) == api


def test_an_old_api_prompt_still_validates_and_runs(comfy_nodes: Any, assets: Path, host_root: Path) -> None:
    import execution

    prompt, frames = hostenv.shrink(json.loads((SAVED / "image_to_video.api.json").read_text()), "saved_v1")
    pid = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(pid, prompt, None))
    assert valid[0], valid
    executor = execution.PromptExecutor(hostenv.ServerStub(), cache_type=execution.CacheType.CLASSIC)
    executor.execute(prompt, pid, {"client_id": None}, valid[2])
    assert executor.success
    files = hostenv.written_files(executor.history_result["outputs"], host_root / "output")
    assert len(files) == 1 and hostenv.count_frames(files[0]) == frames
