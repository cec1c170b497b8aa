"""Helpers of the host tests: find ComfyUI, build tiny checkpoints, load and shrink the example
workflows, convert UI-format workflows to API format, count written frames."""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "example_workflows"
WORKFLOW_NAMES = ("image_to_video", "text_to_image_to_video", "batch_of_images", "first_last_frame", "seamless_loop",
                  "long_video", "animatelcm_fast", "image_to_orbit", "keyframe_sequence")
# example_workflows/ also holds index.json (titles and descriptions), which ComfyUI lists as a template too
TEMPLATE_INDEX = "index"
COMFY = Path(os.environ.get("COMFYUI_PATH", "~/ComfyUI")).expanduser()
HAVE_COMFY = (COMFY / "main.py").is_file() and (COMFY / "nodes.py").is_file()
SKIP_REASON = f"ComfyUI not found at {COMFY} (set COMFYUI_PATH to a ComfyUI checkout to run the host tests)"

SVD_CKPT = "svd_tiny.safetensors"
SD_CKPT = "sd15_tiny.safetensors"
LCM_UNET = "AnimateLCM-SVD-xt-tiny.safetensors"  # a UNet-only file in diffusers' names, as AnimateLCM ships
SV3D_P_CKPT = "sv3d_p_tiny.safetensors"  # told from SV3D_u by its tensors (label_emb widths)
# the tiny file that stands in for each checkpoint a template names (any other: SVD_CKPT)
STAND_INS = {"sv3d_p.safetensors": SV3D_P_CKPT}
FRAMES = 3  # frames per video in the shrunk workflows
SIZE = 64  # width and height in the shrunk workflows

log = logging.getLogger(__name__)


# --- in-process host ---------------------------------------------------------------------------

def start_inprocess_host(root: Path) -> Any:
    """Import ComfyUI into this process (CPU), with its folders under `root`, and load the pack.
    Returns ComfyUI's `nodes` module. Call once per process."""
    if str(COMFY) not in sys.path[:1]:
        sys.path.insert(0, str(COMFY))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.preview_method = comfy.cli_args.LatentPreviewMethod.Latent2RGB
    import folder_paths
    import utils.extra_config  # noqa: F401  (before `nodes`: otherwise `utils` is comfy/utils.py)

    for name in ("input", "output", "temp", "checkpoints", "diffusion_models", "custom_nodes"):
        (root / name).mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(root / "input"))
    folder_paths.set_output_directory(str(root / "output"))
    folder_paths.set_temp_directory(str(root / "temp"))
    folder_paths.add_model_folder_path("checkpoints", str(root / "checkpoints"), is_default=True)
    folder_paths.add_model_folder_path("diffusion_models", str(root / "diffusion_models"), is_default=True)

    import asyncio

    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    link = root / "custom_nodes" / "comfyui-svd-exact"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    asyncio.run(nodes.load_custom_node(str(link)))
    return nodes


class ServerStub:
    """What PromptExecutor needs from the server when no server runs."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict[str, Any] = {}
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event: str, data: Any, sid: Any = None) -> None:
        self.messages.append((event, data))

    def send_progress_text(self, text: str, node_id: Any, sid: Any = None) -> None:
        pass


# --- tiny checkpoints --------------------------------------------------------------------------

def node_videos(nodes: dict[str, Any], images: torch.Tensor, *, size: int, frames: int, cond_seed: int = 0,
                sample_seed: int = 0, videos: int = 1, pick: int | None = None, **cond: Any) -> dict[str, Any]:
    """images (B, H, W, 3) through the pack's nodes on the tiny checkpoint (fp32): loader, conditioning (fps 7
    and `cond`), empty latent of `videos` videos, 2 euler steps, decode. `pick` selects one video of the empty
    latent with core's LatentFromBatch (which writes batch_index) before sampling. Returns every output."""
    model, clip, vae = nodes["StableVideoCheckpointLoader"].execute(ckpt_name=SVD_CKPT, weight_dtype="fp32").result
    pos, neg = nodes["StableVideoConditioning"].execute(
        clip_vision=clip, vae=vae, image=images, width=size, height=size, resize_mode="crop", fps=7,
        motion_bucket_id=127, cond_aug=0.02, seed=cond_seed, **cond).result
    (latent,) = nodes["StableVideoEmptyLatent"].execute(width=size, height=size, frames=frames,
                                                         batch_size=videos).result
    if pick is not None:
        (latent,) = nodes["LatentFromBatch"]().frombatch(latent, pick * frames, frames)
        assert latent["batch_index"] == list(range(pick * frames, (pick + 1) * frames))
    (z,) = nodes["StableVideoSampler"].execute(
        model=model, positive=pos, negative=neg, latent=latent, seed=sample_seed, steps=2, min_cfg=1.5, max_cfg=3.0,
        guidance="linear", sampler="euler", sigma_min=0.002, sigma_max=700.0, rho=7.0, denoise=1.0).result
    decoded = nodes["StableVideoDecode"].execute(vae=vae, latent=z, frames_per_chunk=0).result[0]
    return {"model": model, "clip": clip, "vae": vae, "positive": pos, "negative": neg, "latent": z, "frames": decoded}


