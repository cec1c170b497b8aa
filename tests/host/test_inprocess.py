"""The pack inside a real ComfyUI imported into this process (CPU): registration, schemas, the
example workflows replayed through ComfyUI's executor, model management, refused inputs."""
from __future__ import annotations

import asyncio
import math
import uuid
from pathlib import Path
from typing import Any

import pytest

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host

NODE_IDS = ("StableVideoCheckpointLoader", "StableVideoConditioning", "StableVideoOrbitConditioning",
            "StableVideoEmptyLatent", "StableVideoSampler", "StableVideoDecode", "StableVideoExtend",
            "StableVideoToCoreModel", "StableVideoKeyframeSequence")


def run(comfy_nodes: Any, prompt: dict[str, Any], executor: Any = None) -> tuple[Any, Any, Any]:
    """Validate and execute an API prompt in-process: (validation result, executor, stub)."""
    import execution

    pid = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(pid, prompt, None))
    if not valid[0]:
        return valid, None, None
    stub = hostenv.ServerStub()
    if executor is None:
        executor = execution.PromptExecutor(stub, cache_type=execution.CacheType.CLASSIC)
    executor.server = stub
    executor.execute(prompt, pid, {"client_id": None}, valid[2])
    return valid, executor, stub


def error_text(executor: Any) -> str:
    return " ".join(str(d.get("exception_message", "")) for ev, d in executor.status_messages
                    if ev == "execution_error")


def test_pack_registers_its_nine_nodes_with_tooltips(comfy_nodes: Any) -> None:
    for node_id in NODE_IDS:
        cls = comfy_nodes.NODE_CLASS_MAPPINGS[node_id]
        info = cls.GET_NODE_INFO_V1()
        assert info["description"], node_id
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert inputs, node_id
        for name, spec in inputs.items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    returns = {k: list(comfy_nodes.NODE_CLASS_MAPPINGS[k].RETURN_TYPES) for k in NODE_IDS}
    assert returns == {
        "StableVideoCheckpointLoader": ["SVD_MODEL", "SVD_CLIP_VISION", "SVD_VAE"],
        "StableVideoConditioning": ["SVD_CONDITIONING", "SVD_CONDITIONING"],
        "StableVideoOrbitConditioning": ["SVD_CONDITIONING", "SVD_CONDITIONING"],
        "StableVideoEmptyLatent": ["LATENT"], "StableVideoSampler": ["LATENT"], "StableVideoDecode": ["IMAGE", "VIDEO"],
        "StableVideoExtend": ["IMAGE"], "StableVideoToCoreModel": ["MODEL", "CONDITIONING", "CONDITIONING", "LATENT"],
        "StableVideoKeyframeSequence": ["IMAGE", "VIDEO"]}


@pytest.mark.parametrize("name", hostenv.WORKFLOW_NAMES)
def test_ui_workflow_matches_api_twin(comfy_nodes: Any, name: str) -> None:
    ui = hostenv.load_ui(name)
    api = hostenv.load_api(name)
    assert set(ui) >= {"nodes", "links", "last_node_id", "last_link_id", "version"}
    assert hostenv.ui_to_api(ui, {k: v.INPUT_TYPES() for k, v in comfy_nodes.NODE_CLASS_MAPPINGS.items()}) == api
    for link in ui["links"]:  # every link is listed on both of its ends
        link_id, origin, origin_slot, target, target_slot, _ = link
        nodes = {n["id"]: n for n in ui["nodes"]}
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id


@pytest.mark.parametrize("name", hostenv.WORKFLOW_NAMES)
def test_workflow_replays_in_process(comfy_nodes: Any, assets: Path, host_root: Path, name: str) -> None:
    prompt, frames = hostenv.shrink(hostenv.load_api(name), f"inproc_{name}")
    valid, executor, _ = run(comfy_nodes, prompt)
    assert valid[0], valid
    assert executor.success, error_text(executor)
    outputs = executor.history_result["outputs"]
    saves = hostenv.save_nodes(prompt)
    files = hostenv.written_files({k: outputs[k] for k in saves}, host_root / "output")
    assert len(files) == len(saves) == (2 if name == "batch_of_images" else 1)
    for f in files:
        assert f.is_file() and hostenv.count_frames(f) == frames, f


