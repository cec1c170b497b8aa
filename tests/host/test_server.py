"""The pack in a ComfyUI server started on 127.0.0.1 (CPU): /object_info, templates, the example
workflows over the HTTP API, cancelling mid-sampling, refused inputs with the server staying up."""
from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest

import hostenv

pytestmark = pytest.mark.host

NODE_IDS = ("StableVideoCheckpointLoader", "StableVideoConditioning", "StableVideoOrbitConditioning",
            "StableVideoEmptyLatent", "StableVideoSampler", "StableVideoDecode", "StableVideoExtend",
            "StableVideoToCoreModel", "StableVideoKeyframeSequence")


def test_object_info_lists_the_nodes_with_tooltips(server: Any) -> None:
    code, info = server.request("/object_info")
    assert code == 200
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["description"]
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name}"
    assert hostenv.SVD_CKPT in info["StableVideoCheckpointLoader"]["input"]["required"]["ckpt_name"][1]["options"]
    code, templates = server.request("/workflow_templates")
    assert code == 200 and sorted(templates["comfyui-svd-exact"]) == sorted([*hostenv.WORKFLOW_NAMES,
                                                                              hostenv.TEMPLATE_INDEX])


@pytest.mark.parametrize("name", hostenv.WORKFLOW_NAMES)
def test_workflow_replays_over_http(server: Any, name: str) -> None:
    prompt, frames = hostenv.shrink(hostenv.load_api(name), f"http_{name}")
    code, answer = server.queue(prompt)
    assert code == 200, answer
    entry = server.wait(answer["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    saves = hostenv.save_nodes(prompt)
    files = hostenv.written_files({k: entry["outputs"][k] for k in saves}, server.base / "output")
    assert len(files) == (2 if name == "batch_of_images" else 1)
    for f in files:
        assert hostenv.count_frames(f) == frames, f


async def _sample_then_cancel(server: Any, prompt: dict[str, Any],
                              sampler_node: str) -> tuple[list[int], list[int], list[str]]:
    """Queue `prompt`, POST /interrupt once the sampler has reported 3 steps; returns the progress
    values seen before and after the interrupt and the event names seen after it."""
    import aiohttp

    before: list[int] = []
    after: list[int] = []
    events: list[str] = []
    client_id = "svd-host-tests"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}") as ws:
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                assert r.status == 200, await r.text()
            interrupted = False
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                msg = await ws.receive(timeout=240)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary preview images
                data = json.loads(msg.data)
                kind, body = data["type"], data.get("data", {})
                if kind == "progress" and str(body.get("node")) == sampler_node:
                    (after if interrupted else before).append(int(body["value"]))
                    if not interrupted and body["value"] >= 3:
                        async with session.post(f"{server.url}/interrupt", json={}) as r:
                            assert r.status == 200
                        interrupted = True
                elif interrupted:
                    events.append(kind)
                if kind in ("execution_interrupted", "execution_error", "execution_success"):
                    events.append(kind)
                    break
    return before, after, events


def test_cancel_mid_sampling_stops_within_one_step_and_next_run_works(server: Any) -> None:
    prompt, frames = hostenv.shrink(hostenv.load_api("image_to_video"), "http_cancel")
    prompt["5"]["inputs"]["steps"] = 400
    prompt["5"]["inputs"]["seed"] = 7
    before, after, events = asyncio.run(_sample_then_cancel(server, prompt, "5"))
    assert before and before[-1] >= 3
    assert "execution_interrupted" in events, events
    assert len(after) <= 1, f"{len(after)} more steps ran after the interrupt"
    assert before[-1] < 400

    again, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "http_after_cancel")
    again["5"]["inputs"]["seed"] = 8
    code, answer = server.queue(again)
    assert code == 200, answer
    entry = server.wait(answer["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    files = hostenv.written_files({"7": entry["outputs"]["7"]}, server.base / "output")
    assert hostenv.count_frames(files[0]) == frames


@pytest.mark.parametrize("node, field, value", [("3", "width", 100), ("3", "cond_aug", math.nan)])
def test_bad_inputs_are_refused_and_server_stays_up(server: Any, node: str, field: str, value: Any) -> None:
    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "http_bad")
    prompt[node]["inputs"][field] = value
    code, answer = server.queue(prompt)
    assert code == 400, answer
    details = " ".join(e["details"] for e in answer["node_errors"][node]["errors"])
    assert field in details and str(value).lower() in details.lower(), answer
    assert server.alive()


def test_non_svd_checkpoint_is_refused_and_server_stays_up(server: Any) -> None:
    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "http_not_svd")
    prompt["2"]["inputs"]["ckpt_name"] = hostenv.SD_CKPT
    code, answer = server.queue(prompt)
    assert code == 200, answer
    entry = server.wait(answer["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "ckpt_name" in errors[0]["exception_message"], errors
    assert errors[0]["node_type"] == "StableVideoCheckpointLoader"
    assert server.alive()
    code, _ = server.request("/free", {"unload_models": True, "free_memory": True})
    assert code == 200 and server.alive()