def write_svd_checkpoint(path: Path) -> Path:
    """svd_core's tiny random config (its VAE keeps the real 1/8 latent that StableVideoEmptyLatent makes)."""
    import svd_core

    return Path(svd_core.save_random_checkpoint(path, svd_core.SVDConfig.tiny(), seed=0, dtype=torch.float16))


def write_family_checkpoint(path: Path, family: str, seed: int = 2) -> Path:
    """svd_core's tiny random member of `family` (sv3d_u, sv3d_p, svd_image_decoder) in the official layout."""
    import svd_core

    return Path(svd_core.save_random_checkpoint(path, svd_core.SVDConfig.tiny(family), seed=seed,
                                                dtype=torch.float16))


def write_lcm_unet(path: Path) -> Path:
    """A tiny random UNet-only file in AnimateLCM-SVD-xt's layout (diffusers' names, fp32)."""
    import svd_core.weights.random_weights

    return Path(svd_core.weights.random_weights.save_random_unet(path, svd_core.SVDConfig.tiny(), seed=1))


def _random_like(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Nonzero random fp16 tensors for a state dict's shapes, by the rules of conftest.randomize_:
    weights N(0, 1/fan_in), norm scales 1 + 0.1 N(0, 1), the rest 0.1 N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        r = torch.randn(shape, generator=g)
        leaf, parent = name.rsplit(".", 1)[-1], (name.rsplit(".", 2)[-2] if name.count(".") else "")
        if len(shape) >= 2:
            v = r / math.sqrt(r[0].numel())
        elif leaf == "weight" and ("norm" in parent or parent.startswith("ln")):
            v = 1.0 + 0.1 * r
        else:
            v = 0.1 * r
        out[name] = v.to(torch.float16)
    return out


def write_sd15_checkpoint(path: Path) -> Path:
    """A random SD1.5-layout checkpoint that ComfyUI's CheckpointLoaderSimple detects as SD1.5:
    model_channels 320 and context_dim 768 (comfy/supported_models.py SD15) with one level and one
    res block to stay small; CLIP-L text model and the SD VAE at the sizes ComfyUI builds them.
    The modules are built on `meta` only for their names and shapes (ComfyUI's and transformers'
    classes serve as the oracle of the layout)."""
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    shapes: dict[str, torch.Size] = {}
    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
                         channel_mult=[1], num_heads=8, use_spatial_transformer=True,
                         transformer_depth=[1], transformer_depth_output=[1, 1], transformer_depth_middle=1,
                         context_dim=768, use_linear_in_transformer=False, dtype=torch.float32, device="meta")
        shapes.update({f"model.diffusion_model.{k}": v.shape for k, v in unet.state_dict().items()})
        ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
        vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
        shapes.update({f"first_stage_model.{k}": v.shape for k, v in vae.state_dict().items()})
        cfg = json.loads((COMFY / "comfy" / "sd1_clip_config.json").read_text())
        text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in cfg.items()
                                               if k not in ("architectures", "torch_dtype")}))
        shapes.update({f"cond_stage_model.transformer.{k}": v.shape for k, v in text.state_dict().items()
                       if "position_ids" not in k})
    save_file(_random_like(shapes, seed=1), str(path))
    return path