def test_weights_load_once_and_free_memory_unloads(
        comfy_nodes: Any, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import comfy.model_management as mm

    import svd_core

    calls: list[str] = []
    real = svd_core.load_models

    def counting(path: Any, **kw: Any) -> Any:
        calls.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(svd_core, "load_models", counting)
    mm.unload_all_models()  # start from no loaded models (earlier tests loaded their own)
    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "inproc_twice")
    _, executor, _ = run(comfy_nodes, prompt)
    assert executor.success, error_text(executor)
    prompt["5"]["inputs"]["seed"] = 1  # the sampler and decoder run again, the loader is cached
    _, executor, _ = run(comfy_nodes, prompt, executor)
    assert executor.success, error_text(executor)
    assert len(calls) == 1, calls

    ours = [m for m in mm.loaded_models() if type(m.model).__name__ == "_Held"]
    assert len(ours) == 3  # UNet, image encoder, VAE, each loaded once
    assert all(m.loaded_size() > 0 for m in ours)
    mm.unload_all_models()  # what ComfyUI's "free memory" (POST /free unload_models) calls
    assert not [m for m in mm.loaded_models() if type(m.model).__name__ == "_Held"]
    assert all(m.loaded_size() == 0 for m in ours)


@pytest.mark.parametrize("node, field, value", [
    ("3", "width", 100), ("4", "height", 100), ("3", "cond_aug", math.nan), ("5", "min_cfg", math.inf)])
def test_bad_widget_values_are_refused_naming_the_input(comfy_nodes: Any, assets: Path, node: str, field: str,
                                                         value: Any) -> None:
    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "inproc_bad")
    prompt[node]["inputs"][field] = value
    valid, _, _ = run(comfy_nodes, prompt)
    assert not valid[0]
    errors = valid[3][node]["errors"]
    assert any(field in e["details"] and str(value).lower() in e["details"].lower() for e in errors), errors


def test_non_svd_checkpoint_is_refused_naming_the_input(comfy_nodes: Any, assets: Path) -> None:
    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "inproc_notsvd")
    prompt["2"]["inputs"]["ckpt_name"] = hostenv.SD_CKPT
    valid, executor, _ = run(comfy_nodes, prompt)
    assert valid[0]
    assert not executor.success
    message = error_text(executor)
    assert "ckpt_name" in message and hostenv.SD_CKPT in message, message


def test_animatelcm_unet_file_loads_in_the_loader_and_lcm_steps_are_bounded(comfy_nodes: Any, assets: Path) -> None:
    """The loader's unet_name swaps in a UNet-only file (AnimateLCM's layout) and takes its preset; the lcm
    sampler refuses more steps than its 40 training levels before anything runs; an unknown unet_name is
    refused naming the input."""
    loader = comfy_nodes.NODE_CLASS_MAPPINGS["StableVideoCheckpointLoader"]
    assert hostenv.LCM_UNET in loader.INPUT_TYPES()["optional"]["unet_name"][1]["options"]
    model, _, _ = loader.execute(hostenv.SVD_CKPT, "fp32", unet_name=hostenv.LCM_UNET).result
    assert model.config.name == "animatelcm_svd_xt" and model.config.sampling.sampler == "lcm"
    plain, _, _ = loader.execute(hostenv.SVD_CKPT, "fp32").result
    assert plain.config.name != "animatelcm_svd_xt"

    prompt, _ = hostenv.shrink(hostenv.load_api("animatelcm_fast"), "inproc_lcm_bad")
    prompt["5"]["inputs"]["steps"] = 41
    valid, _, _ = run(comfy_nodes, prompt)
    assert not valid[0]
    details = " ".join(e["details"] for e in valid[3]["5"]["errors"])
    assert "steps must be at most 40 for the lcm sampler" in details, details

    prompt, _ = hostenv.shrink(hostenv.load_api("animatelcm_fast"), "inproc_lcm_missing")
    prompt["2"]["inputs"]["unet_name"] = "missing.safetensors"
    valid, executor, _ = run(comfy_nodes, prompt)
    message = str(valid[3].get("2", {}).get("errors")) if not valid[0] else error_text(executor)
    assert "unet_name" in message and "missing.safetensors" in message, message