def write_inputs(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for src in sorted((WORKFLOWS / "input").glob("*.png")):
        shutil.copy(src, folder / src.name)
        names.append(src.name)
    return names


# --- workflows ---------------------------------------------------------------------------------

def load_api(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def load_ui(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def shrink(prompt: dict[str, Any], prefix: str) -> tuple[dict[str, Any], int]:
    """The workflow at test size (64x64, FRAMES frames, 2 steps, the tiny checkpoints, outputs under
    `prefix`). Returns the prompt and the number of frames each save node must write."""
    p = copy.deepcopy(prompt)
    for node in p.values():
        t, i = node["class_type"], node["inputs"]
        if t == "StableVideoCheckpointLoader":
            i["ckpt_name"] = STAND_INS.get(i["ckpt_name"], SVD_CKPT)
            if i.get("unet_name", "none") != "none":
                i["unet_name"] = LCM_UNET
        elif t == "CheckpointLoaderSimple":
            i["ckpt_name"] = SD_CKPT
        elif t in ("StableVideoConditioning", "StableVideoOrbitConditioning", "StableVideoEmptyLatent",
                   "EmptyLatentImage"):
            i["width"], i["height"] = SIZE, SIZE
            if "frames" in i:
                i["frames"] = FRAMES
        elif t == "StableVideoSampler":
            i["steps"] = 2
        elif t == "StableVideoExtend":
            i["frames"], i["overlap"], i["steps"] = FRAMES, 1, 2
        elif t == "StableVideoKeyframeSequence":
            i["frames"], i["segment_frames"], i["steps"] = FRAMES, "", 2
        elif t == "ImageScale":  # the keyframe sequence's first keyframe gives the video's size
            i["width"], i["height"] = SIZE, SIZE
        elif t == "KSampler":
            i["steps"] = 1
        elif t == "ImageFromBatch":
            i["batch_index"] = (i["batch_index"] // i["length"]) * FRAMES
            i["length"] = FRAMES
        elif t in ("SaveAnimatedWEBP", "SaveWEBM", "SaveVideo"):
            i["filename_prefix"] = f"{prefix}/{i['filename_prefix'].replace('/', '_')}"
    return p, written_frames(p)


def written_frames(prompt: dict[str, Any]) -> int:
    """Frames each save node of a shrunk workflow writes: FRAMES, one fewer for a loop, for every
    extension its clips' new frames, for a keyframe sequence FRAMES - 1 per segment plus one."""
    n = FRAMES
    for node in prompt.values():
        t, i = node["class_type"], node["inputs"]
        if t == "StableVideoConditioning" and i.get("loop"):
            n -= 1
        if t == "StableVideoExtend":
            n += i["clips"] * (i["frames"] - i["overlap"])
        if t == "StableVideoKeyframeSequence":  # one frame shared at each join
            n = (sum(k.startswith("keyframe_") for k in i) - 1) * (i["frames"] - 1) + 1
    return n


def save_nodes(prompt: dict[str, Any]) -> list[str]:
    return [k for k, v in prompt.items() if v["class_type"] in ("SaveAnimatedWEBP", "SaveWEBM", "SaveVideo")]


def count_frames(path: Path) -> int:
    if path.suffix == ".mp4":
        import av

        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    from PIL import Image

    with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))


def written_files(outputs: dict[str, Any], output_dir: Path) -> list[Path]:
    files = []
    for node_out in outputs.values():
        for item in node_out.get("images", []) + node_out.get("videos", []):
            files.append(output_dir / item.get("subfolder", "") / item["filename"])
    return files


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def widget_names(input_types: dict[str, Any]) -> list[tuple[str, bool]]:
    """(name, has a control_after_generate value) of each widget input, in the frontend's order."""
    out = []
    for section in ("required", "optional"):
        for name, spec in input_types.get(section, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            is_widget = isinstance(kind, list) or kind in WIDGET_TYPES
            if is_widget and not opts.get("forceInput"):
                control = bool(opts.get("control_after_generate")) or name in ("seed", "noise_seed")
                out.append((name, control))
    return out


def ui_to_api(ui: dict[str, Any], node_defs: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow to API format with the node definitions (INPUT_TYPES): links
    become [origin id, origin slot]; widgets_values are matched to widget inputs in order, skipping
    the frontend's extra control value after a seed. MarkdownNote/Note nodes are dropped."""
    links = {link[0]: link for link in ui["links"]}
    api: dict[str, Any] = {}
    for node in ui["nodes"]:
        if node["type"] in ("Note", "MarkdownNote") or node.get("mode", 0) != 0:
            continue
        inputs: dict[str, Any] = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, origin, origin_slot, _, _, _ = links[slot["link"]]
                inputs[slot["name"]] = [str(origin), origin_slot]
        values = list(node.get("widgets_values", []))
        pos = 0
        for name, control in widget_names(node_defs[node["type"]]):
            if pos >= len(values):
                break
            if name not in inputs:
                inputs[name] = values[pos]
            pos += 2 if control else 1
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


# A MarkdownNote laid out above the nodes of these templates (the frontend's note node: not part of the prompt)
NOTES = {
    "image_to_orbit": (
        "## SV3D_p: an orbit of an object from one image\n\n"
        "- Accept the licence of **stabilityai/sv3d** on Hugging Face first, then put `sv3d_p.safetensors` "
        "(or `sv3d_u.safetensors`, no camera path) in `models/checkpoints`.\n"
        "- The image: the object on transparency (LoadImage's MASK is 1 where transparent, hence InvertMask), "
        "or a background-removal node's IMAGE and MASK wired straight into the orbit node.\n"
        "- Reference settings: 576x576, 21 views, 50 steps, triangle guidance 1.0 / 2.5. The last view is the "
        "prepared input image."),
}


def api_to_ui(api: dict[str, Any], node_classes: dict[str, Any], title: str) -> dict[str, Any]:
    """Lay out an API-format workflow as a UI-format (litegraph) workflow, the format of the templates
    in the comfyui_workflow_templates package: nodes with typed input/output slots, a link table
    [id, origin, origin slot, target, target slot, type] and widgets_values in widget order (a seed is
    followed by its control value, "fixed"), plus the template's note (NOTES) when it has one. Used to write
    the example workflows."""
    import uuid

    depth: dict[str, int] = {}

    def level(nid: str) -> int:
        if nid not in depth:
            ups = [v[0] for v in api[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((level(u) for u in ups), default=-1)
        return depth[nid]

    order = sorted(api, key=lambda n: (level(n), int(n)))
    links: list[list[Any]] = []
    outputs: dict[str, list[dict[str, Any]]] = {}
    for nid in order:
        cls = node_classes[api[nid]["class_type"]]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        outputs[nid] = [{"name": n, "type": t, "slot_index": i, "links": []}
                        for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES, strict=True))]
    nodes = []
    rows: dict[int, int] = {}
    for idx, nid in enumerate(order):
        node = api[nid]
        cls = node_classes[node["class_type"]]
        types = cls.INPUT_TYPES()
        slots = []
        for section in ("required", "optional"):
            for name, spec in types.get(section, {}).items():
                value = node["inputs"].get(name)
                kind = spec[0]
                is_widget = isinstance(kind, list) or kind in WIDGET_TYPES
                if isinstance(value, list):
                    links.append([len(links) + 1, int(value[0]), value[1], int(nid), len(slots),
                                  outputs[value[0]][value[1]]["type"]])
                    outputs[value[0]][value[1]]["links"].append(len(links))
                    slot = {"name": name, "type": "COMBO" if isinstance(kind, list) else kind, "link": len(links)}
                    if is_widget:
                        slot["widget"] = {"name": name}
                    slots.append(slot)
                elif not is_widget:
                    slots.append({"name": name, "type": kind, "link": None})
        values: list[Any] = []
        specs = {**types.get("required", {}), **types.get("optional", {})}
        for name, control in widget_names(types):
            default = specs[name][1].get("default") if len(specs[name]) > 1 else None
            values.append(node["inputs"].get(name, default))
            if control:
                values.append("fixed")
        if node["class_type"] == "LoadImage":
            values.append("image")  # the upload button's widget value, as the frontend saves it
        col = depth[nid]
        row = rows.get(col, 0)
        rows[col] = row + 1
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [40 + 380 * col, 40 + 300 * row], "size": [340, 260],
            "flags": {}, "order": idx, "mode": 0, "inputs": slots, "outputs": outputs[nid],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values,
        })
    if title in NOTES:
        nodes.append({
            "id": max(int(n) for n in api) + 1, "type": "MarkdownNote", "pos": [40, -220], "size": [1100, 180],
            "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [NOTES[title]], "color": "#432", "bgcolor": "#653",
        })
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-svd-exact/{title}")), "revision": 0,
        "last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4,
    }


def browser_or_skip() -> tuple[Any, str, Any]:
    """For a browser test module, at import: (tools/frontend.py, Chromium's path, playwright.sync_api); skips the
    module with one line without a ComfyUI checkout, Debian's chromium or pip's playwright."""
    import pytest

    if not HAVE_COMFY:
        pytest.skip(SKIP_REASON, allow_module_level=True)
    sys.path.insert(0, str(REPO / "tools"))
    import frontend

    chromium = frontend.chromium_path()
    if chromium is None:
        pytest.skip("no Chromium found (apt install chromium, or set CHROMIUM_PATH): browser tests skipped",
                    allow_module_level=True)
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="pip's playwright is not installed: browser tests skipped")
    return frontend, chromium, playwright_api


@contextlib.contextmanager
def open_browser(url: str) -> Iterator[Any]:
    """The app at `url` in headless Chromium (a page), closed on exit."""
    frontend, chromium, playwright_api = browser_or_skip()
    with playwright_api.sync_playwright() as p:
        browser = frontend.launch(p, chromium)
        try:
            yield frontend.open_app(browser, url)
        finally:
            browser.close()


if __name__ == "__main__":  # python3 tests/host/hostenv.py [NAME ...]: (re)write UI-format example workflows
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    comfy_nodes = start_inprocess_host(Path(tempfile.mkdtemp()))
    for wf_name in sys.argv[1:] or WORKFLOW_NAMES:
        ui_wf = api_to_ui(load_api(wf_name), comfy_nodes.NODE_CLASS_MAPPINGS, wf_name)
        old = WORKFLOWS / f"{wf_name}.json"
        if old.is_file() and "models" in (previous := json.loads(old.read_text())):
            ui_wf["models"] = previous["models"]  # the files the frontend offers to download stay listed
        (WORKFLOWS / f"{wf_name}.json").write_text(json.dumps(ui_wf, indent=2) + "\n")
